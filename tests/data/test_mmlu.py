"""MMLU loaders, subject maps and the k-shot prompt, on a fixture written for these tests."""

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lm2_jax.data.errors import DataError
from lm2_jax.data.mmlu import (CATEGORIES, SUBJECT_CATEGORY, SUBJECT_DIFFICULTY, SUBJECTS,
                               format_mmlu_prompt, load_mmlu, subject_difficulty)

# Our own questions, in MMLU's shape; nothing here comes from the MMLU files.
ASTRONOMY_DEV = [
    ("Which planet is closest to the Sun?", "Mercury", "Venus", "Earth", "Mars", "A"),
    ("What is the Moon?", "A star", "A natural satellite", "A comet", "A planet", "B"),
    ("How many days does the Earth take to orbit the Sun, roughly?", "30", "100", "365", "1000",
     "C"),
    ("Which of these is a gas giant?", "Mars", "Venus", "Mercury", "Jupiter", "D"),
    ("What makes a star shine?", "Fusion", "Fission", "Burning wood", "Reflection", "A"),
    ("Which is largest?", "A planet", "A galaxy", "A star", "A moon", "B"),
]
ASTRONOMY_TEST = [
    ("What colour is the sky on a clear day, as seen from the ground?", "Green", "Blue",
     "Purple", "Black", "B"),
    ("Which body does the Earth orbit?", "The Moon", "Mars", "The Sun", "Jupiter", "C"),
]
BIOLOGY_DEV = [("What do plants need for photosynthesis?", "Light", "Sound", "Salt", "Iron",
                "A")]
BIOLOGY_TEST = [("Where is DNA kept in a plant cell?", "Nucleus", "Wall", "Vacuole",
                 "Membrane", "A")]


def _write(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)


@pytest.fixture
def csv_root(tmp_path):
  _write(tmp_path / "data" / "dev" / "astronomy_dev.csv", ASTRONOMY_DEV)
  _write(tmp_path / "data" / "test" / "astronomy_test.csv", ASTRONOMY_TEST)
  _write(tmp_path / "data" / "dev" / "college_biology_dev.csv", BIOLOGY_DEV)
  _write(tmp_path / "data" / "test" / "college_biology_test.csv", BIOLOGY_TEST)
  _write(tmp_path / "data" / "val" / "astronomy_val.csv", ASTRONOMY_TEST[:1])
  return tmp_path


def test_subject_maps():
  assert len(SUBJECTS) == 57 and set(SUBJECT_CATEGORY.values()) == set(CATEGORIES)
  counts = {c: sum(v == c for v in SUBJECT_CATEGORY.values()) for c in CATEGORIES}
  assert counts == {"STEM": 18, "Humanities": 13, "Social Sciences": 12, "Other": 14}
  assert SUBJECT_CATEGORY["econometrics"] == "Social Sciences"
  assert SUBJECT_CATEGORY["professional_accounting"] == "Other"
  assert subject_difficulty("elementary_mathematics") == "High School"
  assert subject_difficulty("high_school_us_history") == "High School"
  assert subject_difficulty("college_medicine") == "College"
  assert subject_difficulty("professional_law") == "Professional"
  assert subject_difficulty("virology") == "General Knowledge"
  levels = {d: sum(v == d for v in SUBJECT_DIFFICULTY.values()) for d in set(
      SUBJECT_DIFFICULTY.values())}
  assert levels == {"High School": 15, "College": 6, "Professional": 4, "General Knowledge": 32}


def test_csv_layout(csv_root):
  test = load_mmlu(csv_root, "test")
  assert len(test) == 3
  assert test[0] == {"question": ASTRONOMY_TEST[0][0], "choices": list(ASTRONOMY_TEST[0][1:5]),
                     "answer": 1, "subject": "astronomy"}
  assert {r["subject"] for r in test} == {"astronomy", "college_biology"}
  assert len(load_mmlu(csv_root / "data", "val")) == 1  # the data folder itself works too
  assert len(load_mmlu(csv_root, "validation")) == 1


def test_parquet_layout(tmp_path):
  rows = [{"question": q, "subject": "astronomy", "choices": list(c), "answer": "ABCD".index(a)}
          for q, *c, a in ASTRONOMY_TEST]
  for folder in ("all", "astronomy"):
    (tmp_path / folder).mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / folder / "test-00000-of-00001.parquet")
  got = load_mmlu(tmp_path, "test")
  assert len(got) == 2  # all/ is preferred over the per-subject copy
  assert got[1]["answer"] == 2 and got[1]["choices"][2] == "The Sun"


def test_five_shot_prompt(csv_root):
  dev, test = load_mmlu(csv_root, "dev"), load_mmlu(csv_root, "test")
  prompt = format_mmlu_prompt(dev, test[0])
  assert prompt.startswith("The following are multiple choice questions (with answers) about "
                           "astronomy.\n\nWhich planet is closest to the Sun?\nA. Mercury\n"
                           "B. Venus\nC. Earth\nD. Mars\nAnswer: A\n\nWhat is the Moon?")
  assert prompt.count("Answer:") == 6  # five shots from the subject's dev split, then the test
  assert "Which is largest?" not in prompt  # the sixth dev question is not used
  assert "photosynthesis" not in prompt  # shots come from the same subject
  assert prompt.endswith("What colour is the sky on a clear day, as seen from the ground?\n"
                         "A. Green\nB. Blue\nC. Purple\nD. Black\nAnswer:")
  header = "college biology.\n\n"
  assert header in format_mmlu_prompt(dev, test[-1], k=5)


def test_shots_are_dropped_from_the_end_until_the_prompt_fits(csv_root):
  dev, test = load_mmlu(csv_root, "dev"), load_mmlu(csv_root, "test")
  full = format_mmlu_prompt(dev, test[0], k=5)
  fitted = format_mmlu_prompt(dev, test[0], k=5, fits=lambda text: len(text) < len(full) - 50)
  assert fitted.count("Answer:") == 5 and "What makes a star shine?" not in fitted
  zero = format_mmlu_prompt(dev, test[0], k=5, fits=lambda text: False)
  assert zero.count("Answer:") == 1
  assert format_mmlu_prompt(dev, test[0], k=0).count("Answer:") == 1


def test_bad_rows_name_file_line_and_expectation(tmp_path):
  path = tmp_path / "data" / "test" / "anatomy_test.csv"
  _write(path, [ASTRONOMY_TEST[0], ASTRONOMY_TEST[1][:5]])
  with pytest.raises(DataError, match=r"anatomy_test.csv, line 2: expected 6 columns .* got 5"):
    load_mmlu(tmp_path, "test")
  _write(path, [ASTRONOMY_TEST[0][:5] + ("E",)])
  with pytest.raises(DataError, match=r"line 1: answer must be one of A, B, C, D, got 'E'"):
    load_mmlu(tmp_path, "test")
  with pytest.raises(DataError, match="no MMLU 'dev' data"):
    load_mmlu(tmp_path, "dev")
