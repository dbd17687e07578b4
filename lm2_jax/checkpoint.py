"""Work directories and Orbax checkpoints: the one place that knows their layout.

    WORKDIR/config.yaml              the resolved configuration of the run
    WORKDIR/checkpoints/<step>/      one Orbax CheckpointManager step, with items
        params     the model parameters (unboxed pytree, float32)
        opt_state  optimizer state (training checkpoints only)
        data       the input iterator's state as JSON (training checkpoints only)
        meta       JSON: {"step": ..., ...}
    WORKDIR/tokenizer.json           optional: the tokenizer the run uses

Training (`lm2_jax.train`), evaluation and the Hugging Face converter all go through the
functions here, so a checkpoint written by any of them is read by the others.
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import orbax.checkpoint as ocp

from lm2_jax.config import Config, ConfigError, dump_config, load_config
from lm2_jax.model import abstract_variables

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(ValueError):
  """A checkpoint or work directory that cannot be used; the message names the path."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


# Every item a checkpoint may hold, with the handler that reads and writes it.
ITEM_HANDLERS = {
    "params": ocp.StandardCheckpointHandler,
    "opt_state": ocp.StandardCheckpointHandler,
    "data": ocp.JsonCheckpointHandler,
    "meta": ocp.JsonCheckpointHandler,
}


def make_manager(workdir: str, max_to_keep: int | None = 3, keep_period: int | None = None,
                 async_save: bool = True) -> ocp.CheckpointManager:
  """The CheckpointManager of a work directory (created if missing)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, keep_period=keep_period,
                                         create=True, enable_async_checkpointing=async_save)
  handlers = {name: handler() for name, handler in ITEM_HANDLERS.items()}
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_handlers=handlers)


def abstract_params(cfg: Config, shardings: Any = None):
  """ShapeDtypeStructs of the parameters (with target shardings, when given)."""
  params = nn.unbox(abstract_variables(cfg.model)["params"])
  if shardings is None:
    return params
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      params, shardings)


def resolve(path: str) -> tuple[str, int | None]:
  """A work directory or one step's directory -> (workdir, step or None for the latest)."""
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such checkpoint or work directory")
  if os.path.exists(os.path.join(path, CONFIG_FILE)):
    return path, None
  parent = os.path.dirname(path)
  if os.path.basename(parent) == CHECKPOINT_DIR and os.path.basename(path).isdigit():
    return os.path.dirname(parent), int(os.path.basename(path))
  raise CheckpointError(f"{path}: expected a work directory (with {CONFIG_FILE}) or a "
                        f"step directory <workdir>/{CHECKPOINT_DIR}/<step>")


def load_workdir_config(workdir: str, overrides=()) -> Config:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{workdir}: no {CONFIG_FILE} in the work directory")
  try:
    return load_config(path, overrides)
  except ConfigError as e:
    raise CheckpointError(f"{path}: {e}") from None


def save_params(workdir: str, cfg: Config, params, step: int = 0, meta: dict | None = None):
  """Write a parameters-only checkpoint (and the config) that training can start from."""
  os.makedirs(workdir, exist_ok=True)
  dump_config(cfg, os.path.join(workdir, CONFIG_FILE))
  mngr = make_manager(workdir, max_to_keep=None, async_save=False)
  mngr.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      meta=ocp.args.JsonSave({"step": step, **(meta or {})})), force=True)
  mngr.wait_until_finished()
  mngr.close()


def load_params(path: str, cfg: Config | None = None, shardings: Any = None):
  """Restore the parameters of a work directory's latest (or a given step's) checkpoint.

  Returns (config, params, step). `cfg` defaults to the work directory's own config; a
  config whose parameter shapes differ from the checkpoint's is refused with the names of
  the differing parameters.
  """
  workdir, step = resolve(path)
  cfg = cfg or load_workdir_config(workdir)
  mngr = make_manager(workdir, max_to_keep=None, async_save=False)
  try:
    if step is None:
      step = mngr.latest_step()
      if step is None:
        raise CheckpointError(f"{checkpoint_dir(workdir)}: no checkpoint saved yet")
    target = abstract_params(cfg, shardings)
    check_shapes(target, mngr.item_metadata(step)["params"], f"{workdir} step {step}")
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target)))
  finally:
    mngr.close()
  return cfg, restored["params"], step


def check_shapes(target, saved, where: str):
  """Raise CheckpointError naming every parameter whose saved shape differs from target."""
  flat_t = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(target)[0]}
  flat_s = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(saved)[0]}
  problems = []
  for key in sorted(set(flat_t) | set(flat_s)):
    if key not in flat_s:
      problems.append(f"{key} missing from the checkpoint")
    elif key not in flat_t:
      problems.append(f"{key} in the checkpoint but not in the model")
    elif tuple(flat_t[key].shape) != tuple(flat_s[key].shape):
      problems.append(f"{key}: checkpoint {tuple(flat_s[key].shape)}, "
                      f"config {tuple(flat_t[key].shape)}")
  if problems:
    shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6
                                       else "")
    raise CheckpointError(f"{where}: the checkpoint does not match the config: {shown}")
