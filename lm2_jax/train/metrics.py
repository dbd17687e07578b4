"""Training metrics: console progress with ETA, `metrics.jsonl`, TensorBoard, and the MFU.

MFU (model FLOPs utilisation) = achieved model FLOP/s / peak FLOP/s of the devices:

    mfu = flops_per_token(model, T)["train"] * tokens_per_second / (peak_per_device * devices)

`flops_per_token` (lm2_jax/model/flops.py) gives two counts. "train" is the model's useful
FLOPs (forward + backward = 3 forwards, causal attention counting only the keys a query
sees, memory read and write included), the usual MFU numerator, so an MFU here compares
with other codebases'. "train_executed" is what the kernels compute (every cache slot's
score, padding, rematerialisation); bench/run.py reports both. Tokens are all model input
tokens of the batch (padding included: the device computes them).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import math
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from lm2_jax.cli import human
from lm2_jax.model.flops import flops_per_token

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"
TENSORBOARD_DIR = "tensorboard"

# Dense bfloat16 peak FLOP/s per device (chip), by device_kind prefix.
PEAK_FLOPS = (
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
    ("TPU v5", 459e12), ("TPU v4", 275e12), ("TPU v3", 123e12),
    ("NVIDIA B200", 2250e12), ("NVIDIA H200", 989e12), ("NVIDIA H100", 989e12),
    ("NVIDIA A100", 312e12), ("NVIDIA L4", 121e12), ("NVIDIA A10", 125e12),
)


def _usable_cores() -> int:
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def measure_matmul_flops(size: int = 1536, repeats: int = 4, trials: int = 5,
                         dtype=jnp.float32, cpu_time: bool = False) -> float:
  """FLOP/s of a square matmul on the first local device (on the CPU: every core).

  The best of several trials, so that other work on the machine lowers the figure (and
  raises the MFU) as little as possible. With ``cpu_time`` (CPU only) the trials are timed
  in the process's CPU time, the seconds its threads ran, and the rate per core-second is
  scaled to the cores the process may use: the cores' rate while they run this process, a
  figure other jobs on a shared machine do not lower (in wall time a probe that loses its
  cores to them reads a small fraction of the peak, and the MFU then exceeds 100%).
  """
  clock = time.process_time if cpu_time else time.perf_counter
  cores = _usable_cores() if cpu_time else 1
  # Random data (constant or zero operands can run faster than real ones on a GPU), scaled
  # by 1/sqrt(size) so that the chained products keep their scale.
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32) / size ** 0.5
  a = jax.device_put(a.astype(dtype), jax.local_devices()[0])
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(trials):
    start = clock()
    for _ in range(repeats):
      a = matmul(a)
    a.block_until_ready()
    best = min(best, clock() - start)
  return 2 * size**3 * repeats * cores / max(best, 1e-9)


@functools.lru_cache(maxsize=None)
def measured_cpu_flops() -> float:
  """The float32 matmul rate of the host's cores, measured once per process in CPU time
  (so that a shared machine does not shrink it: the MFU stays a fraction of what the cores
  do, and the time other jobs take shows as a lower MFU)."""
  return measure_matmul_flops(cpu_time=True)


def peak_flops_per_device(configured: float) -> tuple[float | None, str]:
  """(peak FLOP/s of one device, where the figure comes from); None when unknown."""
  if configured:
    return configured, "train.peak_flops"
  device = jax.local_devices()[0]
  for prefix, value in PEAK_FLOPS:
    if device.device_kind.startswith(prefix):
      return value, f"{device.device_kind} dense bfloat16 peak"
  if device.platform == "cpu":
    # Fake CPU devices share the cores: the host's matmul rate split between them.
    host = measured_cpu_flops()
    return host / jax.local_device_count(), (
        f"measured float32 matmul (CPU time), {host / 1e9:.0f} GFLOP/s for the host's "
        f"{jax.local_device_count()} CPU device(s)")
  return None, f"unknown device {device.device_kind!r}; set train.peak_flops for the MFU"


class NonFiniteMetric(ArithmeticError):
  """A step's loss or gradient norm is not finite: training cannot go on."""

  def __init__(self, step: int, key: str, value: float):
    super().__init__(f"step {step}: {key} is {value}")
    self.step, self.key, self.value = step, key, value


