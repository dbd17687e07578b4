"""Reading published BABILong samples: our JSON layout and the published parquet layouts."""

from __future__ import annotations

import glob
import json
import os

from lm2_jax.data.errors import DataError

_FIELDS = ("input", "question", "target")


def _check_records(records, path: str) -> list[dict]:
  if not isinstance(records, list):
    raise DataError(f"{path}: expected a JSON list of samples, got {type(records).__name__}")
  out = []
  for i, r in enumerate(records):
    if not isinstance(r, dict):
      raise DataError(f"{path}, record {i}: expected an object with keys input, question, target")
    for key in _FIELDS:
      if key not in r:
        raise DataError(f"{path}, record {i}: missing {key!r} (expected keys input, question, "
                        "target)")
      if not isinstance(r[key], str):
        raise DataError(f"{path}, record {i}: {key!r} must be a string, got "
                        f"{type(r[key]).__name__}")
    out.append({k: r[k] for k in _FIELDS})
  return out


def _read_json(path: str) -> list[dict]:
  try:
    with open(path, encoding="utf-8") as f:
      records = json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from e
  except OSError as e:
    raise DataError(f"{path}: cannot read ({e})") from e
  return _check_records(records, path)


def _read_parquet(paths: list[str]) -> list[dict]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  out: list[dict] = []
  for path in paths:
    try:
      table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends
      raise DataError(f"{path}: not a readable parquet file ({e})") from e
    missing = [k for k in _FIELDS if k not in table.column_names]
    if missing:
      raise DataError(f"{path}: missing column(s) {missing} (expected input, question, target)")
    out += _check_records(table.select(list(_FIELDS)).to_pylist(), path)
  return out


def load_babilong_dir(path: str | os.PathLike, task: str, length: str) -> list[dict]:
  """Published BABILong samples of one task and length, from either published layout.

  Accepts ``path/<task>/<length>.json`` (a JSON list, as our CLI writes) and the parquet
  layouts ``path/<length>/<task>-*.parquet`` and ``path/<task>/<length>-*.parquet``, also
  under a ``data/`` folder.
  """
  root = os.fspath(path)
  tried = []
  for base in (root, os.path.join(root, "data")):
    json_path = os.path.join(base, task, f"{length}.json")
    tried.append(json_path)
    if os.path.exists(json_path):
      return _read_json(json_path)
    for folder, stem in ((length, task), (task, length)):
      pattern = os.path.join(base, folder, f"{stem}-*.parquet")
      tried.append(pattern)
      files = sorted(glob.glob(pattern)) or sorted(
          glob.glob(os.path.join(base, folder, f"{stem}.parquet")))
      if files:
        return _read_parquet(files)
  raise DataError(f"{root}: no BABILong data for {task} {length} (looked for "
                  f"{', '.join(tried)})")
