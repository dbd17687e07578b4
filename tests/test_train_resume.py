"""Killed and restarted, a run continues exactly as if it had never stopped (CPU, bit for bit).

Twelve steps with a checkpoint every four: one run goes through; another is killed with
SIGKILL after step 9 and started again (it resumes from step 8, or 4 if the save of 8 was
cut short); a third gets SIGTERM after step 9, saves the step it stops at and exits
cleanly, then resumes. The losses of steps 10-12 must equal the uninterrupted run's
exactly. The runs compute in bfloat16 over float32 master weights. The processes share a
persistent compilation cache, so only the first compiles.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import pytest

from lm2_jax import checkpoint
from test_train_loop import SMALL, toy_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(ROOT, "tests", "train_helper.py")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  base = tmp_path_factory.mktemp("resume")
  data = toy_text(base / "toy.jsonl")
  args = ["--config", os.path.join(ROOT, "configs", "tiny.yaml"), *SMALL, "data.kind=text",
          f"data.paths=[{data}]", "train.steps=12", "train.checkpoint_every=4",
          "train.async_checkpoint=true", "train.peak_flops=1e11",
          "model.compute_dtype=bfloat16"]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=str(base / "jax-cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  reference = base / "reference"
  _finish(args, env, reference)
  return base, args, env, _losses(reference)


def _start(args, env, workdir, pause_at=None, marker=None):
  env = dict(env)
  if pause_at:
    env.update(LM2_TEST_PAUSE_AT=str(pause_at), LM2_TEST_MARKER=str(marker))
  return subprocess.Popen([sys.executable, HELPER, *args, "--workdir", str(workdir)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=ROOT)


def _finish(args, env, workdir):
  proc = _start(args, env, workdir)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  return out


def _wait_for(path, proc, timeout=300):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()[0]
    assert time.time() < deadline, "the run never reached the pause"
    time.sleep(0.05)


def _losses(workdir):
  """Per step, every loss logged (a resumed run logs the replayed steps again)."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      out.setdefault(record["step"], []).append(record["loss"])
  return out


def test_sigkill_after_step_9_then_restart_gives_the_same_losses(setup):
  base, args, env, reference = setup
  workdir, marker = base / "killed", base / "killed.paused"
  proc = _start(args, env, workdir, pause_at=9, marker=marker)
  _wait_for(marker, proc)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  out = _finish(args, env, workdir)
  assert "resumed from" in out
  losses = _losses(workdir)
  for step in (10, 11, 12):
    assert losses[step][-1] == reference[step][0], (step, losses[step], reference[step])
  # Everything the first process logged before the kill matches as well.
  for step in range(1, 10):
    assert losses[step][0] == reference[step][0]
  _, params, step = checkpoint.load_params(str(workdir))
  assert step == 12
  assert {str(p.dtype) for p in jax.tree.leaves(params)} == {"float32"}   # master weights


def test_sigterm_saves_the_step_it_stops_at_and_resumes(setup):
  base, args, env, reference = setup
  workdir, marker = base / "terminated", base / "terminated.paused"
  proc = _start(args, env, workdir, pause_at=9, marker=marker)
  _wait_for(marker, proc)
  proc.send_signal(signal.SIGTERM)
  open(str(marker) + ".go", "w").close()
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  # The signal arrives while step 9 is being logged: step 10 runs, is saved, and the run ends.
  assert "stopped by SIGTERM at step 10 of 12; checkpoint saved" in out, out
  assert sorted(int(s) for s in os.listdir(workdir / "checkpoints")) == [4, 8, 10]
  out = _finish(args, env, workdir)
  assert "resumed from" in out and "checkpoints/10" in out
  losses = _losses(workdir)
  assert losses[10] == reference[10]            # logged once, before the stop
  for step in (11, 12):
    assert losses[step] == reference[step], (step, losses[step], reference[step])
