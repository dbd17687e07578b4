"""Analytic FLOPs of the LM2 forward pass, per token (a multiply-add counts 2).

Per decoder block and token, with width D, H query and G kv heads of width K, MLP width F,
vocabulary V, memory slots N, segment length S and A keys attended on average:

  self-attention  2*D*(H*K + 2*G*K) + 2*H*K*D   projections
                  4*H*K*A                        scores and weighted values
  MLP             6*D*F                          SwiGLU: gate, up, down
  memory read     4*D*D + 4*N*D + 4*N*D*D/S      q projection and output gate; attention
                                                 over N slots; slot keys/values once per segment
  memory write    4*D*D + 4*N*D + 6*N*D*D/S      token keys/values; slots attend to S tokens;
                                                 slot queries, input and forget gates once per segment
and once per token the output head 2*D*V. A causal average gives A = (S+1)/2 with
attention_scope=segment and (T+1)/2 with full attention over a sequence of T tokens.
Training costs three forwards (forward + backward), without rematerialisation.
"""

from __future__ import annotations

from lm2_jax.config import ModelConfig


def flops_per_token(cfg: ModelConfig, seq_len: int) -> dict[str, float]:
  """{"forward", "train", "memory_forward"} FLOPs per token for sequences of seq_len tokens."""
  if cfg.memory.kind == "rmt":
    return rmt_flops_per_token(cfg)
  d, f, v = cfg.width, cfg.mlp_width, cfg.vocab_size
  h, g, k = cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
  s = cfg.segment_len
  attended = (s + 1) / 2 if cfg.attention_scope == "segment" else (seq_len + 1) / 2
  block = 2 * d * (h * k + 2 * g * k) + 2 * h * k * d + 4 * h * k * attended + 6 * d * f
  n = cfg.memory.num_slots
  memory = (8 * d * d + 8 * n * d + 10 * n * d * d / s) * cfg.num_memory_layers
  forward = cfg.num_layers * block + memory + 2 * d * v
  return {"forward": forward, "train": 3 * forward, "memory_forward": memory}


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

  def per_segment(n: int) -> float:
    p = s + 2 * n
    return cfg.num_layers * p * (per_position + 4 * h * k * (p + 1) / 2)

  n = cfg.memory.num_slots
  forward = per_segment(n) / s + 2 * d * v
  memory = (per_segment(n) - per_segment(0)) / s
  return {"forward": forward, "train": 3 * forward, "memory_forward": memory}
