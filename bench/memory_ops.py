"""Benchmark 2: one layer's memory read and write against its self-attention and MLP.

Each module runs alone, jitted, forward and backward (the gradient of a sum with respect
to its parameters and inputs) on one segment, as the slots grow. The read and the write are
the model's own MemoryRead / MemoryWrite; attention and MLP are the block's own modules.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm2_jax.config import load_config
from lm2_jax.model.layers import MLP, SelfAttention, rope_inv_freq, rope_tables
from lm2_jax.model.memory import MemoryRead, MemoryWrite

from bench import timing


def _fwd_bwd(module, *inputs):
  params = jax.jit(module.init)(jax.random.key(0), *inputs)

  def loss(p, *xs):
    out = module.apply(p, *xs)
    out = out[0] if isinstance(out, tuple) else out
    return jnp.sum(out.astype(jnp.float32))

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: grad(params, *inputs)


def run(config: str, slots: Sequence[int], repeats: int, batch: int) -> list[dict]:
  cfg = load_config(config).model
  b, s, d = batch, cfg.segment_len, cfg.width
  k = cfg.resolved_head_dim
  rng = np.random.default_rng(0)
  u = jnp.asarray(rng.standard_normal((b, s, d)), jnp.float32)
  pos = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
  cos, sin = rope_tables(pos, rope_inv_freq(k, cfg.rope_theta, cfg.rope_scaling))
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((s, s), bool)), (b, s, s))
  # As training runs it in segment scope: the segment attends within itself, no cache.
  base = {"attention": _fwd_bwd(SelfAttention(cfg, jnp.float32), u, cos, sin, None, None,
                                None, None, mask),
          "mlp": _fwd_bwd(MLP(cfg, jnp.float32), u)}
  records = []
  for n in slots:
    memory = jnp.asarray(rng.standard_normal((b, n, d)), jnp.float32)
    valid = jnp.ones((b, s), bool)
    mcfg = load_config(config, [f"model.memory.num_slots={n}"]).model
    fns = {**base, "read": _fwd_bwd(MemoryRead(mcfg, jnp.float32), u, memory),
           "write": _fwd_bwd(MemoryWrite(mcfg, jnp.float32), memory, u, valid)}
    times = timing.alternate(fns, repeats)
    med = {name: timing.stats(t)["median_s"] for name, t in times.items()}
    records.append({
        "benchmark": "memory_ops", "config": config, "slots": n, "batch": b,
        "segment_len": s, "width": d, **{f"{name}_s": v for name, v in med.items()},
        "read_over_attention": timing.ratio(times, "read", "attention"),
        "write_over_attention": timing.ratio(times, "write", "attention"),
        "memory_over_attention_mlp": float(np.median(
            [(r + w) / (a + m) for r, w, a, m in zip(times["read"], times["write"],
                                                     times["attention"], times["mlp"])])),
    })
  return records
