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


def test_parameters_saved_on_8_devices_load_in_a_1_device_process(tmp_path):
  """eval.py and the probes read checkpoints that a mesh wrote, on a machine with fewer
  devices: the saving topology must not matter."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  cfg = load_config(None)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  params = jax.device_put(_params(cfg), replicated)
  checkpoint.save_params(str(tmp_path), cfg, params, step=3)
  code = ("import jax, numpy as np; from lm2_jax import checkpoint; "
          f"_, p, step = checkpoint.load_params({str(tmp_path)!r}); "
          "print(len(jax.devices()), step, float(sum(np.abs(x).sum() "
          "for x in jax.tree.leaves(p))))")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=root)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  devices, step, total = out.stdout.split()
  assert devices == "1" and step == "3"
  expect = float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree.leaves(params)))
  np.testing.assert_allclose(float(total), expect, rtol=1e-6)
