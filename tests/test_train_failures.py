"""Faults a run must survive with nothing lost: a second run on the same work directory, a
full disk, damaged checkpoints (checksums), checkpoints that all fail to restore, killed
conversions. docs/training.md, "Failure modes", describes each."""

import glob
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lm2_jax import checkpoint, sharding
from lm2_jax.config import dump_config, load_config
from lm2_jax.convert.hf_io import remove_stale_partials
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.sharding import with_shardings
from lm2_jax.train.inputs import TrainInput
from lm2_jax.train.optim import make_optimizer
from lm2_jax.train.state import abstract_state, create_state, state_shardings
from test_lock import hold_in_another_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train  # noqa: E402  pylint: disable=wrong-import-position

SMALL = ["model.num_layers=1", "model.width=16", "model.mlp_width=32", "model.num_heads=2",
         "model.num_kv_heads=1", "model.segment_len=16", "model.memory.num_slots=2",
         "model.memory.num_heads=2", "train.seq_len=32", "train.batch_size=8",
         "data.kind=babilong", "train.eval_samples=0", "train.log_every=1", "mesh.data=8"]


def _config_file(tmp_path, *over):
  """A tiny config on a toy text stream (BABILong samples do not fit 32 tokens)."""
  data = tmp_path / "toy.jsonl"
  data.write_text("".join(json.dumps({"text": f"the cat sat on mat number {i}. " * 3}) + "\n"
                          for i in range(32)))
  cfg = load_config(None, SMALL + ["data.kind=text", f"data.paths=[{data}]"] + list(over))
  path = str(tmp_path / "c.yaml")
  dump_config(cfg, path)
  return cfg, path


def _workdir_with_steps(workdir, cfg, steps):
  """A work directory holding training checkpoints of `steps`, as a run would leave it."""
  mesh = sharding.make_mesh(cfg.mesh, None)
  tx = make_optimizer(cfg.train)
  shard = state_shardings(cfg, tx, mesh)
  state = create_state(cfg, tx, shard)
  inputs = TrainInput(cfg, ByteTokenizer())
  mngr = checkpoint.make_manager(str(workdir), max_to_keep=5)
  for step in steps:
    checkpoint.save_train_state(mngr, step, state.params, state.opt_state, inputs,
                                {"tokens": step})
  mngr.wait_until_finished()
  mngr.close()
  checkpoint.write_config(str(workdir), cfg)
  return tx, shard


def _restore(workdir, cfg, tx, shard, start_over=True):
  abstract = abstract_state(cfg, tx)
  mngr = checkpoint.make_manager(str(workdir))
  try:
    return checkpoint.restore_train_state(
        mngr, str(workdir), with_shardings(abstract.params, shard.params),
        with_shardings(abstract.opt_state, shard.opt_state), TrainInput(cfg, ByteTokenizer()),
        start_over=start_over)
  finally:
    mngr.close()


def _params_data_files(workdir, step):
  """Every data file of a step's parameters: they span several files in two folders (per
  process and merged), so damaging only the largest may miss what a restore reads."""
  files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "params", "**", "d", "*"),
                    recursive=True)
  return [f for f in files if os.path.getsize(f) >= 64]


def _one_line(capsys):
  err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


# --- one run per work directory ------------------------------------------------------------
def test_a_second_run_on_a_busy_work_directory_is_refused(tmp_path, capsys):
  _, config = _config_file(tmp_path)
  workdir = tmp_path / "w"
  workdir.mkdir()
  holder = hold_in_another_process(workdir / ".lock")
  try:
    code = train.main(["--config", config, "--workdir", str(workdir), "train.steps=2"])
  finally:
    holder.kill()
    holder.wait()
  assert code == 2
  assert f"is in use by process {holder.pid}" in _one_line(capsys)
  assert sorted(os.listdir(workdir)) == [".lock"]   # nothing of the second run written


