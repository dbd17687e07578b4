"""Optimizer: the learning-rate schedules, the weight-decay mask, clipping."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lm2_jax.config import load_config
from lm2_jax.model import abstract_variables
from lm2_jax.train import optim


def _train(*over):
  return load_config(None, ["train.steps=100", "train.learning_rate=1.0", *over]).train


def test_warmup_then_cosine_to_the_floor():
  lr = optim.learning_rate_schedule(_train("train.warmup_steps=10",
                                           "train.final_lr_fraction=0.1"))
  assert float(lr(0)) == pytest.approx(0.1)     # (step + 1) / warmup: the first update moves
  assert float(lr(9)) == pytest.approx(1.0)
  assert float(lr(10)) == pytest.approx(1.0)
  assert float(lr(55)) == pytest.approx(0.55)   # halfway: 0.1 + 0.9 * 0.5
  assert float(lr(100)) == pytest.approx(0.1)
  assert float(lr(500)) == pytest.approx(0.1)
  values = [float(lr(s)) for s in range(10, 101)]
  assert all(a >= b for a, b in zip(values, values[1:]))


def test_linear_and_constant():
  linear = optim.learning_rate_schedule(_train("train.lr_schedule=linear",
                                               "train.final_lr_fraction=0.0"))
  assert float(linear(50)) == pytest.approx(0.5) and float(linear(100)) == pytest.approx(0.0)
  const = optim.learning_rate_schedule(_train("train.lr_schedule=constant",
                                              "train.warmup_steps=4"))
  assert [float(const(s)) for s in (0, 3, 50, 99)] == pytest.approx([0.25, 1.0, 1.0, 1.0])


def test_decay_mask_spares_norms_biases_and_the_learned_memory():
  cfg = load_config(None, ["model.memory.init=learned", "model.tie_embeddings=false"])
  params = nn.unbox(abstract_variables(cfg.model)["params"])
  mask = {jax.tree_util.keystr(p): v
          for p, v in jax.tree_util.tree_flatten_with_path(optim.decay_mask(params))[0]}
  spared = sorted(k for k, v in mask.items() if not v)
  assert "['core']['memory_init']" in spared
  assert all(("scale" in k or "bias" in k or "memory_init" in k) for k in spared)
  for name in ("embedding", "lm_head", "['attn']['q']", "['mlp']['down']",
               "out_gate_kernel", "forget_gate_kernel"):
    assert any(name in k and v for k, v in mask.items()), name
  for name in ("final_norm", "attn_norm", "forget_gate_bias", "['memory_write']['norm']"):
    assert any(name in k for k in spared), name


def test_weight_decay_skips_masked_leaves_and_clipping_bounds_the_update():
  t = _train("train.weight_decay=0.5", "train.lr_schedule=constant", "train.grad_clip=1.0")
  tx = optim.make_optimizer(t)
  params = {"w": jnp.ones((3,)), "norm": {"scale": jnp.ones((3,))}, "g_bias": jnp.ones((3,))}
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.5)            # decay only: -lr * wd * w
  np.testing.assert_allclose(updates["norm"]["scale"], 0.0)
  np.testing.assert_allclose(updates["g_bias"], 0.0)
  # Adam normalises its update, so clipping shows in what Adam accumulates: the first
  # moment after one step is (1 - b1) times the gradient Adam was given.
  huge = jax.tree.map(lambda p: 1e6 * jnp.ones_like(p), params)

  def first_moment(tx):
    _, state = tx.update(huge, tx.init(params), params)
    return float(optax.tree.norm(optax.tree_utils.tree_get(state, "mu")))

  assert first_moment(tx) == pytest.approx(1.0 - t.adam_b1, rel=1e-5)
  unclipped = optim.make_optimizer(_train("train.grad_clip=0.0"))
  assert first_moment(unclipped) == pytest.approx((1.0 - t.adam_b1) * 1e6 * 3, rel=1e-5)
