"""Tokenizers behind one interface, and the model-vocabulary check."""

import json
import os
import pickle

import pytest

from lm2_jax.data.errors import DataError
from lm2_jax.data.tokenizers import (ByteTokenizer, HFTokenizer, SentencePieceTokenizer,
                                      check_vocab, load_tokenizer)

TEXT = "Mary went to the kitchen. Ünïcode ✓ survives."


def test_byte_tokenizer_ids_and_round_trip():
  tok = ByteTokenizer()
  ids = tok.encode(TEXT)
  assert ids == list(TEXT.encode("utf-8"))
  assert tok.decode(ids + [tok.eos_id, tok.pad_id]) == TEXT
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (256, 257, 258, 259)
  assert tok.count_tokens([TEXT, ""]) == [len(TEXT.encode()), 0]


def test_hf_tokenizer_json(bpe_path):
  tok = load_tokenizer(bpe_path)
  assert isinstance(tok, HFTokenizer)
  ids = tok.encode(TEXT)
  assert tok.bos_id not in ids and tok.eos_id not in ids  # encode adds no specials
  assert tok.decode(ids) == TEXT
  assert tok.vocab_size == 600
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)
  assert tok.count_tokens([TEXT]) == [len(ids)]
  assert load_tokenizer(os.path.dirname(bpe_path)).vocab_size == 600  # the folder works too
  assert pickle.loads(pickle.dumps(tok)).encode(TEXT) == ids


def test_hf_special_tokens_from_tokenizer_config(bpe_path, tmp_path):
  folder = tmp_path / "tok"
  folder.mkdir()
  (folder / "tokenizer.json").write_text(open(bpe_path).read())
  (folder / "tokenizer_config.json").write_text(json.dumps(
      {"bos_token": {"content": "</s>"}, "eos_token": "<s>"}))
  tok = load_tokenizer(str(folder))
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 0, 2)


def test_sentencepiece_model(spm_path):
  tok = load_tokenizer(spm_path)
  assert isinstance(tok, SentencePieceTokenizer)
  ids = tok.encode("Mary went to the kitchen.")
  assert tok.decode(ids) == "Mary went to the kitchen."
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (1, 2, 3, 300)
  assert pickle.loads(pickle.dumps(tok)).encode("kitchen") == tok.encode("kitchen")


@pytest.mark.parametrize("name,content", [("tokenizer.json", "{not json"),
                                          ("broken.model", "not a model")])
def test_unparseable_tokenizer_file_names_the_file(tmp_path, name, content):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(DataError, match=str(path)):
    load_tokenizer(str(path))


def test_missing_tokenizer_names_what_was_expected(tmp_path):
  with pytest.raises(DataError, match="tokenizer not found"):
    load_tokenizer(str(tmp_path / "nope.json"))
  with pytest.raises(DataError, match="neither tokenizer.json nor tokenizer.model"):
    load_tokenizer(str(tmp_path))


def test_check_vocab():
  tok = ByteTokenizer()
  check_vocab(tok, 259)
  check_vocab(tok, 384)  # a model vocabulary rounded up is fine
  with pytest.raises(ValueError, match="vocab_size=256 is smaller than the tokenizer's 259"):
    check_vocab(tok, 256)
