"""Checks that stop a run before anything is compiled or written, with one clear line.

Each names the key (or the --workdir) and the offending values: a missing data path or a
data file whose first record is not what the source expects, a tokenizer whose ids do not
fit the model's vocabulary, a sequence length too short for any sample of the data, a mesh
that does not match the devices, a batch the data-parallel devices cannot split, a
`train.init_from` checkpoint that is missing or does not fit the model, an unwritable work
directory, one that another run is using, one whose file system cannot hold a checkpoint.
"""

from __future__ import annotations

import os
import tempfile

from jax.sharding import Mesh

from lm2_jax import checkpoint, sharding
from lm2_jax.config import Config, ConfigError, check_batch_split, replace
from lm2_jax.data import kinds as data_kinds
from lm2_jax.data.errors import DataError
from lm2_jax.data.tokenizers import Tokenizer, check_vocab, load_tokenizer
from lm2_jax.lock import LockedError, RunLock

LOCK_FILE = ".lock"


def check_workdir(workdir: str) -> None:
  """The work directory exists (created if needed) and files can be written in it."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
      pass
  except OSError as e:
    raise ConfigError(f"--workdir {workdir}: cannot write there ({e.strerror or e})") from None


def check_init_from(cfg: Config) -> None:
  """`train.init_from` names a saved checkpoint whose parameter shapes fit the model."""
  path = cfg.train.init_from
  if not path:
    return
  try:
    workdir, step = checkpoint.resolve(path)
    mngr = checkpoint.make_manager(workdir, max_to_keep=None, async_save=False)
    try:
      step = mngr.latest_step() if step is None else step
      if step is None:
        raise checkpoint.CheckpointError(
            f"{checkpoint.checkpoint_dir(workdir)}: no checkpoint saved yet")
      saved = mngr.item_metadata(step)["params"]
    finally:
      mngr.close()
  except checkpoint.CheckpointError as e:
    raise ConfigError(f"train.init_from: {e}") from None
  checkpoint.check_compatible(workdir, cfg, saved, step)


WORKDIR_TOKENIZER = "tokenizer.json"


def resolve_tokenizer(cfg: Config, workdir: str) -> Config:
  """The work directory's tokenizer.json stands in for the default byte tokenizer.

  A Hugging Face import (docs/huggingface.md) leaves the model's tokenizer in the work
  directory and the default `data.tokenizer: byte` in its config; training those weights
  on bytes would be wrong. A tokenizer the config names explicitly is kept.
  """
  path = os.path.join(workdir, WORKDIR_TOKENIZER)
  if cfg.data.tokenizer == "byte" and os.path.exists(path):
    return replace(cfg, **{"data.tokenizer": path})
  return cfg


def check_data(cfg: Config) -> Tokenizer:
  """The tokenizer loads and fits model.vocab_size; the data sources exist. Returns it."""
  d = cfg.data
  try:
    tokenizer = load_tokenizer(d.tokenizer)
  except DataError as e:
    raise ConfigError(f"data.tokenizer: {e}") from None
  try:
    check_vocab(tokenizer, cfg.model.vocab_size)
  except ValueError as e:
    raise ConfigError(f"data.tokenizer={d.tokenizer} and model.vocab_size="
                      f"{cfg.model.vocab_size} do not fit: {e}") from None
  try:
    data_kinds.of(d).check(d)
  except DataError as e:
    raise ConfigError(str(e)) from None
  return tokenizer


def check_lengths(cfg: Config, tokenizer: Tokenizer, evaluates: bool) -> None:
  """The shortest training sequence (and every evaluation length) can hold a sample."""
  from lm2_jax.train.curriculum import Curriculum  # pylint: disable=g-import-not-at-top
  t, segment_len = cfg.train, cfg.model.segment_len
  kind = data_kinds.of(cfg.data)
  shortest = min(Curriculum(cfg).all_segments())
  if t.curriculum.max_segments:
    checks = [(shortest, "train.curriculum.min_segments", min(t.curriculum.min_segments,
                                                              t.curriculum.max_segments[0]))]
  else:
    checks = [(shortest, "train.seq_len", t.seq_len)]
  if evaluates and kind.has_answers:
    checks += [(n, f"train.eval_segments[{i}]", n) for i, n in enumerate(t.eval_segments)]
  for segments, key, value in checks:
    try:
      kind.check_fits(cfg, tokenizer, segments * segment_len)
    except DataError as e:
      raise ConfigError(f"{key}={value}: a sequence of {segments} x {segment_len} tokens "
                        f"(model.segment_len) is too short for the data ({e}); use more "
                        "segments") from None


def check_batch(cfg: Config, mesh: Mesh, evaluates: bool) -> None:
  """Every micro-batch (and evaluation batch) splits evenly over the data-parallel devices."""
  rows = {a: mesh.shape[a] for a in sharding.batch_row_axes()}
  check_batch_split(cfg.train, rows, evaluates)
  sharding.process_rows(mesh, cfg.train.batch_size)


def claim_workdir(cfg: Config, workdir: str, primary: bool) -> RunLock:
  """Lock the work directory for this run and check that a checkpoint fits there.

  Process 0 takes the lock (it belongs to the run, lm2_jax/lock.py) and checks the free
  space; with several processes the outcome is broadcast so that every process of a run
  that must not start refuses with the same line instead of waiting for the others.
  Returns the held lock (release it when the run ends).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lm2_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lm2_jax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  from lm2_jax.train.state import abstract_state  # pylint: disable=g-import-not-at-top

  lock = RunLock(os.path.join(workdir, LOCK_FILE), f"--workdir {workdir}")
  error = None
  if primary:
    try:
      lock.acquire()
      size = checkpoint.storage_bytes(abstract_state(cfg, make_optimizer(cfg.train)))
      checkpoint.check_free_space(workdir, size, cfg.train.keep)
    except (LockedError, checkpoint.CheckpointError) as e:
      lock.release()
      error = str(e)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
    if failed and error is None:
      error = (f"--workdir {workdir}: process 0 refused to start (its message says why: "
               "another run holds the work directory, or a checkpoint does not fit)")
  if error is not None:
    raise checkpoint.CheckpointError(error)
  return lock
