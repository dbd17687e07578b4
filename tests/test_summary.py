"""Parameter counts of the shipped configs, and the summary command line."""

import json

import pytest

from lm2_jax import summary
from lm2_jax.config import load_config
from lm2_jax.model.flops import flops_per_token


def test_llama3_2_1b_has_exactly_the_published_count():
  counts = summary.count_params(load_config("configs/llama3.2_1b.yaml"))
  assert counts == {"total_params": 1_235_814_400, "memory_params": 0}


def test_lm2_1_7b_is_within_ten_percent_of_the_paper():
  counts = summary.count_params(load_config("configs/lm2_1.7b.yaml"))
  # Stated in docs/architecture.md: the base plus 16 x (9 D^2 + 4 D) memory parameters.
  assert counts["memory_params"] == 16 * (9 * 2048 ** 2 + 4 * 2048)
  assert counts["total_params"] == 1_235_814_400 + counts["memory_params"]
  assert abs(counts["total_params"] - 1.7e9) / 1.7e9 < 0.10


def test_tiny_is_a_few_hundred_thousand_parameters_with_memory():
  counts = summary.count_params(load_config("configs/tiny.yaml"))
  assert 100_000 < counts["total_params"] < 1_000_000
  assert counts["memory_params"] > 0


def test_json_output(capsys):
  assert summary.main(["--config", "configs/tiny.yaml", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert set(out) >= {"total_params", "memory_params", "flops_per_token"}
  # Every non-memory matmul weight is used once per token (the head is the tied embedding).
  base_matmul = out["total_params"] - out["memory_params"]
  assert out["flops_per_token"] == 3 * out["forward_flops_per_token"]
  assert out["forward_flops_per_token"] > 2 * base_matmul
  # The summary reports the useful count the training logs' MFU uses, not the executed one.
  cfg = load_config("configs/tiny.yaml")
  flops = flops_per_token(cfg.model, cfg.train.seq_len)
  assert out["flops_per_token"] == flops["train"] < flops["train_executed"]


def test_bad_override_exits_2(capsys):
  assert summary.main(["--config", "configs/tiny.yaml", "model.widht=3"]) == 2
  assert "did you mean 'model.width'" in capsys.readouterr().err
