"""The LM2 memory bank: a gated cross-attention read and an LSTM-like gated write.

The causal reformulation of the paper's Eqs. 1-6 is written out in docs/architecture.md.
In short, for a segment with normalised layer inputs U and the memory M_prev that stood
after the previous segment:

  read   E = MHA(U Wq, M_prev Wk, M_prev Wv)                         (Eq. 1)
         g_out = sigmoid(E Wout + b_out);  E_gated = g_out * E        (Eqs. 2-3)
  write  C = MHA(RMSNorm(P) Aq, U Ak, U Av)    over this segment's tokens
         g_in = sigmoid(C Gin + b_in);  g_f = sigmoid(P Gf + b_f)    (Eqs. 4-5)
         M_new = g_in * tanh(C) + g_f * P                             (Eq. 6, update=lstm)
         M_new = P + z * (tanh(C) - P),  z = sigmoid(C Gin + b_in)    (update=convex)

`read_norm` reads an RMS-normalised memory, `read_centre` one whose units are centred over
the slots, `write_centre` keeps each unit's mean over the slots fixed, `slot_keys` adds a
learned embedding per slot where slots are addressed (read keys, write queries) and
`write_sink` lets a slot find nothing in a segment and keep its content;
docs/architecture.md gives the measurements behind these options.

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


def _gate(module: nn.Module, name: str, cfg: ModelConfig, bias: float, keeps: int = 0):
  """A gate's kernel and bias. keeps=+1 (a forget gate) or -1 (the convex write gate) names
  the sign by which its bias makes the memory keep, for the chrono initialisation."""
  d = cfg.width
  w = param(module, f"{name}_kernel", (d, d), ("embed", "memory_width"),
            normal(cfg.resolved_initializer_std))
  init = nn.initializers.constant(bias)
  if keeps and cfg.memory.gate_timescale:
    init = _chrono(cfg.memory.gate_timescale, keeps)
  b = param(module, f"{name}_bias", (d,), ("memory_width",), init)
  return w, b


def _chrono(timescale: float, sign: int):
  """Biases +-log(tau - 1) with tau log-uniform in [2, T]: unit d keeps its content for about
  tau_d segments, every octave of time scales holding as many units."""

  def init(key, shape, dtype=jnp.float32):
    tau = jnp.exp(jax.random.uniform(key, shape, jnp.float32, np.log(2.0), np.log(timescale)))
    return (sign * jnp.log(tau - 1.0)).astype(dtype)

  return init


def _project_heads(queries_BxNxD: Array, keys_BxSxD: Array, values_BxSxD: Array, wq, wk, wv,
                   dtype) -> tuple[Array, Array, Array]:
  """Per-head queries [B, N, H, K], keys and values [B, S, H, K] of a cross-attention."""
  q = jnp.einsum("bnd,dhk->bnhk", queries_BxNxD.astype(dtype), wq.astype(dtype))
  k = jnp.einsum("bsd,dhk->bshk", keys_BxSxD.astype(dtype), wk.astype(dtype))
  v = jnp.einsum("bsd,dhk->bshk", values_BxSxD.astype(dtype), wv.astype(dtype))
  return q, k, v


def _cross_attend(queries_BxNxD: Array, keys_BxSxD: Array, values_BxSxD: Array, wq, wk, wv,
                  valid_BxS: Array | None, dtype, impl: str = "einsum") -> Array:
  """Multi-head cross-attention whose heads are concatenated back to width D.

  The paper's read (Eq. 1) has no output projection; the gates that follow mix the heads.
  `valid_BxS` (None: all) marks a prefix of each row's keys; `impl` is
  model.attention_impl: "einsum" scores and masks, the others call
  jax.nn.dot_product_attention with the valid prefix's length (at least 1, so that a row
  with no token, whose write the caller discards, stays finite).
  """
  q, k, v = _project_heads(queries_BxNxD, keys_BxSxD, values_BxSxD, wq, wk, wv, dtype)
  if impl == "einsum":
    mask = None if valid_BxS is None else jnp.broadcast_to(
        valid_BxS[:, None, :], (q.shape[0], q.shape[1], valid_BxS.shape[1]))
    out = attend(q, k, v, mask)
  else:
    lengths = None if valid_BxS is None else jnp.maximum(valid_BxS.sum(-1), 1).astype(jnp.int32)
    out = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                       implementation=impl)
  b, n, h, kd = out.shape
  return out.reshape(b, n, h * kd)


def _attend_with_sink(queries_BxNxD: Array, u_BxSxD: Array, wq, wk, wv, sink_H: Array,
                      valid_BxS: Array, dtype) -> tuple[Array, Array]:
  """Cross-attention over the tokens plus one key per head whose value is zero.

  Returns the heads concatenated back to width D, divided by the mass found on tokens (the
  mean of what was found), and that mass per head [B, N, H] (float32).
  """
  q, k, v = _project_heads(queries_BxNxD, u_BxSxD, u_BxSxD, wq, wk, wv, dtype)
  scores = jnp.einsum("bnhk,bshk->bhns", q, k,
                      preferred_element_type=jnp.float32) / np.sqrt(q.shape[-1])
  scores = jnp.where(valid_BxS[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
  b, h, n, _ = scores.shape
  sink = jnp.broadcast_to(sink_H[None, :, None, None], (b, h, n, 1))
  probs = jax.nn.softmax(jnp.concatenate([scores, sink], axis=-1), axis=-1)
  found_BxHxN = 1.0 - probs[..., -1]
  out = jnp.einsum("bhns,bshk->bnhk", probs[..., :-1].astype(dtype), v).astype(jnp.float32)
  out = out / jnp.maximum(found_BxHxN.transpose(0, 2, 1)[..., None], 1e-6)
  return out.reshape(b, n, -1), found_BxHxN.transpose(0, 2, 1)


def _fold_read(c: int, n: int, d: int, h: int) -> bool:
  """Whether a read of c tokens from n slots costs fewer FLOPs with the slot projections
  folded into the tokens' side (`_read_folded`).

  Per row, the usual order costs 4 N D^2 (slot keys and values) + 4 C N D (scores and
  weighted values); the folded one 4 C D^2 + 4 C H N D. Folding wins for
  C < N D / (D + (H - 1) N): decoding (C = 1) at 256 slots of width 640 in 10 heads reads
  with 8.2 MFLOP instead of 420 MFLOP per token and layer.
  """
  return c * (d * d + (h - 1) * n * d) < n * d * d


def _read_folded(queries_BxCxD: Array, keys_BxNxD: Array, values_BxNxD: Array, wq, wk, wv,
                 dtype) -> Array:
  """`_cross_attend` without a mask, its products reassociated for few queries.

  Per head, scores q_h (M Wk_h)^T = (q_h Wk_h^T) M^T and weighted values P_h (M Wv_h) =
  (P_h M) Wv_h: the slots are never projected, the queries and read-outs are (width D).
  """
  q = jnp.einsum("bcd,dhk->bchk", queries_BxCxD.astype(dtype), wq.astype(dtype))
  q_in_keys = jnp.einsum("bchk,ehk->bche", q, wk.astype(dtype))
  scores = jnp.einsum("bche,bne->bhcn", q_in_keys, keys_BxNxD.astype(dtype),
                      preferred_element_type=jnp.float32) / np.sqrt(q.shape[-1])
  probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
  mixed = jnp.einsum("bhcn,bne->bche", probs, values_BxNxD.astype(dtype))
  out = jnp.einsum("bche,ehk->bchk", mixed, wv.astype(dtype))
  b, c, h, k = out.shape
  return out.reshape(b, c, h * k)


def _read_probs(queries_BxCxD: Array, keys_BxNxD: Array, wq, wk, dtype) -> Array:
  """The read's attention weights [B, H, C, N] (float32), as `_cross_attend` computes them."""
  q = jnp.einsum("bcd,dhk->bchk", queries_BxCxD.astype(dtype), wq.astype(dtype))
  k = jnp.einsum("bnd,dhk->bnhk", keys_BxNxD.astype(dtype), wk.astype(dtype))
  scores = jnp.einsum("bchk,bnhk->bhcn", q, k, preferred_element_type=jnp.float32)
  return jax.nn.softmax(scores / np.sqrt(q.shape[-1]), axis=-1)


