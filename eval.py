"""Evaluate LM2 checkpoints: BABILong, MMLU, perplexity per segment, memory read maps.

    python eval.py --checkpoint runs/demo --task babilong --tasks qa1,qa2 \
        --lengths 0k,1k,4k,16k --num-samples 20 --output runs/demo/eval/babilong.json

Everything happens in `lm2_jax.evaluation.runner.run`; this file parses the command line
into an `EvalConfig`. Bad input prints one line naming the flag, file or key and exits with
status 2; nothing is written before every input has been checked. docs/evaluation.md
describes every task, option and output file.
"""

import argparse
import sys

from lm2_jax.cli import OneLineParser
from lm2_jax.evaluation.config import MAX_LENGTH, TASKS, EvalConfig


def build_parser() -> argparse.ArgumentParser:
  p = OneLineParser(prog="python eval.py", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", action="append", required=True,
                 help="a training work directory (its latest checkpoint) or one step's "
                      "directory <workdir>/checkpoints/<step>; repeat to compare models")
  p.add_argument("--config", action="append", default=[],
                 help="YAML config, once for all checkpoints or once per checkpoint "
                      "(default: each work directory's config.yaml)")
  p.add_argument("--name", action="append", default=[],
                 help="a name per checkpoint for the tables (default: the work directory's)")
  p.add_argument("--task", required=True, help="|".join(TASKS))
  p.add_argument("--output", required=True, help="the results JSON; other files sit next to it")
  p.add_argument("--tokenizer", help="byte | tokenizer.json | .model (default: the work "
                 "directory's tokenizer.json, else the config's data.tokenizer, else byte)")
  p.add_argument("--batch-size", type=int, default=8, help="prompts per compiled call")
  p.add_argument("--limit", type=int, help="quick look: at most this many samples per task "
                 "and length (babilong), questions per subject (mmlu) or sequences (perplexity)")
  p.add_argument("--seed", type=int, default=0, help="sample generation seed")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  g = p.add_argument_group("babilong")
  g.add_argument("--tasks", help="e.g. qa1,qa2 (default: the tasks the config trains on, "
                 "else qa1-qa5)")
  g.add_argument("--lengths", help="e.g. 0k,1k,4k,16k (default: 0k, 1k, 2k, ... up to 4x the "
                 "training length)")
  g.add_argument("--num-samples", type=int, default=100, help="samples per task and length")
  g.add_argument("--allow-long", action="store_true",
                 help=f"accept lengths above {MAX_LENGTH // 1_000_000}M tokens and a memory "
                      "estimate above the host's available memory")
  g.add_argument("--data", default="generate",
                 help="babilong: 'generate' or a folder in the published layout; perplexity: "
                      "'generate', text files/folders, token shards or tfds:NAME")
  g.add_argument("--haystack", default="default", help="background text for generated "
                 "samples: default | a folder of .txt | pg19:DIR")
  g.add_argument("--prompt", help="babilong: compact (default) | full; memory-map: the prompt "
                 "text (default: a qa1 story in the compact template)")
  g.add_argument("--max-new-tokens", type=int, default=16, help="babilong answer length cap")
  g = p.add_argument_group("mmlu")
  g.add_argument("--mmlu-dir", help="MMLU in the original CSV or the parquet layout")
  g.add_argument("--shots", type=int, default=5)
  g.add_argument("--max-prompt-tokens", type=int,
                 help="drop shots until the prompt has at most this many tokens")
  g = p.add_argument_group("perplexity")
  g.add_argument("--seq-len", type=int, help="predictions per sequence (default: 8 segments)")
  g.add_argument("--num-sequences", type=int, default=16)
  p.add_argument("overrides", nargs="*", help="dotted key=value config overrides, e.g. "
                 "model.attention_scope=full; mesh.data=8 (mesh.* as for train.py) evaluates "
                 "on a device mesh")
  return p


def parse_args(argv=None) -> EvalConfig:
  """The command line as an EvalConfig (checked by the runner, which says which flag is bad)."""
  a = build_parser().parse_args(argv)
  items = lambda text: tuple(text.split(",")) if text else ()
  return EvalConfig(
      checkpoints=tuple(a.checkpoint), task=a.task, output=a.output, configs=tuple(a.config),
      names=tuple(a.name), overrides=tuple(a.overrides), tokenizer=a.tokenizer,
      batch_size=a.batch_size, limit=a.limit, seed=a.seed, progress=not a.no_progress,
      tasks=items(a.tasks), lengths=items(a.lengths), num_samples=a.num_samples,
      allow_long=a.allow_long, data=a.data, haystack=a.haystack, prompt=a.prompt,
      max_new_tokens=a.max_new_tokens, mmlu_dir=a.mmlu_dir, shots=a.shots,
      max_prompt_tokens=a.max_prompt_tokens, seq_len=a.seq_len,
      num_sequences=a.num_sequences)


def main(argv=None) -> int:
  cfg = parse_args(argv)
  from lm2_jax.evaluation.runner import ERRORS, run  # pylint: disable=g-import-not-at-top
  try:
    run(cfg)
  except ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted: run the same command again to resume from the predictions written "
          "so far", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
