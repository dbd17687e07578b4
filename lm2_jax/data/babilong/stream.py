"""Grain sources of BABILong: samples by index, and the endless training stream of batches.

Both are random-access over an index range, so a host's shard is a slice of it and resuming is
restarting at an index.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Sequence

import numpy as np

from lm2_jax.data import babi
from lm2_jax.data.babilong.lengths import PROMPT_RESERVE, input_budget, length_name, parse_length
from lm2_jax.data.babilong.prompts import COMPACT_TEMPLATE, format_training_example
from lm2_jax.data.babilong.samples import (_build, _count, _rng, answer_not_in_last_fact,
                                          make_sample, recall_pieces)
from lm2_jax.data.haystack import Haystack, load_haystack
from lm2_jax.data.tokenizers import ByteTokenizer, Tokenizer, load_tokenizer

log = logging.getLogger(__name__)


class BabilongSource:
  """A Grain random-access source of BABILong samples over an (almost) endless index range.

  Record i draws its task and length from (seed, i) and is ``make_sample(task, length, i,
  seed, ...)`` plus ``"task"`` and ``"length"`` keys. Any slice of the index range (e.g. one
  host's shard) is a valid stream, and resuming is restarting at an index.
  """

  def __init__(self, tasks: Sequence[str] = babi.TASKS,
               lengths: Sequence[str | int] = ("0k",), *,
               seed: int = 0, tokenizer: Tokenizer | str | None = None,
               haystack: Haystack | str | None = None, reserve_tokens: int = PROMPT_RESERVE,
               split: str = "test", num_records: int = 2**31 - 1):
    self.tasks = tuple(babi.check_task(t) for t in tasks)
    self.lengths = tuple(length_name(parse_length(x)) for x in lengths)
    self.seed, self.split, self.reserve_tokens = seed, split, reserve_tokens
    self.tokenizer = load_tokenizer(tokenizer or "byte")
    self.haystack = load_haystack(haystack)
    self.num_records = num_records
    for length in self.lengths:
      input_budget(length, reserve_tokens)  # fail now on a length that leaves no room

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, i: int) -> dict:
    i = int(i)
    pick = _rng(self.seed, self.split, "pick", i)
    task, length = pick.choice(self.tasks), pick.choice(self.lengths)
    sample = make_sample(task, length, i, self.seed, self.tokenizer, self.haystack,
                         reserve_tokens=self.reserve_tokens, split=self.split)
    return {**sample, "task": task, "length": length}

  def __repr__(self) -> str:
    return (f"BabilongSource(tasks={self.tasks}, lengths={self.lengths}, seed={self.seed}, "
            f"tokenizer={self.tokenizer!r}, haystack={self.haystack.name!r})")


_truncated = 0


def _encode_answered(text: str, pieces, tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
  """``text`` encoded piece by piece around the answers of the answered questions ``pieces``
  it holds in order ("Question: ... Answer: kitchen."), and the indices of those answers' ids.
  """
  ids: list[int] = []
  scored: list[int] = []
  done = 0
  for piece in pieces:
    end = text.index(piece, done) + len(piece) - 1
    start = end - len(piece[:-1].rsplit(" ", 1)[1]) - 1   # the answer with its leading space
    ids += tokenizer.encode(text[done:start])
    answer = tokenizer.encode(text[start:end])
    scored += range(len(ids), len(ids) + len(answer))
    ids += answer
    done = end
  return ids + tokenizer.encode(text[done:]), scored


def _example_ids(sample: dict, tokenizer: Tokenizer) -> tuple[list[int], int, list[int]]:
  """A sample's ids in the compact template, where its answer starts, and its targets.

  The ids are the prompt, the answer closed by EOS, then a training sample's recall
  questions (``"recall"``) after the EOS. The targets (indices into the ids) are the answer
  and its EOS, the answers of an interleaved sample's earlier questions (``"answered"``) and
  those of its recall questions.
  """
  prompt, answer = format_training_example(sample)
  prompt_ids, scored = _encode_answered(prompt, sample.get("answered", ()), tokenizer)
  answer_ids = tokenizer.encode(answer) + [tokenizer.eos_id]
  ids = prompt_ids + answer_ids
  scored += range(len(prompt_ids), len(ids))
  if sample.get("recall"):
    tail, tail_scored = _encode_answered(" " + " ".join(sample["recall"]), sample["recall"],
                                         tokenizer)
    scored += [len(ids) + i for i in tail_scored]
    ids += tail
  return ids, len(prompt_ids), scored


def sample_to_arrays(sample: dict, tokenizer: Tokenizer, seq_len: int, *, add_bos: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
  """One sample as ``tokens int32[seq_len]`` and ``loss_mask float32[seq_len]``.

  Tokens are [BOS] + prompt + answer + EOS in the compact template (then a training sample's
  recall questions), right-padded with PAD. ``loss_mask[t]`` is 1 where ``tokens[t]`` is a
  target, i.e. on the answer tokens and their EOS (and on the answers of an interleaved
  sample's earlier questions and of its recall questions): the training step predicts
  ``tokens[:, 1:]`` from ``tokens[:, :-1]`` and weights the loss with ``loss_mask[:, 1:]``.
  A sequence longer than ``seq_len`` loses the oldest prompt tokens (the start of the
  context; it may cut facts, so such cuts are counted and logged — samples built by
  ``make_babilong_dataset`` are sized to fit and are never cut).
  """
  global _truncated
  ids, answer_start, scored = _example_ids(sample, tokenizer)
  head = [tokenizer.bos_id] if add_bos else []
  over = len(head) + len(ids) - seq_len
  if over > 0:
    if over >= answer_start:
      raise ValueError(f"seq_len={seq_len} cannot hold the question and answer of this sample")
    ids = ids[over:]
    scored = [i - over for i in scored if i >= over]
    _truncated += 1
    log.warning("BABILong sample longer than seq_len=%d by %d tokens: cut from the left "
                "(%d samples cut so far)", seq_len, over, _truncated)
  ids = head + ids
  tokens = np.full((seq_len,), tokenizer.pad_id, np.int32)
  tokens[:len(ids)] = ids
  loss_mask = np.zeros((seq_len,), np.float32)
  loss_mask[[len(head) + i for i in scored]] = 1.0
  return tokens, loss_mask


class _TrainingSource:
  """Record i: a training sample sized to fit its length, as (tokens, loss_mask) arrays.

  ``end_jitter`` > 0 shortens each sample by a random 0..end_jitter-1 tokens (right padding
  follows), so the question ends at any offset inside a segment and answers cross segment
  boundaries, as they do in evaluation. ``max_gap`` > 0 puts a log-uniform amount of
  background, 0..max_gap tokens, between the last fact and the question, so training asks
  for every distance up to it rather than mostly short ones. ``questions`` > 1 fills a
  record with 1..questions stories one after the other, each closed by its question and
  answer (all scored): one long sequence then asks many questions at many distances, and
  the memory must also let a later story overwrite an earlier one; a record holds at most
  one story per three short stories' tokens, so the short records of a curriculum hold
  fewer. A fraction
  ``hard_questions`` of the stories is redrawn until the fact just before the question does
  not contain the answer: on those, "the last room mentioned" is wrong. With ``interleave``
  each story keeps its earlier questions where it asks them, answered and scored; with
  ``recall`` > 0 the answer of each story of ``recall_tasks`` is followed by up to that many
  other questions its facts answer (for qa1, about its other actors), answered and scored
  (``recall_pieces``). With ``pack`` a 0k record (the facts alone) holds stories back to
  back while they fit (``_packed``): a 256-token row of the five-task BPE then holds 2.6
  qa1 stories on average instead of one and two thirds padding.
  """

  def __init__(self, tasks, lengths, tokenizer, haystack, seq_len, seed, add_bos,
               end_jitter=0, max_gap=0, questions=1, hard_questions=0.0, interleave=False,
               recall=0, recall_tasks=("qa1",), pack=False):
    self.tasks = tuple(babi.check_task(t) for t in tasks)
    self.lengths = tuple(min(parse_length(x), seq_len) for x in lengths)
    self.tokenizer, self.haystack = tokenizer, haystack
    self.seq_len, self.seed, self.add_bos = seq_len, seed, add_bos
    self.end_jitter, self.max_gap, self.questions = end_jitter, max_gap, questions
    self.hard_questions, self.interleave, self.recall = hard_questions, interleave, recall
    self.recall_tasks, self.pack = tuple(recall_tasks), pack
    # Boundary effects of subword tokenizers can add a token where prompt parts meet.
    self.slack = 0 if isinstance(tokenizer, ByteTokenizer) else 3
    self._short: dict[str, int] = {}

  def _overhead(self, story: babi.BabiSample) -> int:
    """Tokens of everything but the input: question and answer in the template, BOS, EOS."""
    rest = COMPACT_TEMPLATE.format(input="", question=story.question)
    cost = _count(self.tokenizer, [rest, " " + story.answer])
    return sum(cost) + 1 + int(self.add_bos) + self.slack

  def __len__(self) -> int:
    return 2**31 - 1

  def short_story(self, task: str) -> int:
    """The tokens of the shortest of 32 fixed draws of ``task``'s samples (a story asked at its
    first question, with template and answer, and its recall questions when ``task`` gets
    them); measured once."""
    if task not in self._short:
      costs = []
      for k in range(32):
        story = babi.generate_story(task, _rng("short", task, k)).sample(0)
        cost = sum(_count(self.tokenizer, [" " + f for f in story.facts])) + self._overhead(story)
        if self.recall and task in self.recall_tasks:
          recalled = recall_pieces(story, self.recall, _rng("short", "recall", task, k))
          cost += _count(self.tokenizer, [" " + " ".join(recalled)])[0] if recalled else 0
        costs.append(cost)
      self._short[task] = min(costs)
    return self._short[task]

  def _sample(self, pick: random.Random, index, budget: int, fill: bool,
              spread: bool = False) -> dict:
    """One story in ``budget`` tokens; ``spread``: its facts anywhere, as in evaluation
    (no ``max_gap`` draw)."""
    gap = None
    if self.max_gap and not spread:
      gap = int(math.exp(pick.uniform(0.0, math.log(self.max_gap + 1)))) - 1
    hard = self.hard_questions > 0 and pick.random() < self.hard_questions
    return _build(pick.choice(self.tasks), index, self.seed, self.tokenizer, self.haystack,
                  budget=budget, fill=fill, split="train", overhead=self._overhead, gap=gap,
                  accept=answer_not_in_last_fact if hard else None, interleave=self.interleave,
                  recall=self.recall, recall_tasks=self.recall_tasks)

  def __getitem__(self, i: int) -> dict:
    i = int(i)
    pick = _rng(self.seed, "train", "pick", i)
    length = pick.choice(self.lengths)
    budget = length or self.seq_len
    if self.end_jitter:
      budget -= pick.randrange(min(self.end_jitter, budget // 2))
    if not length and self.pack:
      return self._arrays(*self._packed(pick, i, budget))
    count = pick.randint(1, self.questions) if length and self.questions > 1 else 1
    if count > 1:
      # A share is at least a third of budget / count and must hold some story: the short
      # records of a curriculum hold fewer stories than its long ones.
      short = max(self.short_story(t) for t in self.tasks)
      count = max(1, min(count, budget // (3 * short)))
    if count == 1:
      sample = self._sample(pick, i, budget, fill=length > 0)
      tokens, loss_mask = sample_to_arrays(sample, self.tokenizer, self.seq_len,
                                           add_bos=self.add_bos)
      return {"tokens": tokens, "loss_mask": loss_mask}
    return self._arrays(*self._stories(pick, i, budget, count))

  def _arrays(self, ids: list[int], targets: list[int]) -> dict:
    """A record's ids and scored indices as ``tokens`` and ``loss_mask``, PAD after the ids."""
    tokens = np.full((self.seq_len,), self.tokenizer.pad_id, np.int32)
    tokens[:len(ids)] = ids
    loss_mask = np.zeros((self.seq_len,), np.float32)
    loss_mask[targets] = 1.0
    return {"tokens": tokens, "loss_mask": loss_mask}

  def _packed(self, pick: random.Random, key, budget: int) -> tuple[list[int], list[int]]:
    """0k stories back to back in ``budget`` tokens (BOS included), their ids and the
    indices of their scored answers. The first is redrawn until it fits, as an unpacked
    record's story is; each later one is taken as drawn and the record ends at the first
    that does not fit what is left: no redraws, so the later stories are not picked for
    being short."""
    ids: list[int] = [self.tokenizer.bos_id] if self.add_bos else []
    targets: list[int] = []
    story = self._sample(pick, (key, 0), budget, fill=False)
    for j in itertools.count(1):
      story_ids, _, scored = _example_ids(story, self.tokenizer)
      if len(ids) + len(story_ids) > (budget if targets else self.seq_len):
        break
      targets += [len(ids) + k for k in scored]
      ids += story_ids
      story = self._sample(pick, (key, j), None, fill=False, spread=True)
    return ids, targets

  def _stories(self, pick: random.Random, key, budget: int, count: int,
               spread: bool = False) -> tuple[list[int], list[int]]:
    """``count`` stories of 0.5x to 1.5x the mean share, together filling ``budget`` tokens
    (BOS included): their ids and the indices of their scored answers."""
    weights = [pick.uniform(0.5, 1.5) for _ in range(count)]
    shares = [int(budget * w / sum(weights)) for w in weights]
    ids: list[int] = [self.tokenizer.bos_id] if self.add_bos else []
    targets: list[int] = []
    for j, share in enumerate(shares):
      story_ids, _, scored = _example_ids(self._sample(pick, (key, j), share, True, spread),
                                          self.tokenizer)
      targets += [len(ids) + k for k in scored]
      ids += story_ids
    return ids, targets

  def episode(self, key, length: int, stories: int) -> tuple[np.ndarray, np.ndarray]:
    """One long training sample, BOS first: (tokens int32[length], loss_mask
    float32[length]), PAD after the last story.

    It holds 1..``stories`` stories (fewer where they would not fit) whose facts lie
    anywhere in their share, as in evaluation; the end jitters as records' do. A pure
    function of (seed, key). Training feeds it a sequence at a time to a row whose memory
    is carried (train/inputs.py).
    """
    pick = _rng(self.seed, "train", "episode", key)
    budget = length
    if self.end_jitter:
      budget -= pick.randrange(min(self.end_jitter, budget // 2))
    short = max(self.short_story(t) for t in self.tasks)
    count = max(1, min(pick.randint(1, stories), budget // (3 * short)))
    ids, targets = self._stories(pick, ("episode", key), budget, count, spread=True)
    tokens = np.full((length,), self.tokenizer.pad_id, np.int32)
    tokens[:len(ids)] = ids
    loss_mask = np.zeros((length,), np.float32)
    loss_mask[targets] = 1.0
    return tokens, loss_mask


def check_shortest(tasks: Sequence[str], lengths: Sequence[str | int] | None,
                   tokenizer: Tokenizer, haystack: Haystack | str | None, seq_len: int, *,
                   add_bos: bool = True, end_jitter: int = 0, interleave: bool = False,
                   recall: int = 0, recall_tasks: Sequence[str] = ("qa1",)) -> None:
  """Raise ValueError unless every task has a story that fits the stream's shortest record.

  The shortest record is the shortest length (capped at ``seq_len``) less the largest
  ``end_jitter`` cut; the training stream would otherwise fail on its first such record,
  after the run has started.
  """
  source = _TrainingSource(tasks, lengths or (seq_len,), tokenizer, load_haystack(haystack),
                           seq_len, 0, add_bos, end_jitter, interleave=interleave,
                           recall=recall, recall_tasks=recall_tasks)
  for length in sorted(set(source.lengths)):
    budget = length or seq_len
    cut = min(end_jitter, budget // 2) - 1 if end_jitter else 0
    for task in source.tasks:
      try:
        _build(task, 0, 0, tokenizer, source.haystack, budget=budget - cut, fill=length > 0,
               split="train", overhead=source._overhead, interleave=interleave,
               recall=recall, recall_tasks=recall_tasks)
      except ValueError:
        raise ValueError(
            f"{task}: no story fits a record of {budget} tokens"
            + (f" cut by up to {cut} for the random offset" if cut else "")) from None


def episode_source(tasks: Sequence[str], tokenizer: Tokenizer | str, *, seed: int,
                   haystack: Haystack | str | None = None, add_bos: bool = True,
                   end_jitter: int = 0, hard_questions: float = 0.0,
                   interleave: bool = False, recall: int = 0,
                   recall_tasks: Sequence[str] = ("qa1",)) -> _TrainingSource:
  """The source of training episodes: ``.episode(key, length, stories)`` (arguments as
  ``make_babilong_dataset``'s; an episode's facts lie anywhere in it, so no ``max_gap``)."""
  tokenizer = load_tokenizer(tokenizer)
  return _TrainingSource(tasks, (0,), tokenizer, load_haystack(haystack), 1, seed, add_bos,
                         end_jitter, 0, 1, hard_questions, interleave, recall, recall_tasks)


def make_babilong_dataset(tasks: Sequence[str], lengths: Sequence[str | int] | None,
                          tokenizer: Tokenizer | str, seq_len: int, batch_size: int, *,
                          seed: int = 0, shard_index: int = 0, shard_count: int = 1,
                          haystack: Haystack | str | None = None, add_bos: bool = True,
                          num_threads: int = 0, end_jitter: int = 0, max_gap: int = 0,
                          questions: int = 1, hard_questions: float = 0.0,
                          interleave: bool = False, recall: int = 0,
                          recall_tasks: Sequence[str] = ("qa1",), pack: bool = False):
  """An endless Grain stream of BABILong training batches in the compact template.

  Each batch is ``{"tokens": int32[batch_size, seq_len], "loss_mask": float32[batch_size,
  seq_len]}`` with ``loss_mask`` 1 only on the answer tokens and their EOS (conventions in
  ``sample_to_arrays``). Record i picks its task from ``tasks`` and a total length from
  ``lengths`` (token counts such as 512 or "1k", capped at ``seq_len``; 0 or "0k" means the
  facts alone; ``None`` means ``[seq_len]``) and fills that many tokens — prompt, answer and
  special tokens included — so nothing is ever cut. ``end_jitter`` and ``max_gap`` vary where
  the question ends and how far the last fact lies before it, ``questions`` how many stories
  one sequence may hold, ``hard_questions`` how often the fact before the question must not
  hold the answer, ``interleave`` whether a story's earlier questions stay in it, answered and
  scored, ``recall`` how many other questions its facts answer follow the answer of each
  story of ``recall_tasks``, ``pack`` whether 0k records hold several stories back to back
  (``_TrainingSource``). Building
  the dataset costs nothing, so a curriculum can make one per sequence length. Host
  ``shard_index`` of ``shard_count`` reads records shard_index, shard_index + shard_count,
  ...; ``iterator.get_state()`` / ``set_state()`` resume exactly. Draws use the "train"
  split, so they differ from evaluation samples made with the same seed.
  """
  import grain  # pylint: disable=g-import-not-at-top

  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
  tokenizer = load_tokenizer(tokenizer)
  source = _TrainingSource(tasks, lengths or (seq_len,), tokenizer, load_haystack(haystack),
                           seq_len, seed, add_bos, end_jitter, max_gap, questions,
                           hard_questions, interleave, recall, recall_tasks, pack)
  ds = grain.MapDataset.source(source)[shard_index::shard_count]
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(2 * batch_size, 1))
  return ds.to_iter_dataset(read).batch(batch_size, drop_remainder=True)
