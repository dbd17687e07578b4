"""Parameter checkpoints: round trip, work directory or step directory, mismatch refused."""

import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from lm2_jax import checkpoint
from lm2_jax.config import load_config
from lm2_jax.model import build_model


def _params(cfg):
  tokens = jax.numpy.zeros((1, cfg.model.segment_len), jax.numpy.int32)
  return nn.unbox(build_model(cfg.model).init(jax.random.key(0), tokens)["params"])


def test_round_trip_and_step_directory(tmp_path):
  cfg = load_config(None)
  params = _params(cfg)
  checkpoint.save_params(str(tmp_path), cfg, params, step=7)
  for path in (tmp_path, tmp_path / "checkpoints" / "7"):
    cfg2, restored, step = checkpoint.load_params(str(path))
    assert step == 7 and cfg2 == cfg
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(restored)):
      np.testing.assert_array_equal(a, b)


def test_mismatched_config_names_the_parameter(tmp_path):
  cfg = load_config(None)
  checkpoint.save_params(str(tmp_path), cfg, _params(cfg))
  other = load_config(None, ["model.mlp_width=128"])
  with pytest.raises(checkpoint.CheckpointError, match=r"mlp.*\(2, 64, 256\)"):
    checkpoint.load_params(str(tmp_path), other)


def test_missing_paths_are_named(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match="no such"):
    checkpoint.load_params(str(tmp_path / "nope"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(checkpoint.CheckpointError, match="expected a work directory"):
    checkpoint.load_params(str(tmp_path / "empty"))
