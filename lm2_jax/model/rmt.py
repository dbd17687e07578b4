"""The Recurrent Memory Transformer baseline (Bulatov et al. 2022; BABILong's RMT).

The same Llama backbone as LM2 (the blocks, embedding, final norm and head of `Core`), with
no memory inside the blocks. Instead each segment is processed as

    [N read-memory tokens; the segment's tokens; N write-memory tokens]

with causal attention over that whole sequence, and the final-normed outputs at the write
positions become the next segment's read-memory tokens. The first segment reads a learned
initial memory (`memory_init`, N x D), which is also the only parameter the baseline adds.
docs/architecture.md writes out the equations and how RMT and LM2 are compared.

One code path serves training, streaming and decoding, as for LM2: `RMTCore` consumes a
chunk inside one segment in up to three passes through the same blocks: the read tokens
(when a row starts a segment, filling cache slots 0..N-1), the chunk's tokens (slots N +
offset), and the write tokens (when a row completes its segment, slots N+S..2N+S-1 of a
scratch extension of the cache; their keys and values are never needed again).
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from lm2_jax.config import ModelConfig
from lm2_jax.model.layers import dtype_of, rope_inv_freq, rope_tables
from lm2_jax.model.memory import identity_memory
from lm2_jax.model.transformer import LM2, Core, _ChunkContext

Array = jax.Array


@flax.struct.dataclass
class RMTState:
  """What a segment needs from the past. L layers, B rows, K = N + S cache slots (the read
  tokens then the segment), G kv heads, H head width, N memory tokens, D width."""

  pos_B: Array            # int32 tokens consumed so far, per row
  k_cache_LxBxKxGxH: Array
  v_cache_LxBxKxGxH: Array
  memory_BxNxD: Array     # float32; the read-memory tokens of the current segment

  def logical_axes(self) -> dict[str, tuple[str | None, ...]]:
    """Logical axis names of each field, for the sharding table (as DecodeState's)."""
    kv = ("layers", "activation_batch", "activation_length", "activation_heads", None)
    return {"pos_B": ("activation_batch",), "k_cache_LxBxKxGxH": kv, "v_cache_LxBxKxGxH": kv,
            "memory_BxNxD": ("activation_batch", "memory_slots", "activation_embed")}


def init_rmt_state(cfg: ModelConfig, batch_size: int) -> RMTState:
  """A fresh state; rows at position 0 read the learned initial memory instead of this one."""
  n = cfg.memory.num_slots
  kv = (cfg.num_layers, batch_size, n + cfg.segment_len, cfg.num_kv_heads,
        cfg.resolved_head_dim)
  dtype = dtype_of(cfg.compute_dtype)
  return RMTState(pos_B=jnp.zeros((batch_size,), jnp.int32),
                  k_cache_LxBxKxGxH=jnp.zeros(kv, dtype),
                  v_cache_LxBxKxGxH=jnp.zeros(kv, dtype),
                  memory_BxNxD=jnp.zeros((batch_size, n, cfg.width), jnp.float32))


class RMTCore(Core):
  """`Core` (embedding, blocks, final norm, head; no memory blocks for kind=rmt) plus the
  learned initial memory, consuming one chunk as read pass, token pass and write pass."""

  def setup(self):
    super().setup()
    cfg = self.cfg
    # Start from the same distinct unit vectors as LM2's memory; they are trained.
    start = jnp.asarray(identity_memory(cfg.memory.num_slots, cfg.width))
    self.memory_init = self.param(
        "memory_init", nn.with_logical_partitioning(lambda *_: start, ("memory_slots", "embed")),
        start.shape, jnp.float32)

  def _blocks(self, x_BxCxD: Array, start_B: Array, k_cache, v_cache):
    """All blocks over C inputs at cache slots (and rotary positions) start_B + 0..C-1, each
    attending to the slots up to its own. Without caches (None) the C inputs attend causally
    among themselves, at positions 0..C-1 (start_B must be 0)."""
    cfg = self.cfg
    b, c = x_BxCxD.shape[:2]
    q_idx_BxC = start_B[:, None] + jnp.arange(c, dtype=jnp.int32)
    slots = c if k_cache is None else k_cache.shape[2]
    mask = jnp.arange(slots, dtype=jnp.int32)[None, None, :] <= q_idx_BxC[:, :, None]
    cos, sin = rope_tables(q_idx_BxC, rope_inv_freq(cfg.resolved_head_dim, cfg.rope_theta,
                                                     cfg.rope_scaling))
    # The plain blocks use only the rotary tables, the cache offsets and the mask.
    ctx = _ChunkContext(cos=cos, sin=sin, cache_start_B=start_B,
                        count_B=jnp.full((b,), c, jnp.int32), mask_BxCxK=mask,
                        seg_start_B=start_B, seg_valid_BxS=jnp.zeros((b, 0), bool),
                        write_B=jnp.zeros((b,), bool))
    (x, _), (k_cache, v_cache, _, _) = self.blocks((x_BxCxD, None),
                                                   (k_cache, v_cache, None, None), ctx)
    return self.final_norm(x), k_cache, v_cache

  def memory_of(self, state: RMTState) -> Array:
    """The read-memory tokens as one memory layer, [1, B, N, D] (Core.memory_of's shape)."""
    return state.memory_BxNxD[None]

  def with_memory(self, state: RMTState, memory_1xBxNxD: Array, fresh_B: Array) -> RMTState:
    """`state` reading `memory_1xBxNxD` next, the learned initial memory in rows `fresh_B`."""
    return state.replace(memory_BxNxD=jnp.where(
        fresh_B[:, None, None], self.memory_init[None], memory_1xBxNxD[0].astype(jnp.float32)))

  def __call__(self, state: RMTState, chunk, truncate_every: int = 0,
               whole_segment: bool = False, whole_sequence: bool = False,
               memory_given: bool = False):
    """(state, (tokens_BxC, valid_BxC)) -> (state, logits_BxCxV float32).

    The chunk must not cross a segment boundary: pos % segment_len + C <= segment_len.
    Only the first valid_BxC.sum(-1) tokens of a row count (right padding). Every pass
    runs through the caches (the memory tokens sit in them), except with `whole_segment`
    (the one-shot forward: the chunk is a whole segment from its start, a final partial one
    right-padded): then [read; segment; write] is one causal pass of 2N + S positions
    without caches, the same attention and positions in a third of the block passes, and
    the state's caches are neither read nor written (its caller passes them empty).
    `whole_sequence` does not apply. `memory_given`: a row at position 0 reads the state's
    memory (its caller put the memory to start from there) instead of the learned initial
    one.
    """
    tokens_BxC, valid_BxC = chunk
    cfg = self.cfg
    dtype = dtype_of(cfg.compute_dtype)
    n, seg = cfg.memory.num_slots, cfg.segment_len
    b = tokens_BxC.shape[0]
    pos_B = state.pos_B
    seg_start_B = pos_B % seg
    count_B = valid_BxC.sum(-1).astype(jnp.int32)
    read_B = (seg_start_B == 0) & (count_B > 0)    # rows that start a segment now
    write_B = seg_start_B + count_B == seg          # rows that complete their segment now
    memory = state.memory_BxNxD
    if not memory_given:
      memory = jnp.where((pos_B == 0)[:, None, None], self.memory_init[None], memory)
    if truncate_every:
      # Truncated back-propagation through time: no gradient flows into the memory across
      # every truncate_every-th segment boundary; never at segment 0, whose memory is the
      # learned initial memory.
      index_B = pos_B // seg
      cut = (index_B % truncate_every == 0) & (index_B > 0)
      memory = jnp.where(cut[:, None, None], jax.lax.stop_gradient(memory), memory)
    memory_x = memory.astype(dtype)
    kc, vc = state.k_cache_LxBxKxGxH, state.v_cache_LxBxKxGxH
    zeros_B = jnp.zeros((b,), jnp.int32)
    head = self.embedding.T if cfg.tie_embeddings else self.lm_head
    if whole_segment:
      x = jnp.take(self.embedding, tokens_BxC, axis=0).astype(dtype)
      c = x.shape[1]
      out, _, _ = self._blocks(jnp.concatenate([memory_x, x, memory_x], axis=1), zeros_B,
                               None, None)
      logits = jnp.einsum("bcd,dv->bcv", out[:, n:n + c], head.astype(dtype),
                          preferred_element_type=jnp.float32)
      # A partial final segment (right padding) completes no segment: its write is dropped,
      # and its padding comes after every real token, so no real token attends to it.
      written = out[:, n + c:].astype(jnp.float32)
      memory = jnp.where(write_B[:, None, None], written, memory)
      return RMTState(pos_B=pos_B + count_B, k_cache_LxBxKxGxH=kc, v_cache_LxBxKxGxH=vc,
                      memory_BxNxD=memory), logits

    def read(mdl, kc, vc):
      _, k_new, v_new = mdl._blocks(memory_x, zeros_B, kc, vc)
      keep = read_B[None, :, None, None, None]
      return jnp.where(keep, k_new, kc), jnp.where(keep, v_new, vc)

    def write(mdl, kc, vc, memory):
      extra = ((0, 0), (0, 0), (0, n), (0, 0), (0, 0))
      out, _, _ = mdl._blocks(memory_x, zeros_B + n + seg, jnp.pad(kc, extra),
                              jnp.pad(vc, extra))
      return jnp.where(write_B[:, None, None], out.astype(jnp.float32), memory)

    # Decoding steps mostly neither start nor complete a segment: skip those passes then.
    if self.is_initializing():
      kc, vc = read(self, kc, vc)
    else:
      kc, vc = nn.cond(jnp.any(read_B), read, lambda mdl, k, v: (k, v), self, kc, vc)
    x = jnp.take(self.embedding, tokens_BxC, axis=0).astype(dtype)
    x, kc, vc = self._blocks(x, n + seg_start_B, kc, vc)
    logits = jnp.einsum("bcd,dv->bcv", x, head.astype(dtype),
                        preferred_element_type=jnp.float32)
    if self.is_initializing():
      memory = write(self, kc, vc, memory)
    else:
      memory = nn.cond(jnp.any(write_B), write, lambda mdl, k, v, m: m, self, kc, vc, memory)
    return RMTState(pos_B=pos_B + count_B, k_cache_LxBxKxGxH=kc, v_cache_LxBxKxGxH=vc,
                    memory_BxNxD=memory), logits


class RMT(LM2):
  """The RMT baseline with LM2's interface: `apply(variables, tokens_BxT)` -> logits_BxTxV,
  `prefill(tokens, state, lengths_B)` and `step(tokens_BxC, state, valid_BxC)` on an
  `RMTState` from `init_state`."""

  def setup(self):
    self.core = RMTCore(self.cfg)
