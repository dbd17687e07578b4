"""Two processes on localhost (jax.distributed with the CPU collectives) train like one.

Each process owns 4 of the 8 CPU devices and reads its half of every batch (BABILong
records p, p + 2, ...); together they hold exactly the single process's batch, so the two
runs agree up to the order of float32 sums.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from lm2_jax.config import load_config
from lm2_jax.train import run
from test_train_loop import SMALL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(ROOT, "tests", "train_helper.py")

ARGS = [*SMALL, "model.segment_len=64", "train.seq_len=128", "train.steps=2",
        "train.checkpoint_every=2", "train.eval_samples=0", "train.peak_flops=1e11",
        "data.kind=babilong", "data.tasks=[qa1]"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
  port = _free_port()
  two = tmp_path / "two"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  procs = [subprocess.Popen(
      [sys.executable, HELPER, "--config", os.path.join(ROOT, "configs", "tiny.yaml"), *ARGS,
       "--workdir", str(two), f"mesh.coordinator_address=127.0.0.1:{port}",
       "mesh.num_processes=2", f"mesh.process_id={i}"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
      for i in range(2)]
  one = tmp_path / "one"
  run(load_config(os.path.join(ROOT, "configs", "tiny.yaml"), ARGS), str(one))
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
  assert "over 8 cpu device(s) in 2 process(es)" in outs[0]
  assert "step 1/2" not in outs[1]                  # only process 0 logs
  a, b = _records(one), _records(two)
  assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
  for key in ("loss", "grad_norm", "target_tokens"):
    np.testing.assert_allclose([r[key] for r in b], [r[key] for r in a], rtol=1e-5, err_msg=key)
  data = sorted(os.listdir(two / "checkpoints" / "2" / "data"))
  assert "process_0-of-2.json" in data and "process_1-of-2.json" in data
