"""The data kinds `data.kind` chooses from: one object per kind, everything the rest knows of it.

Each kind says which config values it needs (`validate`), checks before a run that its files or
dataset read (`check`), builds the training and the held-out streams, names itself in the
training log (`describe`), and tells the evaluations what its batches hold (`has_answers`,
`evaluates`, `tasks`). Nothing outside this package compares `data.kind` to a name: it looks the
kind up with `of`.

Adding a source is a change to this file alone: write a `DataKind` subclass, put an instance in
`KINDS` and its name in `KindName` (the config accepts exactly those names;
tests/data/test_kinds.py fails when the two disagree). Heavy modules (Grain, TFDS, the
generators) are imported inside the methods: the config imports this module.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Callable, Literal

from lm2_jax.data.errors import DataError

if TYPE_CHECKING:
  import grain

  from lm2_jax.config import Config, DataConfig
  from lm2_jax.data.tokenizers import Tokenizer

# The values `data.kind` accepts (the config's type); one entry of KINDS each.
KindName = Literal["babilong", "text", "tokens", "tfds"]

# need(ok, key, message) raises the config's error "key: message" unless ok.
Need = Callable[[bool, str, str], None]


def _check_paths(key: str, paths, extensions, text_key: str | None = None) -> None:
  """Every path exists; with `text_key`, the first document of every text file reads."""
  from lm2_jax.data import documents  # pylint: disable=g-import-not-at-top
  for i, path in enumerate(paths):
    try:
      documents.expand_paths([path], extensions)
      if text_key is not None:
        documents.check_first_records([path], text_key)
    except DataError as e:
      raise DataError(f"{key}[{i}]: {e}") from None


def _check_text(key: str, paths, text_key: str) -> None:
  from lm2_jax.data.documents import TEXT_EXTENSIONS  # pylint: disable=g-import-not-at-top
  _check_paths(key, paths, TEXT_EXTENSIONS, text_key)


def _check_shards(key: str, paths) -> None:
  from lm2_jax.data.pretrain import SHARD_EXTENSIONS  # pylint: disable=g-import-not-at-top
  _check_paths(key, paths, SHARD_EXTENSIONS)


class DataKind(abc.ABC):
  """One source of training batches {"tokens": int32[b, T], "loss_mask": float32[b, T]}.

  The stream builders take this host's share: `batch_size` rows of `seq_len` tokens from
  records shard_index, shard_index + shard_count, ... drawn with `seed`.
  """

  name: str
  # Each sequence closes with a scored answer: the training evaluation reports the answer's
  # loss and accuracy at every evaluation length, not the loss of every token at the longest.
  has_answers: bool = False

  @abc.abstractmethod
  def validate(self, d: DataConfig, need: Need) -> None:
    """The config checks that depend on the kind (before anything runs or is read)."""

  def check(self, d: DataConfig) -> None:
    """Before a run: the files or dataset read. Raises DataError naming the key.

    Held-out files (`data.eval_paths`) are text unless a kind says otherwise.
    """
    _check_text("data.eval_paths", d.eval_paths, d.text_key)

  def describe(self, d: DataConfig) -> str:
    """The kind in the training log's "data: ..." line."""
    del d
    return self.name

  def evaluates(self, d: DataConfig) -> bool:
    """Whether training has a held-out set to evaluate on (the held-out files by default)."""
    return bool(d.eval_paths)

  def tasks(self, d: DataConfig) -> tuple[str, ...]:
    """The BABILong tasks this data trains on (eval.py's default --tasks); none by default."""
    del d
    return ()

  @abc.abstractmethod
  def train_stream(self, cfg: Config, tokenizer: Tokenizer, *, seq_len: int, batch_size: int,
                   seed: int, shard_index: int, shard_count: int) -> grain.IterDataset:
    """The endless training stream."""

  def check_fits(self, cfg: Config, tokenizer: Tokenizer, seq_len: int) -> None:
    """Before a run: a sequence of `seq_len` tokens can hold a record (DataError if not)."""
    del cfg, tokenizer, seq_len

  @abc.abstractmethod
  def eval_stream(self, cfg: Config, tokenizer: Tokenizer, *, seq_len: int, batch_size: int,
                  seed: int, shard_index: int, shard_count: int) -> grain.IterDataset:
    """The held-out stream (only asked for when `evaluates`); the caller takes what it needs."""


