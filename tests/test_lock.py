"""`RunLock`: a second process is refused naming the holder; a dead holder's lock is taken."""

import logging
import os
import signal
import subprocess
import sys

import pytest

from lm2_jax.lock import LockedError, RunLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = ("import sys, time; from lm2_jax.lock import RunLock; "
        "RunLock(sys.argv[1], 'it').acquire(); print('held', flush=True); time.sleep(120)")


def hold_in_another_process(path) -> subprocess.Popen:
  """A process (no JAX: it starts in a moment) that holds the lock until killed."""
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
  path = tmp_path / ".lock"
  proc = hold_in_another_process(path)
  try:
    with pytest.raises(LockedError, match=rf"^--workdir W is in use by process {proc.pid} on "
                       r".* \(-c .*\); wait for it to finish or stop it"):
      RunLock(str(path), "--workdir W").acquire()
  finally:
    proc.kill()
    proc.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
  path = tmp_path / ".lock"
  proc = hold_in_another_process(path)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert path.exists()                        # SIGKILL left the file behind
  with caplog.at_level(logging.WARNING):
    lock = RunLock(str(path), "it").acquire()
  assert f"taking over the lock left by process {proc.pid}" in caplog.text
  lock.release()
  assert not path.exists()                    # a clean release leaves nothing


def test_reentrant_within_a_process(tmp_path):
  path = str(tmp_path / ".lock")
  outer = RunLock(path, "it").acquire()
  inner = RunLock(path, "it").acquire()       # a test or notebook running twice
  inner.release()
  assert os.path.exists(path)                 # still held by the outer one
  proc = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", "0"), path],
                        capture_output=True, text=True, cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": ROOT}, timeout=60)
  assert proc.returncode == 1 and "LockedError" in proc.stderr
  outer.release()
  assert not os.path.exists(path)
