"""Parameter counts of the shipped configs, and the summary command line."""

import json

import pytest

from lm2_jax import summary
from lm2_jax.config import load_config, replace
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


def test_bad_override_exits_2(capsys):
  assert summary.main(["--config", "configs/tiny.yaml", "model.widht=3"]) == 2
  assert "did you mean 'model.width'" in capsys.readouterr().err


def test_rmt_counts_flops_and_the_parameter_matched_comparison(capsys):
  lm2 = load_config("configs/babilong_tiny.yaml")
  rmt = summary.matched_rmt(lm2)
  m = rmt.model
  assert m.memory.kind == "rmt" and m.mlp_width > lm2.model.mlp_width
  assert (m.width, m.num_layers, m.segment_len) == (64, 4, 32)
  a, b = summary.count_params(lm2), summary.count_params(rmt)
  assert b["memory_params"] == m.memory.num_slots * m.width  # the memory tokens alone
  assert abs(b["total_params"] - a["total_params"]) / a["total_params"] < 0.02
  # Per segment the RMT's blocks see S + 2N positions, attending causally among them: the
  # FLOPs of a plain model with segments of S + 2N, per segment token, plus the head.
  s, n = m.segment_len, m.memory.num_slots
  head = 2 * m.width * m.vocab_size
  plain = replace(m, **{"memory.kind": "none", "segment_len": s + 2 * n})
  got = flops_per_token(m, 192)
  want = (flops_per_token(plain, 192)["forward"] - head) * (s + 2 * n) / s + head
  assert got["forward"] == pytest.approx(want) and got["train"] == 3 * got["forward"]
  none = flops_per_token(replace(m, **{"memory.kind": "none"}), 192)["forward"]
  assert got["memory_forward"] == pytest.approx(got["forward"] - none)
  assert summary.main(["--config", "configs/babilong_tiny.yaml", "model.memory.kind=rmt",
                       f"model.mlp_width={m.mlp_width}"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("RMT: 4 layers") and "memory RMT, 16 memory tokens" in out
  assert f"{b['total_params']:,}" in out
