"""Training and evaluation batches on each host, with the curriculum and exact resume.

Host p of P reads only records p, p + P, ... of the stream (`shard_index`/`shard_count`
of the data pipelines) and yields batches of batch_size / P rows; the loop assembles the
global batch with `jax.make_array_from_process_local_data`.

The curriculum draws a sequence length per step, and each length has its own Grain stream
(created when first needed). `TrainInput` is itself a Grain iterator whose state is the
step it will serve next plus the state of every stream, so Orbax saves it with the
train state (Grain's checkpoint handler, one file per host) and a restored run continues
with exactly the batches the interrupted one would have read.
"""

from __future__ import annotations

import logging
from typing import Any

import grain
import numpy as np

from lm2_jax.config import Config, ConfigError
from lm2_jax.data import kinds as data_kinds
from lm2_jax.data.tokenizers import Tokenizer
from lm2_jax.train.curriculum import Curriculum
from lm2_jax.train.state import carry_phase

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]

# Stream seeds: one per (purpose, segment count), never shared between training and
# evaluation, so the held-out samples are not training draws.
_TRAIN, _EVAL = 0, 1


def stream_seed(seed: int, purpose: int, segments: int) -> int:
  return (seed * 2 + purpose) * 4096 + segments


def score_all_tokens(batch: Batch, pad_id: int) -> Batch:
  """train.loss_mask=all: every token that is not padding is a target (plus the data's own).

  Keeping the data's targets matters where PAD doubles as EOS (Llama-3 tokenizers): the
  EOS closing an answer stays a target.
  """
  mask = np.maximum(batch["loss_mask"], (batch["tokens"] != pad_id).astype(np.float32))
  return {"tokens": batch["tokens"], "loss_mask": mask}


class EpisodeRows:
  """data.episode_rows: the last rows of every global batch each hold one long sample per
  carry cycle, a sequence of it per step.

  Row b's cycle (`carry_phase`) runs from one memory restart to the next; its episode is a
  sample as long as the cycle's sequences together (each step's length is the
  curriculum's), generated when the row first needs it and cut into those sequences, each
  overlapping the next by the one token that is both the last target of a step and the
  first input of the next. Fed to a row whose memory the train step carries, the model
  reads the episode exactly as it would read it in one piece, with the gradient truncated
  at the step boundaries. A pure function of (seed, step, row), so resuming needs no state.
  """

  def __init__(self, cfg: Config, tokenizer: Tokenizer, curriculum: Curriculum, seed: int,
               shard_index: int, local_batch: int):
    t = cfg.train
    self.carry, self.rows = t.memory_carry_steps, t.batch_size
    self.stories = cfg.data.episode_stories
    self.curriculum = curriculum
    first = t.batch_size - cfg.data.episode_rows
    # This host's local rows j whose global row shard_index * local_batch + j is an episode row.
    self.local = {j: shard_index * local_batch + j for j in range(local_batch)
                  if shard_index * local_batch + j >= first}
    self.source = data_kinds.of(cfg.data).episodes(cfg, tokenizer, seed)
    self._held: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}

  def _episode(self, row: int, cycle: int, steps: range) -> tuple[np.ndarray, np.ndarray]:
    held = self._held.get(row)
    if held is None or held[0] != cycle:
      length = sum(self.curriculum.seq_len(s) for s in steps) + 1
      held = (cycle, *self.source.episode((row, cycle), length, self.stories))
      self._held[row] = held
    return held[1], held[2]

  def fill(self, step: int, batch: Batch) -> Batch:
    """`batch` (this host's rows for `step`) with its episode rows replaced."""
    tokens, loss_mask = batch["tokens"].copy(), batch["loss_mask"].copy()
    width = tokens.shape[1]
    for j, row in self.local.items():
      cycle, position = carry_phase(step, row, self.rows, self.carry)
      start = step - position   # the cycle's first step: before 0 for a first cycle cut short
      steps = range(max(start, 0), start + self.carry)
      ids, mask = self._episode(row, cycle, steps)
      offset = sum(self.curriculum.seq_len(s) for s in range(steps.start, step))
      tokens[j], loss_mask[j] = ids[offset:offset + width], mask[offset:offset + width]
    return {"tokens": tokens, "loss_mask": loss_mask}