def _slot_embedding(module: nn.Module, name: str, cfg: ModelConfig, n: int) -> Array:
  """[N, D] learned per-slot embedding (slot_keys), scaled like a normalised memory row."""
  return param(module, name, (n, cfg.width), ("memory_slots", "embed"), normal(1.0))


class MemoryRead(nn.Module):
  """Tokens read the memory of the previous segment; an output gate scales what was read."""

  cfg: ModelConfig
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, u_BxCxD: Array, memory_BxNxD: Array) -> Array:
    cfg = self.cfg
    init = normal(cfg.resolved_initializer_std)
    wq = _heads(self, "q", cfg, init)
    wk = _heads(self, "k", cfg, init)
    # zero_init: nothing is read at first, so the block computes exactly the vanilla block;
    # the value projection still gets a gradient (the attention weights are not zero).
    wv = _heads(self, "v", cfg, nn.initializers.zeros if cfg.memory.zero_init else init)
    w_out, b_out = _gate(self, "out_gate", cfg, cfg.memory.output_bias)
    values = memory_BxNxD
    if cfg.memory.read_centre:
      values = values - jnp.mean(values, axis=1, keepdims=True)
    if cfg.memory.read_norm:
      values = RMSNorm(cfg.norm_eps, self.dtype, name="norm")(values)
    keys = values
    if cfg.memory.slot_keys:
      keys = values + _slot_embedding(self, "slot_keys", cfg, memory_BxNxD.shape[1])
    c, n = u_BxCxD.shape[1], memory_BxNxD.shape[1]
    if _fold_read(c, n, cfg.width, cfg.memory.num_heads):  # decoding: a few tokens per call
      read_BxCxD = _read_folded(u_BxCxD, keys, values, wq, wk, wv, self.dtype)
    else:
      read_BxCxD = _cross_attend(u_BxCxD, keys, values, wq, wk, wv, None, self.dtype,
                                 cfg.attention_impl)
    if self.is_mutable_collection("intermediates"):
      # For the memory maps (paper Fig. 6): which slots each token reads, per head. Only
      # computed when a caller asks for intermediates, so ordinary calls pay nothing.
      self.sow("intermediates", "read_probs", _read_probs(u_BxCxD, keys, wq, wk, self.dtype))
    read_BxCxD = checkpoint_name(read_BxCxD, "memory_read")
    g_out = jax.nn.sigmoid(
        (read_BxCxD @ w_out.astype(self.dtype)).astype(jnp.float32) + b_out)
    return (g_out * read_BxCxD.astype(jnp.float32)).astype(self.dtype)