class Babilong(DataKind):
  """BABILong samples generated on the fly; the held-out set is drawn with its own seeds."""

  name = "babilong"
  has_answers = True

  def validate(self, d: DataConfig, need: Need) -> None:
    from lm2_jax.data.babilong import TASKS, parse_length  # pylint: disable=g-import-not-at-top
    need(bool(d.tasks), "data.tasks", "data.kind=babilong needs at least one task")
    for i, task in enumerate(d.tasks):
      need(task in TASKS, f"data.tasks[{i}]", f"got {task!r}, expected one of qa1..qa10")
    for i, length in enumerate(d.lengths):
      try:
        parse_length(length)
      except ValueError as e:
        need(False, f"data.lengths[{i}]", str(e))
    zero_k = any(parse_length(x) == 0 for x in d.lengths)
    need(not d.pack_stories or zero_k, "data.pack_stories",
         f"packs the 0k records (the facts alone): it needs 0k in data.lengths, got "
         f"{list(d.lengths)}")

  def check(self, d: DataConfig) -> None:
    from lm2_jax.data.haystack import load_haystack  # pylint: disable=g-import-not-at-top
    super().check(d)
    try:
      load_haystack(d.haystack)
    except DataError as e:
      raise DataError(f"data.haystack: {e}") from None

  def describe(self, d: DataConfig) -> str:
    return f"{self.name} {','.join(d.tasks)}"

  def evaluates(self, d: DataConfig) -> bool:
    del d
    return True

  def tasks(self, d: DataConfig) -> tuple[str, ...]:
    return tuple(d.tasks)

  def train_stream(self, cfg: Config, tokenizer: Tokenizer, *, seq_len: int, batch_size: int,
                   seed: int, shard_index: int, shard_count: int,
                   held_out: bool = False) -> grain.IterDataset:
    from lm2_jax.data.babilong import make_babilong_dataset  # pylint: disable=g-import-not-at-top
    d, segment_len = cfg.data, cfg.model.segment_len
    return make_babilong_dataset(d.tasks, d.lengths or None, tokenizer, seq_len, batch_size,
                                 seed=seed, shard_index=shard_index, shard_count=shard_count,
                                 haystack=d.haystack, num_threads=d.num_threads,
                                 end_jitter=segment_len if d.random_offset else 0,
                                 max_gap=d.max_gap_segments * segment_len,
                                 questions=d.questions_per_sequence,
                                 hard_questions=d.hard_questions,
                                 interleave=d.interleaved_questions and not held_out,
                                 recall=0 if held_out else d.recall_questions,
                                 recall_tasks=d.recall_tasks,
                                 pack=d.pack_stories and not held_out)

  def episodes(self, cfg: Config, tokenizer: Tokenizer, seed: int):
    """The source of data.episode_rows' long samples (`episode_source`)."""
    from lm2_jax.data.babilong.stream import episode_source  # pylint: disable=g-import-not-at-top
    d = cfg.data
    return episode_source(d.tasks, tokenizer, seed=seed, haystack=d.haystack,
                          end_jitter=cfg.model.segment_len if d.random_offset else 0,
                          hard_questions=d.hard_questions,
                          interleave=d.interleaved_questions, recall=d.recall_questions,
                          recall_tasks=d.recall_tasks)

  def eval_stream(self, cfg: Config, tokenizer: Tokenizer, **where: Any) -> grain.IterDataset:
    # Scored as evaluation asks: one question at the end of each story.
    return self.train_stream(cfg, tokenizer, held_out=True, **where)

  def check_fits(self, cfg: Config, tokenizer: Tokenizer, seq_len: int) -> None:
    from lm2_jax.data.babilong.stream import check_shortest  # pylint: disable=g-import-not-at-top
    d, segment_len = cfg.data, cfg.model.segment_len
    try:   # the stream reads one token past the model's input (the last target)
      check_shortest(d.tasks, d.lengths or None, tokenizer, d.haystack, seq_len + 1,
                     end_jitter=segment_len if d.random_offset else 0,
                     interleave=d.interleaved_questions, recall=d.recall_questions,
                     recall_tasks=d.recall_tasks)
    except ValueError as e:
      raise DataError(str(e)) from None


