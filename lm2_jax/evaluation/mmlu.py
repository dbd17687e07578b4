"""MMLU evaluation: k-shot prompts scored by the next-token log-probabilities of A, B, C, D.

The model enters only as a `score` function (prompts -> [n, 4] scores of the four letters),
so the aggregation is tested with a fake model. Accuracies are micro-averaged (every question
counts once) overall, by subject, by the MMLU authors' four categories and by the LM2 paper's
four difficulty levels (Table 2), each with its question count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from lm2_jax.data import mmlu as mm
from lm2_jax.data.errors import DataError
from lm2_jax.evaluation.report import EvaluationError, PredictionLog, format_table, percent

ScoreFn = Callable[[list[str]], np.ndarray]
PREDICTION_COLUMNS = ("subject", "question", "answer", "prediction")


def load_questions(mmlu_dir: str, shots: int, limit: int | None = None):
  """(test questions, dev questions); `limit` keeps the first questions of each subject."""
  if shots < 0:
    raise EvaluationError(f"--shots must be >= 0, got {shots}")
  try:
    test = mm.load_mmlu(mmlu_dir, "test")
    dev = mm.load_mmlu(mmlu_dir, "dev") if shots else []
  except DataError as e:
    raise EvaluationError(str(e)) from None
  if not test:
    raise EvaluationError(f"{mmlu_dir}: the MMLU test split holds no questions")
  if limit is not None:
    seen: dict[str, int] = {}
    kept = []
    for q in test:
      seen[q["subject"]] = seen.get(q["subject"], 0) + 1
      if seen[q["subject"]] <= limit:
        kept.append(q)
    test = kept
  return test, dev


def category_of(subject: str) -> str:
  return mm.SUBJECT_CATEGORY.get(subject, "Other")


def aggregate(records: Sequence[dict]) -> dict:
  """records: {subject, correct: bool} -> overall / by_category / by_difficulty / by_subject."""

  def acc(rs):
    return {"accuracy": sum(r["correct"] for r in rs) / len(rs) if rs else None, "n": len(rs)}

  def group(key):
    out: dict[str, list] = {}
    for r in records:
      out.setdefault(key(r["subject"]), []).append(r)
    return out

  cats, diffs = group(category_of), group(mm.subject_difficulty)
  return {
      "overall": acc(records),
      "by_category": {c: acc(cats.get(c, [])) for c in mm.CATEGORIES},
      "by_difficulty": {d: acc(diffs.get(d, [])) for d in mm.DIFFICULTIES},
      "by_subject": {s: acc(rs) for s, rs in sorted(group(lambda s: s).items())},
  }


def evaluate_mmlu(score: ScoreFn, test: Sequence[dict], dev: Sequence[dict], *, shots: int = 5,
                  fits: Callable[[str], bool] = lambda text: True,
                  predictions_path: str | None = None, batch_size: int = 8,
                  progress: Callable[[int], None] | None = None) -> dict:
  """Score every test question; the report of `aggregate`. Resumes from `predictions_path`."""
  log = PredictionLog(predictions_path, PREDICTION_COLUMNS) if predictions_path else None
  done = log.rows() if log else []
  if len(done) > len(test) or any(
      r["subject"] != q["subject"] or r["question"] != q["question"]
      for r, q in zip(done, test)):
    raise EvaluationError(f"{predictions_path}: the predictions there belong to other "
                          "questions; move the file away or choose another --output")
  preds = [int(r["prediction"]) for r in done]
  if progress is not None and done:
    progress(len(done))
  for start in range(len(done), len(test), batch_size):
    batch = test[start:start + batch_size]
    prompts = [mm.format_mmlu_prompt(dev, q, shots, fits) for q in batch]
    scores = np.asarray(score(prompts))
    if scores.shape != (len(batch), 4):
      raise EvaluationError(f"the scorer returned shape {scores.shape} for {len(batch)} "
                            "questions; expected [n, 4]")
    new = [int(i) for i in np.argmax(scores, axis=-1)]
    if log is not None:
      log.append([[q["subject"], q["question"], q["answer"], p] for q, p in zip(batch, new)])
    preds += new
    if progress is not None:
      progress(len(batch))
  records = [{"subject": q["subject"], "correct": p == q["answer"]} for q, p in zip(test, preds)]
  return aggregate(records)


def letter_ids(tokenizer) -> tuple[list[int], list[int]]:
  """(shared prefix ids, one id per letter) of the continuations " A" .. " D".

  With the byte tokenizer the four share the space, which is appended to the prompt, and the
  letters differ by one token; a tokenizer that needs several tokens for a letter is refused.
  """
  conts = [tokenizer.encode(" " + letter) for letter in mm.LETTERS]
  k = 0
  while all(len(c) > k for c in conts) and len({c[k] for c in conts}) == 1:
    k += 1
  rest = [c[k:] for c in conts]
  if any(len(r) != 1 for r in rest):
    raise EvaluationError(f"tokenizer {tokenizer!r}: the answers ' A'..' D' are not single "
                          f"tokens after a shared prefix ({conts}); cannot score by the next "
                          "token")
  return conts[0][:k], [r[0] for r in rest]


def engine_scorer(engine, tokenizer) -> ScoreFn:
  """Next-token log-probabilities of the letters A-D after each prompt (and the shared prefix)."""
  prefix, ids = letter_ids(tokenizer)

  def score(prompts: list[str]) -> np.ndarray:
    rows = [engine.encode(p) + prefix for p in prompts]
    return engine.next_token_logprobs(rows, ids)

  return score


def format_table2(models: dict[str, dict]) -> str:
  """The paper's Table 2 layout: a row per model; categories, difficulty levels, average."""
  header = ["model"] + list(mm.CATEGORIES) + list(mm.DIFFICULTIES) + ["Average"]
  rows, counts = [], None
  for name, rep in models.items():
    cells = [percent(rep["by_category"][c]["accuracy"]) for c in mm.CATEGORIES]
    cells += [percent(rep["by_difficulty"][d]["accuracy"]) for d in mm.DIFFICULTIES]
    rows.append([name] + cells + [percent(rep["overall"]["accuracy"])])
    counts = (["n"] + [rep["by_category"][c]["n"] for c in mm.CATEGORIES]
              + [rep["by_difficulty"][d]["n"] for d in mm.DIFFICULTIES]
              + [rep["overall"]["n"]])
  return format_table(header, rows + [counts],
                      "MMLU accuracy (%, micro-averaged; last row: questions per column)")


CSV_COLUMNS = ("model", "group", "name", "accuracy", "n")


def csv_rows(models: dict[str, dict]) -> list[list]:
  """The results table, flat: overall, then by category, difficulty and subject (CSV_COLUMNS)."""
  rows = []
  for name, rep in models.items():
    rows.append([name, "overall", "all", rep["overall"]["accuracy"], rep["overall"]["n"]])
    for group in ("by_category", "by_difficulty", "by_subject"):
      rows += [[name, group[3:], k, v["accuracy"], v["n"]] for k, v in rep[group].items()]
  return rows


def predictions_file(predictions_dir: str) -> str:
  return os.path.join(predictions_dir, "mmlu.csv")
