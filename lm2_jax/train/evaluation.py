"""The periodic evaluation hook: validation loss, and BABILong answer accuracy.

The accuracy here is the teacher-forced one: the model reads the prompt and the true
answer, and a sample counts when the argmax prediction of every answer token (and of the
EOS after it) is right. It is cheap enough to run during training and is what the
training objective optimises; free generation scored with the published rule is the
evaluation package's job (lm2_jax/evaluation/).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from lm2_jax import sharding
from lm2_jax.config import Config
from lm2_jax.train.step import eval_step_cache


class Evaluator:
  """Evaluates parameters on a fixed held-out set (built once by inputs.eval_batches)."""

  def __init__(self, cfg: Config, mesh: Mesh, param_shardings: Any,
               batches: dict[int, list[dict[str, np.ndarray]]]):
    self.cfg, self.mesh = cfg, mesh
    self.babilong = cfg.data.kind == "babilong"
    self.batches = batches
    self.step = eval_step_cache(cfg, mesh, param_shardings)

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
      if self.babilong:
        results[f"answer_loss_{segments}seg"] = loss
        results[f"answer_accuracy_{segments}seg"] = float(
            totals["rows_correct"] / max(totals["rows"], 1.0))
      else:
        results["loss"] = loss
    return results
