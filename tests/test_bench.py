"""The benchmark modules still drive the model's current API (a smoke run at tiny sizes).

Benchmarks are not run as tests; this only checks that they execute, so that a change of a
module's signature cannot break `bench/run.py` unnoticed, as it once did for memory_ops.
"""

import math

from bench import memory_ops


def test_memory_ops_times_read_write_attention_and_mlp():
  records = memory_ops.run("configs/tiny.yaml", [4], repeats=1, batch=1)
  assert [r["slots"] for r in records] == [4]
  for key in ("read_s", "write_s", "attention_s", "mlp_s", "read_over_attention",
              "memory_over_attention_mlp"):
    assert math.isfinite(records[0][key]) and records[0][key] > 0, key
