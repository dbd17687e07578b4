"""The memory's statistics per segment index: is it forgetting, running away, or blurring?

Over a stretch of input, per segment index s (averaged over rows and memory layers):
`memory_rms` (its size: a memory that runs away grows), `kept` (how much each write kept:
the forget gate g_f for update=lstm, 1 - z for convex; well below 1 forgets within a few
segments), `slot_similarity` (mean absolute cosine between distinct slots; near 1 the slots
hold one thing) and `read_entropy` (of the read's attention over the slots; log N is a
uniform read that cannot address them). The model sows these when asked for intermediates.
"""

from __future__ import annotations

from collections.abc import Callable

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

  @jax.jit
  def run(variables, tokens_BxT):
    state = init_state(cfg, tokens_BxT.shape[0], tokens_BxT.shape[1])
    (_, _), inter = model.apply(variables, tokens_BxT, state, method="prefill",
                                mutable=["intermediates"])
    blocks = inter["intermediates"]["core"]["memory_blocks"]
    write, read = blocks["memory_write"], blocks["memory_read"]
    probs = read["read_probs"][0]  # [S, L, B, H, C, N]
    entropy = -(probs * jnp.log(jnp.clip(probs, 1e-12, None))).sum(-1).mean(axis=(1, 2, 3, 4))
    return {"memory_rms": write["memory_rms"][0].mean(axis=(1, 2)),
            "kept": write["kept"][0].mean(axis=(1, 2)),
            "slot_similarity": write["slot_similarity"][0].mean(axis=(1, 2)),
            "read_entropy": entropy}

  def trace(variables, tokens_BxT) -> dict[str, np.ndarray]:
    if tokens_BxT.shape[1] % cfg.segment_len:
      raise ValueError(f"memory trace: {tokens_BxT.shape[1]} tokens are not whole segments "
                       f"of {cfg.segment_len}")
    return {k: np.asarray(v) for k, v in jax.device_get(run(variables, tokens_BxT)).items()}

  return trace


def memory_trace(model, variables, tokens_BxT) -> dict[str, np.ndarray]:
  """One trace (compiles each call; keep `make_memory_trace`'s function to trace often)."""
  return make_memory_trace(model)(variables, np.asarray(tokens_BxT, np.int32))
