"""AdamW with a warm-up/decay schedule, global-norm clipping and a weight-decay mask.

Weight decay pulls parameters towards zero, which is wrong for parameters whose neutral
value is not zero: RMSNorm scales (1), gate biases (the forget-gate bias starts at +1 so
the memory is kept), and the learned initial memory (the identity). The mask leaves those
alone and decays every matrix, embeddings included.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from lm2_jax.config import TrainConfig

# Leaf names never decayed: norm scales, biases, the learned initial memory.
_NO_DECAY_NAMES = ("scale", "memory_init", "sink")  # sink: the write's "nothing here" logit
_NO_DECAY_SUFFIX = "bias"  # out_gate_bias, input_gate_bias, ...


def learning_rate_schedule(t: TrainConfig) -> optax.Schedule:
  """lr(step): linear warm-up to learning_rate over warmup_steps, then the decay.

  The warm-up reaches (step + 1) / warmup_steps of the peak at step `step`, so the first
  update already moves the weights. Cosine and linear decay end at final_lr_fraction of
  the peak at train.steps; constant stays at the peak.
  """
  peak, warmup, total = t.learning_rate, t.warmup_steps, max(t.steps, 1)
  floor = t.final_lr_fraction

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, (step + 1) / warmup) if warmup else 1.0
    progress = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    if t.lr_schedule == "cosine":
      decay = floor + (1 - floor) * 0.5 * (1 + jnp.cos(math.pi * progress))
    elif t.lr_schedule == "linear":
      decay = 1 - (1 - floor) * progress
    else:
      decay = 1.0
    return peak * warm * decay

  return schedule


def decays(path) -> bool:
  """Whether the parameter at this tree path gets weight decay."""
  name = str(getattr(path[-1], "key", path[-1]))
  in_memory_init = any(getattr(k, "key", None) == "memory_init" for k in path)
  return not (name in _NO_DECAY_NAMES or name.endswith(_NO_DECAY_SUFFIX) or in_memory_init)


def decay_mask(params):
  """A tree of bools like `params`: True where weight decay applies."""
  return jax.tree_util.tree_map_with_path(lambda p, _: decays(p), params)


def make_optimizer(t: TrainConfig) -> optax.GradientTransformation:
  """Clip (optional) then AdamW with the schedule and the decay mask."""
  adamw = optax.adamw(learning_rate_schedule(t), b1=t.adam_b1, b2=t.adam_b2, eps=t.adam_eps,
                      weight_decay=t.weight_decay, mask=decay_mask)
  if t.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(t.grad_clip), adamw)
  return adamw
