"""Train a byte-level BPE tokenizer on generated BABILong text, offline.

    python -m lm2_jax.data.tokenizer_training --output runs/bpe512/tokenizer.json \
        --vocab-size 512 --tasks qa1 --num-samples 2000

The byte tokenizer spends about 27 tokens on "Mary travelled to the bathroom." and splits a
name or a room over several positions (and often over two segments); the paper's models read
Llama-3 tokens, where a fact is about 7. A BPE trained on what the model will read (the
generated stories in their background text, in the compact training template with its
question and answer) gives whole-word tokens for every name, room and verb with a vocabulary
of a few hundred. The pre-tokenizer is byte-level, so any text still round-trips, and
`<s>`, `</s>`, `<pad>` are the special tokens `load_tokenizer` finds by name (as with any
Hugging Face tokenizer, those three strings inside a text encode as the special tokens). Nothing is
downloaded: the corpus is generated from the task rules and the haystack.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence

from lm2_jax.data import babi
from lm2_jax.data.babilong.lengths import length_name, parse_length
from lm2_jax.data.babilong.prompts import format_training_example
from lm2_jax.data.babilong.samples import make_sample
from lm2_jax.data.errors import DataError
from lm2_jax.data.haystack import load_haystack

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # the byte alphabet and the specials


def corpus(tasks: Sequence[str], num_samples: int, *, seed: int = 0, haystack=None,
           length: str = "1k") -> Iterator[str]:
  """Training examples as the model reads them: story in background, question, answer."""
  haystack = load_haystack(haystack)
  for i in range(num_samples):
    task = tasks[i % len(tasks)]
    sample = make_sample(task, length, i, seed, "byte", haystack, split="tokenizer")
    prompt, answer = format_training_example(sample, task)
    yield prompt + answer + "."


def train_bpe(texts: Iterator[str], vocab_size: int):
  """A `tokenizers.Tokenizer`: byte-level BPE with `vocab_size` entries at most."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top

  if vocab_size < MIN_VOCAB:
    raise DataError(f"--vocab-size {vocab_size}: must be >= {MIN_VOCAB} (256 bytes and "
                    f"{len(SPECIAL_TOKENS)} special tokens)")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer)
  return tok


def save(tok, path: str) -> None:
  """Write atomically: a failed save leaves no half-written tokenizer.json behind."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tokenizer.", suffix=".json", dir=folder)
  os.close(fd)
  try:
    tok.save(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def main(argv: Sequence[str] | None = None) -> int:
  from lm2_jax.cli import OneLineParser  # pylint: disable=g-import-not-at-top
  p = OneLineParser(prog="python -m lm2_jax.data.tokenizer_training",
                    description="Train a byte-level BPE tokenizer on generated BABILong text.")
  p.add_argument("--output", required=True, help="the tokenizer.json to write (must not exist)")
  p.add_argument("--vocab-size", type=int, default=512)
  p.add_argument("--tasks", default="qa1,qa2,qa3,qa4,qa5", help="comma-separated, e.g. qa1,qa2")
  p.add_argument("--num-samples", type=int, default=2000, help="training examples in the corpus")
  p.add_argument("--length", default="1k",
                 help="nominal length of each example (0k: the facts alone, no background)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--haystack", default="default",
                 help="'default' (built-in generator), a folder of .txt files, or pg19:DIR")
  args = p.parse_args(argv)
  try:
    tasks = [babi.check_task(t.strip()) for t in args.tasks.split(",") if t.strip()]
    if not tasks:
      raise DataError("--tasks: nothing given")
    if args.num_samples < 1:
      raise DataError(f"--num-samples must be >= 1, got {args.num_samples}")
    if os.path.exists(args.output):
      raise DataError(f"--output {args.output}: already exists; choose a new path (a trained "
                      "model's ids depend on the tokenizer it was trained with)")
    length_name(parse_length(args.length))
    tok = train_bpe(corpus(tasks, args.num_samples, seed=args.seed, haystack=args.haystack,
                           length=args.length), args.vocab_size)
  except (DataError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    save(tok, args.output)
  except OSError as e:
    print(f"error: --output {args.output}: {e.strerror or e}", file=sys.stderr)
    return 1
  size = tok.get_vocab_size(with_added_tokens=True)
  print(f"{args.output}: byte-level BPE, {size} tokens (use model.vocab_size >= {size} and "
        f"data.tokenizer={args.output})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
