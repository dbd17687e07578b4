"""The train step's log of the episode rows apart from the records rows (data.episode_rows)."""

import jax
import numpy as np
import pytest

from lm2_jax import sharding
from lm2_jax.config import load_config
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.train.inputs import TrainInput
from lm2_jax.train.metrics import window_groups
from lm2_jax.train.optim import make_optimizer
from lm2_jax.train.state import create_state, state_shardings
from lm2_jax.train.step import train_step_cache

# Rows 2 and 3 of 4 read episodes over a carry cycle of 3 steps, 4 segments of 64 tokens.
EPISODES = ["model.segment_len=64", "train.seq_len=256", "train.batch_size=4",
            "data.kind=babilong", "data.tasks=[qa1]", "train.curriculum.max_segments=[4]",
            "train.curriculum.min_segments=4", "data.interleaved_questions=true",
            "train.memory_carry_steps=3", "data.episode_rows=2", "data.recall_questions=2"]


def _steps(over, steps):
  cfg = load_config(None, EPISODES + list(over))
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  tx = make_optimizer(cfg.train)
  shardings = state_shardings(cfg, tx, mesh)
  state = create_state(cfg, tx, shardings)
  step = train_step_cache(cfg, tx, mesh, shardings)
  inputs = TrainInput(cfg, ByteTokenizer())
  batches, out = [], []
  for _ in range(steps):
    batches.append(next(inputs))
    state, metrics = step(state, batches[-1])
    out.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return batches, out


@pytest.mark.parametrize("over", [["train.microbatches=1"], ["train.microbatches=2"],
                                  ["model.memory.kind=rmt", "model.attention_scope=segment"]])
def test_the_episode_rows_are_logged_apart_from_the_records(over):
  """Also with micro-batches (rows i * A + k form micro-batch k) and with the RMT's memory
  tokens carried instead of the LM2 memory."""
  batches, metrics = _steps(over, 6)
  for batch, m in zip(batches, metrics):
    # What each group's targets are: the loss mask's (shifted by one) on its rows.
    mask = batch["loss_mask"][:, 1:]
    assert m["episodes/targets"] == mask[2:].sum()
    assert m["records/targets"] == mask[:2].sum()
    assert m["episodes/targets"] + m["records/targets"] == m["target_tokens"]
    for key in ("ce_sum", "correct_sum"):
      assert m[f"episodes/{key}"] >= 0 and m[f"records/{key}"] >= 0
    np.testing.assert_allclose(m["episodes/ce_sum"] + m["records/ce_sum"],
                               m["loss"] * m["target_tokens"], rtol=1e-5)
    np.testing.assert_allclose(m["episodes/correct_sum"] + m["records/correct_sum"],
                               m["accuracy"] * m["target_tokens"], rtol=1e-5, atol=1e-6)
  assert sum(m["episodes/targets"] for m in metrics) > 0   # the six steps hold some answers
  # The log adds a group's sums over its window before dividing.
  groups = window_groups(metrics)
  for g in ("episodes", "records"):
    targets = sum(m[f"{g}/targets"] for m in metrics)
    assert groups[f"{g}/targets"] == targets
    np.testing.assert_allclose(groups[f"{g}/loss"],
                               sum(m[f"{g}/ce_sum"] for m in metrics) / targets, rtol=1e-6)
    np.testing.assert_allclose(groups[f"{g}/accuracy"],
                               sum(m[f"{g}/correct_sum"] for m in metrics) / targets)


def test_a_window_without_a_groups_targets_logs_none_for_it():
  empty = {"episodes/targets": 0.0, "episodes/ce_sum": 0.0, "episodes/correct_sum": 0.0}
  assert window_groups([empty, empty]) == {"episodes/loss": None, "episodes/accuracy": None,
                                          "episodes/targets": 0.0}
  assert window_groups([{"loss": 1.0}]) == {}   # no episode rows, no groups