class MemoryWrite(nn.Module):
  """The slots attend to the segment's tokens; gates blend old and new (`memory.update`)."""

  cfg: ModelConfig
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, prev_BxNxD: Array, u_BxSxD: Array, valid_BxS: Array) -> Array:
    cfg = self.cfg
    init = normal(cfg.resolved_initializer_std)
    aq, ak, av = (_heads(self, n, cfg, init) for n in ("q", "k", "v"))
    w_in, b_in = _gate(self, "input_gate", cfg, cfg.memory.input_bias,
                       keeps=-1 if cfg.memory.update == "convex" else 0)
    if cfg.memory.update == "lstm":
      w_f, b_f = _gate(self, "forget_gate", cfg, cfg.memory.forget_bias, keeps=1)
    queries = RMSNorm(cfg.norm_eps, self.dtype, name="norm")(prev_BxNxD)
    n = prev_BxNxD.shape[1]
    if cfg.memory.slot_keys:
      queries = queries + _slot_embedding(self, "slot_queries", cfg, n)
    found_BxNxD = 1.0
    if cfg.memory.write_sink:
      # At the start half of every slot's attention goes to the sink (log S against ~0).
      sink = param(self, "sink", (cfg.memory.num_heads,), ("memory_heads",),
                   nn.initializers.constant(np.log(u_BxSxD.shape[1])))
      cand_BxNxD, found_BxNxH = _attend_with_sink(queries, u_BxSxD, aq, ak, av, sink,
                                                  valid_BxS, self.dtype)
      found_BxNxD = jnp.repeat(found_BxNxH, cfg.width // cfg.memory.num_heads, axis=-1)
    else:
      cand_BxNxD = _cross_attend(queries, u_BxSxD, u_BxSxD, aq, ak, av, valid_BxS,
                                 self.dtype, cfg.attention_impl)
    g_in = jax.nn.sigmoid((cand_BxNxD @ w_in.astype(self.dtype)).astype(jnp.float32) + b_in)
    cand = jnp.tanh(cand_BxNxD.astype(jnp.float32))
    if cfg.memory.update == "convex":
      # A GRU-like blend: old and new weights sum to one, so nothing accumulates.
      gate = g_in * found_BxNxD
      new_BxNxD = prev_BxNxD + gate * (cand - prev_BxNxD)
    else:
      g_f = jax.nn.sigmoid((prev_BxNxD.astype(self.dtype) @ w_f.astype(self.dtype))
                           .astype(jnp.float32) + b_f)
      new_BxNxD = g_in * cand + g_f * prev_BxNxD
      gate = g_f
    if cfg.memory.write_centre:
      change_BxNxD = new_BxNxD - prev_BxNxD
      new_BxNxD = prev_BxNxD + change_BxNxD - jnp.mean(change_BxNxD, axis=1, keepdims=True)
    if self.is_mutable_collection("intermediates"):
      # Diagnostics per write (docs/results.md): how much is kept (g_f, or 1 - z) and
      # how large the memory has become.
      kept_BxNxD = gate if cfg.memory.update == "lstm" else 1.0 - gate
      self.sow("intermediates", "kept", jnp.mean(kept_BxNxD, axis=(1, 2)))
      # Per unit, for how long a unit keeps what it holds (trace.py's `held`).
      self.sow("intermediates", "log_kept", jnp.log(jnp.maximum(kept_BxNxD, 1e-30)))
      self.sow("intermediates", "memory_rms", jnp.sqrt(jnp.mean(new_BxNxD ** 2, axis=(1, 2))))
      unit = new_BxNxD * jax.lax.rsqrt(jnp.sum(new_BxNxD ** 2, -1, keepdims=True) + 1e-12)
      cos = jnp.abs(jnp.einsum("bnd,bmd->bnm", unit, unit))
      self.sow("intermediates", "slot_similarity", (cos.sum((1, 2)) - n) / (n * (n - 1) or 1))
    return new_BxNxD
