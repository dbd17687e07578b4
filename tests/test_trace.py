"""The memory trace: one value per segment index, within the bounds its statistics have."""

import jax
import numpy as np
import pytest

from lm2_jax.config import load_config
from lm2_jax.model import build_model
from lm2_jax.model.trace import (make_memory_footprint, make_memory_states, make_memory_trace,
                                  memory_trace)


def test_memory_trace_has_one_value_per_segment():
  cfg = load_config("configs/babilong_tiny.yaml", ["model.segment_len=8"]).model
  model = build_model(cfg)
  tokens = jax.random.randint(jax.random.key(0), (2, 8 * 12), 0, 256)
  variables = jax.jit(model.init)(jax.random.key(1), tokens[:, :8])
  trace = memory_trace(model, variables, np.asarray(tokens))
  assert set(trace) == {"memory_rms", "kept", "slot_similarity", "read_entropy", "held"}
  assert all(len(v) == 12 for v in trace.values())
  assert np.all(np.diff(trace["held"]) <= 0) and 0 <= trace["held"][-1] <= trace["held"][0] <= 1
  assert np.all((trace["kept"] > 0) & (trace["kept"] < 1))
  assert np.all(trace["read_entropy"] <= np.log(cfg.memory.num_slots) + 1e-5)
  assert np.all(trace["memory_rms"] <= 1.0)  # the convex update stays within its bound


def test_memory_trace_refuses_partial_segments_and_models_without_lm2_memory():
  cfg = load_config("configs/babilong_tiny.yaml", ["model.segment_len=8"]).model
  model = build_model(cfg)
  tokens = np.zeros((1, 12), np.int32)
  variables = jax.jit(model.init)(jax.random.key(1), tokens[:, :8])
  with pytest.raises(ValueError, match="12 tokens are not whole segments of 8"):
    make_memory_trace(model)(variables, tokens)
  rmt = load_config("configs/babilong_tiny.yaml", ["model.memory.kind=rmt"]).model
  with pytest.raises(ValueError, match="no LM2 memory"):
    make_memory_trace(build_model(rmt))


def test_memory_footprint_is_zero_for_equal_inputs_and_does_not_depend_on_the_chunking():
  cfg = load_config("configs/babilong_tiny.yaml", ["model.segment_len=8"]).model
  model = build_model(cfg)
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (3, 21)).astype(np.int32)
  b = a.copy()
  b[:, 5] = (b[:, 5] + 1) % 256    # one token differs, early
  lengths = np.array([21, 17, 13], np.int32)   # rows end at different in-segment offsets
  background = rng.integers(0, 256, 8 * 8).astype(np.int32)
  variables = jax.jit(model.init)(jax.random.key(1), a[:, :8])
  footprint = make_memory_footprint(model)
  same = footprint(variables, a, a, lengths, background, 16)
  np.testing.assert_array_equal(same, np.zeros(5, np.float32))
  coarse = footprint(variables, a, b, lengths, background, 16)
  fine = footprint(variables, a, b, lengths, background, 8)
  assert coarse.shape == (5,) and fine.shape == (9,)
  assert coarse[0] > 1e-3
  np.testing.assert_allclose(coarse, fine[::2], rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="not whole chunks of 16"):
    footprint(variables, a, b, lengths, background[:40], 16)


def test_held_is_the_share_of_units_whose_kept_fractions_multiply_to_at_least_a_half():
  """Gates that start slow (the chrono initialisation), with weights too small to move them:
  unit d keeps 1 - 1/tau_d per write, so it holds half of its content for s segments exactly
  when s * log(1 - 1/tau_d) >= log 0.5, the same for every slot and layer."""
  cfg = load_config("configs/babilong_tiny.yaml", [
      "model.segment_len=8", "model.memory.gate_timescale=512", "model.memory.write_sink=false",
      "model.initializer_std=1e-7"]).model
  model = build_model(cfg)
  tokens = jax.random.randint(jax.random.key(0), (1, 8 * 48), 0, 256)
  variables = jax.jit(model.init)(jax.random.key(1), tokens[:, :8])
  trace = memory_trace(model, variables, np.asarray(tokens))
  biases = [np.asarray(leaf) for path, leaf in
            jax.tree_util.tree_flatten_with_path(variables["params"])[0]
            if "input_gate_bias" in jax.tree_util.keystr(path)]
  kept = 1 - 1 / (1 + np.exp(-np.concatenate([b.reshape(-1) for b in biases])))
  s = np.arange(1, 49)[:, None]
  expected = (s * np.log(kept)[None] >= np.log(0.5)).mean(axis=1)
  assert expected[0] == 1 and 0 < expected[-1] < 0.5   # the test spans the time scales
  np.testing.assert_allclose(trace["held"], expected, atol=0.02)


def test_held_is_left_out_where_a_write_starts_from_the_layer_below():
  cfg = load_config("configs/babilong_tiny.yaml", ["model.segment_len=8",
                                                    "model.memory.write_recurrence=chain"]).model
  model = build_model(cfg)
  tokens = np.zeros((1, 16), np.int32)
  variables = jax.jit(model.init)(jax.random.key(1), tokens[:, :8])
  assert "held" not in memory_trace(model, variables, tokens)


def test_memory_states_do_not_depend_on_the_padding_or_on_the_other_rows():
  cfg = load_config("configs/babilong_tiny.yaml", ["model.segment_len=8"]).model
  model = build_model(cfg)
  rng = np.random.default_rng(0)
  rows = [list(rng.integers(1, 256, n)) for n in (21, 8, 40)]
  variables = jax.jit(model.init)(jax.random.key(1), np.zeros((1, 8), np.int32))
  states = make_memory_states(model, bucket_segments=2)
  together = states(variables, rows)
  m = cfg.num_memory_layers * cfg.memory.num_slots * cfg.width
  assert together.shape == (3, m)
  for i, row in enumerate(rows):
    np.testing.assert_allclose(together[i], states(variables, [row])[0], rtol=1e-5, atol=1e-6)
  # Tokens of an unfinished segment are not written yet: 21 tokens leave the memory of 16.
  np.testing.assert_allclose(together[0], states(variables, [rows[0][:16]])[0], rtol=1e-5,
                             atol=1e-6)
  assert np.abs(together[0] - together[1]).max() > 1e-3
  with pytest.raises(ValueError, match="at least one token"):
    states(variables, [[]])
