"""The training-time evaluation: answer accuracy per segment count and the memory's trace."""

import io

import jax
import numpy as np

from lm2_jax import sharding
from lm2_jax.config import load_config
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.train.evaluation import Evaluator, trace_points
from lm2_jax.train.inputs import eval_batches
from lm2_jax.train.metrics import MetricsLogger
from lm2_jax.train.optim import make_optimizer
from lm2_jax.train.state import create_state, state_shardings

SMALL = ["model.num_layers=2", "model.width=32", "model.mlp_width=64", "model.num_heads=2",
         "model.num_kv_heads=1", "model.segment_len=32", "model.memory.num_slots=4",
         "model.memory.num_heads=2", "model.memory.update=convex", "train.seq_len=256",
         "train.batch_size=4", "train.eval_samples=4", "train.eval_batch_size=4",
         "train.eval_segments=[3,5]", "data.kind=babilong", "data.tasks=[qa1]", "mesh.data=1"]


def _evaluate(*over):
  cfg = load_config(None, SMALL + list(over))
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  shardings = state_shardings(cfg, make_optimizer(cfg.train), mesh)
  state = create_state(cfg, make_optimizer(cfg.train), shardings)
  evaluator = Evaluator(cfg, mesh, shardings.params, eval_batches(cfg, ByteTokenizer()))
  return evaluator(state.params)


def test_the_memory_trace_is_logged_at_growing_segment_indices(tmp_path):
  assert trace_points(5) == [1, 4, 5] and trace_points(64) == [1, 4, 16, 64]
  plain = _evaluate()
  assert set(plain) == {f"answer_{m}_{n}seg" for m in ("loss", "accuracy") for n in (3, 5)}
  traced = _evaluate("train.eval_memory_trace=true")
  memory = {k: v for k, v in traced.items() if k.startswith("memory/")}
  assert set(memory) == {f"memory/{s}@{i}" for s in ("memory_rms", "kept", "slot_similarity",
                                                      "read_entropy") for i in (1, 4, 5)}
  assert {k: traced[k] for k in plain} == plain      # the trace changes nothing else
  assert all(0 < memory[f"memory/kept@{i}"] < 1 for i in (1, 4, 5))
  assert all(0 < memory[f"memory/read_entropy@{i}"] <= np.log(4) + 1e-5 for i in (1, 4, 5))
  # Kinds without an LM2 memory have nothing to trace: the flag is ignored.
  assert not any(k.startswith("memory/") for k in _evaluate("train.eval_memory_trace=true",
                                                            "model.memory.kind=none"))

  out = io.StringIO()
  logger = MetricsLogger(str(tmp_path), 10, tensorboard=False, stream=out)
  logger.evaluation(3, traced)
  lines = out.getvalue().splitlines()
  assert lines[0].startswith("eval at step 3: answer_loss_3seg") and "memory/" not in lines[0]
  assert lines[1].startswith("  memory at segment 1/4/5: ")
  assert all(f"{name} " in lines[1] for name in ("memory_rms", "kept", "read_entropy"))
  logger.close()
