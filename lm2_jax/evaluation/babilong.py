"""BABILong evaluation: answers generated for each task and length, scored two ways, tabulated.

The model enters only as a `generate` function (prompts -> output texts), so the whole
evaluation runs as well with a fake model (tests) as with `Engine`. For every task and length:
accuracy under the published rule and under the whole-word rule
(`lm2_jax.data.babilong.compare_answers`), the sample count, and a 95% Wilson interval.

Per-sample predictions go to `<predictions_dir>/<task>_<length>.csv` with the published
evaluations' columns `target,output,question`, one row per sample in sample order; a rerun
after an interruption reuses the rows already there and generates only the rest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from lm2_jax.data import babi
from lm2_jax.data import babilong as bl
from lm2_jax.data.errors import DataError
from lm2_jax.evaluation.report import (EvaluationError, PredictionLog, format_table, percent,
                                       wilson_interval)

GenerateFn = Callable[[list[str]], list[str]]
PREDICTION_COLUMNS = ("target", "output", "question")
LONG = 8000  # the paper averages over the lengths of at least 8k tokens

# Our reading of the capability groups of the LM2 paper's Figure 3: which tasks feed each
# axis of the radar chart (a group's score is the mean accuracy of its evaluated tasks).
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "single-step": ("qa1",),                 # one supporting fact
    "multi-step": ("qa2", "qa3"),            # two and three supporting facts
    "relation tracking": ("qa4", "qa5"),     # two- and three-argument relations
    "basic queries": ("qa6", "qa7", "qa8"),  # yes/no questions, counting, lists
    "negation & uncertainty": ("qa9", "qa10"),  # simple negation, indefinite knowledge
}


def parse_tasks(text: str | Sequence[str]) -> list[str]:
  """'qa1,qa2' -> ['qa1', 'qa2']; an unknown name raises EvaluationError naming it."""
  items = text.split(",") if isinstance(text, str) else list(text)
  tasks = [t.strip() for t in items if t.strip()]
  if not tasks:
    raise EvaluationError("--tasks: no task given; expected names such as qa1,qa2")
  for t in tasks:
    if t not in babi.TASKS:
      raise EvaluationError(f"--tasks: unknown task {t!r}; expected some of "
                            f"{', '.join(babi.TASKS)}")
  return list(dict.fromkeys(tasks))


def parse_lengths(text: str | Sequence[str]) -> list[str]:
  """'0k,4k,128k' -> the published names, sorted by length; a bad one raises EvaluationError."""
  items = text.split(",") if isinstance(text, str) else [str(x) for x in text]
  names = []
  for item in (x.strip() for x in items):
    if not item:
      continue
    try:
      tokens = bl.parse_length(item)
      bl.input_budget(tokens)
    except ValueError as e:
      raise EvaluationError(f"--lengths: {e}") from None
    names.append(bl.length_name(tokens))
  if not names:
    raise EvaluationError("--lengths: no length given; expected e.g. 0k,1k,4k")
  return sorted(dict.fromkeys(names), key=bl.parse_length)


def default_lengths(train_seq_len: int, factor: int = 4) -> list[str]:
  """0k, 1k, 2k, 4k, ... up to the first length of at least `factor` x the training length."""
  out, k = ["0k"], 1
  while True:
    out.append(f"{k}k")
    if k * 1000 >= factor * train_seq_len and k >= 4:
      return out
    k *= 2


class SampleSource:
  """The samples of each (task, length): generated (deterministic in the seed) or read from
  a folder in the published layout. `check()` finds a missing or empty file before any
  model runs."""

  def __init__(self, data: str = "generate", num_samples: int = 100, *, seed: int = 0,
               tokenizer=None, haystack=None):
    if num_samples < 1:
      raise EvaluationError(f"--num-samples must be >= 1, got {num_samples}")
    if data != "generate" and not os.path.isdir(data):
      raise EvaluationError(f"--data {data}: not a folder (expected 'generate' or a folder in "
                            "the published BABILong layout)")
    self.data, self.num_samples, self.seed = data, num_samples, seed
    self.tokenizer, self.haystack = tokenizer, haystack

  def __call__(self, task: str, length: str) -> list[dict]:
    if self.data == "generate":
      return [bl.make_sample(task, length, i, self.seed, self.tokenizer, self.haystack)
              for i in range(self.num_samples)]
    samples = bl.load_babilong_dir(self.data, task, length)
    if not samples:
      raise EvaluationError(f"{self.data}: the BABILong file for {task} {length} holds no "
                            "samples")
    return samples[:self.num_samples]

  def check(self, tasks: Iterable[str], lengths: Iterable[str]):
    if self.data == "generate":
      return
    for task in tasks:
      for length in lengths:
        try:
          self(task, length)
        except DataError as e:
          raise EvaluationError(str(e)) from None


def _cell(correct: int, correct_word: int, n: int) -> dict:
  return {"accuracy": correct / n if n else None,
          "accuracy_word": correct_word / n if n else None, "n": n,
          "ci95": list(wilson_interval(correct, n)),
          "ci95_word": list(wilson_interval(correct_word, n))}


def score_rows(rows: Sequence[dict], task: str) -> dict:
  """The result cell of one task and length from prediction rows (target, output, question)."""
  ok = sum(bl.compare_answers(r["target"], r["output"], r["question"], task, "official")
           for r in rows)
  ok_word = sum(bl.compare_answers(r["target"], r["output"], r["question"], task, "word")
                for r in rows)
  return _cell(ok, ok_word, len(rows))


def evaluate_babilong(generate: GenerateFn, tasks: Sequence[str], lengths: Sequence[str],
                      samples: Callable[[str, str], list[dict]], *, prompt: str = "compact",
                      predictions_dir: str | None = None, batch_size: int = 8,
                      progress: Callable[[int], None] | None = None) -> dict:
  """{task: {length: {"accuracy", "accuracy_word", "n", "ci95", "ci95_word"}}}.

  `samples(task, length)` gives the samples; `prompt` is "compact" (our training template)
  or "full" (the published evaluation layout). With `predictions_dir`, rows already in its
  CSV files are reused (they must belong to the same samples) and new ones are appended
  batch by batch. `progress(k)` is told how many samples each batch (or reuse) finished.
  """
  if prompt not in ("compact", "full"):
    raise EvaluationError(f"--prompt {prompt!r}: expected 'compact' or 'full' for babilong")
  results: dict[str, dict[str, dict]] = {}
  for task in tasks:
    for length in lengths:
      items = samples(task, length)
      log = None
      rows: list[dict] = []
      if predictions_dir is not None:
        log = PredictionLog(os.path.join(predictions_dir, f"{task}_{length}.csv"),
                            PREDICTION_COLUMNS)
        rows = log.rows()[:len(items)]  # a run with fewer samples reuses the first ones
        if any(r["target"] != s["target"] or r["question"] != s["question"]
               for r, s in zip(rows, items)):
          raise EvaluationError(f"{log.path}: the predictions there belong to other samples; "
                                "move the file away or choose another --output")
        if progress is not None and rows:
          progress(len(rows))
      for start in range(len(rows), len(items), batch_size):
        batch = items[start:start + batch_size]
        outputs = generate([bl.format_prompt(s, task, prompt) for s in batch])
        if len(outputs) != len(batch):
          raise EvaluationError(f"the model returned {len(outputs)} outputs for "
                                f"{len(batch)} prompts")
        new = [{"target": s["target"], "output": o.strip(), "question": s["question"]}
               for s, o in zip(batch, outputs)]
        if log is not None:
          log.append([[r[c] for c in PREDICTION_COLUMNS] for r in new])
        rows += new
        if progress is not None:
          progress(len(batch))
      results.setdefault(task, {})[length] = score_rows(rows, task)
  return results


def _mean(xs: Iterable[float | None]) -> float | None:
  xs = [x for x in xs if x is not None]
  return sum(xs) / len(xs) if xs else None


def summarize(results: dict) -> dict:
  """Averages the paper reports: per task over all lengths and over lengths >= 8k, per length
  over tasks, and the capability groups (mean over lengths, then over a group's tasks)."""
  per_task = {}
  for task, by_len in results.items():
    long = [c["accuracy"] for length, c in by_len.items() if bl.parse_length(length) >= LONG]
    per_task[task] = {"all": _mean(c["accuracy"] for c in by_len.values()),
                      "ge_8k": _mean(long) if long else None}
  lengths = sorted({length for by_len in results.values() for length in by_len},
                   key=bl.parse_length)
  per_length = {length: _mean(results[t][length]["accuracy"] for t in results
                              if length in results[t]) for length in lengths}
  capabilities = {group: _mean(per_task[t]["all"] for t in members if t in per_task)
                  for group, members in CAPABILITIES.items()}
  return {"per_task": per_task, "per_length": per_length, "capabilities": capabilities}


CSV_COLUMNS = ("model", "task", "length", "accuracy", "accuracy_word", "n", "ci95_low",
               "ci95_high")


def csv_rows(models: dict[str, dict]) -> list[list]:
  """The results table, flat: one row per model, task and length (CSV_COLUMNS)."""
  return [[name, t, x, c["accuracy"], c["accuracy_word"], c["n"], *c["ci95"]]
          for name, res in models.items() for t, by in res.items() for x, c in by.items()]


def format_table1(models: dict[str, dict], title: str = "") -> str:
  """The paper's Table 1 layout: rows tasks (one per model when there are several), columns
  lengths and the average over lengths >= 8k, accuracies in percent (official rule)."""
  names = list(models)
  tasks = list(dict.fromkeys(t for r in models.values() for t in r))
  lengths = sorted({length for r in models.values() for by in r.values() for length in by},
                   key=bl.parse_length)
  has_long = any(bl.parse_length(x) >= LONG for x in lengths)
  several = len(names) > 1
  header = ["task"] + (["model"] if several else []) + lengths + (
      ["avg>=8k"] if has_long else []) + ["avg"]
  rows = []
  for task in tasks + ["avg"]:
    for name in names:
      res = models[name]
      summary = summarize(res)
      if task == "avg":
        cells = [percent(summary["per_length"].get(x)) for x in lengths]
        long = _mean(summary["per_task"][t]["ge_8k"] for t in res)
        avg = _mean(summary["per_task"][t]["all"] for t in res)
      else:
        by = res.get(task, {})
        cells = [percent(by[x]["accuracy"]) if x in by else None for x in lengths]
        long = summary["per_task"].get(task, {}).get("ge_8k")
        avg = summary["per_task"].get(task, {}).get("all")
      rows.append([task] + ([name] if several else []) + cells + (
          [percent(long)] if has_long else []) + [percent(avg)])
  n = sorted({c["n"] for r in models.values() for by in r.values() for c in by.values()})
  counts = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
  title = title or (f"BABILong accuracy (%, published rule; {counts} samples per cell; "
                    "95% intervals and the word rule in the JSON)")
  return format_table(header, rows, title)
