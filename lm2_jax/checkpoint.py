"""Work directories and Orbax checkpoints: the one place that knows their layout.

    WORKDIR/config.yaml              the resolved configuration of the run
    WORKDIR/config.<time>.yaml       earlier configurations, when a rerun changed it
    WORKDIR/checkpoints/<step>/      one Orbax CheckpointManager step, with items
        params     the model parameters (unboxed pytree, float32)
        opt_state  optimizer state (training checkpoints only)
        data       the input iterators' states, one JSON file per host
                   (process_<i>-of-<n>.json, Grain's handler; training checkpoints only)
        meta       JSON: {"step": ..., ...}
    WORKDIR/checkpoints-skipped/     incomplete or unreadable checkpoints moved out of the
                                     way at start-up (kept, never deleted)
    WORKDIR/tokenizer.json           optional: the tokenizer the run uses

Training, evaluation and the Hugging Face converter all go through here, so each reads what
the others write. A step appears only once complete (Orbax renames its temporary folder); one
that cannot be read back is skipped for the one before it, and damage that still decodes is
caught by the per-array checksums in the step's metadata.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import yaml

from lm2_jax.config import Config, ConfigError, dump_config, load_config, to_dict
from lm2_jax.model import abstract_variables
from lm2_jax.sharding import with_shardings

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
SKIPPED_DIR = "checkpoints-skipped"
_TMP_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointError(ValueError):
  """A checkpoint or work directory that cannot be used; the message names the path."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


# Every item a checkpoint may hold, with the handler that reads and writes it.
ITEM_HANDLERS = {
    "params": ocp.StandardCheckpointHandler,
    "opt_state": ocp.StandardCheckpointHandler,
    "memory": ocp.StandardCheckpointHandler,   # train.memory_carry_steps > 0 only
    "data": grain.checkpoint.CheckpointHandler,
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
  return params if shardings is None else with_shardings(params, shardings)


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
      meta=ocp.args.JsonSave({"step": step, **(meta or {}),
                              "checksums": {"params": checksums(params)}})), force=True)
  mngr.wait_until_finished()
  mngr.close()


def load_params(path: str, cfg: Config | None = None, shardings: Any = None):
  """Restore the parameters of a work directory's latest (or a given step's) checkpoint.

  Returns (config, params, step). `cfg` defaults to the work directory's own config; a
  config whose parameter shapes differ from the checkpoint's is refused with the names of
  the differing parameters. Without `shardings` the arrays land on this process's first
  device, however many devices saved them.
  """
  workdir, step = resolve(path)
  cfg = cfg or load_workdir_config(workdir)
  mngr = make_manager(workdir, max_to_keep=None, async_save=False)
  try:
    if step is None:
      step = mngr.latest_step()
      if step is None:
        raise CheckpointError(f"{checkpoint_dir(workdir)}: no checkpoint saved yet")
    if shardings is None:  # onto this process's first device, whatever the saving mesh
      one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      shardings = jax.tree.map(lambda _: one, abstract_params(cfg))
    target = abstract_params(cfg, shardings)
    check_shapes(target, mngr.item_metadata(step)["params"], f"{workdir} step {step}")
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    saved = (restored["meta"] or {}).get("checksums") or {}
    verify_checksums(saved.get("params"), restored["params"], "parameters",
                     f"{checkpoint_dir(workdir)}/{step}")
  finally:
    mngr.close()
  return cfg, restored["params"], step


# --------------------------------------------------------------------------------------
# Checksums: every array's bits, summed on the devices where the array lives
# --------------------------------------------------------------------------------------


def _leaf_sums(x: jax.Array) -> jax.Array:
  """Two 32-bit sums of an array's bits: plain and position-weighted (catches swaps).

  Integer sums wrap modulo 2**32 and are exact in any order, so the value does not depend
  on the mesh or on how XLA splits the reduction: a checkpoint saved on 8 devices checks
  on 1. The position comes from iotas per dimension (no reshape, so no resharding).
  """
  if x.dtype == jnp.bool_:
    w = x.astype(jnp.uint32)
  else:
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    w = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
  index, stride = jnp.zeros(w.shape, jnp.uint32), 1
  for d in reversed(range(w.ndim)):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, w.shape, d) * jnp.uint32(stride)
    stride = stride * w.shape[d] % 2**32
  return jnp.stack([jnp.sum(w, dtype=jnp.uint32),
                    jnp.sum(w * (2 * index + 1), dtype=jnp.uint32)])


_tree_sums = jax.jit(lambda leaves: [_leaf_sums(x) for x in leaves])


