"""Memory read-attention maps, as in the paper's Figure 6: which slots each token reads.

The model sows the read's attention weights (`intermediates`, `memory_read/read_probs`) when
asked. For one prompt we take two readings of the same tokens:

  before: the prompt streamed once from a fresh state; each segment reads the memory as it
          stood after the segments before it (the first segment reads the initial memory);
  after:  the same tokens read again, continuing from the state the first pass left, i.e.
          against the memory once it has taken in the whole prompt.

The prompt is padded with PAD to whole segments so that the memory is written for its last
segment too. Maps are averaged over the read's heads: [layers, tokens, slots].
"""

from __future__ import annotations

import jax
import numpy as np

from lm2_jax.evaluation.report import EvaluationError
from lm2_jax.model import init_state


def read_maps(engine, ids: list[int], pad_id: int) -> dict:
  """{"before", "after"}: float32 [memory layers, len(ids), slots], plus a per-layer summary."""
  cfg = engine.cfg
  if not cfg.num_memory_layers:
    raise EvaluationError("memory-map: this model has no memory bank to read (model.memory."
                          f"kind={cfg.memory.kind}; the maps need kind lm2)")
  seg = cfg.segment_len
  t = len(ids)
  padded = -(-t // seg) * seg
  tokens = np.full((1, padded), pad_id, np.int32)
  tokens[0, :t] = ids
  model = engine.model

  @jax.jit
  def run(variables, tokens, state):
    (_, state), inter = model.apply(variables, tokens, state, method="prefill",
                                    mutable=["intermediates"])
    probs = inter["intermediates"]["core"]["memory_blocks"]["memory_read"]["read_probs"][0]
    # [segments, layers, batch, heads, tokens of a segment, slots] -> [layers, tokens, slots]
    probs = probs[:, :, 0].mean(axis=2)
    s, layers, c, n = probs.shape
    return state, probs.transpose(1, 0, 2, 3).reshape(layers, s * c, n)

  state = init_state(cfg, 1, 2 * padded)
  state, before = run(engine.variables, tokens, state)
  _, after = run(engine.variables, tokens, state)
  before, after = np.asarray(before)[:, :t], np.asarray(after)[:, :t]
  return {"before": before, "after": after, "summary": summarize_maps(before, after)}


def _entropy(p: np.ndarray) -> np.ndarray:
  return -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)


def summarize_maps(before: np.ndarray, after: np.ndarray) -> list[dict]:
  """Per layer: mean read entropy (nats; log N is uniform), most-read slot, and the mean total
  variation distance between a token's two readings (0: the update changed nothing)."""
  out = []
  for layer in range(before.shape[0]):
    b, a = before[layer], after[layer]
    out.append({
        "layer": layer,
        "entropy_before": float(_entropy(b).mean()),
        "entropy_after": float(_entropy(a).mean()),
        "top_slot_before": int(b.mean(0).argmax()),
        "top_slot_after": int(a.mean(0).argmax()),
        "change": float(0.5 * np.abs(a - b).sum(-1).mean()),
    })
  return out


def token_labels(tokenizer, ids: list[int]) -> list[str]:
  """A short printable label per token (special tokens by name)."""
  special = {tokenizer.bos_id: "<bos>", tokenizer.eos_id: "<eos>", tokenizer.pad_id: "<pad>"}
  labels = []
  for i in ids:
    if i in special:
      labels.append(special[i])
    else:
      text = tokenizer.decode([i])
      labels.append(repr(text)[1:-1] if text.strip() else "␣" * max(len(text), 1))
  return labels
