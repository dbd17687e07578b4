"""The benchmark suite still drives the library's current API (its `smoke` suite, tiny sizes).

Benchmarks are not run as tests; this only checks that every one of them executes and writes
the records and headline that docs/performance.md reads, so that a change of the model's or
the engine's signatures cannot break `bench/run.py` unnoticed, as it once did for memory_ops.
"""

import json
import math

import pytest

from bench import memory_ops, report
from bench import run as bench_run


def _finite_positive(record: dict, *keys: str) -> None:
  for key in keys:
    assert math.isfinite(record[key]) and record[key] > 0, (record["benchmark"], key)


def test_memory_ops_times_read_write_attention_and_mlp():
  records = memory_ops.run("configs/tiny.yaml", [4], repeats=1, batch=1)
  assert [r["slots"] for r in records] == [4]
  _finite_positive(records[0], "read_s", "write_s", "attention_s", "mlp_s",
                   "read_over_attention", "memory_over_attention_mlp")


def test_the_gemm_list_is_the_step_the_flop_formula_counts():
  # The products bench/reference.py times are every matmul of the vanilla train step: their
  # FLOPs add up to the library's executed count (no mask skipped, as the step computes).
  from bench import reference  # pylint: disable=g-import-not-at-top
  from lm2_jax.config import load_config  # pylint: disable=g-import-not-at-top
  from lm2_jax.model.flops import flops_per_token  # pylint: disable=g-import-not-at-top
  for batch, seq in ((4, 256), (2, 96)):
    cfg = load_config(None, [*reference.SHAPE, "model.num_kv_heads=2",
                             f"model.segment_len={seq}", f"train.seq_len={seq}",
                             f"train.batch_size={batch}"])
    total = sum(count * 2 * b * m * k * n
                for _, count, (b, m, k, n), _ in reference.step_gemms(cfg))
    assert total == batch * seq * flops_per_token(cfg.model, seq)["train_executed"]


@pytest.mark.slow
def test_smoke_suite_runs_every_benchmark_and_writes_the_headline(tmp_path):
  out = tmp_path / "bench.json"
  assert bench_run.main(["--suite", "smoke", "--output", str(out)]) == 0
  result = json.loads(out.read_text())
  by_name: dict[str, list[dict]] = {}
  for record in result["records"]:
    assert "error" not in record, record
    by_name.setdefault(record["benchmark"], []).append(record)
  assert set(by_name) == {"peak", "train_step", "context", "reference", "memory_ops",
                          "accelerator"}
  assert {r["dtype"] for r in by_name["peak"]} == {"float32", "bfloat16"}
  steps = {r["variant"]: r for r in by_name["train_step"]}
  assert set(steps) == {"off", "on64"} and steps["off"]["time_ratio_to_reference"] == 1.0
  _finite_positive(steps["on64"], "tokens_per_s", "mfu_vs_measured_peak",
                   "time_ratio_to_reference", "flop_ratio_to_reference")
  assert steps["on64"]["flop_ratio_to_reference"] > 1  # the memory adds FLOPs
  assert {r["attention_scope"] for r in by_name["context"]} == {"segment", "full"}
  for record in by_name["context"]:
    _finite_positive(record, "seconds_per_token")
  head = result["headline"]
  assert math.isclose(head["memory_efficiency"], steps["on64"]["time_ratio_to_reference"]
                      / steps["on64"]["flop_ratio_to_reference"])
  # With torch and transformers installed (requirements-dev.txt) the reference runs too.
  if "skipped" not in by_name["reference"][0]:
    assert {r["kind"] for r in by_name["reference"]} == {"train_step", "forward", "gemms"}
    assert head["vanilla_speedup_vs_transformers"] > 0
    gemms = next(r for r in by_name["reference"] if r["kind"] == "gemms")
    for product in gemms["products"]:
      _finite_positive(product, "ours_gflops", "torch_gflops", "speedup_vs_torch")
    assert head["vanilla_gemm_speedup_vs_torch"] == gemms["gemm_speedup_vs_torch"] > 0
    assert "| one step's products |" in report.tables(result)
  # The accelerator benchmark's variants, shrunk: vanilla through dot_product_attention, LM2.
  accel = {r["variant"]: r for r in by_name["accelerator"]}
  assert set(accel) == {"smoke_llama_xla", "smoke_lm2_segment_einsum"}
  assert accel["smoke_llama_xla"]["attention_impl"] == "xla"
  assert accel["smoke_lm2_segment_einsum"]["memory_slots"] == 8
  for record in accel.values():
    _finite_positive(record, "tokens_per_s", "mfu_vs_measured_peak", "temp_bytes")
  assert head["accelerator_mfu_vs_datasheet"].keys() == accel.keys()
  tables = report.tables(result)  # the Markdown of docs/performance.md, every section
  assert "| smoke_llama_xla | 8 x 64 |" in tables
  assert "| accelerator_mfu_vs_datasheet: smoke_llama_xla |" in tables
  assert bench_run.main(["--suite", "smoke", "--only", "nope", "--output", str(out)]) == 2
  assert bench_run.main(["--suite", "gpu", "--variants", "nope", "--output", str(out)]) == 2