def checksums(tree: Any) -> dict[str, str]:
  """{leaf path: 16 hex digits} of a pytree of (possibly sharded, multi-host) arrays.

  Every process must call it (it is one jitted computation over the global arrays).
  """
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  sums = _tree_sums([v for _, v in flat])
  # The sums are replicated: this process's copy is the global value.
  return {jax.tree_util.keystr(k): "%08x%08x" % tuple(int(u) for u in
                                                      np.asarray(s.addressable_data(0)))
          for (k, _), s in zip(flat, sums)}


def verify_checksums(saved: dict | None, tree: Any, item: str, where: str) -> None:
  """Raise CheckpointError naming the arrays whose bits differ from the saved checksums.

  Checkpoints written before checksums existed (no entry) are accepted as they are.
  """
  if not saved:
    return
  now = checksums(tree)
  bad = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
  if bad:
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    raise CheckpointError(f"{where}: {item} {shown} differ{'s' if len(bad) == 1 else ''} "
                          "from the checksum written at save time (damaged after saving)")


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


# --------------------------------------------------------------------------------------
# Training checkpoints: parameters, optimizer state and data position saved together
# --------------------------------------------------------------------------------------


def save_train_state(mngr: ocp.CheckpointManager, step: int, params, opt_state,
                     data_iterator, meta: dict | None = None, memory=None) -> None:
  """Start saving one training step (asynchronously when the manager is async).

  Every process calls this: arrays are written shard by shard, each host writes its own
  data iterator state, the JSON metadata (with the arrays' checksums) is written once.
  `memory`: the memory each row carries into the next step (train.memory_carry_steps).
  """
  sums = {"params": checksums(params), "opt_state": checksums(opt_state)}
  items = {"params": ocp.args.StandardSave(params),
           "opt_state": ocp.args.StandardSave(opt_state),
           "data": grain.checkpoint.CheckpointSave(data_iterator)}
  if memory is not None:
    sums["memory"] = checksums(memory)
    items["memory"] = ocp.args.StandardSave(memory)
  mngr.save(step, args=ocp.args.Composite(
      **items, meta=ocp.args.JsonSave({"step": step, **(meta or {}), "checksums": sums})),
      force=True)


def _flat_diff(old: Any, new: Any, prefix: str) -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for k in sorted(set(old) | set(new)):
      out += _flat_diff(old.get(k), new.get(k), f"{prefix}.{k}")
    return out
  return [] if old == new else [f"{prefix}: checkpoint {old!r}, config {new!r}"]


def check_compatible(workdir: str, cfg: Config, saved_params: Any, step: int) -> None:
  """Refuse a config whose parameter shapes differ from a saved step's.

  The message names the differing model keys (from the work directory's config.yaml),
  else the differing parameters.
  """
  try:
    check_shapes(abstract_params(cfg), saved_params, f"{workdir} step {step}")
  except CheckpointError as e:
    try:
      old = load_workdir_config(workdir)
    except CheckpointError:
      raise e from None
    keys = _flat_diff(to_dict(old.model), to_dict(cfg.model), "model")
    if not keys:
      raise
    raise CheckpointError(
        f"{checkpoint_dir(workdir)}/{step}: the config changes the model's shapes against "
        f"this checkpoint: {'; '.join(keys)}. Use another --workdir, or the checkpoint's "
        "values") from None


def skip_checkpoint(workdir: str, name: str, reason: str) -> str:
  """Move an unusable step directory to WORKDIR/checkpoints-skipped/ (kept, not deleted)."""
  src = os.path.join(checkpoint_dir(workdir), name)
  dst_dir = os.path.join(os.path.abspath(workdir), SKIPPED_DIR)
  os.makedirs(dst_dir, exist_ok=True)
  dst = os.path.join(dst_dir, f"{name}.{time.strftime('%Y%m%dT%H%M%S')}")
  shutil.move(src, dst)
  log.warning("%s: %s; skipped (moved to %s)", src, reason, dst)
  return dst


def set_aside_incomplete(workdir: str) -> list[str]:
  """Move the temporary directories of saves that never finished out of the way."""
  root = checkpoint_dir(workdir)
  if not os.path.isdir(root):
    return []
  return [skip_checkpoint(workdir, name, "incomplete checkpoint (the run stopped while "
                          "writing it)")
          for name in sorted(os.listdir(root)) if _TMP_SUFFIX in name]


def _skipped_finished_steps(workdir: str) -> list[str]:
  """Steps in checkpoints-skipped/ that had been complete (not interrupted saves)."""
  folder = os.path.join(os.path.abspath(workdir), SKIPPED_DIR)
  if not os.path.isdir(folder):
    return []
  return sorted(name for name in os.listdir(folder) if _TMP_SUFFIX not in name)


