"""Sort a qa1 model's answers into classes: correct, stale, another actor's room, ...

    python scripts/answer_analysis.py runs/x/eval/babilong_predictions/lm2_step600 [more dirs]

Reads the per-sample predictions `eval.py` writes (`<dir>/qa1_<length>.csv` and the
`settings.json` beside them), rebuilds the same samples (a pure function of task, length,
index and seed) and prints, per length, the classes of `lm2_jax.evaluation.answer_classes`
and its accuracy splits, each with n and a 95% interval. This is how the binding analysis
of docs/results.md was measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lm2_jax.config import load_config  # pylint: disable=wrong-import-position
from lm2_jax.data import babilong as bl  # pylint: disable=wrong-import-position
from lm2_jax.data.tokenizers import load_tokenizer  # pylint: disable=wrong-import-position
from lm2_jax.evaluation import answer_classes as ac  # pylint: disable=wrong-import-position


def analyse_dir(path: str, segment_len: int | None = None) -> dict:
  """{length: summary} for every qa1_<length>.csv in one prediction folder."""
  with open(os.path.join(path, "settings.json"), encoding="utf-8") as f:
    settings = json.load(f)
  if settings.get("data") != "generate":
    raise ValueError(f"{path}: only generated samples can be rebuilt, this folder holds "
                     f"data={settings.get('data')!r}")
  cfg = load_config(os.path.join(settings["checkpoint"], "config.yaml"))
  segment_len = segment_len or cfg.model.segment_len
  tokenizer = load_tokenizer(cfg.data.tokenizer)   # lengths count this tokenizer's tokens
  result = {}
  for name in sorted(os.listdir(path), key=lambda s: (len(s), s)):
    m = re.fullmatch(r"qa1_(\w+)\.csv", name)
    if not m:
      continue
    with open(os.path.join(path, name), encoding="utf-8", newline="") as f:
      preds = list(csv.DictReader(f))
    rows = []
    for i, p in enumerate(preds):
      sample = bl.make_sample("qa1", m.group(1), i, settings.get("seed", 0), tokenizer,
                              settings.get("haystack", "default"))
      if (sample["question"], sample["target"]) != (p["question"], p["target"]):
        raise ValueError(f"{path}/{name} row {i}: not the sample its settings rebuild")
      rows.append(ac.classify(sample, p["output"], segment_len,
                              None if cfg.data.tokenizer == "byte" else tokenizer))
    result[m.group(1)] = ac.summarize(rows)
  return result


def _pct(c: dict) -> str:
  if c["rate"] is None:
    return "-"
  lo, hi = c["ci95"]
  return f"{100 * c['rate']:.0f} ({100 * lo:.0f}-{100 * hi:.0f}, n={c['n']})"


def _split(cells: dict) -> str:
  return ", ".join(f"{k}: {_pct(v)}" for k, v in cells.items())


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("dirs", nargs="+", help="prediction folders written by eval.py")
  p.add_argument("--output", help="write the analysis as JSON here")
  p.add_argument("--segment-len", type=int,
                 help="default: the segment length of the checkpoint named in settings.json")
  args = p.parse_args(argv)
  everything = {}
  for d in args.dirs:
    if not os.path.isfile(os.path.join(d, "settings.json")):
      print(f"{d}: no settings.json (expected a folder of eval.py predictions)", file=sys.stderr)
      return 2
    try:
      everything[d] = res = analyse_dir(d, args.segment_len)
    except (OSError, ValueError) as e:
      print(f"{d}: {e}", file=sys.stderr)
      return 2
    print(f"== {d}")
    for length, a in res.items():
      print(f"{length:>5}  " + " | ".join(f"{c} {_pct(a['classes'][c])}" for c in ac.CLASSES))
      print(f"       by facts after the support: {_split(a['accuracy_by_facts_after_support'])}")
      print(f"       by facts in the story: {_split(a['accuracy_by_story_facts'])}")
      print(f"       by moves of the asked actor: {_split(a['accuracy_by_moves_of_actor'])}; "
            f"support split across segments: {_split(a['accuracy_by_support_split'])}; "
            f"question split: {_split(a['accuracy_by_question_split'])}")
      print(f"       answers the last fact's room {_pct(a['answers_last_room'])} (it is the "
            f"target in {_pct(a['target_is_last_room'])}); top answers "
            f"{a['most_common_answers']}")
  if args.output:
    with open(args.output, "w", encoding="utf-8") as f:
      json.dump(everything, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
