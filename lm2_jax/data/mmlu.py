"""MMLU: loaders for the original CSV and the parquet layouts, subject maps, the k-shot prompt.

Both subject maps live here: ``SUBJECT_CATEGORY`` is the MMLU authors' grouping of the 57
subjects into STEM, Humanities, Social Sciences and Other; ``subject_difficulty`` is the
grouping of the LM2 paper's Table 2 (High School, College, Professional, General Knowledge).
Nothing here ships MMLU questions: users supply the files.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Callable, Sequence

from lm2_jax.data.errors import DataError

LETTERS = ("A", "B", "C", "D")
CATEGORIES = ("STEM", "Humanities", "Social Sciences", "Other")
DIFFICULTIES = ("High School", "College", "Professional", "General Knowledge")

# The MMLU authors' map (subject -> subcategory -> category), flattened.
_STEM = """abstract_algebra astronomy college_biology college_chemistry college_computer_science
college_mathematics college_physics computer_security conceptual_physics electrical_engineering
elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science
high_school_mathematics high_school_physics high_school_statistics machine_learning"""
_HUMANITIES = """formal_logic high_school_european_history high_school_us_history
high_school_world_history international_law jurisprudence logical_fallacies moral_disputes
moral_scenarios philosophy prehistory professional_law world_religions"""
_SOCIAL = """econometrics high_school_geography high_school_government_and_politics
high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality
professional_psychology public_relations security_studies sociology us_foreign_policy"""
_OTHER = """anatomy business_ethics clinical_knowledge college_medicine global_facts human_aging
management marketing medical_genetics miscellaneous nutrition professional_accounting
professional_medicine virology"""

SUBJECT_CATEGORY: dict[str, str] = {
    subject: category
    for category, names in (("STEM", _STEM), ("Humanities", _HUMANITIES),
                            ("Social Sciences", _SOCIAL), ("Other", _OTHER))
    for subject in names.split()
}
SUBJECTS = tuple(sorted(SUBJECT_CATEGORY))
assert len(SUBJECTS) == 57


def subject_difficulty(subject: str) -> str:
  """The LM2 paper's Table 2 level: high_school_* and elementary_mathematics are High School,
  college_* College, professional_* Professional, everything else General Knowledge."""
  if subject.startswith("high_school_") or subject == "elementary_mathematics":
    return "High School"
  if subject.startswith("college_"):
    return "College"
  if subject.startswith("professional_"):
    return "Professional"
  return "General Knowledge"


SUBJECT_DIFFICULTY: dict[str, str] = {s: subject_difficulty(s) for s in SUBJECTS}

_SPLIT_ALIASES = {"dev": ("dev",), "val": ("val", "validation"), "validation": ("val", "validation"),
                  "test": ("test",), "auxiliary_train": ("auxiliary_train",)}


def _record(question: str, choices: Sequence[str], answer: int, subject: str) -> dict:
  return {"question": question, "choices": list(choices), "answer": answer, "subject": subject}


def _load_csv(path: str, subject: str) -> list[dict]:
  out = []
  try:
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.reader(f)
      for row in reader:
        line = reader.line_num  # the row's last line (a quoted field may span lines)
        if len(row) != 6:
          raise DataError(f"{path}, line {line}: expected 6 columns (question, A, B, C, D, "
                          f"answer letter), got {len(row)}")
        answer = row[5].strip().upper()
        if answer not in LETTERS:
          raise DataError(f"{path}, line {line}: answer must be one of A, B, C, D, "
                          f"got {row[5]!r}")
        out.append(_record(row[0], row[1:5], LETTERS.index(answer), subject))
  except OSError as e:
    raise DataError(f"{path}: cannot read ({e})") from e
  except csv.Error as e:
    raise DataError(f"{path}: not valid CSV ({e})") from e
  return out


def _load_parquet(paths: Sequence[str]) -> list[dict]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  out = []
  for path in paths:
    try:
      table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid for a file that is not parquet
      raise DataError(f"{path}: not a readable parquet file ({e})") from e
    missing = {"question", "subject", "choices", "answer"} - set(table.column_names)
    if missing:
      raise DataError(f"{path}: missing column(s) {sorted(missing)} (expected question, "
                      "subject, choices, answer)")
    for i, row in enumerate(table.select(["question", "subject", "choices", "answer"]).to_pylist()):
      choices, answer = row["choices"], row["answer"]
      if not isinstance(choices, list) or len(choices) != 4:
        raise DataError(f"{path}, record {i}: expected 4 choices, got {choices!r}")
      if not isinstance(answer, int) or not 0 <= answer < 4:
        raise DataError(f"{path}, record {i}: answer must be an index 0-3, got {answer!r}")
      out.append(_record(row["question"], choices, answer, row["subject"]))
  return out


def load_mmlu(path: str | os.PathLike, split: str = "test") -> list[dict]:
  """MMLU questions of one split as dicts ``{question, choices[4], answer: 0-3, subject}``.

  ``path`` holds either the original CSV layout (``data/{dev,val,test}/<subject>_<split>.csv``,
  no header; ``path`` may also be the ``data`` folder itself) or parquet files with columns
  ``question, subject, choices, answer`` named ``<split>-*.parquet`` (an ``all/`` folder is
  preferred over per-subject folders, which would repeat the same questions).
  """
  root = os.fspath(path)
  if split not in _SPLIT_ALIASES:
    raise ValueError(f"unknown MMLU split {split!r}; expected one of dev, val, test")
  if not os.path.isdir(root):
    raise DataError(f"{root}: MMLU folder not found")
  names = _SPLIT_ALIASES[split]
  for base in (os.path.join(root, "data"), root):
    for name in names:
      files = sorted(glob.glob(os.path.join(base, name, f"*_{name}.csv")))
      if files:
        out = []
        for f in files:
          out += _load_csv(f, os.path.basename(f)[:-len(f"_{name}.csv")])
        return out
  for name in names:
    parquet = sorted(glob.glob(os.path.join(root, "**", f"{name}-*.parquet"), recursive=True))
    parquet += sorted(glob.glob(os.path.join(root, "**", f"{name}.parquet"), recursive=True))
    if parquet:
      in_all = [p for p in parquet if f"{os.sep}all{os.sep}" in p]
      return _load_parquet(in_all or parquet)
  raise DataError(f"{root}: no MMLU {split!r} data (expected data/{names[0]}/<subject>_"
                  f"{names[0]}.csv files or {names[-1]}-*.parquet files)")


def format_question(example: dict, with_answer: bool) -> str:
  """``question\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:`` (+ `` X\\n\\n`` for a worked shot)."""
  text = example["question"] + "".join(
      f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, example["choices"]))
  text += "\nAnswer:"
  if with_answer:
    text += f" {LETTERS[example['answer']]}\n\n"
  return text


def format_mmlu_prompt(dev_examples: Sequence[dict], example: dict, k: int = 5,
                       fits: Callable[[str], bool] = lambda text: True) -> str:
  """The standard k-shot MMLU prompt; the model's next token should be " A".." D".

  Shots are the first ``k`` dev questions of the example's subject. While ``fits(prompt)``
  is false (it does not fit the model's context), shots are dropped from the end.
  """
  subject = example["subject"]
  header = ("The following are multiple choice questions (with answers) about "
            f"{subject.replace('_', ' ')}.\n\n")
  shots = [d for d in dev_examples if d["subject"] == subject][:k]
  question = format_question(example, with_answer=False)
  while True:
    prompt = header + "".join(format_question(s, with_answer=True) for s in shots) + question
    if not shots or fits(prompt):
      return prompt
    shots = shots[:-1]
