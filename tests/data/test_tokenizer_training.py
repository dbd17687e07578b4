"""The BPE trained on generated BABILong text: whole-word facts, lossless on any text."""

import os

import pytest

from lm2_jax.data import tokenizer_training as tt
from lm2_jax.data.tokenizers import check_vocab, load_tokenizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("bpe") / "tokenizer.json")
  assert tt.main(["--output", path, "--vocab-size", "400", "--tasks", "qa1",
                  "--num-samples", "300", "--length", "0k"]) == 0
  return path


def test_names_rooms_and_verbs_become_single_tokens(trained):
  tok = load_tokenizer(trained)
  assert tok.vocab_size <= 400
  check_vocab(tok, 400)
  pieces = [tok.decode([i]) for i in tok.encode("Mary went to the kitchen.")]
  assert pieces == ["Mary", " went", " to", " the", " kitchen", "."]
  assert len(tok.encode(" Question: Where is Daniel? Answer: office")) <= 10


def test_any_text_round_trips_and_the_special_tokens_are_found(trained):
  tok = load_tokenizer(trained)
  for text in ["Zebras quietly x-ray 42 jugs!\n", "héllo wörld ✓", "\tno <specials> here"]:
    assert tok.decode(tok.encode(text)) == text
  specials = {tok.decode([]), *(tok._tok.id_to_token(i) for i in (tok.bos_id, tok.eos_id, tok.pad_id))}  # pylint: disable=protected-access
  assert specials >= {"<s>", "</s>", "<pad>"}
  assert len({tok.bos_id, tok.eos_id, tok.pad_id}) == 3


def test_an_existing_output_is_never_overwritten(trained, capsys):
  before = open(trained, "rb").read()
  assert tt.main(["--output", trained, "--num-samples", "5"]) == 2
  assert "already exists" in capsys.readouterr().err
  assert open(trained, "rb").read() == before


@pytest.mark.parametrize("args,message", [
    (["--vocab-size", "100"], "--vocab-size 100: must be >= 259"),
    (["--tasks", "qa42"], "qa42"),
    (["--num-samples", "0"], "--num-samples must be >= 1"),
    (["--length", "12q"], "12q"),
])
def test_bad_arguments_exit_2_with_the_option_named(tmp_path, capsys, args, message):
  out = tmp_path / "tok.json"
  assert tt.main(["--output", str(out), "--num-samples", "5", *args]) == 2
  assert message in capsys.readouterr().err
  assert not os.path.exists(out)
