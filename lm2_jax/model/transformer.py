"""The LM2 decoder: blocks scanned over depth, segments scanned over time.

One code path serves training, streaming and decoding: `Core` consumes a chunk of tokens
that lies within one segment (a whole segment, part of a prompt, or one decoded token),
updates a `DecodeState` (key/value caches, the per-layer memory, the current segment's
normalised inputs, positions) and writes the memory when a row completes its segment.
`LM2.__call__` scans `Core` over the segments of a sequence; `LM2.prefill` and `LM2.step`
accept rows anywhere in a segment and cut what they are given at each row's segment
boundaries, so that no memory write is ever skipped.
"""

from __future__ import annotations

import functools
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lm2_jax.config import ModelConfig
from lm2_jax.model.layers import (MLP, RMSNorm, SelfAttention, dtype_of, normal, param,
                                  rope_inv_freq, rope_tables, update_rows)
from lm2_jax.model.memory import MemoryRead, MemoryWrite, identity_memory

Array = jax.Array


@flax.struct.dataclass
class DecodeState:
  """Everything a segment needs from the past; a pytree, passed in and returned.

  Shapes: L layers, M memory layers, B rows, K cache slots (segment_len for
  attention_scope=segment, the maximum length for full), G kv heads, H head width,
  N memory slots, S = segment_len, D width.
  """

  pos_B: Array            # int32 tokens consumed so far, per row
  k_cache_LxBxKxGxH: Array
  v_cache_LxBxKxGxH: Array
  memory_MxBxNxD: Array   # float32; memory after the last completed segment
  u_MxBxSxD: Array        # normalised layer inputs of the current segment (for the write)

  def logical_axes(self) -> dict[str, tuple[str | None, ...]]:
    """Logical axis names of each field, for the sharding table (lm2_jax/sharding.py):
    rows as the activations' batch, key/value heads as attention heads."""
    kv = ("layers", "activation_batch", "activation_length", "activation_heads", None)
    return {"pos_B": ("activation_batch",), "k_cache_LxBxKxGxH": kv, "v_cache_LxBxKxGxH": kv,
            "memory_MxBxNxD": ("layers", "activation_batch", "memory_slots",
                               "activation_embed"),
            "u_MxBxSxD": ("layers", "activation_batch", "activation_length",
                          "activation_embed")}


def init_state(cfg: ModelConfig, batch_size: int, max_len: int | None = None) -> DecodeState:
  """A fresh state. `max_len` bounds the sequence length for attention_scope=full.

  The memory starts at zero here; the model substitutes the initial memory for every row
  whose position is 0, so a learned initial memory needs no access to parameters here.
  For model.memory.kind=rmt this is the RMT's state (lm2_jax/model/rmt.py).
  """
  if cfg.memory.kind == "rmt":
    from lm2_jax.model.rmt import init_rmt_state  # pylint: disable=g-import-not-at-top
    return init_rmt_state(cfg, batch_size)
  dtype = dtype_of(cfg.compute_dtype)
  if cfg.attention_scope == "segment":
    slots = cfg.segment_len
  else:
    if max_len is None:
      raise ValueError("init_state: attention_scope=full needs max_len (the cache size)")
    slots = max_len
  m = cfg.num_memory_layers
  n = cfg.memory.num_slots if m else 0
  seg = cfg.segment_len if m else 0
  kv = (cfg.num_layers, batch_size, slots, cfg.num_kv_heads, cfg.resolved_head_dim)
  return DecodeState(
      pos_B=jnp.zeros((batch_size,), jnp.int32),
      k_cache_LxBxKxGxH=jnp.zeros(kv, dtype),
      v_cache_LxBxKxGxH=jnp.zeros(kv, dtype),
      memory_MxBxNxD=jnp.zeros((m, batch_size, n, cfg.width), jnp.float32),
      u_MxBxSxD=jnp.zeros((m, batch_size, seg, cfg.width), dtype),
  )