def _check_meta(meta: Any, step: int, where: str) -> dict:
  """The metadata's fields have the types training relies on (a hand edit, a bad disk)."""
  if not isinstance(meta, dict):
    raise CheckpointError(f"{where}/meta: expected a JSON object, got {meta!r:.60}")
  for key in ("step", "tokens"):
    value = meta.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise CheckpointError(f"{where}/meta: {key!r} is {value!r:.60}, expected a "
                            "non-negative integer; restore the file or move the step away")
  if meta.get("step", step) != step:
    raise CheckpointError(f"{where}/meta: 'step' is {meta['step']}, expected {step}")
  return meta


def _saved_shapes(mngr: ocp.CheckpointManager, step: int, item: str) -> Any:
  """The array shapes of an item as its metadata records them (None if unreadable)."""
  try:
    return {k: tuple(v.shape) for k, v in dict(mngr.item_metadata(step)[item]).items()}
  except Exception:  # pylint: disable=broad-except
    return None


def restore_train_state(mngr: ocp.CheckpointManager, workdir: str, target_params: Any,
                        target_opt_state: Any, data_iterator, *, primary: bool = True,
                        start_over: bool = True, target_memory: Any = None):
  """Restore the newest readable training step; returns (step, params, opt_state, meta,
  data_restored, memory) or None when there is no checkpoint. opt_state is None for a
  parameters-only step; memory is the carried memory when `target_memory` asks for it and
  the step holds one (saved by a run with train.memory_carry_steps > 0), else None.

  Targets are abstract arrays carrying the shardings to restore onto (any mesh). A step
  that fails to restore, or whose arrays differ from the checksums saved with it, is moved
  aside with a warning and the one before it is tried. When checkpoints existed but none
  restores, `start_over=False` refuses (CheckpointError) rather than let a resume silently
  become a new run. The data iterator is restored from this host's file; when that is
  impossible (the checkpoint was written by another number of hosts) `data_restored` is
  False and the iterator is left as it was.
  """
  failed = []
  for step in sorted(mngr.all_steps(), reverse=True):
    # A parameters-only step (save_params: a Hugging Face import, say) starts training
    # from its weights with a fresh optimizer: opt_state comes back as None.
    items = {"params": ocp.args.StandardRestore(target_params), "meta": ocp.args.JsonRestore()}
    has_opt = os.path.isdir(os.path.join(checkpoint_dir(workdir), str(step), "opt_state"))
    if has_opt:
      items["opt_state"] = ocp.args.StandardRestore(target_opt_state)
    has_memory = target_memory is not None and os.path.isdir(
        os.path.join(checkpoint_dir(workdir), str(step), "memory"))
    wanted = jax.tree.map(lambda a: tuple(a.shape), target_memory)
    if has_memory and _saved_shapes(mngr, step, "memory") != wanted:
      # Another batch or memory shape: the rows restart from the initial memory.
      log.warning("%s/%d: the carried memory has shapes %s, this run's are %s; every row "
                  "restarts from the initial memory", checkpoint_dir(workdir), step,
                  _saved_shapes(mngr, step, "memory"), wanted)
      has_memory = False
    if has_memory:
      items["memory"] = ocp.args.StandardRestore(target_memory)
    where = f"{checkpoint_dir(workdir)}/{step}"
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(**items))
      saved = (restored["meta"] or {}).get("checksums") if isinstance(restored["meta"],
                                                                       dict) else None
      saved = saved if isinstance(saved, dict) else {}
      verify_checksums(saved.get("params"), restored["params"], "parameters", where)
      if has_opt:
        verify_checksums(saved.get("opt_state"), restored["opt_state"], "optimizer state",
                         where)
      if has_memory:
        verify_checksums(saved.get("memory"), restored["memory"], "carried memory", where)
    except Exception as e:  # orbax/tensorstore raise many kinds for damaged files
      failed.append(step)
      first = (str(e).splitlines() or [""])[0].split(" See full TensorStore")[0][:200]
      reason = (str(e)[len(where) + 2:] if isinstance(e, CheckpointError) else
                f"cannot be restored ({type(e).__name__}: {first})")
      if primary:
        skip_checkpoint(workdir, str(step), reason)
      mngr.reload()
      continue
    meta = _check_meta(restored["meta"] or {}, step, where)
    data_restored = False
    if has_opt:
      try:
        mngr.restore(step, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(data_iterator)))
        data_restored = True
      except Exception as e:  # a missing per-host file, or another host count
        log.warning("%s/%d: the data position cannot be restored (%s); the input streams "
                    "restart", checkpoint_dir(workdir), step, e)
    return (step, restored["params"], restored.get("opt_state") if has_opt else None,
            meta, data_restored, restored.get("memory") if has_memory else None)
  earlier = _skipped_finished_steps(workdir)
  if not start_over and (failed or earlier):
    what = (f"none of its checkpoints ({', '.join(map(str, failed))}) can be restored "
            f"(moved to {SKIPPED_DIR}/)" if failed else
            f"its checkpoints were set aside as unreadable ({SKIPPED_DIR}/: "
            f"{', '.join(earlier[:4])}{' ...' if len(earlier) > 4 else ''})")
    raise CheckpointError(
        f"{os.path.abspath(workdir)}: {what}; refusing to start over from step 0: move a good "
        f"step back into {CHECKPOINT_DIR}/, use another --workdir, or pass --start-over")
  return None


