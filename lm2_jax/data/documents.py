"""Random access to text documents in plain-text, JSONL and parquet files.

Shared by the pretraining pipeline (documents to tokenize and pack) and the BABILong haystack
(books to cut into background sentences). A ``.txt`` file is one document; a JSONL line or a
parquet row is one document, its text in the ``text_key`` field. The index is built once from
file sizes, line offsets and parquet metadata (a few numbers per document); text is read only
when a document is asked for.
"""

from __future__ import annotations

import glob
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from lm2_jax.data.errors import DataError

TEXT_EXTENSIONS = (".txt", ".jsonl", ".json", ".parquet")


def expand_paths(paths: str | os.PathLike | Sequence[str | os.PathLike],
                 extensions: Sequence[str]) -> list[str]:
  """Files named by ``paths``: files, folders (searched recursively) or glob patterns."""
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  files: list[str] = []
  for p in map(os.fspath, paths):
    if os.path.isdir(p):
      found = sorted(f for ext in extensions
                     for f in glob.glob(os.path.join(p, "**", f"*{ext}"), recursive=True))
      if not found:
        raise DataError(f"{p}: no {'/'.join(extensions)} files in this folder")
      files += found
    elif os.path.exists(p):
      files.append(p)
    elif glob.has_magic(p):
      found = sorted(glob.glob(p, recursive=True))
      if not found:
        raise DataError(f"{p}: the pattern matches no file")
      files += found
    else:
      raise DataError(f"{p}: file not found")
  return files


def _jsonl_text(path: str, number: int, line: bytes, text_key: str) -> str:
  """The text field of one JSONL line, or DataError naming the file and line."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}, line {number}: not valid JSON ({e.msg})") from None
  except UnicodeDecodeError as e:  # json.loads decodes bytes before parsing
    raise DataError(f"{path}, line {number}: not UTF-8 text (byte {e.start} of the line), "
                    "expected one JSON object per line") from None
  text = record.get(text_key) if isinstance(record, dict) else None
  if not isinstance(text, str):
    raise DataError(f"{path}, line {number}: expected a JSON object with a string "
                    f"{text_key!r} field")
  return text


def check_first_records(paths: str | os.PathLike | Sequence[str | os.PathLike],
                        text_key: str = "text") -> None:
  """Read the first document of every file (not the whole index, which can take minutes):
  binary garbage or a missing field fails at once, in one line, before a run writes
  anything, instead of inside the input pipeline."""
  for path in expand_paths(paths, TEXT_EXTENSIONS):
    if path.endswith((".jsonl", ".json")):
      try:
        with open(path, "rb") as f:
          for number, line in enumerate(f, start=1):
            if line.strip():
              _jsonl_text(path, number, line, text_key)
              break
      except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    elif path.endswith(".parquet"):
      DocumentSource([path], text_key)   # reads the footer: format and column


class DocumentSource:
  """Documents of text files as a Grain-compatible random-access source of strings."""

  def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike],
               text_key: str = "text", cache_size: int = 4):
    self.files = expand_paths(paths, TEXT_EXTENSIONS)
    self.text_key = text_key
    self.cache_size = cache_size
    self._kinds: list[str] = []
    self._index: list[np.ndarray] = []  # per file: byte offsets (jsonl) or row-group starts
    self._lines: list[np.ndarray] = []  # per file: line numbers of jsonl records
    counts = []
    for path in self.files:
      kind, index, lines, count = self._index_file(path)
      self._kinds.append(kind)
      self._index.append(index)
      self._lines.append(lines)
      counts.append(count)
    self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if self._starts[-1] == 0:
      raise DataError(f"{', '.join(self.files[:3])}: no documents in these files")
    self._groups: OrderedDict[tuple[str, int], list] = OrderedDict()
    self._lock = threading.Lock()  # Grain reads with several threads

  def _index_file(self, path: str) -> tuple[str, np.ndarray, np.ndarray, int]:
    empty = np.zeros((0,), np.int64)
    if path.endswith(".txt"):
      return "txt", empty, empty, 1
    if path.endswith((".jsonl", ".json")):
      offsets, lines, offset = [], [], 0
      try:
        with open(path, "rb") as f:
          for number, line in enumerate(f, start=1):
            if line.strip():
              offsets.append(offset)
              lines.append(number)
            offset += len(line)
      except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
      return "jsonl", np.array(offsets, np.int64), np.array(lines, np.int64), len(offsets)
    if path.endswith(".parquet"):
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
      try:
        meta = pq.ParquetFile(path)
      except Exception as e:  # pyarrow raises ArrowInvalid for a file that is not parquet
        raise DataError(f"{path}: not a parquet file ({e})") from e
      if self.text_key not in meta.schema_arrow.names:
        raise DataError(f"{path}: no {self.text_key!r} column (columns: "
                        f"{meta.schema_arrow.names})")
      rows = [meta.metadata.row_group(g).num_rows for g in range(meta.num_row_groups)]
      return "parquet", np.cumsum([0] + rows).astype(np.int64), empty, int(sum(rows))
    raise DataError(f"{path}: unsupported file type (expected {', '.join(TEXT_EXTENSIONS)})")

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_lock"]
    state["_groups"] = OrderedDict()  # the row-group cache is rebuilt in each process
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return int(self._starts[-1])

  def describe(self, i: int) -> str:
    f = int(np.searchsorted(self._starts, i, side="right")) - 1
    path, k = self.files[f], int(i - self._starts[f])
    if self._kinds[f] == "jsonl":
      return f"{path}, line {self._lines[f][k]}"
    if self._kinds[f] == "parquet":
      return f"{path}, row {k}"
    return path

  def __getitem__(self, i: int) -> str:
    i = int(i)
    if not 0 <= i < len(self):
      raise IndexError(f"document {i} out of range [0, {len(self)})")
    f = int(np.searchsorted(self._starts, i, side="right")) - 1
    path, k, kind = self.files[f], int(i - self._starts[f]), self._kinds[f]
    try:
      if kind == "txt":
        with open(path, encoding="utf-8", errors="replace") as fh:
          return fh.read()
      if kind == "jsonl":
        with open(path, "rb") as fh:
          fh.seek(int(self._index[f][k]))
          line = fh.readline()
        return _jsonl_text(path, int(self._lines[f][k]), line, self.text_key)
      group = int(np.searchsorted(self._index[f], k, side="right")) - 1
      texts = self._row_group(path, group)
      text = texts[k - int(self._index[f][group])]
      if not isinstance(text, str):
        raise DataError(f"{path}, row {k}: {self.text_key!r} is not a string")
      return text
    except OSError as e:
      raise DataError(f"{path}: cannot read ({e})") from e

  def _row_group(self, path: str, group: int) -> list:
    key = (path, group)
    with self._lock:
      if key in self._groups:
        self._groups.move_to_end(key)
        return self._groups[key]
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    texts = pq.ParquetFile(path).read_row_group(group, columns=[self.text_key]).column(0)
    texts = texts.to_pylist()
    with self._lock:
      self._groups[key] = texts
      if len(self._groups) > self.cache_size:
        self._groups.popitem(last=False)
    return texts

  def __repr__(self) -> str:
    return f"DocumentSource({len(self.files)} files, {len(self)} documents)"