def _is_group_sum(key: str) -> bool:
  return key.endswith(("/ce_sum", "/correct_sum", "/targets"))


def window_groups(fetched: list[dict[str, Any]]) -> dict[str, float | None]:
  """The loss and accuracy of each group of rows over a window's steps.

  A step reports a group (the episode rows and the records rows of `data.episode_rows`) as
  sums: `<group>/ce_sum`, `<group>/correct_sum`, `<group>/targets`. One step can hold few
  of a group's targets or none, so the sums are added over the window before dividing:
  `<group>/loss` and `<group>/accuracy` per target token (None without targets), and
  `<group>/targets`.
  """
  groups = sorted(k[:-len("/targets")] for k in fetched[-1] if k.endswith("/targets"))
  out: dict[str, float | None] = {}
  for g in groups:
    targets = float(sum(m[f"{g}/targets"] for m in fetched))
    ce = float(sum(m[f"{g}/ce_sum"] for m in fetched))
    correct = float(sum(m[f"{g}/correct_sum"] for m in fetched))
    out[f"{g}/loss"] = ce / targets if targets else None
    out[f"{g}/accuracy"] = correct / targets if targets else None
    out[f"{g}/targets"] = targets
  return out


class MetricsWindow:
  """The steps since the last fetch from the devices, closed into one metrics record.

  Steps run asynchronously and fetching their metrics waits for them, so the loop fetches
  only every log_every steps (and before a checkpoint, so that none holds a non-finite
  step). The window's wall time leaves out compilation (`compile_seconds()` is the
  running total) and whatever ran between windows (saving, evaluation): tokens/s and the
  MFU measure the steps alone.
  """

  def __init__(self, model_cfg, batch_size: int, peak_per_device: float | None,
               devices: int, compile_seconds: Callable[[], float], tokens: int = 0):
    self.model_cfg, self.batch_size = model_cfg, batch_size
    self.peak, self.devices = peak_per_device, devices
    self.compile_seconds = compile_seconds
    self.tokens = tokens                       # every token trained on, resumed runs included
    self._step_times: list[float] = []         # seconds per step of each window, for the ETA
    self.restart()

  def restart(self) -> None:
    """Start timing the next window now."""
    self._start, self._compile_at_start = time.perf_counter(), self.compile_seconds()
    self._pending: list[tuple[int, int, Any]] = []   # (step, seq_len, device metrics)

  def add(self, step: int, seq_len: int, metrics: dict[str, Any]) -> None:
    self._pending.append((step, seq_len, metrics))

  def close(self) -> dict[str, Any] | None:
    """The record of the window's last step (None if it is empty); starts the next window.

    Raises NonFiniteMetric naming the first step whose loss or gradient norm is not finite.
    """
    if not self._pending:
      return None
    fetched = jax.device_get([m for _, _, m in self._pending])
    now = time.perf_counter()
    for (s, _, _), m in zip(self._pending, fetched):
      for key, name in (("loss", "loss"), ("grad_norm", "gradient norm")):
        if not np.isfinite(m[key]):
          raise NonFiniteMetric(s, name, m[key])
    elapsed = max(now - self._start - (self.compile_seconds() - self._compile_at_start), 1e-9)
    tokens = sum(self.batch_size * seq for _, seq, _ in self._pending)
    flops = sum(self.batch_size * seq * flops_per_token(self.model_cfg, seq)["train"]
                for _, seq, _ in self._pending)
    self.tokens += tokens
    n = len(self._pending)
    last_step, last_seq, _ = self._pending[-1]
    last = {k: float(v) for k, v in fetched[-1].items() if not _is_group_sum(k)}
    record = {"step": last_step, "loss": last.pop("loss"), "lr": last.pop("lr"),
              "grad_norm": last.pop("grad_norm"), "tokens_per_sec": tokens / elapsed,
              "step_time": elapsed / n,
              "mfu": flops / elapsed / (self.peak * self.devices) if self.peak else None,
              **last, "seq_len": last_seq, "segments": last_seq // self.model_cfg.segment_len,
              "tokens": self.tokens, "time": time.time(), **window_groups(fetched)}
    self._step_times.append(elapsed / n)
    self.restart()
    return record

  def eta_seconds(self, step: int, total_steps: int) -> float:
    """Time to `total_steps` at the mean step time of the last five windows."""
    recent = self._step_times[-5:]
    return (total_steps - step) * sum(recent) / len(recent) if recent else math.inf


