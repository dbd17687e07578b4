"""The periodic evaluation hook: validation loss, and BABILong answer accuracy.

The accuracy here is the teacher-forced one: the model reads the prompt and the true
answer, and a sample counts when the argmax prediction of every answer token (and of the
EOS after it) is right. It is cheap enough to run during training and is what the
training objective optimises; free generation scored with the published rule is the
evaluation package's job (lm2_jax/evaluation/). With `train.eval_memory_trace`, the memory's
statistics at segment indices 1, 4, 16, ... of the longest held-out batch are logged too, as
`memory/<stat>@<segment>`: they show a memory that forgets, runs away or blurs its slots
while training is still under way.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from lm2_jax import sharding
from lm2_jax.config import Config
from lm2_jax.data import kinds as data_kinds
from lm2_jax.model import build_model
from lm2_jax.model.trace import make_memory_trace
from lm2_jax.train.step import eval_step_cache


def trace_points(segments: int) -> list[int]:
  """Segment indices (1-based) where the trace is logged: 1, 4, 16, ... and the last."""
  points = [s for s in (4**i for i in range(32)) if s < segments]
  return points + [segments]


class Evaluator:
  """Evaluates parameters on a fixed held-out set (built once by inputs.eval_batches)."""

  def __init__(self, cfg: Config, mesh: Mesh, param_shardings: Any,
               batches: dict[int, list[dict[str, np.ndarray]]]):
    self.cfg, self.mesh = cfg, mesh
    self.answers = data_kinds.of(cfg.data).has_answers
    self.batches = batches
    self.step = eval_step_cache(cfg, mesh, param_shardings)
    self.trace = None
    if cfg.train.eval_memory_trace and batches and cfg.model.num_memory_layers:
      self.trace = make_memory_trace(build_model(cfg.model))

  def __bool__(self) -> bool:
    return bool(self.batches)

  def __call__(self, params) -> dict[str, float]:
    results = {}
    rows = self.cfg.train.eval_batch_size
    for segments, batches in sorted(self.batches.items()):
      totals = None
      for local in batches:
        out = self.step(params, sharding.global_batch(self.mesh, local, rows))
        totals = out if totals is None else jax.tree.map(lambda a, b: a + b, totals, out)
      totals = jax.device_get(totals)
      loss = float(totals["ce"] / max(totals["weight"], 1.0))
      if self.answers:
        results[f"answer_loss_{segments}seg"] = loss
        results[f"answer_accuracy_{segments}seg"] = float(
            totals["rows_correct"] / max(totals["rows"], 1.0))
      else:
        results["loss"] = loss
    if self.trace is not None:
      results.update(self._memory_stats(params, rows))
    return results

  def _memory_stats(self, params, rows: int) -> dict[str, float]:
    longest = max(self.batches)
    batch = sharding.global_batch(self.mesh, self.batches[longest][0], rows)
    stats = self.trace({"params": params}, batch["tokens"][:, :-1])
    return {f"memory/{name}@{s}": float(values[s - 1]) for name, values in stats.items()
            for s in trace_points(len(values))}
