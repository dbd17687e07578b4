"""Compare two models on the same held-out samples: accuracies and an exact McNemar test.

    python scripts/paired_compare.py runs/a/eval/A_predictions/A runs/b/eval/B_predictions/B

Each argument is a folder of `eval.py` predictions (`<task>_<length>.csv`), or several
joined by commas: one model per task (fine-tuned per task, as BABILong's baselines are)
scored as one, each folder giving its own task's files. Per file the
two hold in common, the script checks that both answered the same samples (target and
question row by row), then prints each model's accuracy with its 95% Wilson interval, the
samples only A got right and only B got right, and the two-sided exact McNemar p-value (a
binomial test of those discordant counts). Where two or more tasks share a length (or an
inserted gap), a row `all_<length>` pools their samples: the pairs are independent, so the
summed discordant counts take the same test. Paired, the test sees differences that the two
intervals, which ignore the pairing, still overlap on. This is how docs/results.md's
paired counts were computed.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lm2_jax.data import babilong as bl  # pylint: disable=wrong-import-position
from lm2_jax.evaluation.report import wilson_interval  # pylint: disable=wrong-import-position


def mcnemar_p(only_a: int, only_b: int) -> float:
  """Two-sided exact McNemar p-value: P(a split at least this uneven | fair coin)."""
  n = only_a + only_b
  if n == 0:
    return 1.0
  k = min(only_a, only_b)
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
  return min(1.0, 2 * tail)


def _rows(path: str) -> list[dict]:
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def prediction_files(spec: str) -> dict[str, str]:
  """File name -> path for a folder, or for several joined by commas that share no file."""
  files: dict[str, str] = {}
  for folder in spec.split(","):
    if not os.path.isdir(folder):
      raise ValueError(f"{folder}: not a folder of eval.py predictions")
    for name in os.listdir(folder):
      if not name.endswith(".csv"):
        continue
      if name in files:
        raise ValueError(f"{name} is in both {os.path.dirname(files[name])} and {folder}: "
                         "each file must come from one folder")
      files[name] = os.path.join(folder, name)
  return files


def compare(spec_a: str, spec_b: str) -> list[dict]:
  """One record per prediction file both sides hold (see `prediction_files`)."""
  out = []
  files_a, files_b = prediction_files(spec_a), prediction_files(spec_b)
  common = sorted(set(files_a) & set(files_b), key=lambda s: (s.split("_")[0], len(s), s))
  for name in common:
    task = name.split("_")[0]
    a, b = _rows(files_a[name]), _rows(files_b[name])
    n = min(len(a), len(b))
    for i, (ra, rb) in enumerate(zip(a[:n], b[:n])):
      if (ra["target"], ra["question"]) != (rb["target"], rb["question"]):
        raise SystemExit(f"{name}: row {i + 2} holds different samples in the two folders "
                         "(another seed or data?)")
    ok_a = [bl.compare_answers(r["target"], r["output"], r["question"], task, "official")
            for r in a[:n]]
    ok_b = [bl.compare_answers(r["target"], r["output"], r["question"], task, "official")
            for r in b[:n]]
    only_a = sum(x and not y for x, y in zip(ok_a, ok_b))
    only_b = sum(y and not x for x, y in zip(ok_a, ok_b))
    out.append({"file": name[:-4], "n": n, "a": sum(ok_a), "b": sum(ok_b),
                "only_a": only_a, "only_b": only_b, "p": mcnemar_p(only_a, only_b)})
  return out


def pooled(records: list[dict]) -> list[dict]:
  """One record per length (the file name after its task) that two or more tasks share."""
  groups: dict[str, list[dict]] = {}
  for r in records:
    groups.setdefault(r["file"].split("_", 1)[1], []).append(r)
  out = []
  for length, rs in groups.items():
    if len(rs) < 2:
      continue
    total = {k: sum(r[k] for r in rs) for k in ("n", "a", "b", "only_a", "only_b")}
    out.append({"file": f"all_{length}", **total,
                "p": mcnemar_p(total["only_a"], total["only_b"])})
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("a", help="model A's prediction folder (or folders, comma-separated)")
  parser.add_argument("b", help="model B's, the same way")
  args = parser.parse_args(argv)
  try:
    records = compare(args.a, args.b)
  except ValueError as e:
    print(e, file=sys.stderr)
    return 2
  if not records:
    print("A and B hold no prediction file in common", file=sys.stderr)
    return 2
  print("| cell | n | A (95% CI) | B (95% CI) | only A | only B | McNemar p |")
  print("|---|---|---|---|---|---|---|")
  for r in records + pooled(records):
    cells = []
    for k in ("a", "b"):
      lo, hi = wilson_interval(r[k], r["n"])
      cells.append(f"{100 * r[k] / r['n']:.1f} ({100 * lo:.1f}-{100 * hi:.1f})")
    print(f"| {r['file']} | {r['n']} | {cells[0]} | {cells[1]} | {r['only_a']} | "
          f"{r['only_b']} | {r['p']:.3g} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
