"""MMLU scoring on a fixture in the original CSV layout (our own questions): accuracy by
subject, category and difficulty with counts; the letter scorer on a real (tiny) model."""

import csv

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm2_jax.config import load_config
from lm2_jax.data import mmlu as mm
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.evaluation import mmlu as ev
from lm2_jax.evaluation.report import EvaluationError
from lm2_jax.inference import Engine
from lm2_jax.model import abstract_variables

# subject -> test questions (question, A, B, C, D, answer); written for these tests.
QUESTIONS = {
    "high_school_physics": [  # STEM, High School
        ("What is the unit of force?", "Newton", "Joule", "Watt", "Pascal", "A"),
        ("What falls faster in a vacuum, a feather or a stone?", "The stone", "The feather",
         "Neither", "It depends on colour", "C"),
        ("Sound cannot travel through", "Water", "Steel", "Air", "A vacuum", "D"),
    ],
    "college_biology": [  # STEM, College
        ("Which molecule carries genetic information?", "Glucose", "DNA", "Lipid", "Starch",
         "B"),
    ],
    "professional_law": [  # Humanities, Professional
        ("A contract needs", "An offer and acceptance", "A witness", "A lawyer", "A stamp",
         "A"),
        ("A judge's ruling in a higher court usually", "Is ignored", "Binds lower courts",
         "Expires", "Is secret", "B"),
    ],
    "philosophy": [  # Humanities, General Knowledge
        ("Who wrote the Republic?", "Plato", "Kant", "Hume", "Locke", "A"),
    ],
    "sociology": [  # Social Sciences, General Knowledge
        ("Sociology studies", "Rocks", "Societies", "Stars", "Cells", "B"),
        ("A norm is", "A rule of behaviour", "A planet", "A cell type", "A tax", "A"),
    ],
    "marketing": [  # Other, General Knowledge
        ("A brand is", "A name that identifies a seller", "A tax", "A loan", "A law", "A"),
    ],
}


def write_mmlu(root, with_test=True):
  for split, rows_of in (("dev", lambda rows: rows[:1]), ("test", lambda rows: rows)):
    if split == "test" and not with_test:
      continue
    folder = root / "data" / split
    folder.mkdir(parents=True, exist_ok=True)
    for subject, rows in QUESTIONS.items():
      with open(folder / f"{subject}_{split}.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows_of(rows))
  return root


def fake_scorer(stem_right: bool):
  """Scores the right letter highest for STEM subjects and a wrong one for the others."""
  answers = {q[0]: "ABCD".index(q[5]) for rows in QUESTIONS.values() for q in rows}
  subject_of = {q[0]: s for s, rows in QUESTIONS.items() for q in rows}

  def score(prompts):
    out = np.zeros((len(prompts), 4), np.float32)
    for i, p in enumerate(prompts):
      question = p.rsplit("\n\n", 1)[-1].split("\nA. ")[0]
      right = answers[question]
      good = (mm.SUBJECT_CATEGORY[subject_of[question]] == "STEM") == stem_right
      out[i, right if good else (right + 1) % 4] = 1.0
    return out

  return score


def test_accuracy_by_category_and_difficulty_with_counts(tmp_path):
  test, dev = ev.load_questions(str(write_mmlu(tmp_path)), shots=1)
  assert len(test) == 10 and len(dev) == 6
  report = ev.evaluate_mmlu(fake_scorer(True), test, dev, shots=1,
                            predictions_path=str(tmp_path / "pred.csv"), batch_size=3)
  assert report["overall"] == {"accuracy": 0.4, "n": 10}
  assert report["by_category"] == {
      "STEM": {"accuracy": 1.0, "n": 4}, "Humanities": {"accuracy": 0.0, "n": 3},
      "Social Sciences": {"accuracy": 0.0, "n": 2}, "Other": {"accuracy": 0.0, "n": 1}}
  assert report["by_difficulty"] == {
      "High School": {"accuracy": 1.0, "n": 3}, "College": {"accuracy": 1.0, "n": 1},
      "Professional": {"accuracy": 0.0, "n": 2}, "General Knowledge": {"accuracy": 0.0, "n": 4}}
  assert report["by_subject"]["sociology"] == {"accuracy": 0.0, "n": 2}
  # Resuming reuses every logged prediction: a scorer that would now be right is not asked.
  again = ev.evaluate_mmlu(fake_scorer(False), test, dev, shots=1,
                           predictions_path=str(tmp_path / "pred.csv"))
  assert again == report
  table = ev.format_table2({"lm2": report}).splitlines()
  assert table[1].split()[:3] == ["model", "STEM", "Humanities"]
  assert table[3].split()[:2] == ["lm2", "100.0"] and table[3].split()[-1] == "40.0"
  assert table[4].split() == ["n", "4", "3", "2", "1", "3", "1", "2", "4", "10"]
  limited, _ = ev.load_questions(str(tmp_path), shots=0, limit=1)
  assert len(limited) == len(QUESTIONS)


def test_letter_scores_from_a_model(tmp_path):
  tok = ByteTokenizer()
  prefix, ids = ev.letter_ids(tok)
  assert prefix == [32] and ids == [65, 66, 67, 68]  # " " then "A".."D"
  cfg = load_config(None, ["model.segment_len=16", "model.width=32", "model.num_layers=1",
                           "model.num_heads=2", "model.num_kv_heads=1", "model.mlp_width=64",
                           "model.memory.num_slots=4", "model.memory.num_heads=2",
                           "train.seq_len=32"]).model
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape).astype(np.float32)),
                        nn.unbox(abstract_variables(cfg)["params"]))
  engine = Engine(cfg, params, tok, batch_size=2, chunk_len=64)  # one shape of each kind
  test, dev = ev.load_questions(str(write_mmlu(tmp_path)), shots=1)
  score = ev.engine_scorer(engine, tok)
  prompts = [mm.format_mmlu_prompt(dev, q, 1) for q in test[:4]]
  scores = score(prompts)
  assert scores.shape == (4, 4) and np.all(scores < 0)
  # The same numbers as the full vocabulary's log-softmax after prompt + " ".
  full = engine.next_token_logprobs([engine.encode(p) + [32] for p in prompts])
  np.testing.assert_allclose(scores, full[:, 65:69], rtol=1e-6)
  report = ev.evaluate_mmlu(score, test, dev, shots=1, batch_size=2)
  assert report["overall"]["n"] == 10 and 0 <= report["overall"]["accuracy"] <= 1


def test_a_folder_without_test_split_is_refused(tmp_path):
  write_mmlu(tmp_path, with_test=False)
  with pytest.raises(EvaluationError, match="no MMLU 'test' data"):
    ev.load_questions(str(tmp_path), shots=5)
