"""Choosing the next token: greedy, temperature, top-k and top-p (nucleus) sampling.

All knobs are traced values, so one compiled decode step serves every setting; greedy is
temperature 0. Each row draws from its own key, derived from the request's seed, the row's
index in the request and the step, so a prompt gets the same sample whether it is decoded
alone or in a batch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to decode. `temperature=0` is greedy; `top_k=0` and `top_p=1` switch those off.

  Generation of a row stops at `max_new_tokens`, at the end-of-sequence token (unless
  `stop_at_eos` is false) or when its text contains one of `stop` (the text is cut before it).
  """

  max_new_tokens: int = 32
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  stop: tuple[str, ...] = ()
  stop_at_eos: bool = True
  seed: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
    if any(not s for s in self.stop):
      raise ValueError("stop strings must not be empty")


def sample_logits(logits_BxV: Array, keys_B: Array, temperature: Array, top_k: Array,
                  top_p: Array) -> Array:
  """Next tokens int32[B] from logits, one key per row.

  Top-k keeps the k most likely tokens; top-p then keeps the smallest set of those whose
  probability (renormalised after top-k, as the Hugging Face warpers do) reaches p. Tokens
  tied with the last kept one are kept too.
  """
  logits = logits_BxV.astype(jnp.float32)
  v = logits.shape[-1]
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  scaled = logits / jnp.maximum(temperature, 1e-6)
  sorted_desc = -jnp.sort(-scaled, axis=-1)
  k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v).astype(jnp.int32)
  kth = sorted_desc[:, k - 1][:, None]
  ranks = jnp.arange(v)[None, :]
  in_top_k = jnp.where(ranks < k, sorted_desc, -jnp.inf)
  probs = jax.nn.softmax(in_top_k, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  n_keep = jnp.maximum(jnp.sum((mass_before < top_p) & (ranks < k), axis=-1), 1)
  p_threshold = jnp.take_along_axis(sorted_desc, (n_keep - 1)[:, None], axis=-1)
  threshold = jnp.maximum(kth, p_threshold)
  masked = jnp.where(scaled >= threshold, scaled, -jnp.inf)
  sampled = jax.vmap(jax.random.categorical)(keys_B, masked).astype(jnp.int32)
  return jnp.where(temperature > 0, sampled, greedy)


def row_keys(seed: int | Array, row_ids_B: Array, step: int | Array) -> Array:
  """Independent keys per (seed, row of the request, decoding step)."""
  base = jax.random.fold_in(jax.random.key(seed), step)
  return jax.vmap(lambda r: jax.random.fold_in(base, r))(row_ids_B)
