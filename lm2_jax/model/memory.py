"""The LM2 memory bank: a gated cross-attention read and an LSTM-like gated write.

The causal reformulation of the paper's Eqs. 1-6 is written out in docs/architecture.md.
In short, for a segment with normalised layer inputs U and the memory M_prev that stood
after the previous segment:

  read   E = MHA(U Wq, M_prev Wk, M_prev Wv)                         (Eq. 1)
         g_out = sigmoid(E Wout + b_out);  E_gated = g_out * E        (Eqs. 2-3)
  write  C = MHA(RMSNorm(P) Aq, U Ak, U Av)    over this segment's tokens
         g_in = sigmoid(C Gin + b_in);  g_f = sigmoid(P Gf + b_f)    (Eqs. 4-5)
         M_new = g_in * tanh(C) + g_f * P                             (Eq. 6)

The memory state itself is kept in float32 whatever the compute dtype: it is a recurrence
over up to thousands of segments, and bfloat16 rounding would accumulate along it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from lm2_jax.config import ModelConfig
from lm2_jax.model.layers import RMSNorm, attend, normal, param

Array = jax.Array


def identity_memory(num_slots: int, width: int) -> np.ndarray:
  """The paper's initial memory: slot i is the i-th unit vector (cycling when N > width)."""
  mem = np.zeros((num_slots, width), np.float32)
  mem[np.arange(num_slots), np.arange(num_slots) % width] = 1.0
  return mem


def _heads(module: nn.Module, name: str, cfg: ModelConfig, init) -> Array:
  d, h = cfg.width, cfg.memory.num_heads
  return param(module, name, (d, h, d // h), ("embed", "memory_heads", "head_dim"), init)


def _gate(module: nn.Module, name: str, cfg: ModelConfig, bias: float):
  d = cfg.width
  w = param(module, f"{name}_kernel", (d, d), ("embed", "memory_width"),
            normal(cfg.initializer_std))
  b = param(module, f"{name}_bias", (d,), ("memory_width",), nn.initializers.constant(bias))
  return w, b


def _cross_attend(queries_BxNxD: Array, keys_BxSxD: Array, wq, wk, wv,
                  mask_BxNxS: Array | None, dtype) -> Array:
  """Multi-head cross-attention whose heads are concatenated back to width D.

  The paper's read (Eq. 1) has no output projection; the gates that follow mix the heads.
  """
  q = jnp.einsum("bnd,dhk->bnhk", queries_BxNxD.astype(dtype), wq.astype(dtype))
  k = jnp.einsum("bsd,dhk->bshk", keys_BxSxD.astype(dtype), wk.astype(dtype))
  v = jnp.einsum("bsd,dhk->bshk", keys_BxSxD.astype(dtype), wv.astype(dtype))
  out = attend(q, k, v, mask_BxNxS)
  b, n, h, kd = out.shape
  return out.reshape(b, n, h * kd)


def _read_probs(queries_BxCxD: Array, keys_BxNxD: Array, wq, wk, dtype) -> Array:
  """The read's attention weights [B, H, C, N] (float32), as `_cross_attend` computes them."""
  q = jnp.einsum("bcd,dhk->bchk", queries_BxCxD.astype(dtype), wq.astype(dtype))
  k = jnp.einsum("bnd,dhk->bnhk", keys_BxNxD.astype(dtype), wk.astype(dtype))
  scores = jnp.einsum("bchk,bnhk->bhcn", q, k, preferred_element_type=jnp.float32)
  return jax.nn.softmax(scores / np.sqrt(q.shape[-1]), axis=-1)


class MemoryRead(nn.Module):
  """Tokens read the memory of the previous segment; an output gate scales what was read."""

  cfg: ModelConfig
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, u_BxCxD: Array, memory_BxNxD: Array) -> Array:
    cfg = self.cfg
    init = normal(cfg.initializer_std)
    wq = _heads(self, "q", cfg, init)
    wk = _heads(self, "k", cfg, init)
    # zero_init: nothing is read at first, so the block computes exactly the vanilla block;
    # the value projection still gets a gradient (the attention weights are not zero).
    wv = _heads(self, "v", cfg, nn.initializers.zeros if cfg.memory.zero_init else init)
    w_out, b_out = _gate(self, "out_gate", cfg, cfg.memory.output_bias)
    read_BxCxD = _cross_attend(u_BxCxD, memory_BxNxD, wq, wk, wv, None, self.dtype)
    if self.is_mutable_collection("intermediates"):
      # For the memory maps (paper Fig. 6): which slots each token reads, per head. Only
      # computed when a caller asks for intermediates, so ordinary calls pay nothing.
      self.sow("intermediates", "read_probs",
               _read_probs(u_BxCxD, memory_BxNxD, wq, wk, self.dtype))
    read_BxCxD = checkpoint_name(read_BxCxD, "memory_read")
    g_out = jax.nn.sigmoid(
        (read_BxCxD @ w_out.astype(self.dtype)).astype(jnp.float32) + b_out)
    return (g_out * read_BxCxD.astype(jnp.float32)).astype(self.dtype)


class MemoryWrite(nn.Module):
  """The slots attend to the segment's tokens; input and forget gates blend old and new."""

  cfg: ModelConfig
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, prev_BxNxD: Array, u_BxSxD: Array, valid_BxS: Array) -> Array:
    cfg = self.cfg
    init = normal(cfg.initializer_std)
    aq, ak, av = (_heads(self, n, cfg, init) for n in ("q", "k", "v"))
    w_in, b_in = _gate(self, "input_gate", cfg, cfg.memory.input_bias)
    w_f, b_f = _gate(self, "forget_gate", cfg, cfg.memory.forget_bias)
    queries = RMSNorm(cfg.norm_eps, self.dtype, name="norm")(prev_BxNxD)
    n = prev_BxNxD.shape[1]
    mask_BxNxS = jnp.broadcast_to(valid_BxS[:, None, :], valid_BxS.shape[:1] + (n,)
                                  + valid_BxS.shape[1:])
    cand_BxNxD = _cross_attend(queries, u_BxSxD, aq, ak, av, mask_BxNxS, self.dtype)
    g_in = jax.nn.sigmoid((cand_BxNxD @ w_in.astype(self.dtype)).astype(jnp.float32) + b_in)
    g_f = jax.nn.sigmoid((prev_BxNxD.astype(self.dtype) @ w_f.astype(self.dtype))
                         .astype(jnp.float32) + b_f)
    return g_in * jnp.tanh(cand_BxNxD.astype(jnp.float32)) + g_f * prev_BxNxD
