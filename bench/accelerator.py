"""Benchmark 6: the paper's shapes trained on one accelerator, MFU against the datasheet.

`llama3.2_1b` and `lm2_1.7b` train steps exactly as train.py runs them (bench/train_step.py's
`real_step`) at long sequences and the batches that fit one GPU, with each attention kernel.
The MFU counts the model's useful FLOPs (lm2_jax/model/flops.py, the memory's included)
against the datasheet's dense bfloat16 peak (lm2_jax/train/metrics.py: 989 TFLOP/s for an
H100 or H200 SXM) and against a bfloat16 matmul timed in the same run on random data.
Variants run one after the other: one that fails (out of memory) is recorded with its error
and the others still run.
"""

from __future__ import annotations

import gc
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from lm2_jax.config import load_config
from lm2_jax.train.metrics import measure_matmul_flops, peak_flops_per_device

from bench import timing
from bench.train_step import describe, real_step

LLAMA, LM2 = "configs/llama3.2_1b.yaml", "configs/lm2_1.7b.yaml"


def vanilla(seq_len: int) -> list[str]:
  """The vanilla model at T tokens as one segment of T attending within itself: full causal
  attention over the sequence (no memory, so nothing else depends on the segmentation)."""
  return ["model.attention_scope=segment", f"model.segment_len={seq_len}",
          f"train.seq_len={seq_len}"]


def lm2_segment(seq_len: int, segment_len: int = 1024) -> list[str]:
  """LM2 with attention within 1,024-token segments (the memory carries the rest)."""
  return ["model.attention_scope=segment", f"model.segment_len={segment_len}",
          f"train.seq_len={seq_len}"]


_CUDNN = "model.attention_impl=cudnn"
# Every named variant (config, overrides); `python bench/run.py --suite gpu --variants a,b`
# runs some of them, GPU_VARIANTS is the suite's default.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    # The vanilla base with cuDNN's flash attention, and with the portable einsum kernel.
    "llama_cudnn_b8": (LLAMA, vanilla(4096) + [_CUDNN, "train.batch_size=8"]),
    "llama_cudnn_b12": (LLAMA, vanilla(4096) + [_CUDNN, "train.batch_size=12"]),
    "llama_cudnn_b16": (LLAMA, vanilla(4096) + [_CUDNN, "train.batch_size=16"]),
    "llama_cudnn_b8_save_dots": (LLAMA, vanilla(4096) + [_CUDNN, "train.batch_size=8",
                                                         "model.remat_policy=save_dots"]),
    "llama_cudnn_b8_remat_none": (LLAMA, vanilla(4096) + [_CUDNN, "train.batch_size=8",
                                                          "model.remat_policy=none"]),
    "llama_cudnn_b12_save_dots": (LLAMA, vanilla(4096) + [_CUDNN, "train.batch_size=12",
                                                          "model.remat_policy=save_dots"]),
    # The shipped llama3.2_1b (full scope, 1,024-token segments) with the fused kernel: the
    # one-shot forward then takes the sequence as one causal chunk, as the variants above.
    "llama_shipped_cudnn_b8_save_dots": (LLAMA, ["train.seq_len=4096", _CUDNN,
                                                 "train.batch_size=8",
                                                 "model.remat_policy=save_dots"]),
    "llama_einsum_b8": (LLAMA, vanilla(4096) + ["train.batch_size=8"]),
    # LM2 with attention within 1,024-token segments.
    "lm2_segment_cudnn_b4": (LM2, lm2_segment(4096) + [_CUDNN, "train.batch_size=4"]),
    "lm2_segment_cudnn_b6": (LM2, lm2_segment(4096) + [_CUDNN, "train.batch_size=6"]),
    "lm2_segment_cudnn_b8": (LM2, lm2_segment(4096) + [_CUDNN, "train.batch_size=8"]),
    "lm2_segment_cudnn_b4_save_dots": (LM2, lm2_segment(4096) + [
        _CUDNN, "train.batch_size=4", "model.remat_policy=save_dots"]),
    "lm2_segment_cudnn_b4_remat_full": (LM2, lm2_segment(4096) + [
        _CUDNN, "train.batch_size=4", "model.remat_policy=full"]),
    # The shipped lm2_1.7b: attention over the whole sequence through the cache (einsum).
    "lm2_full_einsum_b4": (LM2, ["train.seq_len=4096", "train.batch_size=4"]),
}
# In order of priority (a run cut short keeps the first ones): the fastest settings measured
# for each model (docs/performance.md), then what they are compared with.
GPU_VARIANTS = ["llama_cudnn_b8_save_dots", "lm2_segment_cudnn_b8", "llama_cudnn_b12_save_dots",
                "lm2_segment_cudnn_b4_save_dots", "llama_cudnn_b8", "llama_einsum_b8",
                "lm2_full_einsum_b4", "llama_shipped_cudnn_b8_save_dots"]