class _Documents(DataKind):
  """Documents packed into sequences, every token scored; held out: `data.eval_paths`, once."""

  @abc.abstractmethod
  def source(self, d: DataConfig) -> Any:
    """What `make_lm_dataset` reads for training."""

  def train_stream(self, cfg: Config, tokenizer: Tokenizer, **where: Any) -> grain.IterDataset:
    return self._stream(cfg, tokenizer, self.source(cfg.data), repeat=True, **where)

  def eval_stream(self, cfg: Config, tokenizer: Tokenizer, **where: Any) -> grain.IterDataset:
    return self._stream(cfg, tokenizer, list(cfg.data.eval_paths), repeat=False, **where)

  @staticmethod
  def _stream(cfg: Config, tokenizer: Tokenizer, source: Any, *, repeat: bool, seq_len: int,
              batch_size: int, seed: int, shard_index: int,
              shard_count: int) -> grain.IterDataset:
    from lm2_jax.data.pretrain import make_lm_dataset  # pylint: disable=g-import-not-at-top
    d = cfg.data
    return make_lm_dataset(source, tokenizer, seq_len, batch_size, seed=seed % 2**32,
                           shard_index=shard_index, shard_count=shard_count,
                           shuffle=d.shuffle and repeat, num_epochs=None if repeat else 1,
                           text_key=d.text_key, split=d.split,
                           tfds_data_dir=d.tfds_data_dir or None, token_dtype=d.token_dtype,
                           num_threads=d.num_threads)


class _Files(_Documents):
  """Files or folders named in `data.paths`."""

  def validate(self, d: DataConfig, need: Need) -> None:
    need(bool(d.paths), "data.paths", f"data.kind={self.name} needs at least one file or folder")

  def source(self, d: DataConfig) -> Any:
    return list(d.paths)


class Text(_Files):
  """.txt, .jsonl and .parquet documents (docs/data.md, "Pretraining")."""

  name = "text"

  def check(self, d: DataConfig) -> None:
    _check_text("data.paths", d.paths, d.text_key)
    super().check(d)


class Tokens(_Files):
  """Pre-tokenised .bin/.npy shards, the held-out ones too."""

  name = "tokens"

  def check(self, d: DataConfig) -> None:
    _check_shards("data.paths", d.paths)
    _check_shards("data.eval_paths", d.eval_paths)


class Tfds(_Documents):
  """A TFDS dataset prepared as ArrayRecord, read without TensorFlow."""

  name = "tfds"

  def validate(self, d: DataConfig, need: Need) -> None:
    need(bool(d.tfds_name), "data.tfds_name", "data.kind=tfds needs a dataset name or folder")

  def check(self, d: DataConfig) -> None:
    from lm2_jax.data.pretrain import TfdsTextSource  # pylint: disable=g-import-not-at-top
    super().check(d)
    try:
      TfdsTextSource(d.tfds_name, d.split, d.tfds_data_dir or None, d.text_key)
    except DataError as e:
      raise DataError(f"data.tfds_name: {e}") from None

  def source(self, d: DataConfig) -> Any:
    return f"tfds:{d.tfds_name}"


KINDS: dict[str, DataKind] = {k.name: k for k in (Babilong(), Text(), Tokens(), Tfds())}


def of(d: DataConfig) -> DataKind:
  """The kind `d.kind` names; an unknown name is a DataError naming data.kind and the kinds."""
  try:
    return KINDS[d.kind]
  except KeyError:
    raise DataError(f"data.kind: got {d.kind!r}, expected one of {list(KINDS)}") from None