def write_config(workdir: str, cfg: Config) -> str:
  """Write WORKDIR/config.yaml; a different earlier one is kept as config.<time>.yaml."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = yaml.safe_load(f)
    if old == to_dict(cfg):
      return path
    os.replace(path, os.path.join(workdir, f"config.{time.strftime('%Y%m%dT%H%M%S')}.yaml"))
  dump_config(cfg, path)
  return path


# --------------------------------------------------------------------------------------
# Storage failures: one line instead of Orbax's background tracebacks
# --------------------------------------------------------------------------------------


def _megabytes(n: int) -> str:
  return f"{n / 2**20:,.1f} MB"


def free_space(path: str) -> int:
  """Bytes free for this user on the file system of `path` (or of its nearest parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return shutil.disk_usage(path).free


def _cause(error: BaseException) -> str:
  """The most specific line of an error chain (tensorstore wraps the OS error in text)."""
  text = ""
  while error is not None:
    line = str(error).splitlines()[0] if str(error) else type(error).__name__
    text = line if not text or "os_error_code" in line or isinstance(error, OSError) else text
    error = error.__cause__ or error.__context__
  for marker in ("No space left on device", "Disk quota exceeded", "Read-only file system",
                 "Permission denied", "Input/output error"):
    if marker in text:
      return marker
  return text[:200]


def save_failed(workdir: str, step: int, error: BaseException,
                last_good: int | None) -> str:
  """The one line that reports a failed save; its unfinished directory is removed.

  The temporary directory never became a checkpoint, and deleting it gives the space back
  to the user who must now free more; the last good checkpoint is not touched.
  """
  root = checkpoint_dir(workdir)
  for name in os.listdir(root) if os.path.isdir(root) else []:
    if name.startswith(f"{step}{_TMP_SUFFIX}"):
      shutil.rmtree(os.path.join(root, name), ignore_errors=True)
  good = (f"the last good checkpoint is {root}/{last_good}" if last_good is not None
          else "no checkpoint was saved")
  return (f"saving step {step} to {root} failed ({_cause(error)}; "
          f"{_megabytes(free_space(root))} free there); training stopped, {good}")


def storage_bytes(tree: Any) -> int:
  """Bytes the arrays of a (possibly abstract) pytree take on disk, uncompressed."""
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def check_free_space(workdir: str, checkpoint_bytes: int, keep: int | None) -> None:
  """Refuse to start when not even one checkpoint fits; warn when `keep` of them do not.

  A save writes a complete new step before an old one is deleted, so the first save needs
  a checkpoint's size free and a run keeping K steps needs up to K + 1.
  """
  free = free_space(workdir)
  need = int(checkpoint_bytes * 1.05) + 2**20   # metadata, data positions, file system slack
  if free < need:
    raise CheckpointError(f"--workdir {os.path.abspath(workdir)}: {_megabytes(free)} free on "
                          f"its file system, a checkpoint needs about {_megabytes(need)}; "
                          "free some space or choose another --workdir")
  existing = len([n for n in os.listdir(checkpoint_dir(workdir)) if n.isdigit()]) if (
      os.path.isdir(checkpoint_dir(workdir))) else 0
  if keep and free < need * max(keep + 1 - existing, 1):
    log.warning("%s: %s free, about %s per checkpoint; keeping %d of them may run out of "
                "space", workdir, _megabytes(free), _megabytes(need), keep)


class _DropOrbaxErrors(logging.Filter):
  """Orbax logs each failed background write with a traceback from several threads; the
  exception reaches the caller too, which reports it in one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and
                f"{os.sep}orbax{os.sep}" in (record.pathname or ""))


@contextlib.contextmanager
def quiet_orbax_errors():
  """Within: Orbax's own error logs are dropped (failures still raise to the caller)."""
  drop = _DropOrbaxErrors()
  loggers = [logging.getLogger("absl"), logging.getLogger()]
  for logger in loggers:
    logger.addFilter(drop)
  try:
    yield
  finally:
    for logger in loggers:
      logger.removeFilter(drop)
