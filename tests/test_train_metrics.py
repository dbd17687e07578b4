"""The MFU's peak on the CPU: timed in the process's CPU time, so that a shared machine does
not shrink it (a wall-clock probe that loses its cores to other jobs once read 11 GFLOP/s on
a host that does about 280, and training logged an MFU of 130-220%)."""

import types

import jax
import pytest

from lm2_jax.train import metrics


def _clocks(wall_step: float, cpu_step: float):
  """Clocks that advance by fixed amounts per reading: a trial then lasts one step."""
  state = {"wall": 0.0, "cpu": 0.0}

  def tick(key, step):
    state[key] += step
    return state[key]

  return types.SimpleNamespace(perf_counter=lambda: tick("wall", wall_step),
                               process_time=lambda: tick("cpu", cpu_step))


def test_the_cpu_peak_counts_the_seconds_its_threads_ran_on_every_usable_core(monkeypatch):
  # Each trial takes 10 s of wall time but the process ran for only 1 s of CPU time (other
  # jobs had the cores for the rest).
  monkeypatch.setattr(metrics, "time", _clocks(wall_step=10.0, cpu_step=1.0))
  monkeypatch.setattr(metrics, "_usable_cores", lambda: 2)
  flops = 2 * 64**3
  assert metrics.measure_matmul_flops(size=64, repeats=1, trials=2) == flops / 10.0
  assert metrics.measure_matmul_flops(size=64, repeats=1, trials=2,
                                      cpu_time=True) == flops * 2 / 1.0


def test_training_on_the_cpu_takes_its_peak_from_cpu_time(monkeypatch):
  if jax.local_devices()[0].platform != "cpu":
    pytest.skip("the measured peak is the CPU's; accelerators use their datasheet's")
  monkeypatch.setattr(metrics, "time", _clocks(wall_step=10.0, cpu_step=1.0))
  monkeypatch.setattr(metrics, "_usable_cores", lambda: 2)
  metrics.measured_cpu_flops.cache_clear()
  try:
    peak, note = metrics.peak_flops_per_device(0.0)
    host = metrics.measure_matmul_flops(cpu_time=True)
  finally:
    metrics.measured_cpu_flops.cache_clear()
  assert peak == host / jax.local_device_count()
  assert "CPU time" in note
  # A configured peak wins over any measurement.
  assert metrics.peak_flops_per_device(5e11) == (5e11, "train.peak_flops")