def test_a_second_evaluation_on_one_output_is_refused(tmp_path, capsys):
  from eval import main  # pylint: disable=g-import-not-at-top
  cfg = load_config(None, SMALL)
  params = jax.tree.map(jnp.zeros_like, checkpoint.abstract_params(cfg))
  checkpoint.save_params(str(tmp_path / "m"), cfg, params, step=1)
  os.makedirs(tmp_path / "out")
  holder = hold_in_another_process(tmp_path / "out" / "r.lock")
  try:
    code = main(["--checkpoint", str(tmp_path / "m"), "--task", "babilong", "--tasks", "qa1",
                 "--lengths", "0k", "--num-samples", "1", "--output",
                 str(tmp_path / "out" / "r.json"), "--no-progress"])
  finally:
    holder.kill()
    holder.wait()
  assert code == 2 and f"--output {tmp_path}/out/r.json is in use by process {holder.pid}" in (
      _one_line(capsys))
  assert sorted(os.listdir(tmp_path / "out")) == ["r.lock"]


# --- checksums -----------------------------------------------------------------------------
def test_checksums_do_not_depend_on_the_mesh_and_see_one_flipped_bit():
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("a", "b"))
  x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
  tree = {"w": x, "b": np.arange(5, dtype=np.int32), "h": x[0].astype(jnp.bfloat16)}
  sharded = dict(tree, w=jax.device_put(x, NamedSharding(mesh, P("a", "b"))))
  assert checkpoint.checksums(tree) == checkpoint.checksums(sharded)
  flipped = x.copy()
  flipped.view(np.uint32)[3, 2] ^= 1 << 7
  assert checkpoint.checksums(dict(tree, w=flipped))["['w']"] != checkpoint.checksums(tree)["['w']"]
  swapped = x.copy()
  swapped[[0, 1]] = swapped[[1, 0]]                 # same values, other places
  assert checkpoint.checksums(dict(tree, w=swapped))["['w']"] != checkpoint.checksums(tree)["['w']"]


