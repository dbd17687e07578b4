"""Benchmark 1: the train step exactly as train.py runs it.

`real_step` builds what `lm2_jax.train.loop` builds (the optimizer of make_optimizer with
its schedule, clipping and weight-decay mask, the state created in place on the mesh, the
step jitted through StepCache with its shardings and the old state donated) and feeds it a
fixed batch with a loss mask. Variants that are compared run alternately in one group.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from lm2_jax import sharding
from lm2_jax.config import Config, load_config
from lm2_jax.model.flops import flops_per_token
from lm2_jax.summary import count_params
from lm2_jax.train.optim import make_optimizer
from lm2_jax.train.state import create_state, state_shardings
from lm2_jax.train.step import train_step_cache

from bench import timing


def synthetic_batch(cfg: Config, seed: int = 0) -> dict[str, np.ndarray]:
  """Random tokens; the loss mask scores the second half of each row (an answer span)."""
  t, b = cfg.train.seq_len, cfg.train.batch_size
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, cfg.model.vocab_size, (b, t + 1)).astype(np.int32)
  mask = np.zeros((b, t + 1), np.float32)
  mask[:, t // 2:] = 1.0
  return {"tokens": tokens, "loss_mask": mask}


def real_step(cfg: Config) -> Callable[[], dict]:
  """A closure that runs one train step of `cfg` (state carried and donated) and returns
  its device metrics. The first call compiles; `.step_cache` is the StepCache it calls."""
  tx = make_optimizer(cfg.train)
  mesh = sharding.make_mesh(cfg.mesh)
  shardings = state_shardings(cfg, tx, mesh)
  box = [create_state(cfg, tx, shardings)]
  step = train_step_cache(cfg, tx, mesh, shardings)
  batch = sharding.global_batch(mesh, synthetic_batch(cfg), cfg.train.batch_size)

  def run():
    box[0], metrics = step(box[0], batch)
    return metrics

  run.step_cache = step  # the compiled executables, for profiles
  return run


def describe(cfg: Config) -> dict:
  m, t = cfg.model, cfg.train
  flops = flops_per_token(m, t.seq_len)
  return {"width": m.width, "layers": m.num_layers, "heads": m.num_heads,
          "kv_heads": m.num_kv_heads, "mlp": m.mlp_width, "vocab": m.vocab_size,
          "segment_len": m.segment_len, "attention_scope": m.attention_scope,
          "memory_slots": m.memory.num_slots if m.memory.kind == "lm2" else 0,
          "remat": m.remat_policy, "batch": t.batch_size, "seq_len": t.seq_len,
          **count_params(cfg), "train_flops_per_token": flops["train"],
          "train_flops_executed_per_token": flops["train_executed"]}


def run_group(config: str, variants: dict[str, Sequence[str]], base: Sequence[str],
              reference: str, repeats: int) -> list[dict]:
  """Time every variant (overrides on top of `base`) alternately with a float32 matmul;
  ratios to `reference`, MFU against that matmul's rate."""
  cfgs = {k: load_config(config, [*base, *ov]) for k, ov in variants.items()}
  steps = {k: real_step(c) for k, c in cfgs.items()}
  # The peak is timed in the same rounds as the steps, so that the MFU's numerator and
  # denominator see the same load on a shared machine.
  matmul, matmul_flops = timing.matmul_probe()
  times = timing.alternate({**steps, "_matmul": matmul}, repeats)
  peak_flops = matmul_flops / timing.stats(times["_matmul"])["median_s"]
  records = []
  for k, c in cfgs.items():
    info = describe(c)
    tokens = c.train.batch_size * c.train.seq_len
    step_s = timing.stats(times[k])["median_s"]
    useful = info["train_flops_per_token"] * tokens / step_s
    executed = info["train_flops_executed_per_token"] * tokens / step_s
    records.append({
        "benchmark": "train_step", "config": config, "variant": k,
        "overrides": [*base, *variants[k]], **info, **timing.stats(times[k]),
        "tokens_per_s": tokens / step_s, "useful_gflops_per_s": useful / 1e9,
        "measured_peak_gflops_per_s": peak_flops / 1e9,
        "mfu_vs_measured_peak": useful / peak_flops,
        "hfu_vs_measured_peak": executed / peak_flops,
        "reference": reference, "time_ratio_to_reference": timing.ratio(times, k, reference),
        "flop_ratio_to_reference": (info["train_flops_executed_per_token"]
                                    / describe(cfgs[reference])["train_flops_executed_per_token"]),
    })
  return records