@flax.struct.dataclass
class _ChunkContext:
  """Per-chunk quantities shared by every layer (broadcast through the layer scan)."""

  cos: Array
  sin: Array
  cache_start_B: Array
  count_B: Array          # the chunk's real tokens per row (a prefix; the rest is padding)
  mask_BxCxK: Array
  seg_start_B: Array      # where the chunk starts inside its segment
  seg_valid_BxS: Array    # which positions of the current segment hold tokens after the chunk
  write_B: Array          # rows that complete their segment with this chunk


class DecoderBlock(nn.Module):
  """Pre-norm Llama block, with the memory read beside self-attention and the write after.

  carry: (x_BxCxD, P_BxNxD) where P is the memory written by the layer below for this
  segment (the write chain of the paper's Fig. 2); plain blocks carry P through untouched.
  layer_state: (k_cache, v_cache, memory, u_seg). No caches (None): attention within the
  chunk only. No u_seg (None): the chunk is a whole segment of a one-shot forward, so the
  segment's inputs are the chunk's and the write runs without nn.cond (every segment but a
  final partial one completes it, and `write_B` keeps the old memory for that one).
  """

  cfg: ModelConfig
  has_memory: bool

  @nn.compact
  def __call__(self, carry, layer_state, ctx: _ChunkContext):
    cfg = self.cfg
    dtype = dtype_of(cfg.compute_dtype)
    x, chain = carry
    k_cache, v_cache, memory, u_seg = layer_state
    x = nn.with_logical_constraint(x, ("activation_batch", "activation_length",
                                       "activation_embed"))
    u = RMSNorm(cfg.norm_eps, dtype, name="attn_norm")(x)
    attn, k_cache, v_cache = SelfAttention(cfg, dtype, name="attn")(
        u, ctx.cos, ctx.sin, k_cache, v_cache, ctx.cache_start_B, ctx.count_B, ctx.mask_BxCxK)
    h = x + attn
    if self.has_memory:
      h = h + MemoryRead(cfg, dtype, name="memory_read")(u, memory)
      whole_segment = u_seg is None
      seg_inputs = u if whole_segment else update_rows(u_seg, u, ctx.seg_start_B, ctx.count_B)
      if not whole_segment:
        u_seg = seg_inputs
      prev = chain if cfg.memory.write_recurrence == "chain" else memory

      def write(mdl, prev, u_seg, memory):
        written = MemoryWrite(cfg, dtype, name="memory_write", parent=mdl)(
            prev, u_seg, ctx.seg_valid_BxS)
        return jnp.where(ctx.write_B[:, None, None], written, memory)

      if (whole_segment or self.is_initializing()
          or self.is_mutable_collection("intermediates")):
        # (Diagnostics sow from inside the write, which nn.cond's branches cannot do.)
        memory = write(self, prev, seg_inputs, memory)
      else:
        # Most decoding steps complete no row's segment: skip the write's cross-attention
        # over the whole segment (the dominant cost of a step) rather than compute and
        # discard it.
        memory = nn.cond(jnp.any(ctx.write_B), write, lambda mdl, p, u, m: m, self, prev,
                         seg_inputs, memory)
      chain = memory
    out = h + MLP(cfg, dtype, name="mlp")(RMSNorm(cfg.norm_eps, dtype, name="mlp_norm")(h))
    return (out.astype(dtype), chain), (k_cache, v_cache, memory, u_seg)


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_qkv_mlp": jax.checkpoint_policies.save_only_these_names("qkv", "mlp_hidden",
                                                                  "memory_read"),
}


def _stack(cfg: ModelConfig, has_memory: bool, length: int, name: str):
  """`length` blocks with stacked parameters under nn.scan (leading axis named `layers`)."""
  block = DecoderBlock
  if cfg.remat_policy != "none":
    block = nn.remat(block, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=False)
  scanned = nn.scan(block, variable_axes={"params": 0, "intermediates": 0},
                    split_rngs={"params": True},
                    in_axes=(0, nn.broadcast), length=length,
                    unroll=min(cfg.scan_unroll, length),
                    metadata_params={nn.PARTITION_NAME: "layers"})
  return scanned(cfg, has_memory, name=name)


