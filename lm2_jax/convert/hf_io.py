"""Hugging Face Llama folders in and out: safetensors <-> a work directory's checkpoint.

Import reads a `LlamaForCausalLM` folder (one `model.safetensors` or shards listed in
`model.safetensors.index.json`; float32, bfloat16 or float16 weights) one tensor at a time,
converts it to float32 in our layout (lm2_jax/convert/mapping.py), fills the layer-stacked
array it belongs to, and places that array on the devices (straight to its shards when a
mesh is given) before the next one is read; the safetensors file is opened per tensor, so
no memory map outlives its tensor. The host therefore holds the placed parameters plus one
stacked array at a time. Outputs appear only once complete (written under a temporary
name, then renamed), so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import shutil
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from lm2_jax.checkpoint import abstract_params, load_params, resolve, save_params
from lm2_jax.config import Config, MemoryConfig
from lm2_jax.convert.mapping import (MEMORY_PREFIX, RMT_MEMORY, ConvertError, TensorRow,
                                     config_from_hf, config_to_hf, flat_leaves, hf_shape,
                                     tensor_table, to_hf)
from lm2_jax.data.errors import DataError
from lm2_jax.data.tokenizers import load_tokenizer
from lm2_jax.model import build_model, is_memory_param
from lm2_jax.sharding import param_shardings

CONFIG_JSON = "config.json"
INDEX_JSON = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_JSON = "tokenizer.json"

# safetensors dtypes that convert to float32. Integer, boolean and float8 tensors are
# quantised or not weights at all: refusing them beats a silently wrong model.
_CONVERTIBLE = ("F32", "BF16", "F16", "F64")
EXPORT_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}

# Tensors some Llama checkpoints carry that hold no parameter (recomputed from config.json).
_IGNORED_SUFFIXES = (".self_attn.rotary_emb.inv_freq",)


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise ConvertError(f"{path}: not found") from None
  except (OSError, json.JSONDecodeError) as e:
    raise ConvertError(f"{path}: not readable JSON: {e}") from None
  if not isinstance(data, dict):
    raise ConvertError(f"{path}: expected a JSON object, got {type(data).__name__}")
  return data


# --------------------------------------------------------------------------------------
# Reading a folder of safetensors, one tensor at a time
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Entry:
  file: str
  dtype: str
  shape: tuple[int, ...]


class _Folder:
  """The tensors of a HF folder: their files, dtypes and shapes, from the headers alone."""

  def __init__(self, hf_dir: str):
    self.dir = hf_dir
    index = os.path.join(hf_dir, INDEX_JSON)
    if os.path.exists(index):
      weight_map = _read_json(index).get("weight_map")
      if not isinstance(weight_map, dict) or not weight_map:
        raise ConvertError(f"{index}: no 'weight_map' of tensor names to files")
      by_file: dict[str, list[str]] = {}
      for name, fname in weight_map.items():
        by_file.setdefault(fname, []).append(name)
      for fname, names in sorted(by_file.items()):
        path = os.path.join(hf_dir, fname)
        if not os.path.exists(path):
          raise ConvertError(f"{path}: missing shard, listed in {INDEX_JSON} for {len(names)} "
                             f"tensors (e.g. {sorted(names)[0]})")
      self.where = {name: os.path.join(hf_dir, fname) for name, fname in weight_map.items()}
      self.files = [os.path.join(hf_dir, f) for f in sorted(by_file)]
    else:
      self.files = sorted(os.path.join(hf_dir, f) for f in os.listdir(hf_dir)
                          if f.endswith(".safetensors"))
      if not self.files:
        raise ConvertError(f"{hf_dir}: no {SINGLE_FILE} or {INDEX_JSON} (no *.safetensors "
                           f"files at all)")
      self.where = {}
    self.entries: dict[str, _Entry] = {}
    for path in self.files:
      for name, dtype, shape in self._header(path):
        if name in self.where and self.where[name] != path:
          continue  # the index names another file for it; the index is authoritative
        if name in self.entries:
          raise ConvertError(f"{path}: tensor {name} is also in {self.entries[name].file}")
        self.entries[name] = _Entry(path, dtype, shape)
    for name, path in self.where.items():
      if name not in self.entries:
        raise ConvertError(f"{path}: tensor {name} is listed in {INDEX_JSON} but not in "
                           f"the file")

  @staticmethod
  def _header(path: str) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    try:
      with safetensors.safe_open(path, framework="numpy") as f:
        for name in f.keys():
          sl = f.get_slice(name)
          yield name, sl.get_dtype(), tuple(sl.get_shape())
    except (safetensors.SafetensorError, OSError) as e:
      raise ConvertError(f"{path}: not a readable safetensors file: {e}") from None

  def check(self, name: str, shape: tuple[int, ...]) -> _Entry:
    """The entry of `name`, after checking that it exists, has `shape` and converts."""
    entry = self.entries.get(name)
    if entry is None:
      where = os.path.join(self.dir, INDEX_JSON) if self.where else (
          self.files[0] if len(self.files) == 1 else f"{self.dir}/*.safetensors")
      raise ConvertError(f"{where}: no tensor {name}, which {CONFIG_JSON} implies")
    if entry.dtype not in _CONVERTIBLE:
      raise ConvertError(f"{entry.file}: tensor {name} has dtype {entry.dtype}, which does "
                         f"not convert to float32 (supported: {', '.join(_CONVERTIBLE)})")
    if entry.shape != tuple(shape):
      raise ConvertError(f"{entry.file}: tensor {name} has shape {list(entry.shape)}, "
                         f"{CONFIG_JSON} implies {list(shape)}")
    return entry

  def read(self, name: str) -> np.ndarray:
    """The tensor in its stored dtype (bfloat16 comes back as ml_dtypes.bfloat16).

    The file is opened for this one tensor, so its memory map is released right after.
    """
    entry = self.entries[name]
    try:
      with safetensors.safe_open(entry.file, framework="numpy") as f:
        return f.get_tensor(name)
    except (safetensors.SafetensorError, OSError) as e:
      raise ConvertError(f"{entry.file}: tensor {name} could not be read: {e}") from None


# --------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------


def _place(host: np.ndarray, sharding) -> jax.Array:
  if sharding is None:
    return jax.device_put(host)
  # Each device receives only its own slice of the host array.
  return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _fresh_memory(cfg: Config, paths: list[tuple[str, ...]], shardings: dict) -> dict:
  """Memory parameters exactly as `model.init(key(train.seed))` makes them.

  Only the memory leaves leave the jitted init, so XLA drops the work (and the memory) of
  initialising the Llama weights that the checkpoint replaces.
  """
  model = build_model(cfg.model)
  tokens = jnp.zeros((1, cfg.model.segment_len), jnp.int32)

  def init(key):
    flat = dict(flat_leaves(nn.unbox(model.init(key, tokens)["params"])))
    return tuple(flat[p] for p in paths)

  out_shardings = tuple(shardings.get(p) for p in paths) if shardings else None
  leaves = jax.jit(init, out_shardings=out_shardings)(jax.random.key(cfg.train.seed))
  return dict(zip(paths, leaves))


def load_hf_llama(hf_dir: str, memory: MemoryConfig | None = None,
                  compute_dtype: str = "float32", *, base: Config | None = None,
                  mesh: jax.sharding.Mesh | None = None,
                  log: Callable[[str], None] | None = None) -> tuple[Config, Any]:
  """(config, params) of a Hugging Face Llama folder; config.model goes to build_model.

  `memory` adds a fresh LM2 memory (zero_init, so the logits stay the Llama's); `base`
  supplies everything config.json does not say (training settings, segment length, the
  memory when `memory` is None). params are float32 and unboxed, placed on `mesh` by the
  logical axis table when one is given. Raises ConvertError naming file and tensor.
  """
  hf_dir = os.path.abspath(hf_dir)
  if not os.path.isdir(hf_dir):
    raise ConvertError(f"{hf_dir}: no such directory")
  where = os.path.join(hf_dir, CONFIG_JSON)
  cfg, memory_from_folder = config_from_hf(_read_json(where), where, base, memory,
                                           compute_dtype)
  folder = _Folder(hf_dir)
  abstract = dict(flat_leaves(abstract_params(cfg)))
  table = tensor_table(cfg.model, with_memory=memory_from_folder)

  # Every check (presence, shape, dtype, leftovers) happens before any data is read.
  for row in table:
    leaf_shape = abstract[row.path].shape
    folder.check(row.hf_name, hf_shape(leaf_shape[1:] if row.layer is not None
                                        else leaf_shape, row.n_in))
  used = {row.hf_name for row in table}
  ignorable = lambda n: (n.endswith(_IGNORED_SUFFIXES)
                         or (n == "lm_head.weight" and cfg.model.tie_embeddings)
                         or ((n.startswith(MEMORY_PREFIX) or n == RMT_MEMORY)
                             and memory is not None))
  extra = sorted(n for n in folder.entries if n not in used and not ignorable(n))
  if extra:
    more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
    raise ConvertError(f"{folder.entries[extra[0]].file}: tensor {extra[0]}{more} has no "
                       f"place in a Llama with this {CONFIG_JSON}")

  shardings = None
  if mesh is not None:
    shardings = dict(flat_leaves(param_shardings(cfg.model, mesh)))
  rows_by_path: dict[tuple[str, ...], list[TensorRow]] = {}
  for row in table:
    rows_by_path.setdefault(row.path, []).append(row)
  fresh = [p for p in abstract if p not in rows_by_path]
  assert all(is_memory_param([jax.tree_util.DictKey(k) for k in p]) for p in fresh), fresh

  placed = {}
  for path, rows in rows_by_path.items():
    host = np.empty(abstract[path].shape, np.float32)
    for row in rows:
      target = host if row.layer is None else host[row.layer]
      if row.n_in is not None:  # a view [prod(in), prod(out)] of the target
        target = target.reshape(math.prod(target.shape[:row.n_in]), -1)
      tensor = folder.read(row.hf_name)
      target[...] = tensor.T if row.n_in is not None else tensor  # converts to float32
      del tensor
    placed[path] = _place(host, shardings and shardings[path])
    del host
  if fresh:
    if log:
      log(f"initialising {len(fresh)} memory parameters (zero_init, seed {cfg.train.seed})")
    placed.update(_fresh_memory(cfg, fresh, shardings))
  treedef = jax.tree.structure(abstract_params(cfg))
  return cfg, jax.tree.unflatten(treedef, [placed[p] for p in abstract])


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # alive, another user's
    return True
  return True


def remove_stale_partials(path: str) -> list[str]:
  """Delete `<path>.partial-<pid>` folders left by conversions killed on this host.

  A folder whose process still runs is another conversion at work and is left alone.
  """
  removed = []
  for tmp in glob.glob(glob.escape(path) + ".partial-*"):
    pid = tmp.rsplit("-", 1)[-1]
    if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
      shutil.rmtree(tmp, ignore_errors=True)
      removed.append(tmp)
  return removed


def _fresh_output_dir(path: str, what: str, create: bool = True) -> str:
  """A sibling temporary directory to write into; refuses to touch an existing result."""
  path = os.path.abspath(path)
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
    raise ConvertError(f"{path}: already exists and is not empty; {what} never overwrites, "
                       f"choose a new directory")
  parent = os.path.dirname(path)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    raise ConvertError(f"--out {path}: cannot write there ({parent} is "
                       f"{'not a folder' if not os.path.isdir(parent) else 'not writable'})")
  if not create:
    return path
  remove_stale_partials(path)
  tmp = f"{path}.partial-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    os.makedirs(tmp)
  except OSError as e:
    raise ConvertError(f"--out {path}: cannot write there ({e.strerror or e})") from None
  return tmp


def _publish(tmp: str, path: str):
  path = os.path.abspath(path)
  if os.path.isdir(path):
    os.rmdir(path)  # empty, checked by _fresh_output_dir
  os.rename(tmp, path)


def import_hf(hf_dir: str, workdir: str, base: Config | None = None,
              memory: MemoryConfig | None = None, compute_dtype: str = "float32",
              mesh: jax.sharding.Mesh | None = None,
              log: Callable[[str], None] | None = None) -> Config:
  """Convert a HF Llama folder into a new work directory (params-only checkpoint, step 0).

  Everything is read and checked before anything is written, and the work directory
  appears only once complete (written under a temporary name, then renamed).
  """
  _fresh_output_dir(workdir, "import-hf", create=False)  # fail before the long part
  cfg, params = load_hf_llama(hf_dir, memory, compute_dtype, base=base, mesh=mesh, log=log)
  tmp = _fresh_output_dir(workdir, "import-hf")
  try:
    save_params(tmp, cfg, params, step=0, meta={"source": os.path.abspath(hf_dir)})
    tokenizer = os.path.join(hf_dir, TOKENIZER_JSON)
    if os.path.exists(tokenizer):
      shutil.copyfile(tokenizer, os.path.join(tmp, TOKENIZER_JSON))
    _publish(tmp, workdir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return cfg


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
  """'2GB', '500MB', '64KB' or a plain number of bytes -> bytes (powers of 1000)."""
  s = str(text).strip().upper()
  for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
    if s.endswith(unit):
      s, mult = s[:-len(unit)], scale
      break
  else:
    mult = 1
  try:
    value = int(float(s) * mult)
  except (ValueError, OverflowError):  # "abc", "inf"
    raise ConvertError(f"shard size {text!r}: expected e.g. 2GB, 500MB or a number of "
                       f"bytes") from None
  if value <= 0:
    raise ConvertError(f"shard size {text!r}: must be positive")
  return value


def write_hf_llama(cfg: Config, params, out_dir: str, dtype: str = "float32",
                   max_shard_bytes: int = 2 * 10**9, tokenizer: str | None = None):
  """Write config.json and safetensors (sharded with an index when larger than a shard).

  An LM2's memory tensors go into the same files under MEMORY_PREFIX (transformers
  reports and skips them when it loads the folder as a plain Llama).
  """
  if dtype not in EXPORT_DTYPES:
    raise ConvertError(f"dtype {dtype!r}: expected one of {sorted(EXPORT_DTYPES)}")
  np_dtype = EXPORT_DTYPES[dtype]
  leaves = dict(flat_leaves(params))
  table = tensor_table(cfg.model, with_memory=cfg.model.memory.kind != "none")
  itemsize = np.dtype(np_dtype).itemsize
  umask = os.umask(0)
  os.umask(umask)

  def tensor_of(row: TensorRow) -> np.ndarray:
    leaf = np.asarray(leaves[row.path])
    ours = leaf if row.layer is None else leaf[row.layer]
    return np.ascontiguousarray(to_hf(ours, row.n_in), dtype=np_dtype)

  shards: list[list[TensorRow]] = [[]]
  size = 0
  for row in table:
    n = math.prod(leaves[row.path].shape[(row.layer is not None):]) * itemsize
    if shards[-1] and size + n > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(row)
    size += n
  names = ([SINGLE_FILE] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  weight_map, total = {}, 0
  for fname, rows in zip(names, shards):
    tensors = {row.hf_name: tensor_of(row) for row in rows}
    total += sum(t.nbytes for t in tensors.values())
    path = os.path.join(out_dir, fname)
    safetensors.numpy.save_file(tensors, path, metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~umask)  # safetensors creates 0600; publish like any other file
    weight_map.update({name: fname for name in tensors})
    del tensors
  if len(shards) > 1:
    with open(os.path.join(out_dir, INDEX_JSON), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  extra = {}
  if tokenizer is not None:
    shutil.copyfile(tokenizer, os.path.join(out_dir, TOKENIZER_JSON))
    extra = _special_token_ids(tokenizer)
  with open(os.path.join(out_dir, CONFIG_JSON), "w") as f:
    json.dump(config_to_hf(cfg, dtype, extra), f, indent=2)
  return names


def _special_token_ids(tokenizer_path: str) -> dict:
  """bos/eos ids for config.json, when the tokenizer names them (best effort)."""
  try:
    tok = load_tokenizer(tokenizer_path)
    return {"bos_token_id": int(tok.bos_id), "eos_token_id": int(tok.eos_id)}
  except DataError:  # no recognisable special tokens: transformers' defaults apply
    return {}


def export_hf(checkpoint: str, out_dir: str, dtype: str = "float32",
              max_shard_bytes: int = 2 * 10**9) -> Config:
  """Export a work directory's (or step directory's) parameters as a HF Llama folder.

  The folder appears only once complete; an existing non-empty folder is never touched.
  """
  if dtype not in EXPORT_DTYPES:
    raise ConvertError(f"dtype {dtype!r}: expected one of {sorted(EXPORT_DTYPES)}")
  _fresh_output_dir(out_dir, "export-hf", create=False)  # fail before reading the weights
  cfg, params, _ = load_params(checkpoint)
  params = jax.device_get(params)
  workdir, _ = resolve(checkpoint)
  tokenizer = os.path.join(workdir, TOKENIZER_JSON)
  tmp = _fresh_output_dir(out_dir, "export-hf")
  try:
    write_hf_llama(cfg, params, tmp, dtype, max_shard_bytes,
                   tokenizer if os.path.exists(tokenizer) else None)
    _publish(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return cfg


__all__ = ["EXPORT_DTYPES", "export_hf", "import_hf", "load_hf_llama", "parse_size",
           "remove_stale_partials", "write_hf_llama"]
