"""Analytic FLOPs of LM2 (a multiply-add counts 2): what the model needs, and what runs.

Two counts per token, for sequences of T tokens cut into segments of S:
  - useful ("forward", "train"): the model's FLOPs, the numerator of the MFU. Causal
    attention counts only the keys a query may see: with attention_scope=segment a query
    at in-segment index i sees i + 1 keys, with full one at position p sees p + 1.
  - executed ("forward_executed", "train_executed"): what the kernels compute. `attend`
    scores every cache slot and masks afterwards, so a query costs S slots with
    attention_scope=segment and, with full, the one-shot forward's whole cache buffer
    (T rounded up to segments) in every segment: about twice the causal count
    (model.attention_impl=cudnn, a flash kernel, skips the masked half). Without a memory,
    full scope with a fused kernel (attention_impl xla or cudnn) runs as one causal chunk of
    T (T x T scores, or the causal half for cudnn). A partial last segment is
    padded and computed in full. Rematerialisation adds what the backward
    recomputes (`_REMAT_RECOMPUTE`).

Per decoder block and token, width D, H query and G kv heads of width K, MLP width F,
vocabulary V, memory slots N (with H_m memory heads of width D / H_m), A keys per query:

  self-attention  2*D*(H*K + 2*G*K) + 2*H*K*D   q, k, v and output projections
                  4*H*K*A                        scores and weighted values
  MLP             6*D*F                          SwiGLU: gate, up, down
  memory read     4*D*D + 4*N*D + 4*N*D*D/S      q projection and output gate; attention
                                                 over N slots; slot keys/values once per segment
                  8*D*D + 4*H_m*N*D              the same, folded, for segments shorter than
                                                 N*D / (D + (H_m - 1)*N) (memory._fold_read)
  memory write    4*D*D + 4*N*D + 6*N*D*D/S      token keys/values; slots attend to S tokens;
                                                 slot queries, input and forget gates once per
                                                 written segment (4*N*D*D/S with update=convex,
                                                 whose one write gate replaces the two)

and once per token the output head 2*D*V. A training step costs three forwards (the
backward is two), plus the rematerialised part.
"""

from __future__ import annotations

from lm2_jax.config import ModelConfig
from lm2_jax.model.memory import _fold_read

# What the backward recomputes under each remat policy (model/transformer.py), as parts of
# the block forward: "full" recomputes every block; "save_dots" keeps the matmuls without
# batch dimensions (projections, MLP, gates) and recomputes the batched ones (attention
# scores and weighted values, the memory's cross-attention); "save_qkv_mlp" keeps q/k/v,
# the MLP hidden and the memory read, and recomputes the attention core with its output
# projection, the read's output gate and the whole memory write.
_REMAT_RECOMPUTE = {
    "none": (),
    "full": ("proj", "out_proj", "attn_core", "mlp", "read", "write"),
    "save_dots": ("attn_core", "read_core", "write_core"),
    "save_qkv_mlp": ("attn_core", "out_proj", "read_gate", "write"),
}


