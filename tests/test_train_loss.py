"""Masked cross-entropy: only marked targets count, sums add up across micro-batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm2_jax.train import loss


def _logits(rng, b, t, v):
  return jnp.asarray(rng.normal(size=(b, t, v)).astype(np.float32))


def test_only_marked_targets_count_and_match_a_direct_computation():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 7, (2, 6)).astype(np.int32)
  mask = np.zeros((2, 6), np.float32)
  mask[0, 4:] = 1
  mask[1, 2] = 1
  inputs, targets, weights = loss.split_batch(jnp.asarray(tokens), jnp.asarray(mask))
  assert inputs.shape == targets.shape == weights.shape == (2, 5)
  logits = _logits(rng, 2, 5, 7)
  terms = loss.loss_terms(logits, targets, weights)
  logp = jax.nn.log_softmax(logits)
  picked = [(0, 3), (0, 4), (1, 1)]          # target positions t-1 of the marked tokens
  expected = -sum(float(logp[b, t, targets[b, t]]) for b, t in picked)
  assert float(terms.weight) == 3
  assert float(terms.ce) == pytest.approx(expected, rel=1e-6)
  # Changing an unmarked target changes nothing.
  other = targets.at[1, 3].set((targets[1, 3] + 1) % 7)
  assert float(loss.loss_terms(logits, other, weights).ce) == pytest.approx(expected, rel=1e-6)


def test_z_loss_adds_the_squared_log_partition():
  rng = np.random.default_rng(1)
  logits = _logits(rng, 1, 4, 5) + 3.0
  targets = jnp.zeros((1, 4), jnp.int32)
  weights = jnp.ones((1, 4))
  terms = loss.loss_terms(logits, targets, weights)
  lse = jax.nn.logsumexp(logits, -1)
  assert float(terms.z) == pytest.approx(float(jnp.sum(lse**2)), rel=1e-6)
  base = float(loss.objective(terms, 4.0, 0.0))
  assert float(loss.objective(terms, 4.0, 1e-2)) == pytest.approx(
      base + 1e-2 * float(jnp.mean(lse**2)), rel=1e-6)


def test_micro_batch_sums_equal_the_whole_batch():
  rng = np.random.default_rng(2)
  logits = _logits(rng, 4, 3, 6)
  targets = jnp.asarray(rng.integers(0, 6, (4, 3)).astype(np.int32))
  weights = jnp.asarray((rng.random((4, 3)) > 0.3).astype(np.float32))
  whole = loss.loss_terms(logits, targets, weights)
  parts = loss.loss_terms(logits[:2], targets[:2], weights[:2]) + loss.loss_terms(
      logits[2:], targets[2:], weights[2:])
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(parts)):
    assert float(a) == pytest.approx(float(b), rel=1e-6)


@pytest.mark.slow
def test_truncated_bptt_cuts_the_gradient_through_the_memory():
  """train.truncate_every=1: a loss on the second segment sends no gradient into the
  learned initial memory (it only reaches it through the memory carried across the
  boundary); without truncation it does."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from lm2_jax.config import load_config  # pylint: disable=g-import-not-at-top
  from lm2_jax.model import build_model  # pylint: disable=g-import-not-at-top
  cfg = load_config(None, ["model.num_layers=1", "model.width=16", "model.mlp_width=32",
                           "model.num_heads=2", "model.num_kv_heads=1", "model.segment_len=8",
                           "model.memory.num_slots=2", "model.memory.num_heads=2",
                           "model.memory.init=learned"]).model
  model = build_model(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 259, (2, 17)).astype(np.int32))
  params = nn.unbox(model.init(jax.random.key(0), tokens[:, :8])["params"])
  weights = jnp.zeros((2, 16)).at[:, 8:].set(1.0)       # targets of the second segment only

  def memory_init_grad(truncate_every):
    def f(p):
      logits = model.apply({"params": p}, tokens[:, :-1], truncate_every=truncate_every)
      return loss.loss_terms(logits, tokens[:, 1:], weights).ce
    return jax.jit(jax.grad(f))(params)["core"]["memory_init"]

  assert float(jnp.abs(memory_init_grad(0)).max()) > 0
  assert float(jnp.abs(memory_init_grad(1)).max()) == 0
