"""The memory's statistics per segment index: is it forgetting, running away, or blurring?

Over a stretch of input, per segment index s (averaged over rows and memory layers):
`memory_rms` (its size: a memory that runs away grows), `kept` (how much each write kept:
the forget gate g_f for update=lstm, 1 - z for convex; well below 1 forgets within a few
segments), `slot_similarity` (mean absolute cosine between distinct slots; near 1 the slots
hold one thing) and `read_entropy` (of the read's attention over the slots; log N is a
uniform read that cannot address them). With `memory.write_recurrence: per_layer` also
`held`: the share of the memory's units (slot by width, all layers) that still keep at least
half of what they held when the stretch began. Each write scales a unit's old content by its
kept fraction (exactly, for both updates), so a product of those fractions is how much of a
fact written at the start is left: the mean `kept` cannot tell a memory whose units all keep
0.96 (none holds for 100 segments) from one in which a few keep 1.0 (they hold for ever).
The model sows these when asked for intermediates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

TraceFn = Callable[[dict, jax.Array], dict[str, np.ndarray]]


def make_memory_trace(model) -> TraceFn:
  """trace(variables, tokens_BxT) -> {stat: float32[T // segment_len]}, compiled once.

  `T` must be whole segments; LM2 memories only (an RMT memory sows nothing).
  """
  cfg = model.cfg
  if not cfg.num_memory_layers:  # 0 for kinds rmt and none
    raise ValueError("memory trace: the model has no LM2 memory "
                     f"(model.memory.kind={cfg.memory.kind})")
  from lm2_jax.model.transformer import init_state  # pylint: disable=g-import-not-at-top
  per_layer = cfg.memory.write_recurrence == "per_layer"

  @jax.jit
  def run(variables, tokens_BxT):
    state = init_state(cfg, tokens_BxT.shape[0], tokens_BxT.shape[1])
    (_, _), inter = model.apply(variables, tokens_BxT, state, method="prefill",
                                mutable=["intermediates"])
    blocks = inter["intermediates"]["core"]["memory_blocks"]
    write, read = blocks["memory_write"], blocks["memory_read"]
    probs = read["read_probs"][0]  # [S, L, B, H, C, N]
    entropy = -(probs * jnp.log(jnp.clip(probs, 1e-12, None))).sum(-1).mean(axis=(1, 2, 3, 4))
    stats = {"memory_rms": write["memory_rms"][0].mean(axis=(1, 2)),
             "kept": write["kept"][0].mean(axis=(1, 2)),
             "slot_similarity": write["slot_similarity"][0].mean(axis=(1, 2)),
             "read_entropy": entropy}
    if per_layer:  # with the chain a layer's write starts from the layer below's memory
      survival = jnp.cumsum(write["log_kept"][0], axis=0)  # [S, L, B, N, D], log
      stats["held"] = (survival >= np.log(0.5)).mean(axis=(1, 2, 3, 4))
    return stats

  def trace(variables, tokens_BxT) -> dict[str, np.ndarray]:
    if tokens_BxT.shape[1] % cfg.segment_len:
      raise ValueError(f"memory trace: {tokens_BxT.shape[1]} tokens are not whole segments "
                       f"of {cfg.segment_len}")
    return {k: np.asarray(v) for k, v in jax.device_get(run(variables, tokens_BxT)).items()}

  return trace


def memory_trace(model, variables, tokens_BxT) -> dict[str, np.ndarray]:
  """One trace (compiles each call; keep `make_memory_trace`'s function to trace often)."""
  return make_memory_trace(model)(variables, np.asarray(tokens_BxT, np.int32))


FootprintFn = Callable[..., np.ndarray]


def _segment_memory_config(model, what: str):
  """The model's config, once it is known to have an LM2 memory and segment attention (the
  cache of scope full would have to hold every token read)."""
  cfg = model.cfg
  if not cfg.num_memory_layers:
    raise ValueError(f"{what}: the model has no LM2 memory "
                     f"(model.memory.kind={cfg.memory.kind})")
  if cfg.attention_scope != "segment":
    raise ValueError(f"{what}: needs model.attention_scope=segment, got {cfg.attention_scope}")
  return cfg


def make_memory_footprint(model) -> FootprintFn:
  """footprint(variables, a_PxT, b_PxT, lengths_P, background_U, chunk) -> float32[K + 1].

  How long does one difference in the input stay in the memory? Rows a and b of each pair
  differ in one fact (the same story with another room, say); both then read the same
  background, `chunk` tokens at a time. Entry k is the memory's relative difference,
  ||M_a - M_b|| / rms(||M_a||, ||M_b||) over all memory layers, averaged over the pairs,
  after k chunks of background (k = 0: just after the stories). Pairs are right-padded to
  T; `lengths_P` gives their real lengths (a and b must have the same). Attention scope
  segment only (the cache of scope full would have to hold the whole background).
  """
  cfg = _segment_memory_config(model, "memory footprint")
  from lm2_jax.model.transformer import init_state  # pylint: disable=g-import-not-at-top

  @jax.jit
  def consume(variables, tokens_BxT, lengths_B, state):
    _, state = model.apply(variables, tokens_BxT, state, lengths_B, method="prefill")
    return state

  @jax.jit
  def difference(memory_MxBxNxD):
    m = memory_MxBxNxD.reshape(memory_MxBxNxD.shape[0], 2, -1, *memory_MxBxNxD.shape[2:])
    a, b = m[:, 0], m[:, 1]   # [M, P, N, D] each
    diff = jnp.sqrt(((a - b) ** 2).sum(axis=(0, 2, 3)))
    size = jnp.sqrt(((a ** 2).sum(axis=(0, 2, 3)) + (b ** 2).sum(axis=(0, 2, 3))) / 2)
    return (diff / jnp.maximum(size, 1e-12)).mean()

  def footprint(variables, a_PxT, b_PxT, lengths_P, background_U, chunk: int) -> np.ndarray:
    a_PxT, b_PxT = np.asarray(a_PxT, np.int32), np.asarray(b_PxT, np.int32)
    if a_PxT.shape != b_PxT.shape:
      raise ValueError(f"memory footprint: pairs of different shapes {a_PxT.shape} and "
                       f"{b_PxT.shape}")
    if chunk <= 0 or len(background_U) % chunk:
      raise ValueError(f"memory footprint: {len(background_U)} background tokens are not "
                       f"whole chunks of {chunk}")
    p = a_PxT.shape[0]
    lengths_B = np.concatenate([lengths_P, lengths_P]).astype(np.int32)
    state = consume(variables, np.concatenate([a_PxT, b_PxT]), lengths_B,
                    init_state(cfg, 2 * p))
    out = [difference(state.memory_MxBxNxD)]
    full_B = np.full((2 * p,), chunk, np.int32)
    for start in range(0, len(background_U), chunk):
      piece = np.broadcast_to(np.asarray(background_U[start:start + chunk], np.int32),
                              (2 * p, chunk))
      state = consume(variables, piece, full_B, state)
      out.append(difference(state.memory_MxBxNxD))
    return np.asarray(jax.device_get(out), np.float32)

  return footprint


StatesFn = Callable[[dict, Sequence[Sequence[int]]], np.ndarray]


def make_memory_states(model, *, bucket_segments: int = 64) -> StatesFn:
  """states(variables, rows) -> float32[B, M * N * D]: the memory after reading each row.

  Rows are token lists of any lengths (right-padded here to a multiple of `bucket_segments`
  segments, so that few shapes compile); each row's memory is taken after its last complete
  segment, all memory layers and slots flattened. What a probe of the memory reads
  (scripts/memory_decode.py). Attention scope segment only, as for the footprint.
  """
  cfg = _segment_memory_config(model, "memory states")
  from lm2_jax.model.transformer import init_state  # pylint: disable=g-import-not-at-top

  @jax.jit
  def consume(variables, tokens_BxT, lengths_B):
    state = init_state(cfg, tokens_BxT.shape[0])
    _, state = model.apply(variables, tokens_BxT, state, lengths_B, method="prefill")
    memory = state.memory_MxBxNxD.swapaxes(0, 1)
    return memory.reshape(memory.shape[0], -1).astype(jnp.float32)

  def states(variables, rows: Sequence[Sequence[int]]) -> np.ndarray:
    lengths_B = np.array([len(r) for r in rows], np.int32)
    if not len(rows) or lengths_B.min() == 0:
      raise ValueError("memory states: every row needs at least one token")
    bucket = bucket_segments * cfg.segment_len
    t = -(-int(lengths_B.max()) // bucket) * bucket
    tokens_BxT = np.zeros((len(rows), t), np.int32)
    for i, r in enumerate(rows):
      tokens_BxT[i, :len(r)] = r
    return np.asarray(jax.device_get(consume(variables, tokens_BxT, lengths_B)))

  return states
