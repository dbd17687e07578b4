"""Llama-3 building blocks: RMSNorm, rotary embedding, grouped-query attention, SwiGLU.

Every parameter is created through `param`, which attaches logical axis names; the
sharding table in `lm2_jax/sharding.py` maps those names to mesh axes.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from lm2_jax.config import ModelConfig, RopeScalingConfig

Array = jax.Array

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str):
  return _DTYPES[name]


def param(module: nn.Module, name: str, shape: Sequence[int], axes: Sequence[str | None],
          init) -> Array:
  """A float32 parameter annotated with logical axis names (one per dimension)."""
  assert len(shape) == len(axes), (name, shape, axes)
  return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape),
                      jnp.float32)


def normal(std: float):
  return nn.initializers.normal(stddev=std)


class RMSNorm(nn.Module):
  """x / rms(x) * scale, computed in float32 as the reference Llama does, cast back after."""

  eps: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = param(self, "scale", (x.shape[-1],), ("norm",), nn.initializers.ones)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (scale * x32.astype(self.dtype)).astype(self.dtype)


# --------------------------------------------------------------------------------------
# Rotary position embedding
# --------------------------------------------------------------------------------------


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScalingConfig | None) -> np.ndarray:
  """Inverse frequencies (head_dim/2,), float32, with Llama-3's wavelength-dependent scaling.

  Llama 3.1+ divides the low frequencies (wavelengths longer than
  original_max / low_freq_factor) by `factor`, keeps the high ones (wavelengths shorter
  than original_max / high_freq_factor) and interpolates linearly in between.
  """
  exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
  inv = (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)
  if scaling is None:
    return inv
  wavelen = 2 * math.pi / inv
  long_wl = scaling.original_max_position_embeddings / scaling.low_freq_factor
  short_wl = scaling.original_max_position_embeddings / scaling.high_freq_factor
  scaled = np.where(wavelen > long_wl, inv / scaling.factor, inv)
  smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
      scaling.high_freq_factor - scaling.low_freq_factor)
  between = (1 - smooth) * scaled / scaling.factor + smooth * scaled
  in_between = (wavelen >= short_wl) & (wavelen <= long_wl)
  return np.where(in_between, between, scaled).astype(np.float32)


def rope_tables(positions_BxT: Array, inv_freq: np.ndarray) -> tuple[Array, Array]:
  """cos, sin of shape [B, T, head_dim] in float32 (halves repeated, "rotate-half" layout)."""
  angles = positions_BxT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_BxTxHxK: Array, cos_BxTxK: Array, sin_BxTxK: Array) -> Array:
  """Rotate pairs (i, i + K/2): the layout of Hugging Face Llama checkpoints, so no permute."""
  half = x_BxTxHxK.shape[-1] // 2
  x1, x2 = x_BxTxHxK[..., :half], x_BxTxHxK[..., half:]
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  cos, sin = cos_BxTxK[:, :, None, :], sin_BxTxK[:, :, None, :]
  out = x_BxTxHxK.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin
  return out.astype(x_BxTxHxK.dtype)


# --------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------


def attend(q_BxTxHxK: Array, k_BxSxGxK: Array, v_BxSxGxK: Array,
           mask_BxTxS: Array | None) -> Array:
  """Softmax attention with grouped key/value heads (H query heads share G kv heads).

  Scores and softmax in float32; masked entries get a large negative score rather than
  -inf so that a fully masked row (a padded query) stays finite.
  """
  b, t, h, k = q_BxTxHxK.shape
  g = k_BxSxGxK.shape[2]
  q = q_BxTxHxK.reshape(b, t, g, h // g, k)
  scores = jnp.einsum("btgrk,bsgk->bgrts", q, k_BxSxGxK,
                      preferred_element_type=jnp.float32) / math.sqrt(k)
  if mask_BxTxS is not None:
    scores = jnp.where(mask_BxTxS[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_BxSxGxK.dtype)
  out = jnp.einsum("bgrts,bsgk->btgrk", probs, v_BxSxGxK)
  return out.reshape(b, t, h, k)


def update_rows(cache_BxSx: Array, new_BxCx: Array, start_B: Array, count_B: Array) -> Array:
  """Write new[b, :count[b]] into cache[b, start[b]:start[b]+count[b]] for every row b.

  Only the first count[b] entries of a row are written (right padding is dropped), so a
  row that has ended mid-segment is left untouched by the padding of later chunks. A
  dynamic_update_slice of all C entries would clamp its start to S - C whenever
  start + C > S and overwrite that row's real entries with padding.
  """
  s, c = cache_BxSx.shape[1], new_BxCx.shape[1]
  i_C = jnp.arange(c, dtype=jnp.int32)

  def one(cache, new, start, count):
    # Padding goes to distinct indices past the end, which "drop" discards; the indices
    # stay sorted and unique, so XLA can emit a plain strided write.
    idx = jnp.where(i_C < count, start + i_C, s + i_C)
    return cache.at[idx].set(new.astype(cache.dtype), mode="drop", indices_are_sorted=True,
                             unique_indices=True)

  return jax.vmap(one)(cache_BxSx, new_BxCx, start_B, count_B)


class SelfAttention(nn.Module):
  """Causal grouped-query self-attention over a key/value cache.

  The chunk's first `count` keys and values (per row) are written into the cache at
  `cache_start` and every query attends to the cache slots the mask allows; the same code
  serves a whole segment at once, a prompt chunk, or one decoded token. Without a cache
  (None) the queries attend to the chunk's own keys and values.
  """

  cfg: ModelConfig
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, u_BxCxD: Array, cos: Array, sin: Array, k_cache: Array, v_cache: Array,
               cache_start_B: Array, count_B: Array, mask_BxCxS: Array):
    cfg = self.cfg
    d, h, g, k = cfg.width, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
    init = normal(cfg.resolved_initializer_std)
    wq = param(self, "q", (d, h, k), ("embed", "heads", "head_dim"), init)
    wk = param(self, "k", (d, g, k), ("embed", "kv_heads", "head_dim"), init)
    wv = param(self, "v", (d, g, k), ("embed", "kv_heads", "head_dim"), init)
    wo = param(self, "o", (h, k, d), ("heads", "head_dim", "embed"), init)
    u = u_BxCxD.astype(self.dtype)
    q = jnp.einsum("bcd,dhk->bchk", u, wq.astype(self.dtype))
    kk = jnp.einsum("bcd,dgk->bcgk", u, wk.astype(self.dtype))
    vv = jnp.einsum("bcd,dgk->bcgk", u, wv.astype(self.dtype))
    q = checkpoint_name(apply_rope(q, cos, sin), "qkv")
    kk = checkpoint_name(apply_rope(kk, cos, sin), "qkv")
    vv = checkpoint_name(vv, "qkv")
    if k_cache is None:
      # No cache (a whole segment of a one-shot forward, attention_scope=segment): the
      # chunk's own keys are all there is to attend to, so neither a scatter into a cache
      # nor, in the backward, a gather out of it. The mask is then plain causal.
      if cfg.attention_impl == "einsum":
        out = attend(q, kk, vv, mask_BxCxS)
      else:
        out = jax.nn.dot_product_attention(q, kk, vv, is_causal=True,
                                           implementation=cfg.attention_impl)
    else:
      k_cache = update_rows(k_cache, kk, cache_start_B, count_B)
      v_cache = update_rows(v_cache, vv, cache_start_B, count_B)
      out = attend(q, k_cache, v_cache, mask_BxCxS)
    out = jnp.einsum("bchk,hkd->bcd", out, wo.astype(self.dtype))
    return out, k_cache, v_cache


class MLP(nn.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

  cfg: ModelConfig
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x_BxCxD: Array) -> Array:
    d, f = self.cfg.width, self.cfg.mlp_width
    init = normal(self.cfg.resolved_initializer_std)
    w_gate = param(self, "gate", (d, f), ("embed", "mlp"), init)
    w_up = param(self, "up", (d, f), ("embed", "mlp"), init)
    w_down = param(self, "down", (f, d), ("mlp", "embed"), init)
    x = x_BxCxD.astype(self.dtype)
    hidden = jax.nn.silu(x @ w_gate.astype(self.dtype)) * (x @ w_up.astype(self.dtype))
    hidden = checkpoint_name(hidden, "mlp_hidden")
    hidden = nn.with_logical_constraint(hidden, ("activation_batch", "activation_length",
                                                 "activation_mlp"))
    return hidden @ w_down.astype(self.dtype)