class Core(nn.Module):
  """Embedding, memory blocks, plain blocks, final norm and head, for one chunk."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    init = normal(cfg.resolved_initializer_std)
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(init, ("vocab", "embed")),
        (cfg.vocab_size, cfg.width), jnp.float32)
    m = cfg.num_memory_layers
    if m and cfg.memory.init == "learned":
      start = np.broadcast_to(identity_memory(cfg.memory.num_slots, cfg.width),
                              (m, cfg.memory.num_slots, cfg.width))
      self.memory_init = self.param(
          "memory_init", nn.with_logical_partitioning(
              lambda *_: jnp.asarray(start), ("layers", "memory_slots", "embed")),
          start.shape, jnp.float32)
    self.memory_blocks = _stack(cfg, True, m, "memory_blocks") if m else None
    rest = cfg.num_layers - m
    self.blocks = _stack(cfg, False, rest, "blocks") if rest else None
    self.final_norm = RMSNorm(cfg.norm_eps, dtype_of(cfg.compute_dtype))
    if not cfg.tie_embeddings:
      self.lm_head = self.param(
          "lm_head", nn.with_logical_partitioning(init, ("embed", "vocab")),
          (cfg.width, cfg.vocab_size), jnp.float32)

  def initial_memory(self) -> Array:
    """The memory every sequence starts from, [M, N, D] (learned or the identity)."""
    cfg = self.cfg
    if cfg.memory.init == "learned":
      return self.memory_init
    return jnp.broadcast_to(identity_memory(cfg.memory.num_slots, cfg.width),
                            (cfg.num_memory_layers, cfg.memory.num_slots, cfg.width))

  def memory_of(self, state: DecodeState) -> Array:
    """The memory a state holds, [M, B, N, D]: what training carries to the next sequence."""
    return state.memory_MxBxNxD

  def with_memory(self, state: DecodeState, memory_MxBxNxD: Array, fresh_B: Array):
    """`state` holding `memory_MxBxNxD`, the initial memory in the rows `fresh_B` marks."""
    return state.replace(memory_MxBxNxD=jnp.where(
        fresh_B[None, :, None, None], self.initial_memory()[:, None],
        memory_MxBxNxD.astype(jnp.float32)))

  def _context(self, state: DecodeState, valid_BxC: Array, cached: bool) -> _ChunkContext:
    cfg = self.cfg
    c = valid_BxC.shape[1]
    seg = cfg.segment_len
    pos_B = state.pos_B
    seg_start_B = pos_B % seg
    cache_start_B = seg_start_B if cfg.attention_scope == "segment" else pos_B
    if cached:
      # The cache index of each query is also its rotary position: in-segment for
      # attention_scope=segment (every segment is computed exactly alike), absolute for full.
      q_idx_BxC = cache_start_B[:, None] + jnp.arange(c, dtype=jnp.int32)
      slots = state.k_cache_LxBxKxGxH.shape[2]
    else:
      # A whole segment attending within itself: positions and mask are the same for every
      # row and every segment, constants of the program ([1, C] and [1, C, C]).
      q_idx_BxC = jnp.arange(c, dtype=jnp.int32)[None]
      slots = c
    mask = jnp.arange(slots, dtype=jnp.int32)[None, None, :] <= q_idx_BxC[:, :, None]
    cos, sin = rope_tables(q_idx_BxC, rope_inv_freq(cfg.resolved_head_dim, cfg.rope_theta,
                                                     cfg.rope_scaling))
    count_B = valid_BxC.sum(-1).astype(jnp.int32)
    filled_B = seg_start_B + count_B
    seg_valid = jnp.arange(seg, dtype=jnp.int32)[None, :] < filled_B[:, None]
    return _ChunkContext(cos=cos, sin=sin, cache_start_B=cache_start_B, count_B=count_B,
                         mask_BxCxK=mask,
                         seg_start_B=seg_start_B, seg_valid_BxS=seg_valid,
                         write_B=filled_B == seg)

  def __call__(self, state: DecodeState, chunk, truncate_every: int = 0,
               whole_segment: bool = False, whole_sequence: bool = False,
               memory_given: bool = False):
    """(state, (tokens_BxC, valid_BxC)) -> (state, logits_BxCxV float32).

    The chunk must not cross a segment boundary: pos % segment_len + (real tokens) <=
    segment_len, or that segment's memory write would never happen (`LM2.step` and
    `LM2.prefill` cut chunks to guarantee it). Only the first valid_BxC.sum(-1) tokens of a
    row count (right padding).

    `whole_segment` (the one-shot forward, `LM2.__call__`): every row's chunk is one whole
    segment, starting at a segment boundary (a final partial one right-padded). The state's
    u_MxBxSxD is then neither read nor written, nor, with attention_scope=segment, are the
    key/value caches (the segment attends within itself): its caller passes them empty.

    `whole_sequence` (the one-shot forward of a model without memory in full scope): the
    chunk is a whole sequence from position 0, of any length, attending within itself
    (plain causal attention, which is what full scope computes); no cache either.

    `memory_given`: a row at position 0 keeps the state's memory (its caller put the
    memory to start from there) instead of taking the initial one.
    """
    tokens_BxC, valid_BxC = chunk
    cfg = self.cfg
    if tokens_BxC.shape[1] > cfg.segment_len and not whole_sequence:
      raise ValueError(f"Core: a chunk of {tokens_BxC.shape[1]} tokens is longer than a "
                       f"segment (model.segment_len={cfg.segment_len}); LM2.step cuts it")
    dtype = dtype_of(cfg.compute_dtype)
    cached = not (whole_sequence or (whole_segment and cfg.attention_scope == "segment"))
    ctx = self._context(state, valid_BxC, cached)
    m = cfg.num_memory_layers
    x = jnp.take(self.embedding, tokens_BxC, axis=0).astype(dtype)
    kc, vc = state.k_cache_LxBxKxGxH, state.v_cache_LxBxKxGxH
    memory, u_seg = state.memory_MxBxNxD, state.u_MxBxSxD
    if m:
      if not memory_given:
        fresh_B = state.pos_B == 0
        memory = jnp.where(fresh_B[None, :, None, None], self.initial_memory()[:, None],
                           memory)
      if truncate_every:
        # Truncated back-propagation through time: no gradient flows into the memory
        # across the segment boundaries k * truncate_every, k >= 1. Not at segment 0: there
        # the memory is the initial one, and a learned memory_init must get its gradient.
        segment_B = state.pos_B // cfg.segment_len
        cut = (segment_B % truncate_every == 0) & (segment_B > 0)
        memory = jnp.where(cut[None, :, None, None], jax.lax.stop_gradient(memory), memory)
      layers = (kc[:m], vc[:m]) if cached else (None, None)
      (x, _), (k_m, v_m, memory, u_out) = self.memory_blocks(
          (x, memory[m - 1]), (*layers, memory, None if whole_segment else u_seg), ctx)
      u_seg = u_seg if whole_segment else u_out
    if cfg.num_layers > m:
      layers = (kc[m:], vc[m:]) if cached else (None, None)
      (x, _), (k_p, v_p, _, _) = self.blocks((x, None), (*layers, None, None), ctx)
    if cached:  # (otherwise the empty caches pass through)
      if m and cfg.num_layers > m:
        kc, vc = jnp.concatenate([k_m, k_p]), jnp.concatenate([v_m, v_p])
      else:
        kc, vc = (k_m, v_m) if m else (k_p, v_p)
    x = self.final_norm(x)
    head = self.embedding.T if cfg.tie_embeddings else self.lm_head
    logits = jnp.einsum("bcd,dv->bcv", x, head.astype(dtype),
                        preferred_element_type=jnp.float32)
    new_state = DecodeState(pos_B=state.pos_B + valid_BxC.sum(-1).astype(jnp.int32),
                            k_cache_LxBxKxGxH=kc, v_cache_LxBxKxGxH=vc,
                            memory_MxBxNxD=memory, u_MxBxSxD=u_seg)
    return new_state, logits


def _scan_segments(core: Core, state: DecodeState, tokens_SxBxC: Array, valid_SxBxC: Array,
                   truncate_every: int, whole_segment: bool = False,
                   whole_sequence: bool = False, memory_given: bool = False):
  body = nn.scan(lambda mdl, st, xs: mdl(st, xs, truncate_every, whole_segment, whole_sequence,
                                         memory_given),
                 variable_broadcast="params", variable_axes={"intermediates": 0},
                 split_rngs={"params": False})
  return body(core, state, (tokens_SxBxC, valid_SxBxC))


class LM2(nn.Module):
  """Llama-3 decoder with the LM2 memory. `apply(variables, tokens_BxT)` -> logits_BxTxV."""

  cfg: ModelConfig

  def setup(self):
    self.core = Core(self.cfg)

  def __call__(self, tokens_BxT: Array, truncate_every: int = 0,
               memory_MxBxNxD: Array | None = None, fresh_B: Array | None = None):
    """One-shot forward over whole sequences (any T; the last segment may be partial).

    Returns logits_BxTxV. With `memory_MxBxNxD` the rows start from that memory instead of
    the initial one, except the rows `fresh_B` marks, and the call returns (logits_BxTxV,
    memory_MxBxNxD after the last whole segment): training carries the memory from one
    sequence to the next this way (train.memory_carry_steps). M is the number of memory
    layers for kind lm2; the RMT's memory tokens are one layer (M = 1).
    """
    cfg = self.cfg
    carried = memory_MxBxNxD is not None
    if carried and not cfg.carried_memory_layers:
      raise ValueError("LM2: a memory to start from needs model.memory.kind=lm2 (with memory "
                       "layers) or rmt")
    b, t = tokens_BxT.shape
    # Without a memory, full scope is plain causal attention over the sequence. A fused
    # kernel (model.attention_impl xla or cudnn) takes it as one chunk attending within
    # itself (Core's whole_sequence). The einsum kernel keeps the segments: each scores its
    # S queries against the cache (one T x T score matrix instead took 1.37x the CPU time
    # of the babilong_tiny vanilla step).
    one_chunk = (cfg.memory.kind == "none" and cfg.attention_scope == "full"
                 and cfg.attention_impl != "einsum")
    seg = t if one_chunk else cfg.segment_len
    s = -(-t // seg)
    state = init_state(cfg, b, s * seg)
    # Whole segments (Core's whole_segment, and the RMT's single pass): the state carries
    # neither the segment's inputs nor, in segment scope, the key/value caches; they stay
    # empty.
    if isinstance(state, DecodeState):
      state = state.replace(u_MxBxSxD=state.u_MxBxSxD[:, :, :0])
    if cfg.attention_scope == "segment" or one_chunk:
      state = state.replace(k_cache_LxBxKxGxH=state.k_cache_LxBxKxGxH[:, :, :0],
                            v_cache_LxBxKxGxH=state.v_cache_LxBxKxGxH[:, :, :0])
    if carried:
      fresh = jnp.zeros((b,), bool) if fresh_B is None else fresh_B
      state = self.core.with_memory(state, memory_MxBxNxD, fresh)
    # A fresh state is at a segment boundary: the segments are the plain reshape.
    tokens = jnp.pad(tokens_BxT, ((0, 0), (0, s * seg - t)))
    valid = jnp.broadcast_to(jnp.arange(s * seg) < t, tokens.shape)
    to_segments = lambda a: a.reshape(b, s, seg).transpose(1, 0, 2)
    state, logits_SxBxCxV = _scan_segments(self.core, state, to_segments(tokens),
                                           to_segments(valid), truncate_every,
                                           whole_segment=True, whole_sequence=one_chunk,
                                           memory_given=carried)
    logits = logits_SxBxCxV.transpose(1, 0, 2, 3).reshape(b, s * seg, -1)[:, :t]
    return (logits, self.core.memory_of(state)) if carried else logits

  def _maybe(self, state: DecodeState, tokens_BxC: Array, valid_BxC: Array,
             truncate_every: int = 0) -> tuple[DecodeState, Array]:
    """Core on a chunk that may hold no real token at all, skipped at run time if so."""
    chunk = (tokens_BxC, valid_BxC)
    if self.is_initializing():
      return self.core(state, chunk, truncate_every)
    if self.is_mutable_collection("intermediates"):
      # nn.cond's branches cannot sow, and a second Core call would sow into the entries the
      # layer scan stacked: this chunk runs unconditionally and sows nothing, so collected
      # values keep one entry per scanned segment.
      quiet = self.core.clone(parent=None)
      return quiet.apply({"params": self.core.variables["params"]}, state, chunk,
                         truncate_every)
    b, c = tokens_BxC.shape
    return nn.cond(jnp.any(valid_BxC),
                   lambda mdl, st, x, v: mdl.core(st, (x, v), truncate_every),
                   lambda mdl, st, x, v: (st, jnp.zeros((b, c, self.cfg.vocab_size),
                                                        jnp.float32)),
                   self, state, tokens_BxC, valid_BxC)

  def prefill(self, tokens_BxT: Array, state: DecodeState, lengths_B: Array | None = None,
              truncate_every: int = 0) -> tuple[Array, DecodeState]:
    """Consume whole sequences segment by segment from `state`; logits_BxTxV and the state.

    Rows may hold fewer tokens than T (`lengths_B`, right padding): the returned state then
    reflects only each row's real tokens. A row may start in the middle of a segment: its
    first chunk ends at its next boundary, the others are whole segments, so each row gets
    one more chunk than T tokens need, skipped at run time when no row reaches it.
    """
    b, t = tokens_BxT.shape
    seg = self.cfg.segment_len
    s = -(-t // seg) + 1
    lengths_B = jnp.full((b,), t, jnp.int32) if lengths_B is None else lengths_B
    offset_B = state.pos_B % seg
    # Chunk k, position i of a row holds its token i (k = 0, up to its boundary) or its
    # token k * seg + i - offset (k >= 1).
    flat_P = jnp.arange(s * seg, dtype=jnp.int32)
    first_P = flat_P < seg
    src_BxP = jnp.where(first_P[None], flat_P[None], flat_P[None] - offset_B[:, None])
    valid_BxP = ((~first_P[None]) | (flat_P[None] < seg - offset_B[:, None])) & (
        src_BxP < lengths_B[:, None])
    tokens = jnp.take_along_axis(tokens_BxT, jnp.clip(src_BxP, 0, t - 1), axis=1)
    to_segments = lambda a: a.reshape(b, s, seg).transpose(1, 0, 2)
    tokens_SxBxC, valid_SxBxC = to_segments(tokens), to_segments(valid_BxP)
    state, logits_SxBxCxV = _scan_segments(self.core, state, tokens_SxBxC[:-1],
                                           valid_SxBxC[:-1], truncate_every)
    state, extra_BxCxV = self._maybe(state, tokens_SxBxC[-1], valid_SxBxC[-1], truncate_every)
    main_BxPxV = logits_SxBxCxV.transpose(1, 0, 2, 3).reshape(b, (s - 1) * seg, -1)

    def realign():  # token j's logits sit at chunk position j (first chunk) or j + offset
      j_T = jnp.arange(t, dtype=jnp.int32)[None]
      dst_BxT = jnp.where(j_T < seg - offset_B[:, None], j_T, j_T + offset_B[:, None])
      both = jnp.concatenate([main_BxPxV, extra_BxCxV], axis=1)
      return jnp.take_along_axis(both, dst_BxT[..., None], axis=1)

    logits = jax.lax.cond(jnp.any(offset_B > 0), realign, lambda: main_BxPxV[:, :t])
    return logits, state

  def step(self, tokens_BxC: Array, state: DecodeState,
           valid_BxC: Array | None = None) -> tuple[Array, DecodeState]:
    """Consume one chunk per row from wherever the row stands: one decoded token, or more.

    `valid_BxC` marks each row's real tokens (a prefix: right padding). A chunk that crosses
    segment boundaries is consumed in pieces that end at each row's boundaries, so the
    memory is written at every boundary; a piece that no row needs is skipped at run time,
    and a one-token chunk is always one piece.
    """
    b, c = tokens_BxC.shape
    seg = self.cfg.segment_len
    w = min(c, seg)  # tokens per piece
    count_B = (jnp.full((b,), c, jnp.int32) if valid_BxC is None
               else valid_BxC.sum(-1).astype(jnp.int32))
    i_W, i_C = jnp.arange(w, dtype=jnp.int32)[None], jnp.arange(c, dtype=jnp.int32)[None]
    done_B = jnp.zeros((b,), jnp.int32)
    logits = None
    for piece in range((seg + c - 2) // seg + 1):  # the most segments c tokens can touch
      n_B = jnp.minimum(count_B - done_B, seg - state.pos_B % seg)
      tokens = jnp.take_along_axis(tokens_BxC, jnp.minimum(done_B[:, None] + i_W, c - 1), axis=1)
      if piece == 0:
        state, out = self.core(state, (tokens, i_W < n_B[:, None]))
        logits = out if w == c else jnp.zeros((b, c, out.shape[-1]), out.dtype)
      else:
        state, out = self._maybe(state, tokens, i_W < n_B[:, None])
      if piece or w < c:  # place the piece's logits at its tokens' places in the chunk
        mine = (i_C >= done_B[:, None]) & (i_C < (done_B + n_B)[:, None])
        src = jnp.clip(i_C - done_B[:, None], 0, w - 1)
        logits = jnp.where(mine[..., None], jnp.take_along_axis(out, src[..., None], axis=1),
                           logits)
      done_B = done_B + n_B
    return logits, state


def build_model(cfg: ModelConfig) -> LM2:
  """The model for a validated ModelConfig; `init(rng, tokens)`, `apply(variables, tokens)`.

  model.memory.kind lm2 and none build LM2 (none: no memory blocks), rmt the RMT baseline
  (lm2_jax/model/rmt.py builds on this module's blocks, hence the late import)."""
  if cfg.memory.kind == "rmt":
    from lm2_jax.model.rmt import RMT  # pylint: disable=g-import-not-at-top
    return RMT(cfg)
  return LM2(cfg)


@functools.lru_cache(maxsize=None)
def _abstract_params(cfg: ModelConfig):
  tokens = jax.ShapeDtypeStruct((1, cfg.segment_len), jnp.int32)
  return jax.eval_shape(lambda t: build_model(cfg).init(jax.random.key(0), t), tokens)


# The modules (and the parameter) of the memory bank, by their names in the parameter tree.
MEMORY_MODULES = ("memory_read", "memory_write", "memory_init")


def is_memory_param(path) -> bool:
  """Whether a parameter (by its tree path) belongs to the memory bank."""
  return any(getattr(k, "key", None) in MEMORY_MODULES for k in path)


def abstract_variables(cfg: ModelConfig):
  """Shapes and logical axes of the variables, with no allocation (jax.eval_shape)."""
  return _abstract_params(cfg)
