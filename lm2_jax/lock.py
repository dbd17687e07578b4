"""One run per work directory (or evaluation output): an advisory lock held while it runs.

Two processes writing one work directory interleave their checkpoints, configs and metrics
and destroy each other's work without an error. `RunLock` takes an exclusive `flock` on a
small file (`WORKDIR/.lock`, `<output stem>.lock`) and writes the holder into it (process id,
host, start time, command) so that a second process refuses at once with one line naming
the holder. The kernel drops a `flock` when its process dies (SIGKILL included), so the lock
of a dead process is simply taken over; the file it left behind is only a note.

Multi-host runs: the lock belongs to the run, not to each process. Process 0 takes it and
tells the others the outcome (`lm2_jax.train.loop`), so that every process of a second run
refuses with the same line while the processes of one run never contend with each other.
This needs a file system where `flock` reaches across hosts (NFS v4, Lustre with
`-o flock`, GPFS); where `flock` is unsupported the run goes ahead with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time

log = logging.getLogger(__name__)


class LockedError(RuntimeError):
  """Another live process holds the lock; the message names it."""


def _holder_text(path: str) -> str:
  try:
    with open(path, encoding="utf-8") as f:
      h = json.load(f)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(h["time"])))
    return f"process {h['pid']} on {h['host']} since {since} ({h['command']})"
  except (OSError, ValueError, KeyError, TypeError):
    return "another process (its note is unreadable)"


class RunLock:
  """An exclusive advisory lock on `path`, held from `acquire()` to `release()`.

  Reentrant within a process (a test or a notebook that runs twice in one work directory),
  refused across processes. `what` names the locked thing in the refusal.
  """

  _fds: dict[str, int | None] = {}  # path -> the locked file (None: flock unsupported)
  _held: dict[str, int] = {}  # path -> number of holders in this process

  def __init__(self, path: str, what: str):
    self.path = os.path.abspath(path)
    self.what = what

  def acquire(self) -> RunLock:
    if self.path in RunLock._fds:
      RunLock._held[self.path] += 1
      return self
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
          raise LockedError(f"{self.what} is in use by {_holder_text(self.path)}; wait for it "
                            f"to finish or stop it (lock file {self.path})") from None
        log.warning("%s: cannot lock (%s); nothing stops a second run from using %s at the "
                    "same time", self.path, e.strerror or e, self.what)
        RunLock._fds[self.path], RunLock._held[self.path] = None, 1
        return self
      # The previous holder may have removed the file between our open and flock.
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    previous = os.read(fd, 4096).decode("utf-8", "replace").strip()
    if previous:
      log.warning("%s: taking over the lock left by %s (no longer running)", self.path,
                  _holder_text(self.path))
    note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
                       "command": " ".join(sys.argv)[:300]})
    os.ftruncate(fd, 0)
    os.pwrite(fd, note.encode("utf-8"), 0)
    RunLock._fds[self.path], RunLock._held[self.path] = fd, 1
    return self

  def release(self) -> None:
    if self.path not in RunLock._fds:
      return
    RunLock._held[self.path] -= 1
    if RunLock._held[self.path]:
      return
    fd = RunLock._fds.pop(self.path)
    del RunLock._held[self.path]
    if fd is not None:
      try:
        os.unlink(self.path)  # while still holding it: a waiter re-checks the inode
      except OSError:
        pass
      os.close(fd)

  def __enter__(self) -> RunLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
