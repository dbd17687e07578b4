"""The segment-count curriculum: how many segments the batch of a given step spans.

Stage s (steps s*stage_steps .. (s+1)*stage_steps - 1) has a ceiling max_segments[s]; each
batch draws its count uniformly from min_segments..ceiling (with `bucket` > 1, uniformly from
min_segments, the ceiling and the multiples of bucket between them, so that fewer shapes
compile). The draw is a pure function of
(seed, step), so every host picks the same length for a step (their batches must agree in
shape) and a resumed run draws what the interrupted one would have. Why random counts: a
fixed count does not extrapolate to longer inputs, random counts up to a growing ceiling do
(docs/training.md, "Curriculum", gives the measurement).

With `segment_lens` each batch is also cut into segments of a length drawn per step in the
same way: the tokens stay, the attention window and the memory's steps move.
"""

from __future__ import annotations

import numpy as np

from lm2_jax.config import Config

_STREAM = 0x5E6  # separates these draws from any other use of the seed
_LENGTHS = 0x5E7  # the segment-length draw's stream


def _choices(least: int, high: int, bucket: int) -> tuple[int, ...]:
  """The counts a batch under ceiling `high` may draw."""
  low = min(least, high)
  if bucket == 1:
    return tuple(range(low, high + 1))
  inner = range((low // bucket + 1) * bucket, high, bucket)
  return tuple(sorted({low, *inner, high}))


def drawable_counts(c, most: int) -> tuple[int, ...]:
  """Every segment count a batch may draw under CurriculumConfig `c` (`most` without stages)."""
  if not c.max_segments:
    return (most,)
  return tuple(sorted({n for high in c.max_segments for n in _choices(c.min_segments, high,
                                                                         c.bucket)}))


class Curriculum:
  """Segments per batch, by step; without stages every batch spans train.seq_len."""

  def __init__(self, cfg: Config):
    t = cfg.train
    self.segment_len = cfg.model.segment_len
    self.most = t.seq_len // self.segment_len
    self.stages = tuple(t.curriculum.max_segments) or (self.most,)
    self.stage_steps = t.curriculum.stage_steps
    self.least = t.curriculum.min_segments if t.curriculum.max_segments else self.most
    self.bucket = t.curriculum.bucket
    self.config = t.curriculum
    self.lengths = tuple(t.curriculum.segment_lens) or (self.segment_len,)
    self.seed = t.seed

  def ceiling(self, step: int) -> int:
    """The largest count the batch of `step` may draw."""
    return self.stages[min(step // self.stage_steps, len(self.stages) - 1)]

  def segments(self, step: int) -> int:
    choices = _choices(self.least, self.ceiling(step), self.bucket)
    if len(choices) == 1:
      return choices[0]
    rng = np.random.default_rng([self.seed, step, _STREAM])
    if self.bucket == 1:   # the draw of runs made before `bucket` existed, unchanged
      return int(rng.integers(choices[0], choices[-1] + 1))
    return choices[int(rng.integers(len(choices)))]

  def seq_len(self, step: int) -> int:
    """Model input tokens of the batch of `step` (the data adds one for the targets)."""
    return self.segments(step) * self.segment_len

  def all_segments(self) -> tuple[int, ...]:
    """Every count some step may draw (in segments of model.segment_len)."""
    return drawable_counts(self.config, self.most)

  def cut(self, step: int) -> int:
    """The segment length the batch of `step` is cut into (train.curriculum.segment_lens)."""
    if len(self.lengths) == 1:
      return self.lengths[0]
    rng = np.random.default_rng([self.seed, step, _LENGTHS])
    return self.lengths[int(rng.integers(len(self.lengths)))]
