"""Pretraining data through Grain: text documents, pre-tokenized shards, TFDS datasets.

``make_lm_dataset`` is the one public builder. Its batches are

  ``{"tokens": int32[B, T], "loss_mask": float32[B, T]}``

where ``loss_mask[b, t]`` is 1 when ``tokens[b, t]`` is a prediction target. The training step
feeds ``tokens[:, :-1]`` and scores ``tokens[:, 1:]`` weighted by ``loss_mask[:, 1:]`` (the
BABILong stream uses the same convention with a mask on the answer only). Packed pretraining
sequences have no padding, so the mask is all ones.

Sources:
  * text documents (``.txt`` = one document, ``.jsonl``/``.json`` lines and ``.parquet`` rows
    with a ``text`` field): each is tokenized, framed as [BOS] + tokens + [EOS] and the stream
    of documents is cut into sequences of exactly T tokens (a document may straddle two);
  * pre-tokenized shards: flat binary token files (``.bin``; uint16 by default, uint32 with
    ``token_dtype="uint32"``; a file with llm.c's 256-int32 header is recognised and its dtype
    read from it) or 1-D ``.npy`` arrays, cut into non-overlapping windows of T tokens;
  * TFDS datasets prepared as ArrayRecord (``tfds build --file_format=array_record``), read
    with ``tfds.data_source`` (no TensorFlow needed): ``"tfds:NAME"`` with ``tfds_data_dir``, or
    ``"tfds:/path/to/NAME/CONFIG/VERSION"``.

Order and resume: documents (or windows) are split across hosts by index
(``shard_index::shard_count``), shuffled with ``seed`` (differently in each epoch) and
repeated ``num_epochs`` times (``None``: endlessly). ``iterator.get_state()`` is a small dict;
``set_state`` on a fresh iterator of the same dataset continues with exactly the batches the
first iterator would have produced.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from lm2_jax.data.documents import DocumentSource, expand_paths
from lm2_jax.data.errors import DataError
from lm2_jax.data.tokenizers import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

SHARD_EXTENSIONS = (".bin", ".npy")
_LLMC_MAGICS = {20240520: np.uint16, 20240801: np.uint32}  # llm.c header magic -> token dtype
_HEADER_INTS = 256


class TokenShardSource:
  """Non-overlapping windows of ``seq_len`` tokens from flat token files, as int32 arrays."""

  def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], seq_len: int, *,
               token_dtype: str | None = None, vocab_size: int | None = None):
    self.files = expand_paths(paths, SHARD_EXTENSIONS)
    self.seq_len = seq_len
    self.vocab_size = vocab_size
    self._layout = [self._inspect(p, token_dtype) for p in self.files]  # (offset, dtype, n)
    windows = [n // seq_len for _, _, n in self._layout]
    for path, (_, _, n), w in zip(self.files, self._layout, windows):
      if n % seq_len:
        log.info("token shard %s: the last %d of %d tokens do not fill a window of %d and are "
                 "not used", path, n % seq_len, n, seq_len)
    self._starts = np.concatenate([[0], np.cumsum(windows)]).astype(np.int64)
    if self._starts[-1] == 0:
      raise DataError(f"{', '.join(self.files[:3])}: fewer than seq_len={seq_len} tokens")
    self._maps: dict[int, np.ndarray] = {}

  @staticmethod
  def _inspect(path: str, token_dtype: str | None) -> tuple[int, np.dtype, int]:
    try:
      if path.endswith(".npy"):
        arr = np.load(path, mmap_mode="r")
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
          raise DataError(f"{path}: expected a 1-D integer array, got {arr.dtype}{arr.shape}")
        return -1, arr.dtype, arr.shape[0]
      size = os.path.getsize(path)
      with open(path, "rb") as f:
        raw = f.read(_HEADER_INTS * 4)
    except (OSError, ValueError) as e:
      raise DataError(f"{path}: cannot read token shard ({e})") from e
    head = np.frombuffer(raw, np.int32) if len(raw) == _HEADER_INTS * 4 else np.zeros(1, np.int32)
    if int(head[0]) in _LLMC_MAGICS:
      dtype = np.dtype(_LLMC_MAGICS[int(head[0])])
      n = int(head[2])
      if _HEADER_INTS * 4 + n * dtype.itemsize > size:
        raise DataError(f"{path}: header promises {n} tokens but the file is {size} bytes")
      return _HEADER_INTS * 4, dtype, n
    dtype = np.dtype(token_dtype or "uint16")
    if dtype not in (np.dtype("uint16"), np.dtype("uint32")):
      raise ValueError(f"token_dtype must be uint16 or uint32, got {token_dtype!r}")
    if size % dtype.itemsize:
      raise DataError(f"{path}: {size} bytes is not a whole number of {dtype} tokens "
                      f"(expected a flat {dtype} token file)")
    return 0, dtype, size // dtype.itemsize

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_maps"] = {}  # memory maps are reopened in each process
    return state

  def _map(self, f: int) -> np.ndarray:
    if f not in self._maps:
      offset, dtype, n = self._layout[f]
      if offset < 0:
        self._maps[f] = np.load(self.files[f], mmap_mode="r")
      else:
        self._maps[f] = np.memmap(self.files[f], dtype=dtype, mode="r", offset=offset,
                                  shape=(n,))
    return self._maps[f]

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, i: int) -> np.ndarray:
    i = int(i)
    f = int(np.searchsorted(self._starts, i, side="right")) - 1
    start = (i - int(self._starts[f])) * self.seq_len
    window = np.asarray(self._map(f)[start:start + self.seq_len], dtype=np.int32)
    if self.vocab_size is not None and window.size and (
        int(window.max()) >= self.vocab_size or int(window.min()) < 0):
      bad = int(np.argmax((window >= self.vocab_size) | (window < 0)))
      raise DataError(f"{self.files[f]}, token {start + bad}: id {int(window[bad])} is outside "
                      f"the tokenizer's vocabulary of {self.vocab_size}")
    return window

  def __repr__(self) -> str:
    return f"TokenShardSource({len(self.files)} files, {len(self)} windows of {self.seq_len})"


def _nearest_tfds_names(name: str, n: int = 3) -> list[str]:
  """The registered TFDS names closest to `name` (its part before any /config/version)."""
  import difflib  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  names = tfds.list_builders(with_community_datasets=False)
  base = name.split("/")[0].split(":")[0]
  return difflib.get_close_matches(base, names, n=n, cutoff=0.0)


class TfdsTextSource:
  """The text feature of a TFDS dataset prepared in ArrayRecord format, via tfds.data_source."""

  def __init__(self, name: str, split: str = "train", data_dir: str | None = None,
               text_key: str = "text"):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    self.name, self.split, self.text_key = name, split, text_key
    try:
      if os.path.isdir(name):
        self._source = tfds.builder_from_directory(name).as_data_source(split=split)
      else:
        self._source = tfds.data_source(name, split=split, data_dir=data_dir, try_gcs=False)
    except Exception as e:  # tfds raises many kinds (DatasetNotFoundError, ValueError, ...)
      if type(e).__name__ == "DatasetNotFoundError":
        raise DataError(f"tfds:{name}: no such dataset (data_dir={data_dir}); nearest names: "
                        f"{', '.join(_nearest_tfds_names(name))}") from None
      first = str(e).splitlines()[0] if str(e) else ""
      raise DataError(f"tfds:{name} split {split!r} (data_dir={data_dir}): cannot open as an "
                      f"ArrayRecord data source ({type(e).__name__}: {first})") from None

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> str:
    record = self._source[int(i)]
    if not isinstance(record, dict) or self.text_key not in record:
      keys = sorted(record) if isinstance(record, dict) else type(record).__name__
      raise DataError(f"tfds:{self.name} {self.split}, record {i}: no {self.text_key!r} "
                      f"feature (has {keys})")
    text = record[self.text_key]
    if isinstance(text, np.ndarray):
      text = text.item()
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)

  def __repr__(self) -> str:
    return f"TfdsTextSource({self.name!r}, split={self.split!r}, {len(self)} documents)"


def open_source(spec: Any, *, seq_len: int, tokenizer: Tokenizer, text_key: str = "text",
                split: str = "train", tfds_data_dir: str | None = None,
                token_dtype: str | None = None):
  """A source object for a spec: ``"tfds:NAME"``, token shard paths, or text file paths."""
  if isinstance(spec, (DocumentSource, TokenShardSource, TfdsTextSource)):
    return spec
  if isinstance(spec, str) and spec.startswith("tfds:"):
    return TfdsTextSource(spec[len("tfds:"):], split, tfds_data_dir, text_key)
  paths = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
  names = [os.fspath(p) for p in paths]
  if names and all(n.endswith(SHARD_EXTENSIONS) for n in names):
    return TokenShardSource(names, seq_len, token_dtype=token_dtype,
                            vocab_size=tokenizer.vocab_size)
  if any(os.path.isdir(n) for n in names):
    try:  # a folder of shards, else a folder of text
      shards = expand_paths(names, SHARD_EXTENSIONS)
    except DataError:
      shards = []
    if shards:
      return TokenShardSource(shards, seq_len, token_dtype=token_dtype,
                              vocab_size=tokenizer.vocab_size)
  return DocumentSource(names, text_key)


class _Tokenize:
  """Document text -> int32 [BOS] + tokens + [EOS]."""

  def __init__(self, tokenizer: Tokenizer, add_bos: bool):
    self.tokenizer, self.add_bos = tokenizer, add_bos

  def __call__(self, text: str) -> np.ndarray:
    ids = self.tokenizer.encode(text)
    head = [self.tokenizer.bos_id] if self.add_bos else []
    return np.asarray(head + ids + [self.tokenizer.eos_id], np.int32)


class _PackIterator(grain.DatasetIterator):
  """Concatenates token arrays and cuts the stream into arrays of exactly ``seq_len``.

  State is (the parent's state before the document holding the next token, offset in it):
  restoring re-reads that one document and skips the offset, so no token buffer is stored.
  """

  def __init__(self, parent: grain.DatasetIterator, seq_len: int):
    super().__init__(parent)
    self._seq_len = seq_len
    self._doc: np.ndarray | None = None
    self._pos = 0
    self._doc_state = parent.get_state()

  def _next_doc(self) -> None:
    self._doc_state = self._parent.get_state()
    self._doc = next(self._parent)
    self._pos = 0

  def _end(self, filled: int) -> None:
    if filled:
      log.info("end of the documents: the last %d tokens do not fill a sequence of %d and are "
               "not used", filled, self._seq_len)
    raise StopIteration

  def __next__(self) -> np.ndarray:
    out = np.empty((self._seq_len,), np.int32)
    filled = 0
    while filled < self._seq_len:
      if self._doc is None or self._pos >= len(self._doc):
        try:
          self._next_doc()
        except StopIteration:
          self._end(filled)
      take = min(self._seq_len - filled, len(self._doc) - self._pos)
      out[filled:filled + take] = self._doc[self._pos:self._pos + take]
      filled += take
      self._pos += take
    return out

  def get_state(self) -> dict[str, Any]:
    if self._doc is None or self._pos >= len(self._doc):
      return {"parent": self._parent.get_state(), "offset": 0}
    return {"parent": self._doc_state, "offset": self._pos}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._doc, self._pos = None, 0
    if state["offset"]:
      self._next_doc()
      self._pos = int(state["offset"])


class _PackIterDataset(grain.IterDataset):

  def __init__(self, parent: grain.IterDataset, seq_len: int):
    super().__init__(parent)
    self._seq_len = seq_len

  def __iter__(self) -> _PackIterator:
    return _PackIterator(self._parent.__iter__(), self._seq_len)


def _with_full_mask(tokens: np.ndarray) -> dict[str, np.ndarray]:
  return {"tokens": tokens, "loss_mask": np.ones(tokens.shape, np.float32)}


def make_lm_dataset(source: Any, tokenizer: Tokenizer | str, seq_len: int, batch_size: int, *,
                    seed: int = 0, shard_index: int = 0, shard_count: int = 1,
                    shuffle: bool = True, num_epochs: int | None = None, add_bos: bool = True,
                    text_key: str = "text", split: str = "train",
                    tfds_data_dir: str | None = None, token_dtype: str | None = None,
                    num_threads: int = 0) -> grain.IterDataset:
  """Batches ``{"tokens": int32[batch_size, seq_len], "loss_mask": float32[batch_size, seq_len]}``.

  ``source``: text file paths or folders, token shard paths or folders, ``"tfds:NAME"``, or a
  source object (module docstring). Documents are framed [BOS] + text + [EOS] (no BOS with
  ``add_bos=False``) and packed; ``loss_mask`` is all ones (targets are ``tokens[:, 1:]``).
  ``shard_index``/``shard_count`` split the documents across hosts; ``seed`` fixes the
  shuffle; ``num_threads`` > 0 reads and tokenizes in threads (the order stays the same).
  """
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  tokenizer = load_tokenizer(tokenizer)
  src = open_source(source, seq_len=seq_len, tokenizer=tokenizer, text_key=text_key,
                    split=split, tfds_data_dir=tfds_data_dir, token_dtype=token_dtype)
  if len(src) < shard_count:
    raise DataError(f"{src!r}: {len(src)} records cannot be split across {shard_count} hosts")
  ds = grain.MapDataset.source(src)[shard_index::shard_count]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  read = grain.ReadOptions(num_threads=num_threads,
                           prefetch_buffer_size=max(4 * num_threads, batch_size))
  if isinstance(src, TokenShardSource):
    it = ds.map(_with_full_mask).to_iter_dataset(read)
  else:
    it = ds.map(_Tokenize(tokenizer, add_bos)).to_iter_dataset(read)
    it = _PackIterDataset(it, seq_len).map(_with_full_mask)
  return it.batch(batch_size, drop_remainder=True)
