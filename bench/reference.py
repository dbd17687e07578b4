"""Benchmark 4: our vanilla model against transformers' PyTorch LlamaForCausalLM.

The same shape on both sides (float32, CPU, all cores each): our memory-off model with one
segment spanning the sequence (plain causal attention) and the real train step (AdamW,
clipping, masked loss), against LlamaForCausalLM with its default attention (SDPA),
torch.optim.AdamW and the same clipping. Forward: our jitted `apply` against a no-grad
forward. Each pair alternates in one run; speedup = torch time / our time.
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
  return out