def human_seconds(s: float) -> str:
  if not math.isfinite(s):
    return "?"
  s = int(round(s))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class MetricsLogger:
  """Writes what the primary process reports; the other processes call it harmlessly.

  metrics.jsonl gets one JSON object per logged training step; eval.jsonl one per
  evaluation; TensorBoard both (under train/ and eval/); the console a progress line.
  Files are appended to, so a resumed run continues the same logs.
  """

  def __init__(self, workdir: str, total_steps: int, enabled: bool = True,
               tensorboard: bool = True, stream=None):
    self.enabled = enabled
    self.total_steps = total_steps
    self.stream = stream or sys.stdout
    self._metrics = self._eval = self._tb = None
    if not enabled:
      return
    self._metrics = open(os.path.join(workdir, METRICS_FILE), "a", encoding="utf-8")
    self._eval = open(os.path.join(workdir, EVAL_FILE), "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

  def _tensorboard(self):
    """The TensorBoard writer, or OSError when its background thread has died.

    tensorboardX writes from a thread that dies on a full disk, after which its bounded
    queue fills and the next `add_scalar` blocks forever; a full disk must stop the run in
    one line instead.
    """
    writer = getattr(getattr(self._tb, "file_writer", None), "event_writer", None)
    worker = getattr(writer, "_worker", None)
    if worker is not None and not worker.is_alive():
      raise OSError(errno.EIO, "the TensorBoard event writer stopped (a full or failing disk)")
    return self._tb

  def print(self, line: str) -> None:
    if self.enabled:
      print(line, file=self.stream, flush=True)

  @staticmethod
  def _plain(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in record.items()}

  def train(self, record: dict[str, Any], eta_seconds: float) -> None:
    """record: step, loss, lr, grad_norm, tokens_per_sec, step_time, mfu, ..."""
    if not self.enabled:
      return
    record = self._plain(record)
    self._metrics.write(json.dumps(record) + "\n")
    self._metrics.flush()
    step = record["step"]
    if self._tb is not None:
      tb = self._tensorboard()
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)) and v is not None:
          tb.add_scalar(f"train/{k}", v, step)
    width = len(str(self.total_steps))
    pct = 100.0 * step / max(self.total_steps, 1)
    parts = [f"step {step:>{width}}/{self.total_steps} ({pct:5.1f}%)",
             f"loss {record['loss']:.4f}"]
    if "accuracy" in record:
      parts.append(f"acc {record['accuracy']:.3f}")
    if record.get("episodes/accuracy") is not None:
      parts.append(f"episodes acc {record['episodes/accuracy']:.3f}")
    parts += [f"lr {record['lr']:.2e}", f"gnorm {record['grad_norm']:.3f}",
              f"{human(record['tokens_per_sec'])} tok/s",
              f"{record['step_time']:.3f} s/step"]
    if record.get("mfu") is not None:
      parts.append(f"mfu {100 * record['mfu']:.1f}%")
    if "segments" in record:
      parts.append(f"seg {record['segments']}")
    parts.append(f"eta {human_seconds(eta_seconds)}")
    self.print(" | ".join(parts))

  def evaluation(self, step: int, results: dict[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": step, **self._plain(results)}
    self._eval.write(json.dumps(record) + "\n")
    self._eval.flush()
    if self._tb is not None:
      tb = self._tensorboard()
      for k, v in results.items():
        tb.add_scalar(f"eval/{k}", v, step)
    plain = {k: v for k, v in results.items() if not k.startswith("memory/")}
    self.print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in plain.items()))
    traced: dict[str, dict[str, float]] = {}
    for key, value in results.items():
      if key.startswith("memory/"):
        name, at = key[len("memory/"):].split("@")
        traced.setdefault(name, {})[at] = value
    if traced:
      points = "/".join(next(iter(traced.values())))
      self.print(f"  memory at segment {points}: " + "; ".join(
          f"{name} " + "/".join(f"{v:.3g}" for v in by.values()) for name, by in traced.items()))

  def close(self) -> None:
    for f in (self._metrics, self._eval):
      if f is not None:
        f.close()
    if self._tb is not None:
      try:
        self._tensorboard().close()
      except OSError:
        pass   # its thread died: closing would wait for it forever
    self._metrics = self._eval = self._tb = None
