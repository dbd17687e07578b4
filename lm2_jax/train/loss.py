"""Masked next-token cross-entropy with an optional z-loss.

The data gives `tokens_BxT1` (T + 1 tokens) and `loss_mask_BxT1` (1 where a token is a
target; docs/data.md). The model reads tokens[:, :-1] and is scored on tokens[:, 1:]
weighted by loss_mask[:, 1:]. Terms are returned as sums, not means, so that micro-batches
and data-parallel shards add up to exactly the loss of the whole batch: the mean is taken
once, by the total number of target tokens.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array


@flax.struct.dataclass
class LossTerms:
  """Sums over the target tokens of a batch (or micro-batch)."""

  ce: Array          # sum of weighted cross-entropies
  z: Array           # sum of weighted squared log-partitions
  weight: Array      # number of target tokens
  correct: Array     # target tokens whose argmax prediction is right

  def __add__(self, other: "LossTerms") -> "LossTerms":
    return jax.tree.map(jnp.add, self, other)

  def __sub__(self, other: "LossTerms") -> "LossTerms":
    return jax.tree.map(jnp.subtract, self, other)


def split_batch(tokens_BxT1: Array, loss_mask_BxT1: Array):
  """(inputs_BxT, targets_BxT, weights_BxT) from a batch of T + 1 tokens."""
  return tokens_BxT1[:, :-1], tokens_BxT1[:, 1:], loss_mask_BxT1[:, 1:].astype(jnp.float32)


def token_terms(logits_BxTxV: Array, targets_BxT: Array):
  """Per-token cross-entropy, log-partition and argmax-correctness (float32)."""
  logits = logits_BxTxV.astype(jnp.float32)
  lse_BxT = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
  correct_BxT = jnp.argmax(logits, axis=-1) == targets_BxT
  return lse_BxT - target_logit, lse_BxT, correct_BxT


def sum_terms(ce_BxT: Array, lse_BxT: Array, correct_BxT: Array,
              weights_BxT: Array) -> LossTerms:
  """`token_terms`' outputs summed under `weights_BxT`."""
  return LossTerms(ce=jnp.sum(ce_BxT * weights_BxT),
                   z=jnp.sum(jnp.square(lse_BxT) * weights_BxT),
                   weight=jnp.sum(weights_BxT),
                   correct=jnp.sum(correct_BxT.astype(jnp.float32) * weights_BxT))


def loss_terms(logits_BxTxV: Array, targets_BxT: Array, weights_BxT: Array) -> LossTerms:
  return sum_terms(*token_terms(logits_BxTxV, targets_BxT), weights_BxT)


def objective(terms: LossTerms, total_weight: Array, z_loss: float) -> Array:
  """The minimised scalar: (cross-entropy + z_loss * log-partition^2) per target token.

  `total_weight` is the whole batch's count (not the micro-batch's), so that gradients
  of micro-batches add up to the gradient of the batch.
  """
  return (terms.ce + z_loss * terms.z) / total_weight
