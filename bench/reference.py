"""Benchmark 4: our vanilla model against transformers' PyTorch LlamaForCausalLM.

The same shape on both sides (float32, CPU, all cores each): our memory-off model with one
segment spanning the sequence (plain causal attention) and the real train step (AdamW,
clipping, masked loss), against LlamaForCausalLM with its default attention (SDPA),
torch.optim.AdamW and the same clipping. Forward: our jitted `apply` against a no-grad
forward. Each pair alternates in one run; speedup = torch time / our time.

A third record, `gemms`, times the step's matrix products alone: every distinct product of
one train step (forward, and the backward's two gradient forms, with their transposed
operands as the step has them), each as one jitted JAX call and as one torch call on the
same arrays, alternating. Weighted by how often each occurs in a step, it says how much of
the gap between the two steps is the matmul kernels themselves, which no change to the
model's code can remove.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm2_jax.config import load_config
from lm2_jax.model import build_model

from bench import timing
from bench.train_step import describe, real_step, synthetic_batch

# The shape of the measurement: width 256, 4 layers, 8 heads, MLP 688, vocab 512.
SHAPE = ["model.width=256", "model.num_layers=4", "model.num_heads=8", "model.num_kv_heads=8",
         "model.mlp_width=688", "model.vocab_size=512", "model.memory.kind=none",
         "model.tie_embeddings=true", "model.rope_theta=10000.0"]


def _torch_model(cfg):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  m = cfg.model
  hf = transformers.LlamaConfig(
      vocab_size=m.vocab_size, hidden_size=m.width, intermediate_size=m.mlp_width,
      num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
      num_key_value_heads=m.num_kv_heads, rms_norm_eps=m.norm_eps, rope_theta=m.rope_theta,
      tie_word_embeddings=m.tie_embeddings, max_position_embeddings=cfg.train.seq_len)
  torch.manual_seed(0)
  return transformers.LlamaForCausalLM(hf).float()


def step_gemms(cfg) -> list[tuple[str, int, tuple[int, int, int, int], bool]]:
  """(name, count per step, (batch, m, k, n), lhs transposed) for every matrix product of
  a vanilla train step: y = x W in the forward, dx = dy W^T and dW = x^T dy in the
  backward, the two attention products per head and their gradients, and the tied head."""
  m, t = cfg.model, cfg.train
  tok, d, f, v = t.batch_size * t.seq_len, m.width, m.mlp_width, m.vocab_size
  k, bh, s = m.resolved_head_dim, t.batch_size * m.num_heads, t.seq_len
  kv = m.num_kv_heads * k
  layers = m.num_layers
  out = []

  def linear(name, count, d_in, d_out):
    out.append((f"{name} forward", count, (1, tok, d_in, d_out), False))
    out.append((f"{name} dx", count, (1, tok, d_out, d_in), False))
    out.append((f"{name} dW", count, (1, d_in, tok, d_out), True))

  linear("q, o projections", 2 * layers, d, d)
  linear("k, v projections", 2 * layers, d, kv)
  linear("MLP gate, up", 2 * layers, d, f)
  linear("MLP down", layers, f, d)
  linear("head", 1, d, v)
  # Per head: scores q k^T ([s, k] x [k, s]) and out p v ([s, s] x [s, k]) forward; in the
  # backward dp = dout v^T is of the first shape, dq, dk and dv of the second.
  out.append(("attention, [s, k] x [k, s]", 2 * layers, (bh, s, k, s), False))
  out.append(("attention, [s, s] x [s, k]", 4 * layers, (bh, s, s, k), False))
  return out


def _time_gemms(cfg, repeats: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  rows, ours_total, theirs_total = [], 0.0, 0.0
  for name, count, (b, m, k, n), lhs_t in step_gemms(cfg):
    lhs = rng.standard_normal((b, k, m) if lhs_t else (b, m, k), dtype=np.float32)
    rhs = rng.standard_normal((b, k, n), dtype=np.float32)
    spec = "bkm,bkn->bmn" if lhs_t else "bmk,bkn->bmn"
    fn = jax.jit(lambda x, y, spec=spec: jnp.einsum(spec, x, y))
    tl = torch.from_numpy(lhs)
    tl_view = (lambda tl=tl: tl.transpose(1, 2)) if lhs_t else (lambda tl=tl: tl)
    jl, jr, tr = jnp.asarray(lhs), jnp.asarray(rhs), torch.from_numpy(rhs)
    # Enough calls per timed run that the call overheads (JAX dispatch, torch's eager
    # dispatch; both included) are small next to the product.
    calls = max(1, int(2e8 / (2 * b * m * k * n)))

    def ours(jl=jl, jr=jr, fn=fn, calls=calls):
      for _ in range(calls):
        y = jax.block_until_ready(fn(jl, jr))
      return y

    def theirs(tl_view=tl_view, tr=tr, calls=calls):
      for _ in range(calls):
        torch.matmul(tl_view(), tr)

    times = timing.alternate({"ours": ours, "transformers": theirs}, repeats)
    ours_s = timing.stats(times["ours"])["median_s"] / calls
    theirs_s = timing.stats(times["transformers"])["median_s"] / calls
    ours_total += count * ours_s
    theirs_total += count * theirs_s
    flops = 2 * b * m * k * n
    rows.append({"name": name, "count": count, "shape": [b, m, k, n], "lhs_transposed": lhs_t,
                 "ours_gflops": flops / ours_s / 1e9, "torch_gflops": flops / theirs_s / 1e9,
                 "speedup_vs_torch": timing.ratio(times, "transformers", "ours")})
  return {"products": rows, "ours_step_gemm_s": ours_total,
          "torch_step_gemm_s": theirs_total,
          "gemm_speedup_vs_torch": theirs_total / ours_total}


def run(batch: int, seq_len: int, repeats: int) -> list[dict]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    return [{"benchmark": "reference", "skipped": f"torch/transformers not installed ({e})"}]
  torch.set_num_threads(os.cpu_count() or 1)
  cfg = load_config(None, [*SHAPE, f"model.segment_len={seq_len}", f"train.seq_len={seq_len}",
                           f"train.batch_size={batch}"])
  data = synthetic_batch(cfg)
  hf = _torch_model(cfg)
  tokens = torch.tensor(data["tokens"], dtype=torch.long)
  inputs, labels = tokens[:, :-1], tokens[:, 1:].clone()
  labels[torch.tensor(data["loss_mask"][:, 1:]) == 0] = -100  # the same masked loss
  t = cfg.train
  opt = torch.optim.AdamW(hf.parameters(), lr=t.learning_rate, betas=(t.adam_b1, t.adam_b2),
                          eps=t.adam_eps, weight_decay=t.weight_decay)

  def torch_step():
    logits = hf(input_ids=inputs).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             labels.reshape(-1), ignore_index=-100)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(hf.parameters(), t.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return None

  def torch_forward():
    with torch.no_grad():
      hf(input_ids=inputs)

  model = build_model(cfg.model)
  ours_in = jnp.asarray(data["tokens"][:, :-1])
  params = jax.jit(model.init)(jax.random.key(0), ours_in[:, :cfg.model.segment_len])
  params = nn.unbox(params)
  forward = jax.jit(model.apply)
  train = real_step(cfg)
  info = describe(cfg)
  out = []
  for kind, ours, theirs in (("train_step", train, torch_step),
                             ("forward", lambda: forward(params, ours_in), torch_forward)):
    times = timing.alternate({"ours": ours, "transformers": theirs}, repeats)
    tokens_n = batch * seq_len
    out.append({"benchmark": "reference", "kind": kind, **info,
                "torch": torch.__version__, "transformers": transformers.__version__,
                "torch_threads": torch.get_num_threads(),
                "ours": timing.stats(times["ours"]),
                "transformers_": timing.stats(times["transformers"]),
                "ours_tokens_per_s": tokens_n / timing.stats(times["ours"])["median_s"],
                "transformers_tokens_per_s":
                    tokens_n / timing.stats(times["transformers"])["median_s"],
                "speedup_vs_transformers": timing.ratio(times, "transformers", "ours")})
  out.append({"benchmark": "reference", "kind": "gemms", **info, "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), **_time_gemms(cfg, repeats)})
  return out
