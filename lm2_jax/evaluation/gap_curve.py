"""How long a fact survives in the memory: the inserted-gap curve.

Gap curve. Each sample is a bAbI story's facts, then `gap` segments of background text, then
the question (`make_sample(..., gap=...)`): with attention_scope=segment, a fact can reach
the question only through the memory once the gap exceeds a segment. Answers are generated
freely and scored like BABILong (`evaluate_babilong`), so a cell here and a BABILong cell mean
the same thing. The same story indices are used at every gap, so the curve compares like
with like.

The memory's statistics per segment index (lm2_jax/model/trace.py) explain a curve: what
was kept per write, how large the memory grew, how alike its slots became.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lm2_jax.data import babilong as bl
from lm2_jax.evaluation.babilong import GenerateFn, evaluate_babilong
from lm2_jax.evaluation.report import EvaluationError, format_table, percent


def gap_label(segments: int) -> str:
  return f"+{segments}"


def gap_samples(segment_len: int, num_samples: int, *, seed: int = 0, tokenizer=None,
                haystack=None) -> Callable[[str, str], list[dict]]:
  """samples(task, label) for `evaluate_babilong`: label "+g" inserts g segments."""

  def samples(task: str, label: str) -> list[dict]:
    gap = int(label.lstrip("+")) * segment_len
    return [bl.make_sample(task, "0k", i, seed, tokenizer, haystack, split="gap", gap=gap)
            for i in range(num_samples)]

  return samples


def evaluate_gap_curve(generate: GenerateFn, tasks: Sequence[str], gaps: Sequence[int],
                       segment_len: int, num_samples: int, *, seed: int = 0, tokenizer=None,
                       haystack=None, batch_size: int = 8,
                       predictions_dir: str | None = None) -> dict:
  """{task: {"+g": cell}} with the cells of `evaluate_babilong` (accuracy, n, ci95, ...).

  With `predictions_dir`, each cell's answers go to `<task>_+<g>.csv` there, in eval.py's
  layout: two models probed with the same seed can be compared sample by sample
  (scripts/paired_compare.py), and a rerun reuses the answers already written.
  """
  if any(g < 0 for g in gaps):
    raise EvaluationError(f"gaps must be >= 0 segments, got {list(gaps)}")
  labels = [gap_label(g) for g in sorted(set(gaps))]
  return evaluate_babilong(generate, tasks, labels,
                           gap_samples(segment_len, num_samples, seed=seed,
                                       tokenizer=tokenizer, haystack=haystack),
                           batch_size=batch_size, predictions_dir=predictions_dir)


def format_gap_table(models: dict[str, dict]) -> str:
  """Rows model x task, columns the inserted gaps, accuracies in percent."""
  labels = sorted({g for r in models.values() for by in r.values() for g in by},
                  key=lambda x: int(x.lstrip("+")))
  rows = [[name, task] + [percent(by[g]["accuracy"]) if g in by else None for g in labels]
          for name, res in models.items() for task, by in res.items()]
  n = sorted({c["n"] for r in models.values() for by in r.values() for c in by.values()})
  return format_table(["model", "task"] + [f"{g} seg" for g in labels], rows,
                      f"Inserted-gap accuracy (%, free generation, {n[0]}"
                      f"{'' if len(n) == 1 else '-' + str(n[-1])} samples per cell)")