def _parts(cfg: ModelConfig, seq_len: int, executed: bool) -> dict[str, float]:
  """FLOPs of one sequence (one batch row) of seq_len tokens, by part, summed over layers."""
  d, f, v = cfg.width, cfg.mlp_width, cfg.vocab_size
  h, g, k = cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
  s, t = cfg.segment_len, seq_len
  full_segments, rest = divmod(t, s)
  segments = full_segments + (rest > 0)
  flash = cfg.attention_impl == "cudnn"  # a flash kernel skips the masked blocks
  if (executed and cfg.memory.kind == "none" and cfg.attention_scope == "full"
      and cfg.attention_impl != "einsum"):
    # Without a memory, a fused kernel runs the one-shot forward as one chunk of T
    # (LM2.__call__).
    tokens = t
    pairs = t * (t + 1) // 2 if flash else t * t
  elif executed:
    tokens = segments * s              # the padded last segment is computed too
    keys_per_query = s if cfg.attention_scope == "segment" else segments * s
    pairs = tokens * keys_per_query
    if cfg.attention_scope == "segment" and flash:
      pairs = segments * s * (s + 1) // 2
  else:
    tokens = t
    if cfg.attention_scope == "segment":
      pairs = full_segments * s * (s + 1) // 2 + rest * (rest + 1) // 2
    else:
      pairs = t * (t + 1) // 2
  layers, mem_layers = cfg.num_layers, cfg.num_memory_layers
  n, hm = cfg.memory.num_slots, cfg.memory.num_heads
  folded = bool(mem_layers) and _fold_read(s, n, d, hm)
  gates = 2 if cfg.memory.update == "lstm" else 1
  parts = {
      "proj": layers * tokens * 2 * d * (h * k + 2 * g * k),
      "out_proj": layers * tokens * 2 * h * k * d,
      "attn_core": layers * 4 * h * k * pairs,
      "mlp": layers * tokens * 6 * d * f,
      "head": tokens * 2 * d * v,
      # The read: per token the q projection, the output gate and the attention over N
      # slots; per segment the slots' keys and values. Segments too short for that
      # (memory._fold_read) fold the slot projections into the tokens' side instead: per
      # token two more D x D products and the attention in every head at width D.
      "read_proj": mem_layers * (tokens * 6 * d * d if folded
                                 else tokens * 2 * d * d + segments * 4 * n * d * d),
      "read_gate": mem_layers * tokens * 2 * d * d,
      "read_core": mem_layers * tokens * 4 * n * d * (hm if folded else 1),
      # The write runs once per completed segment (a partial one is skipped): the tokens'
      # keys and values, the slots attending to S tokens, slot queries and the gates (input
      # and forget for update=lstm, the one write gate for convex).
      "write_core": mem_layers * full_segments * 4 * n * s * d,
      "write_rest": mem_layers * full_segments * (
          4 * s * d * d + (2 + 2 * gates) * n * d * d),
  }
  parts["read"] = parts.pop("read_proj") + parts["read_gate"] + parts["read_core"]
  parts["write"] = parts["write_core"] + parts.pop("write_rest")
  return parts


_FORWARD = ("proj", "out_proj", "attn_core", "mlp", "head", "read", "write")


def flops_per_token(cfg: ModelConfig, seq_len: int) -> dict[str, float]:
  """FLOPs per input token for sequences of seq_len tokens.

  "forward"/"train": useful FLOPs (the MFU's numerator; train = 3 x forward);
  "memory_forward": the memory read and write's share of "forward";
  "forward_executed"/"train_executed": what the kernels compute, padding, masked
  attention scores and rematerialisation included.
  """
  if cfg.memory.kind == "rmt":
    return rmt_flops_per_token(cfg)
  useful = _parts(cfg, seq_len, executed=False)
  ran = _parts(cfg, seq_len, executed=True)
  forward = sum(useful[p] for p in _FORWARD)
  forward_ran = sum(ran[p] for p in _FORWARD)
  recompute = sum(ran[p] for p in _REMAT_RECOMPUTE[cfg.remat_policy])
  return {"forward": forward / seq_len, "train": 3 * forward / seq_len,
          "memory_forward": (useful["read"] + useful["write"]) / seq_len,
          "forward_executed": forward_ran / seq_len,
          "train_executed": (3 * forward_ran + recompute) / seq_len}


def rmt_flops_per_token(cfg: ModelConfig) -> dict[str, float]:
  """The same for the RMT baseline (model.memory.kind=rmt, attention_scope=segment).

  Per segment the blocks process P = S + 2N positions (N read and N write memory tokens),
  each with the block's projections and MLP and attending causally within the P, so
  (P+1)/2 keys on average; the head runs on the S tokens only. "memory_forward" is the part
  the 2N memory tokens add, against the same backbone without them.
  """
  d, f, v = cfg.width, cfg.mlp_width, cfg.vocab_size
  h, g, k = cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
  s = cfg.segment_len
  per_position = 2 * d * (h * k + 2 * g * k) + 2 * h * k * d + 6 * d * f

  def per_segment(n: int, executed: bool = False) -> float:
    p = s + 2 * n
    keys = p if executed else (p + 1) / 2  # the kernel scores every cache slot
    return cfg.num_layers * p * (per_position + 4 * h * k * keys)

  n = cfg.memory.num_slots
  forward = per_segment(n) / s + 2 * d * v
  ran = per_segment(n, executed=True) / s + 2 * d * v
  memory = (per_segment(n) - per_segment(0)) / s
  return {"forward": forward, "train": 3 * forward, "memory_forward": memory,
          "forward_executed": ran, "train_executed": 3 * ran}
