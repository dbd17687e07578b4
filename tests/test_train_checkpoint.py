"""Training checkpoints: state + optimizer + data position together; damaged ones skipped."""

import logging
import os
import shutil

import jax
import numpy as np
import pytest

from lm2_jax import checkpoint, sharding
from lm2_jax.config import load_config
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.sharding import with_shardings
from lm2_jax.train.inputs import TrainInput
from lm2_jax.train.optim import make_optimizer
from lm2_jax.train.state import abstract_state, create_state, state_shardings

SMALL = ["model.num_layers=1", "model.width=16", "model.mlp_width=32", "model.num_heads=2",
         "model.num_kv_heads=1", "model.segment_len=64", "model.memory.num_slots=2",
         "model.memory.num_heads=2", "train.seq_len=128", "train.batch_size=2",
         "data.kind=babilong", "mesh.data=1"]


def _setup(tmp_path, *over):
  cfg = load_config(None, SMALL + list(over))
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  tx = make_optimizer(cfg.train)
  shard = state_shardings(cfg, tx, mesh)
  return cfg, tx, shard


def _save_steps(tmp_path, cfg, tx, shard, steps):
  state = create_state(cfg, tx, shard)
  inputs = TrainInput(cfg, ByteTokenizer())
  mngr = checkpoint.make_manager(str(tmp_path), max_to_keep=5, async_save=True)
  for step in steps:
    while inputs.step < step:
      next(inputs)
    params = jax.tree.map(lambda p, s=step: p + s, state.params)
    checkpoint.save_train_state(mngr, step, params, state.opt_state, inputs, {"tokens": step})
  mngr.wait_until_finished()
  mngr.close()
  return state


def _restore(tmp_path, cfg, tx, shard):
  abstract = abstract_state(cfg, tx)
  inputs = TrainInput(cfg, ByteTokenizer())
  mngr = checkpoint.make_manager(str(tmp_path), max_to_keep=5)
  try:
    out = checkpoint.restore_train_state(
        mngr, str(tmp_path), with_shardings(abstract.params, shard.params),
        with_shardings(abstract.opt_state, shard.opt_state), inputs)
  finally:
    mngr.close()
  return out, inputs


def test_round_trip_restores_params_optimizer_and_data_position(tmp_path):
  cfg, tx, shard = _setup(tmp_path)
  state = _save_steps(tmp_path, cfg, tx, shard, [4, 8])
  (step, params, opt_state, meta, data_ok, _), inputs = _restore(tmp_path, cfg, tx, shard)
  assert step == 8 and meta["tokens"] == 8 and data_ok and inputs.step == 8
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a) + 8, np.asarray(b))
  assert jax.tree.structure(opt_state) == jax.tree.structure(state.opt_state)
  assert os.path.exists(tmp_path / "checkpoints" / "8" / "data" / "process_0-of-1.json")


def test_a_damaged_latest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
  cfg, tx, shard = _setup(tmp_path)
  _save_steps(tmp_path, cfg, tx, shard, [4, 8])
  shutil.rmtree(tmp_path / "checkpoints" / "8" / "params" / "d")
  with caplog.at_level(logging.WARNING):
    (step, *_), inputs = _restore(tmp_path, cfg, tx, shard)
  assert step == 4 and inputs.step == 4
  assert "checkpoints/8: cannot be restored" in caplog.text
  skipped = os.listdir(tmp_path / "checkpoints-skipped")
  assert len(skipped) == 1 and skipped[0].startswith("8.")   # kept, not deleted
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4"]


def test_an_unfinished_save_is_set_aside(tmp_path, caplog):
  os.makedirs(tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp" / "params")
  with caplog.at_level(logging.WARNING):
    moved = checkpoint.set_aside_incomplete(str(tmp_path))
  assert len(moved) == 1 and "incomplete checkpoint" in caplog.text
  assert os.listdir(tmp_path / "checkpoints") == []


def test_a_config_that_changes_shapes_is_refused_naming_the_keys(tmp_path):
  cfg, tx, shard = _setup(tmp_path)
  _save_steps(tmp_path, cfg, tx, shard, [4])
  checkpoint.write_config(str(tmp_path), cfg)
  other = load_config(None, SMALL + ["model.mlp_width=48", "model.memory.num_slots=3"])
  mngr = checkpoint.make_manager(str(tmp_path))
  saved = mngr.item_metadata(4)["params"]
  mngr.close()
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"model\.memory\.num_slots: checkpoint 2, config 3; "
                           r"model\.mlp_width: checkpoint 32, config 48"):
    checkpoint.check_compatible(str(tmp_path), other, saved, 4)
  checkpoint.check_compatible(str(tmp_path), load_config(
      None, SMALL + ["model.memory.forget_bias=2.0"]), saved, 4)   # same shapes: accepted


def test_config_history_is_kept(tmp_path):
  cfg = load_config(None, SMALL)
  checkpoint.write_config(str(tmp_path), cfg)
  checkpoint.write_config(str(tmp_path), cfg)
  assert os.listdir(tmp_path) == ["config.yaml"]
  checkpoint.write_config(str(tmp_path), load_config(None, SMALL + ["train.steps=7"]))
  names = sorted(os.listdir(tmp_path))
  assert len(names) == 2 and names[0].startswith("config.2") and names[1] == "config.yaml"
  assert load_config(str(tmp_path / "config.yaml")).train.steps == 7
