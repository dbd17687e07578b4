"""The benchmark suite: side-by-side ratios on the shipped code paths.

    python bench/run.py --suite quick|full --output bench.json [--only train_step,context]
    python bench/run.py --suite smoke --output smoke.json        # every benchmark, tiny sizes
    python bench/run.py --suite gpu --output gpu.json            # one GPU: the paper's shapes

Benchmarks (docs/performance.md explains each and holds a full run's tables):
  peak        measured matmul FLOP/s (float32, bfloat16): the MFU's denominator
  train_step  the train step as train.py runs it: tiny and bench_50m, memory on/off, slots,
              attention scopes, remat
  memory_ops  one layer's memory read and write against its self-attention and MLP
  context     inference time per token and peak host memory from 1k to 128k tokens
  reference   our vanilla model against transformers' LlamaForCausalLM (skipped without torch)
  accelerator llama3.2_1b and lm2_1.7b train steps at 4,096 tokens on one GPU, MFU against the
              datasheet (suite `gpu`, which runs only this; `smoke` runs it shrunk)
Every benchmark warms up, reports medians, and compares only within one run, alternating the
sides (the machine may be shared). The JSON holds one record per measurement and a
`headline` object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

if __package__ in (None, ""):  # `python bench/run.py` from the repository root
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from lm2_jax.train.metrics import measure_matmul_flops  # noqa: E402

from bench import accelerator, context, memory_ops, reference, train_step  # noqa: E402

TINY, B50M = "configs/tiny.yaml", "configs/bench_50m.yaml"
BENCHMARKS = ("peak", "train_step", "memory_ops", "context", "reference", "accelerator")
CPU_BENCHMARKS = BENCHMARKS[:-1]  # what a suite runs unless it names its "benchmarks"
OFF = ["model.memory.kind=none"]

# Shrinks bench_50m (memory kept at its 64 slots) so that `smoke` runs in a minute or two;
# batches of 8 split over the 8 devices the tests fake.
SMALL = ["model.width=64", "model.num_layers=2", "model.num_heads=2", "model.num_kv_heads=1",
         "model.memory.num_heads=2", "model.mlp_width=128", "model.vocab_size=512",
         "model.segment_len=32", "train.seq_len=64", "train.batch_size=8"]

# Per suite: which train-step groups run (config, variants, reference) on top of
# `train_base`, repeats, and the other benchmarks' sizes. `quick` keeps what the headline
# needs; `smoke` runs every benchmark at tiny sizes (the test suite runs it: a benchmark whose
# module no longer fits the model's API fails there, not in the next measurement).
SUITES = {
    "smoke": {
        "benchmarks": BENCHMARKS,
        "repeats": 1,
        "peak_size": 256,
        "train_base": SMALL,
        "train_groups": [(B50M, {"off": OFF, "on64": []}, "off")],
        "memory_config": TINY,
        "memory_slots": [4],
        "context": (["1k"], ["1k"]),
        "reference": (8, 32),
        "accelerator": accelerator.SMOKE_VARIANTS,
    },
    "quick": {
        "repeats": 3,
        "train_groups": [
            (TINY, {"off": OFF, "on16": []}, "off"),
            (B50M, {"off": OFF, "on64": []}, "off"),
        ],
        "memory_slots": [16, 256, 2048],
        "context": (["4k", "128k"], ["1k", "4k"]),
        "reference": (4, 256),
    },
    "full": {
        "repeats": 3,
        "train_groups": [
            (B50M, {"off": OFF, "on64": [], "on256": ["model.memory.num_slots=256"]}, "off"),
            # The official LM2's shape: one 256-token segment, 256 slots.
            (B50M, {"off": OFF + ["model.segment_len=256"],
                    "on256": ["model.segment_len=256", "model.memory.num_slots=256"]}, "off"),
            (TINY, {"off": OFF, "on16": [], "on64": ["model.memory.num_slots=64"],
                    "on256": ["model.memory.num_slots=256"]}, "off"),
            (TINY, {"segment_off": OFF, "segment_on16": [],
                    "full_off": OFF + ["model.attention_scope=full"],
                    "full_on16": ["model.attention_scope=full"]}, "segment_off"),
            # tiny.yaml rematerialises every block (remat_policy: full); against saving all.
            (TINY, {"on16_remat_none": ["model.remat_policy=none"], "on16": [],
                    "on16_remat_save_dots": ["model.remat_policy=save_dots"]},
             "on16_remat_none"),
        ],
        "memory_slots": [16, 64, 256, 1024, 2048],
        "context": (["1k", "4k", "16k", "64k", "128k"], ["1k", "4k", "16k"]),
        "reference": (4, 256),
    },
}


# One GPU: the accelerator benchmark (the others, asked for with --only, at quick's sizes).
SUITES["gpu"] = {**SUITES["quick"], "benchmarks": ("accelerator",), "repeats": 5,
                 "peak_size": 8192, "accelerator": accelerator.GPU_VARIANTS}


def peak(repeats: int, size: int = 1536) -> list[dict]:
  out = []
  for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    flops = measure_matmul_flops(size=size, repeats=4, trials=max(repeats, 3), dtype=dtype)
    out.append({"benchmark": "peak", "dtype": name, "matmul_gflops_per_s": flops / 1e9,
                "size": size})
  return out


def _find(records, **match):
  for r in records:
    if all(r.get(k) == v for k, v in match.items()):
      return r
  return None


def headline(records: list[dict]) -> dict:
  on = _find(records, benchmark="train_step", config=B50M, variant="on64", reference="off")
  ref = _find(records, benchmark="reference", kind="train_step")
  gemms = _find(records, benchmark="reference", kind="gemms")
  return {
      "memory_overhead": on and on["time_ratio_to_reference"],
      "memory_efficiency": on and on["time_ratio_to_reference"] / on["flop_ratio_to_reference"],
      "context_per_token_ratio_128k_4k": context.per_token_ratio(
          [r for r in records if r["benchmark"] == "context"], "128k"),
      "mfu_vs_measured_peak": on and on["mfu_vs_measured_peak"],
      "vanilla_speedup_vs_transformers": ref and ref.get("speedup_vs_transformers"),
      "vanilla_gemm_speedup_vs_torch": gemms and gemms.get("gemm_speedup_vs_torch"),
      "accelerator_mfu_vs_datasheet": {
          r["variant"]: r.get("mfu_vs_datasheet") for r in records
          if r["benchmark"] == "accelerator" and "variant" in r} or None,
      "notes": "memory_* and mfu: bench_50m with 64 slots vs memory off (train step, same "
               "run); efficiency divides the time ratio by the executed-FLOP ratio; MFU counts "
               "useful FLOPs against a float32 matmul timed in the same rounds as the steps",
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--suite", choices=sorted(SUITES), default="quick")
  p.add_argument("--output", default="bench.json")
  p.add_argument("--only", default="", help="comma-separated benchmarks (default: all)")
  p.add_argument("--variants", default="",
                 help="comma-separated accelerator variants (bench/accelerator.py's VARIANTS; "
                      "default: the suite's)")
  args = p.parse_args(argv)
  names = BENCHMARKS
  only = [n for n in args.only.split(",") if n]
  bad = [n for n in only if n not in names]
  if bad:
    print(f"--only: unknown benchmark {bad[0]!r}; expected some of {', '.join(names)}",
          file=sys.stderr)
    return 2
  chosen = [v for v in args.variants.split(",") if v]
  bad = [v for v in chosen if v not in accelerator.VARIANTS]
  if bad:
    print(f"--variants: unknown variant {bad[0]!r}; expected some of "
          f"{', '.join(accelerator.VARIANTS)}", file=sys.stderr)
    return 2
  out_dir = os.path.dirname(os.path.abspath(args.output))
  if not os.path.isdir(out_dir):
    print(f"--output: folder {out_dir} does not exist", file=sys.stderr)
    return 2
  suite = SUITES[args.suite]
  run = set(only or suite.get("benchmarks", CPU_BENCHMARKS))
  if chosen:
    run.add("accelerator")
  started = time.perf_counter()
  records: list[dict] = []

  machine = {"platform": platform.platform(), "processor": platform.processor(),
             "cpus": os.cpu_count(), "device": jax.devices()[0].device_kind,
             "jax": jax.__version__}

  def save():
    """Write what has been measured so far (a long run killed midway keeps its records)."""
    result = {"suite": args.suite, "seconds": time.perf_counter() - started,
              "machine": machine, "headline": headline(records), "records": records}
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
    os.replace(tmp, args.output)
    return result

  def note(rs):
    for r in rs:
      r["load_average"] = os.getloadavg()[0]
      print(json.dumps({k: v for k, v in r.items() if not isinstance(v, (list, dict))}),
            flush=True)
    records.extend(rs)
    save()

  failed = []

  def bench(name, fn):
    """Run one benchmark; a failure is recorded and the others still run."""
    if name not in run:
      return
    try:
      note(fn())
    except Exception as e:  # pylint: disable=broad-except
      failed.append(name)
      note([{"benchmark": name, "error": f"{type(e).__name__}: {e}"}])

  bench("peak", lambda: peak(suite["repeats"], suite.get("peak_size", 1536)))
  bench("context", lambda: context.run(TINY, *suite["context"], repeats=min(2, suite["repeats"])))
  bench("reference", lambda: reference.run(*suite["reference"], suite["repeats"]))
  for config, variants, ref in suite["train_groups"]:
    bench("train_step", lambda c=config, v=variants, r=ref: train_step.run_group(
        c, v, suite.get("train_base", []), r, suite["repeats"]))
  bench("memory_ops", lambda: memory_ops.run(suite.get("memory_config", B50M),
                                             suite["memory_slots"], suite["repeats"], batch=2))

  def accelerator_records():
    # Noted one variant at a time (a long GPU run cut short keeps what it measured).
    accelerator.run(chosen or suite.get("accelerator", accelerator.GPU_VARIANTS),
                    suite["repeats"], suite.get("peak_size", 1536), note=note)
    return []

  bench("accelerator", accelerator_records)
  result = save()
  print(json.dumps(result["headline"], indent=1))
  if failed:
    print(f"failed: {', '.join(failed)} (errors in {args.output})", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
