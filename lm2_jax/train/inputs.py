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
    self.step += 1
    batch = {"tokens": np.asarray(batch["tokens"], np.int32),
             "loss_mask": np.asarray(batch["loss_mask"], np.float32)}
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
