"""EvalConfig: every bad value is refused naming its flag, before any checkpoint is read."""

import dataclasses

import pytest

from lm2_jax.evaluation.config import EvalConfig, validate
from lm2_jax.evaluation.report import EvaluationError

BASE = EvalConfig(checkpoints=("runs/nowhere",), task="babilong", output="r.json")


def test_babilong_tasks_and_lengths_come_back_canonical():
  cfg = validate(dataclasses.replace(BASE, tasks=("qa2", " qa1", "qa2"),
                                     lengths=("4000", "1k", "0k")))
  assert cfg.tasks == ("qa2", "qa1")
  assert cfg.lengths == ("0k", "1k", "4k")
  assert validate(cfg) == cfg


@pytest.mark.parametrize("change, message", [
    ({"task": "nope"}, r"^--task 'nope': unknown task"),
    ({"batch_size": 0}, r"^--batch-size must be >= 1, got 0$"),
    ({"limit": 0}, r"^--limit must be >= 1, got 0$"),
    ({"tasks": ("qa99",)}, r"^--tasks: unknown task 'qa99'"),
    ({"lengths": ("2M",)}, r"^--lengths 2M: longer than the 1,000,000-token maximum"),
    ({"num_samples": 0}, r"^--num-samples must be >= 1, got 0$"),
    ({"max_new_tokens": 0}, r"^--max-new-tokens must be >= 1, got 0$"),
    ({"prompt": "long"}, r"^--prompt 'long': expected compact or full"),
    ({"task": "mmlu"}, r"^--task mmlu needs --mmlu-dir"),
    ({"task": "mmlu", "mmlu_dir": "/nonexistent/mmlu"}, r"^--mmlu-dir /nonexistent/mmlu: "),
    ({"task": "perplexity", "seq_len": 0}, r"^--seq-len must be >= 1, got 0$"),
    ({"task": "perplexity", "num_sequences": 0}, r"^--num-sequences must be >= 1, got 0$"),
])
def test_a_bad_value_names_its_flag(change, message):
  with pytest.raises(EvaluationError, match=message):
    validate(dataclasses.replace(BASE, **change))


def test_a_long_length_passes_with_allow_long_and_mesh_overrides_are_noticed():
  cfg = validate(dataclasses.replace(BASE, lengths=("2M",), allow_long=True,
                                     overrides=("mesh.data=8", "model.width=8")))
  assert cfg.lengths == ("2M",) and cfg.uses_mesh
  assert not BASE.uses_mesh