# The same variants shrunk to run anywhere (the test suite runs them on the CPU).
SMOKE_BASE = ["model.width=64", "model.num_layers=2", "model.num_heads=4", "model.num_kv_heads=2",
              "model.head_dim=16", "model.mlp_width=128", "model.vocab_size=512",
              "model.memory.num_slots=8", "model.memory.num_heads=2",
              "model.compute_dtype=float32", "train.batch_size=8"]
VARIANTS.update({
    "smoke_llama_xla": (LLAMA, SMOKE_BASE + vanilla(64) + ["model.attention_impl=xla"]),
    "smoke_lm2_segment_einsum": (LM2, SMOKE_BASE + lm2_segment(64, 32)),
})
SMOKE_VARIANTS = ["smoke_llama_xla", "smoke_lm2_segment_einsum"]


def _device_bytes(step) -> dict:
  """What the compiled step holds on the device: its arguments (state and batch) and its
  temporaries (activations kept for the backward, workspace), from XLA's memory analysis.
  (The allocator's peak would be the process's, across variants.)"""
  analysis = step.step_cache.executables[0].memory_analysis()
  if analysis is None:
    return {}
  return {"argument_bytes": analysis.argument_size_in_bytes,
          "temp_bytes": analysis.temp_size_in_bytes}


def run(variants: Sequence[str], repeats: int, peak_size: int,
        note: Callable[[list[dict]], None] | None = None) -> list[dict]:
  """One record per named variant (an `error` for one that failed); `note` sees each as it
  ends."""
  datasheet, source = peak_flops_per_device(0.0)
  measured = measure_matmul_flops(size=peak_size, repeats=10, trials=5, dtype=jnp.bfloat16)
  records = []
  for name in variants:
    config, overrides = VARIANTS[name]
    record = {"benchmark": "accelerator", "variant": name, "config": config,
              "overrides": list(overrides), "device": jax.devices()[0].device_kind,
              "datasheet_peak_tflops": datasheet and datasheet / 1e12, "peak_source": source,
              "measured_bf16_peak_tflops": measured / 1e12}
    try:
      cfg = load_config(config, overrides)
      record.update(describe(cfg), attention_impl=cfg.model.attention_impl,
                    compute_dtype=cfg.model.compute_dtype)
      start = time.perf_counter()
      step = real_step(cfg)
      jax.block_until_ready(step())  # compiles
      record["compile_and_first_step_s"] = time.perf_counter() - start
      times = timing.alternate({name: step}, repeats)
      step_s = timing.stats(times[name])["median_s"]
      tokens = cfg.train.batch_size * cfg.train.seq_len
      useful = record["train_flops_per_token"] * tokens / step_s
      executed = record["train_flops_executed_per_token"] * tokens / step_s
      record.update(timing.stats(times[name]), tokens_per_s=tokens / step_s,
                    useful_tflops_per_s=useful / 1e12,
                    mfu_vs_datasheet=datasheet and useful / datasheet,
                    hfu_vs_datasheet=datasheet and executed / datasheet,
                    mfu_vs_measured_peak=useful / measured, **_device_bytes(step))
      del step
    except Exception as e:  # pylint: disable=broad-except  (out of memory: next variant)
      record["error"] = f"{type(e).__name__}: {str(e)[:500]}"
    gc.collect()
    records.append(record)
    if note:
      note([record])
  return records
