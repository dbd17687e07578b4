"""Shared fixtures of the data tests: a BPE and a SentencePiece model trained on the spot."""

import random

import pytest

from lm2_jax.data import babi
from lm2_jax.data.haystack import GeneratedHaystack


def _corpus(n: int = 3000) -> list[str]:
  rng = random.Random(0)
  stream = GeneratedHaystack().sentences(rng)
  texts = [next(stream) for _ in range(n)]
  for task in babi.TASKS:
    for _ in range(40):
      s = babi.generate_sample(task, rng)
      texts.append(" ".join(s.facts) + f" Question: {s.question} Answer: {s.answer}")
  return texts


@pytest.fixture(scope="session")
def bpe_path(tmp_path_factory) -> str:
  """A byte-level BPE (vocabulary 600) in tokenizer.json form, like Llama-3's."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>", "<pad>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(_corpus(), trainer)
  path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
  tok.save(str(path))
  return str(path)


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory) -> str:
  """A SentencePiece unigram model (vocabulary 300) with a pad piece."""
  import sentencepiece as spm

  folder = tmp_path_factory.mktemp("spm")
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(_corpus(1500)), model_prefix=str(folder / "sp"), vocab_size=300,
      pad_id=3, bos_id=1, eos_id=2, unk_id=0, minloglevel=2)
  return str(folder / "sp.model")
