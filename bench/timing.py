"""Timing on a shared, noisy machine: warm-up, alternation, medians, same-run ratios.

Each side of a comparison runs once per round, in an order that alternates between rounds
(A B, B A, ...), so that a burst of load elsewhere on the machine hits both sides alike. A
ratio is the median of the per-round ratios, never a quotient of figures from two runs.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

import jax


def alternate(fns: dict[str, Callable[[], Any]], repeats: int,
              warmup: int = 1) -> dict[str, list[float]]:
  """Seconds of each of `repeats` calls of every fn, after `warmup` untimed calls each."""
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  names = list(fns)
  times: dict[str, list[float]] = {k: [] for k in names}
  for r in range(repeats):
    for k in (names if r % 2 == 0 else names[::-1]):
      start = time.perf_counter()
      jax.block_until_ready(fns[k]())
      times[k].append(time.perf_counter() - start)
  return times


def matmul_probe(size: int = 1536, repeats: int = 4, dtype=None):
  """(fn, FLOPs per call): `repeats` chained float32 matmuls, to time beside other work."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jnp.ones((size, size), dtype or jnp.float32) / size
  matmul = jax.jit(lambda x: x @ x)

  def fn():
    b = a
    for _ in range(repeats):
      b = matmul(b)
    return b

  return fn, 2 * size**3 * repeats


def stats(seconds: list[float]) -> dict[str, Any]:
  return {"median_s": statistics.median(seconds), "min_s": min(seconds),
          "max_s": max(seconds), "runs_s": [round(s, 6) for s in seconds]}


def ratio(times: dict[str, list[float]], num: str, den: str) -> float:
  """Median over rounds of time[num] / time[den] (> 1: num is slower)."""
  return statistics.median(a / b for a, b in zip(times[num], times[den]))


def peak_rss_reset() -> None:
  """Restart the peak resident-memory counter of this process (Linux; a no-op elsewhere)."""
  try:
    with open(f"/proc/{os.getpid()}/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
  except OSError:
    pass


def peak_rss_bytes() -> int | None:
  """Peak resident memory of this process since the last reset (VmHWM), None if unknown."""
  try:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None
