"""SIGTERM / SIGINT: finish the current step, save a checkpoint, exit cleanly.

Schedulers preempt with SIGTERM and a grace period; Ctrl-C sends SIGINT. Both only set a
flag here; the loop checks it between steps, so a checkpoint is never written from inside
a signal handler or halfway through an update. With several processes the stop must
happen at the same step everywhere (saving is collective): JAX's preemption sync point
(its coordination service watches SIGTERM) gives that step, so there no Python handler
is installed (it would take SIGTERM away from JAX) and SIGINT keeps its default.
"""

from __future__ import annotations

import signal
import threading

import jax


class StopSignal:
  """Records the first SIGTERM/SIGINT received while installed (a context manager)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.received is None:
      self.received = signum

  def __enter__(self):
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
      return self
    for sig in self.SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    return False

  @property
  def name(self) -> str:
    return signal.Signals(self.received).name if self.received else "preemption"

  def should_stop(self, step: int) -> bool:
    """True at the step where every process stops (call once per step, on every process)."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received is not None
