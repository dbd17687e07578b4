"""BABILong evaluation end to end on generated samples, with fake models whose answers are
always right or always wrong; resuming from the predictions; the Table 1 layout."""

import csv

import pytest

from lm2_jax.data import babilong as bl
from lm2_jax.evaluation import babilong as ev
from lm2_jax.evaluation.report import EvaluationError, PredictionLog, wilson_interval

TASKS, LENGTHS = ["qa1", "qa6"], ["0k", "1k"]
WRONG = {"qa1": "bathroom", "qa6": "no"}


def _answers(source):
  """prompt -> target for every sample the evaluation will ask about."""
  table = {}
  for task in TASKS:
    for length in LENGTHS:
      for s in source(task, length):
        table[bl.format_prompt(s, task, "compact")] = (task, s["target"])
  return table


def _fake(answers, right: bool, calls: list):
  def generate(prompts):
    calls.append(len(prompts))
    out = []
    for p in prompts:
      task, target = answers[p]
      wrong = WRONG[task] if target != WRONG[task] else ("kitchen" if task == "qa1" else "yes")
      # A trained model answers after the template's "Answer:" with a space, then stops.
      out.append(" " + (target if right else wrong))
    return out
  return generate


@pytest.mark.parametrize("right", [True, False])
def test_right_and_wrong_models_score_one_and_zero(tmp_path, right):
  source = ev.SampleSource("generate", 3, seed=1)
  calls = []
  results = ev.evaluate_babilong(_fake(_answers(source), right, calls), TASKS, LENGTHS, source,
                                 predictions_dir=str(tmp_path), batch_size=2)
  for task in TASKS:
    for length in LENGTHS:
      cell = results[task][length]
      assert cell["n"] == 3
      assert cell["accuracy"] == cell["accuracy_word"] == (1.0 if right else 0.0)
      assert cell["ci95"] == pytest.approx(list(wilson_interval(3 if right else 0, 3)))
      with open(tmp_path / f"{task}_{length}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
      assert list(rows[0]) == ["target", "output", "question"]
      assert [r["target"] for r in rows] == [s["target"] for s in source(task, length)]
  assert sum(calls) == 3 * len(TASKS) * len(LENGTHS) and max(calls) == 2


class _Interrupted(Exception):
  pass


def test_an_interrupted_evaluation_resumes_where_it_stopped(tmp_path):
  source = ev.SampleSource("generate", 4, seed=2)
  answers = _answers(source)
  calls = []
  right = _fake(answers, True, calls)

  def dies_after_three_batches(prompts):
    if len(calls) == 3:
      raise _Interrupted
    return right(prompts)

  with pytest.raises(_Interrupted):
    ev.evaluate_babilong(dies_after_three_batches, TASKS, LENGTHS, source,
                         predictions_dir=str(tmp_path), batch_size=2)
  # A row cut short by the interruption is dropped on reopening.
  with open(tmp_path / "qa1_1k.csv", "a") as f:
    f.write('kitchen,"half a ro')
  calls.clear()
  progress = []
  results = ev.evaluate_babilong(right, TASKS, LENGTHS, source, predictions_dir=str(tmp_path),
                                 batch_size=2, progress=progress.append)
  assert sum(calls) == 4 * 4 - 6  # three batches of two were kept
  assert sum(progress) == 16
  assert all(results[t][x]["accuracy"] == 1.0 and results[t][x]["n"] == 4
             for t in TASKS for x in LENGTHS)
  assert len(PredictionLog(str(tmp_path / "qa1_1k.csv"), ev.PREDICTION_COLUMNS).rows()) == 4
  # Predictions of other samples are refused rather than mixed in.
  with pytest.raises(EvaluationError, match="other samples"):
    ev.evaluate_babilong(right, TASKS, LENGTHS, ev.SampleSource("generate", 4, seed=3),
                         predictions_dir=str(tmp_path))


def test_samples_from_a_published_folder(tmp_path):
  bl.main(["--tasks", "qa1", "--lengths", "0k", "--num-samples", "2", "--output-dir",
           str(tmp_path)])
  source = ev.SampleSource(str(tmp_path), 5)
  assert source("qa1", "0k") == [bl.make_sample("qa1", "0k", i, 0) for i in range(2)]
  (tmp_path / "qa1" / "1k.json").write_text("[]")
  with pytest.raises(EvaluationError, match="holds no samples"):
    source.check(["qa1"], ["0k", "1k"])
  with pytest.raises(EvaluationError, match="no BABILong data for qa1 2k"):
    source.check(["qa1"], ["2k"])


def test_parsing_and_the_table_1_layout():
  assert ev.parse_lengths("16k, 0k,1k,1000") == ["0k", "1k", "16k"]
  with pytest.raises(EvaluationError, match="--lengths: bad length '4x'"):
    ev.parse_lengths("0k,4x")
  with pytest.raises(EvaluationError, match="unknown task 'qa99'"):
    ev.parse_tasks("qa1,qa99")
  assert ev.default_lengths(1024) == ["0k", "1k", "2k", "4k", "8k"]

  def cell(acc):
    return {"accuracy": acc, "accuracy_word": acc, "n": 10, "ci95": [0, 1]}

  lm2 = {"qa1": {"0k": cell(1.0), "8k": cell(0.5), "16k": cell(0.3)},
         "qa2": {"0k": cell(0.8), "8k": cell(0.2), "16k": cell(0.0)}}
  base = {"qa1": {"0k": cell(0.6), "8k": cell(0.1), "16k": cell(0.1)}}
  table = ev.format_table1({"lm2": lm2, "base": base})
  lines = table.splitlines()
  assert lines[1].split() == ["task", "model", "0k", "8k", "16k", "avg>=8k", "avg"]
  assert lines[3].split() == ["qa1", "lm2", "100.0", "50.0", "30.0", "40.0", "60.0"]
  assert lines[4].split() == ["qa1", "base", "60.0", "10.0", "10.0", "10.0", "26.7"]
  assert lines[5].split()[:2] == ["qa2", "lm2"] and lines[6].split()[2:] == ["-"] * 5
  assert lines[7].split() == ["avg", "lm2", "90.0", "35.0", "15.0", "25.0", "46.7"]
  summary = ev.summarize(lm2)
  assert summary["capabilities"]["single-step"] == pytest.approx(0.6)
  assert summary["capabilities"]["multi-step"] == pytest.approx(1.0 / 3)
  assert summary["capabilities"]["basic queries"] is None
  assert sorted(t for ts in ev.CAPABILITIES.values() for t in ts) == sorted(bl.TASKS)
