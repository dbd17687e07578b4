"""The inserted-gap probe (lm2_jax/evaluation/gap_curve.py)."""

import csv

import jax
import numpy as np

from lm2_jax.data.babilong import compare_answers
from lm2_jax.evaluation import gap_curve


def test_gap_curve_scores_free_answers_at_each_gap():
  prompts_seen = {}

  def oracle(prompts):  # answers from the prompt's own facts: right at every gap
    out = []
    for p in prompts:
      prompts_seen.setdefault(len(prompts_seen), len(p))
      context, question = p.split(" Question: ")
      actor = question.split()[2].rstrip("?")
      room = [s.split()[-1].rstrip(".") for s in context.split(". ")
              if s.startswith(actor + " ") and " the " in s][-1]
      out.append(room)
    return out

  res = gap_curve.evaluate_gap_curve(oracle, ["qa1"], [0, 2, 8], segment_len=32,
                                     num_samples=6, seed=1)
  assert list(res["qa1"]) == ["+0", "+2", "+8"]
  assert all(c["accuracy"] == 1.0 and c["n"] == 6 for c in res["qa1"].values())
  fixed = gap_curve.evaluate_gap_curve(lambda ps: ["kitchen"] * len(ps), ["qa1"], [0, 8], 32,
                                       6, seed=1)
  samples = gap_curve.gap_samples(32, 6, seed=1)("qa1", "+8")
  expected = np.mean([compare_answers(s["target"], "kitchen", s["question"], "qa1")
                      for s in samples])
  assert fixed["qa1"]["+8"]["accuracy"] == expected
  longer = [len(s["input"]) for s in samples]
  shorter = [len(s["input"]) for s in gap_curve.gap_samples(32, 6, seed=1)("qa1", "+0")]
  assert all(a - b > 8 * 32 - 20 for a, b in zip(longer, shorter))
  assert "+8 seg" in gap_curve.format_gap_table({"oracle": res})


def test_gap_curve_writes_each_cells_answers_and_a_rerun_reuses_them(tmp_path):
  answers = iter(["kitchen", "garden", "office"] * 10)
  res = gap_curve.evaluate_gap_curve(lambda ps: [next(answers) for _ in ps], ["qa1"], [0, 4],
                                     32, 5, seed=2, predictions_dir=str(tmp_path))
  samples = gap_curve.gap_samples(32, 5, seed=2)("qa1", "+4")
  with open(tmp_path / "qa1_+4.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [r["target"] for r in rows] == [s["target"] for s in samples]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["qa1_+0.csv", "qa1_+4.csv"]

  def must_not_run(prompts):
    raise AssertionError(f"asked again for {len(prompts)} answers")

  again = gap_curve.evaluate_gap_curve(must_not_run, ["qa1"], [0, 4], 32, 5, seed=2,
                                       predictions_dir=str(tmp_path))
  assert again == res