def test_flipped_bytes_in_a_saved_parameter_are_caught_and_the_step_before_used(tmp_path,
                                                                                caplog):
  cfg = load_config(None, SMALL)
  tx, shard = _workdir_with_steps(tmp_path, cfg, [2, 4])
  for path in _params_data_files(tmp_path, 4):
    data = bytearray(open(path, "rb").read())
    for i in range(4):
      data[len(data) // 2 + i] ^= 0xFF
    with open(path, "wb") as f:
      f.write(data)
  with caplog.at_level(logging.WARNING):
    step, *_ = _restore(tmp_path, cfg, tx, shard)
  assert step == 2
  assert ("checkpoints/4" in caplog.text and ("from the checksum written at save time" in
                                              caplog.text or "cannot be restored" in caplog.text))
  assert [n.split(".")[0] for n in os.listdir(tmp_path / "checkpoints-skipped")] == ["4"]


def test_eval_refuses_parameters_that_differ_from_their_checksum(tmp_path):
  cfg = load_config(None, SMALL)
  params = jax.tree.map(jnp.ones_like, checkpoint.abstract_params(cfg))
  checkpoint.save_params(str(tmp_path), cfg, params, step=1)
  mngr = checkpoint.make_manager(str(tmp_path), async_save=False)   # rewrite with other values
  meta = mngr.restore(1, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  mngr.close()
  shutil.rmtree(tmp_path / "checkpoints" / "1")
  mngr = checkpoint.make_manager(str(tmp_path), async_save=False)
  mngr.save(1, args=ocp.args.Composite(
      params=ocp.args.StandardSave(jax.tree.map(lambda p: p * 2, params)),
      meta=ocp.args.JsonSave(meta)))
  mngr.close()
  with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/1: parameters .* differ"):
    checkpoint.load_params(str(tmp_path))


# --- never silently start over -------------------------------------------------------------
def test_checkpoints_that_all_fail_are_refused_not_replaced_by_a_new_run(tmp_path, capsys):
  cfg, config = _config_file(tmp_path)
  workdir = tmp_path / "w"
  tx, shard = _workdir_with_steps(workdir, cfg, [2, 4])
  for step in (2, 4):
    for path in _params_data_files(workdir, step):
      size = os.path.getsize(path)
      with open(path, "wb") as f:
        f.write(b"\0" * size)
  with pytest.raises(checkpoint.CheckpointError, match="refusing to start over from step 0"):
    _restore(workdir, cfg, tx, shard, start_over=False)
  assert sorted(os.listdir(workdir / "checkpoints")) == []   # set aside, never deleted
  assert len(os.listdir(workdir / "checkpoints-skipped")) == 2
  # The next attempt remembers: still refused, through train.py, in one line and before
  # anything is compiled.
  code = train.main(["--config", config, "--workdir", str(workdir), "train.steps=6"])
  line = _one_line(capsys)
  assert code == 2 and "set aside as unreadable" in line and "--start-over" in line, line
  assert _restore(workdir, cfg, tx, shard, start_over=True) is None   # the explicit way
  assert not os.path.exists(workdir / "metrics.jsonl")


def test_metadata_of_the_wrong_type_stops_the_resume_in_one_line(tmp_path):
  cfg = load_config(None, SMALL)
  tx, shard = _workdir_with_steps(tmp_path, cfg, [2])
  meta = glob.glob(str(tmp_path / "checkpoints" / "2" / "meta" / "*"))
  path = [m for m in meta if os.path.isfile(m) and "metadata" in os.path.basename(m)]
  assert path, meta
  text = open(path[0], encoding="utf-8").read().replace('"tokens": 2', '"tokens": "abc"')
  open(path[0], "w", encoding="utf-8").write(text)
  with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/2/meta: 'tokens' is 'abc'"):
    _restore(tmp_path, cfg, tx, shard)
  assert os.path.isdir(tmp_path / "checkpoints" / "2")   # not thrown away


# --- a full disk ---------------------------------------------------------------------------
def _fail_save_at(monkeypatch, workdir, fail_step):
  """Make the save of `fail_step` fail in the background as Orbax does on ENOSPC: its
  temporary folder stays and waiting for it raises."""
  real_save, real_wait = ocp.CheckpointManager.save, ocp.CheckpointManager.wait_until_finished
  failed = []

  def save(self, step, *args, **kwargs):
    if step != fail_step:
      return real_save(self, step, *args, **kwargs)
    os.makedirs(os.path.join(workdir, "checkpoints", f"{step}.orbax-checkpoint-tmp", "params"))
    failed.append(step)
    return True

  def wait(self):
    real_wait(self)
    if failed:
      raise ValueError("RESOURCE_EXHAUSTED: Error writing ... Failed to write 2004284 bytes "
                       "to file 9: No space left on device [os_error_code='28']")

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait)


@pytest.mark.slow
def test_a_failed_background_save_stops_the_run_at_the_next_step(tmp_path, capsys,
                                                                 monkeypatch):
  _, config = _config_file(tmp_path)
  workdir = str(tmp_path / "w")
  _fail_save_at(monkeypatch, workdir, 4)
  code = train.main(["--config", config, "--workdir", workdir, "train.steps=8",
                     "train.checkpoint_every=2"])
  out = capsys.readouterr()
  err = [line for line in out.err.splitlines() if line.strip()]
  assert code == 1 and len(err) == 1, out.err
  assert (f"error: saving step 4 to {workdir}/checkpoints failed (No space left on device; "
          in err[0] and " MB free there); training stopped, the last good checkpoint is "
          f"{workdir}/checkpoints/2" in err[0]), err[0]
  assert "step 6/8" not in out.out        # stopped at step 5, not at the next save
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]   # tmp removed, 2 kept
  monkeypatch.undo()
  cfg = load_config(config)
  tx = make_optimizer(cfg.train)
  shard = state_shardings(cfg, tx, sharding.make_mesh(cfg.mesh, None))
  assert _restore(workdir, cfg, tx, shard)[0] == 2


def test_too_little_space_for_one_checkpoint_is_refused_before_training(tmp_path, capsys,
                                                                        monkeypatch):
  _, config = _config_file(tmp_path)
  monkeypatch.setattr(checkpoint, "free_space", lambda path: 100_000)
  code = train.main(["--config", config, "--workdir", str(tmp_path / "w"), "train.steps=2"])
  line = _one_line(capsys)
  assert code == 2 and "0.1 MB free on its file system, a checkpoint needs about" in line
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


# --- killed conversions ---------------------------------------------------------------------
def test_folders_of_killed_conversions_are_removed_and_running_ones_kept(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  out = str(tmp_path / "imported")
  os.makedirs(f"{out}.partial-{dead.pid}")
  os.makedirs(f"{out}.partial-{os.getppid()}")          # a live process's folder
  removed = remove_stale_partials(out)
  assert removed == [f"{out}.partial-{dead.pid}"]
  assert os.listdir(tmp_path) == [f"imported.partial-{os.getppid()}"]
