"""``python -m lm2_jax.data.babilong``: generate samples offline in the published layout."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

from lm2_jax.data import babi
from lm2_jax.data.babilong.lengths import PROMPT_RESERVE, input_budget, length_name, parse_length
from lm2_jax.data.babilong.samples import make_sample
from lm2_jax.data.errors import DataError
from lm2_jax.data.haystack import load_haystack
from lm2_jax.data.tokenizers import load_tokenizer

def _parser() -> argparse.ArgumentParser:
  from lm2_jax.cli import OneLineParser  # pylint: disable=g-import-not-at-top
  p = OneLineParser(
      prog="python -m lm2_jax.data.babilong",
      description="Generate BABILong samples offline in the published layout DIR/<task>/<length>.json.")
  p.add_argument("--tasks", default=",".join(babi.TASKS), help="comma-separated, e.g. qa1,qa2")
  p.add_argument("--lengths", default="0k,1k,2k,4k",
                 help="comma-separated nominal lengths; 1k = 1000 tokens, 300 kept for the prompt")
  p.add_argument("--num-samples", type=int, default=100)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--output-dir", required=True)
  p.add_argument("--haystack", default="default",
                 help="'default' (built-in generator), a folder of .txt files, or pg19:DIR")
  p.add_argument("--tokenizer", default="byte",
                 help="'byte', a tokenizer.json (or its folder), or a SentencePiece .model")
  p.add_argument("--reserve-tokens", type=int, default=PROMPT_RESERVE)
  p.add_argument("--split", default="test", help="draw namespace; training streams use 'train'")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  try:
    if args.num_samples < 1:
      raise DataError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.reserve_tokens < 0:
      raise DataError(f"--reserve-tokens must be >= 0, got {args.reserve_tokens}")
    tasks = [babi.check_task(t.strip()) for t in args.tasks.split(",") if t.strip()]
    lengths = [length_name(parse_length(x)) for x in args.lengths.split(",") if x.strip()]
    if not tasks or not lengths:
      raise DataError(f"--{'tasks' if not tasks else 'lengths'}: nothing given")
    for length in lengths:
      input_budget(length, args.reserve_tokens)
    tokenizer = load_tokenizer(args.tokenizer)
    haystack = load_haystack(args.haystack)
    _check_output_dir(args.output_dir)
    for task in tasks:
      os.makedirs(os.path.join(args.output_dir, task), exist_ok=True)
      for length in lengths:
        start, stats = time.perf_counter(), {}
        samples = [make_sample(task, length, i, args.seed, tokenizer, haystack,
                               reserve_tokens=args.reserve_tokens, split=args.split, stats=stats)
                   for i in range(args.num_samples)]
        out = os.path.join(args.output_dir, task, f"{length}.json")
        with open(out, "w", encoding="utf-8") as f:
          json.dump(samples, f, ensure_ascii=False)
        redrawn = stats.get("redrawn", 0)
        note = f", {redrawn} stories redrawn because their facts did not fit" if redrawn else ""
        print(f"{task} {length}: {len(samples)} samples in {time.perf_counter() - start:.2f} s"
              f"{note} -> {out}", flush=True)
  except (DataError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # a full or failing disk while writing
    print(f"error: --output-dir {args.output_dir}: {e.strerror or e} ({e.filename})",
          file=sys.stderr)
    return 1
  return 0


def _check_output_dir(path: str) -> None:
  """--output-dir is (or can become) a writable folder; checked before generating."""
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise DataError(f"--output-dir {path}: {existing} is a file, expected a folder")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise DataError(f"--output-dir {path}: {existing} is not writable")