class TrainInput(grain.DatasetIterator):
  """This host's batches for successive steps: tokens int32[b, T+1], loss_mask float32[b, T+1].

  b = train.batch_size / shard_count; T is the curriculum's draw for the step.
  """

  def __init__(self, cfg: Config, tokenizer: Tokenizer, *, shard_index: int = 0,
               shard_count: int = 1, step: int = 0, reseed: int = 0):
    super().__init__()
    self.cfg, self.tokenizer = cfg, tokenizer
    self.shard_index, self.shard_count = shard_index, shard_count
    self.local_batch = cfg.train.batch_size // shard_count
    self.curriculum = Curriculum(cfg)
    self.step = step
    # A run that cannot restore the data position (another host count) restarts the
    # streams with a different seed rather than repeat the first batches.
    self.reseed = reseed
    self._streams: dict[int, grain.DatasetIterator] = {}
    self.episodes = self._episodes()

  def _episodes(self) -> EpisodeRows | None:
    if not self.cfg.data.episode_rows:
      return None
    # Segment count 0, which no record stream uses.
    seed = stream_seed(self.cfg.train.seed + self.reseed * 7919, _TRAIN, 0)
    return EpisodeRows(self.cfg, self.tokenizer, self.curriculum, seed, self.shard_index,
                       self.local_batch)

  def _stream(self, segments: int) -> grain.DatasetIterator:
    if segments not in self._streams:
      seed = stream_seed(self.cfg.train.seed + self.reseed * 7919, _TRAIN, segments)
      ds = data_kinds.of(self.cfg.data).train_stream(
          self.cfg, self.tokenizer, seq_len=segments * self.cfg.model.segment_len + 1,
          batch_size=self.local_batch, seed=seed, shard_index=self.shard_index,
          shard_count=self.shard_count)
      self._streams[segments] = iter(ds)
    return self._streams[segments]

  def __next__(self) -> Batch:
    batch = next(self._stream(self.curriculum.segments(self.step)))
    batch = {"tokens": np.asarray(batch["tokens"], np.int32),
             "loss_mask": np.asarray(batch["loss_mask"], np.float32)}
    if self.episodes is not None:
      batch = self.episodes.fill(self.step, batch)
    self.step += 1
    if self.cfg.train.loss_mask == "all":
      batch = score_all_tokens(batch, self.tokenizer.pad_id)
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"step": self.step, "reseed": self.reseed,
            "streams": {str(n): it.get_state() for n, it in sorted(self._streams.items())}}

  def set_state(self, state: dict[str, Any]) -> None:
    self.step = int(state["step"])
    self.reseed = int(state.get("reseed", 0))
    self._streams = {}
    self.episodes = self._episodes()
    for n, stream_state in state["streams"].items():
      self._stream(int(n)).set_state(stream_state)


def eval_batches(cfg: Config, tokenizer: Tokenizer, *, shard_index: int = 0,
                 shard_count: int = 1) -> dict[int, list[Batch]]:
  """The held-out set, by segment count: this host's rows of each evaluation batch.

  Kinds with answers (BABILong): train.eval_samples samples per count, from streams whose
  seeds no training stream uses; the loss and accuracy are on the answer. Other kinds: the
  first sequences of data.eval_paths at the longest length, every token scored; none
  without eval_paths (lm2_jax/data/kinds.py).
  """
  t = cfg.train
  kind = data_kinds.of(cfg.data)
  if not kind.evaluates(cfg.data):
    return {}
  local = t.eval_batch_size // shard_count
  count = -(-t.eval_samples // t.eval_batch_size)
  if kind.has_answers:
    counts = t.eval_segments or (Curriculum(cfg).stages[-1],)
  else:
    counts = (t.seq_len // cfg.model.segment_len,)
  out = {}
  for n in counts:
    ds = kind.eval_stream(cfg, tokenizer, seq_len=n * cfg.model.segment_len + 1,
                          batch_size=local, seed=stream_seed(t.seed, _EVAL, n),
                          shard_index=shard_index, shard_count=shard_count)
    batches = []
    for batch in ds:
      batches.append({"tokens": np.asarray(batch["tokens"], np.int32),
                      "loss_mask": np.asarray(batch["loss_mask"], np.float32)})
      if len(batches) == count:
        break
    if not batches:
      raise ConfigError(f"data.eval_paths: fewer than {local} sequences of "
                        f"{n * cfg.model.segment_len + 1} tokens for evaluation")
    out[n] = batches
  return out
