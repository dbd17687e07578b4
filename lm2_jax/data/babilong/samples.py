"""BABILong sample assembly: a bAbI story's facts hidden among background sentences.

``make_sample(task, length, index, seed, tokenizer, haystack)`` is a pure function of its
arguments: sample i never requires samples 0..i-1, which lets a Grain source over an index
range serve an endless stream and resume by index. The story of sample i depends on (seed,
split, task, index) only, so sample i at 1k and at 128k hides the same facts (unless the story
did not fit the smaller budget and was redrawn, as the published data drops such stories).
Facts are inserted, in order, before background sentences at random gaps.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator, Sequence

from lm2_jax.data import babi
from lm2_jax.data.babilong.lengths import PROMPT_RESERVE, input_budget
from lm2_jax.data.babilong.prompts import answered_question
from lm2_jax.data.haystack import Haystack, load_haystack
from lm2_jax.data.tokenizers import ByteTokenizer, Tokenizer, load_tokenizer

_MAX_ATTEMPTS = 2000
_LOOKAHEAD = 16  # sentences tried for the last gap before one is cut short


def _rng(*key) -> random.Random:
  """A generator seeded by a stable hash of ``key`` (Python's hash() varies between runs)."""
  digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
  return random.Random(int.from_bytes(digest, "little"))


def _count(tokenizer: Tokenizer, texts: Sequence[str]) -> list[int]:
  return tokenizer.count_tokens(list(texts))


def _trim_to(sentence: str, room: int, tokenizer: Tokenizer) -> tuple[str, int]:
  """The longest word prefix of ``sentence``, closed with ".", costing at most ``room`` tokens."""
  words = sentence.rstrip(".!?").split(" ")
  lo, hi, best = 1, len(words) - 1, ("", 0)
  while lo <= hi:  # costs grow with the prefix, so bisect on the number of words
    mid = (lo + hi) // 2
    part = " ".join(words[:mid]).rstrip(",;:") + "."
    cost = _count(tokenizer, [" " + part])[0]
    if cost <= room:
      best, lo = (part, cost), mid + 1
    else:
      hi = mid - 1
  return best


def _assemble(facts: Sequence[str], budget: int, tokenizer: Tokenizer,
              stream: Iterator[str], rng: random.Random, gap: int | None = None) -> str | None:
  """Facts in order among background sentences, about ``budget`` tokens; None if they don't fit.

  Each piece is costed as " " + piece (the first piece's space is free), which is exact for
  the byte tokenizer; for subword tokenizers the joined text is re-counted and the tail
  trimmed until it fits. With ``gap``, the last fact is followed by about ``gap`` tokens of
  background (at most what the budget leaves) and the other facts lie anywhere before it.
  """
  fact_cost = sum(_count(tokenizer, [" " + f for f in facts]))
  room = budget + 1 - fact_cost
  if room < 0:
    return None
  background: list[str] = []
  costs_kept: list[int] = []
  too_long = 0
  while room > 0:
    batch = [next(stream) for _ in range(64)]
    costs = _count(tokenizer, [" " + s for s in batch])
    for sentence, cost in zip(batch, costs):
      if cost <= room:
        background.append(sentence)
        costs_kept.append(cost)
        room -= cost
        continue
      # Near the end, look a little further for a sentence that fits, then cut one short.
      too_long += 1
      if too_long == _LOOKAHEAD:
        part, cost = _trim_to(sentence, room, tokenizer)
        if part:
          background.append(part)
          costs_kept.append(cost)
        room = 0
        break

  if gap is None:
    gaps = sorted(rng.randrange(len(background) + 1) for _ in facts)
  else:  # the last fact goes before background[last]; the tail after it costs >= gap
    last, tail = len(background), 0
    while last > 0 and tail < gap:
      last -= 1
      tail += costs_kept[last]
    gaps = sorted(rng.randrange(last + 1) for _ in facts[:-1]) + [last]
  pieces: list[str] = []
  fact_iter = iter(zip(gaps, facts))
  nxt = next(fact_iter, None)
  for i in range(len(background) + 1):
    while nxt is not None and nxt[0] == i:
      pieces.append(nxt[1])
      nxt = next(fact_iter, None)
    if i < len(background):
      pieces.append(background[i])
  text = " ".join(pieces)
  if isinstance(tokenizer, ByteTokenizer):
    return text  # the costs above are exact

  fact_slots = {gap + i for i, gap in enumerate(gaps)}  # fact i sits after i earlier facts
  is_fact = [i in fact_slots for i in range(len(pieces))]
  n = len(tokenizer.encode(text))
  while n > budget:  # trim the last background piece by the overshoot, in words
    last = max((i for i in range(len(pieces)) if not is_fact[i]), default=None)
    if last is None:
      return None
    words = pieces[last].split(" ")
    keep = len(words) - (n - budget) - 1
    if keep > 0:
      pieces[last] = " ".join(words[:keep]).rstrip(".!?,;:") + "."
    else:
      del pieces[last], is_fact[last]
    text = " ".join(pieces)
    n = len(tokenizer.encode(text))
  return text


def _build(task: str, index: int, seed: int, tokenizer: Tokenizer, haystack: Haystack, *,
           budget: int | None, fill: bool, split: str, overhead=None,
           stats: dict | None = None, gap: int | None = None,
           accept: Callable[[babi.BabiSample], bool] | None = None,
           interleave: bool = False, recall: int = 0,
           recall_tasks: Sequence[str] = ("qa1",)) -> dict:
  """The sample for (task, index): a story that fits ``budget``, padded with background.

  Stories whose facts do not fit are redrawn (as the published data drops them), and so are
  stories ``accept`` (when given) refuses; ``stats``, when given, counts the redraws under
  "redrawn". With ``interleave`` the story's earlier questions stay in the text where the
  story asks them, each followed by its answer (``answered_question``), and the sample's
  ``"answered"`` lists those pieces in order (the training stream scores their answers).
  With ``recall``, the ``"recall"`` of a sample of one of ``recall_tasks`` asks up to that
  many other questions of its kind that its facts answer (where the story's other actors
  are, for qa1), in a random order, each piece answered (``recall_pieces``); they count
  against the budget, as the question does. Other tasks' samples get none.
  """
  for attempt in range(_MAX_ATTEMPTS):
    if stats is not None and attempt:
      stats["redrawn"] = stats.get("redrawn", 0) + 1
    rng = _rng(seed, split, "story", task, index, attempt)
    whole = babi.generate_story(task, rng)   # the draws of babi.generate_sample
    asked = rng.randrange(len(whole.questions))
    story = whole.sample(asked)
    if accept is not None and not accept(story):
      continue
    answered, pieces = [], list(story.facts)
    if interleave:
      answered = [answered_question(q.text, q.answer) for q in whole.questions[:asked]]
      pieces = _interleave(story.facts, whole.questions[:asked], answered)
    recalled = recall_pieces(story, recall, _rng(seed, split, "recall", task, index, attempt)
                             ) if recall and task in recall_tasks else ()
    limit = budget
    if limit is not None and overhead is not None:
      limit -= overhead(story)
    if limit is not None and recalled:
      limit -= _count(tokenizer, [" " + " ".join(recalled)])[0]
    if gap is not None and budget is None:  # the facts, then `gap` tokens of background
      # A text that opens with a fact has no space before it, which costs one more token in
      # some BPEs ("The" against " The"): the facts' cost is the larger of the two counts.
      facts_cost = max(sum(_count(tokenizer, [" " + f for f in pieces])),
                       _count(tokenizer, [" ".join(pieces)])[0])
      limit, fill = facts_cost + gap, True
    if not fill or limit is None:
      text = " ".join(pieces)
      if limit is not None and _count(tokenizer, [text])[0] > limit:
        continue
    else:
      rng = _rng(seed, split, "haystack", task, index, limit, attempt)
      text = _assemble(pieces, limit, tokenizer, haystack.sentences(rng), rng, gap)
      if text is None:
        continue
    sample = {"input": text, "question": story.question, "target": story.answer}
    if interleave:
      sample["answered"] = tuple(answered)
    if recalled:
      sample["recall"] = recalled
    return sample
  room = f"{budget} tokens" if gap is None else f"its facts and a gap of {gap} tokens"
  raise ValueError(f"{task}: no story fits in {room} after {_MAX_ATTEMPTS} draws; "
                   "use a longer length")


def recall_pieces(story: babi.BabiSample, count: int, rng: random.Random) -> tuple[str, ...]:
  """Up to ``count`` of the story's other questions (``BabiSample.others``: for qa1 "where
  is X?" about its other actors, for qa2 where its other objects are, for qa3 where they
  were before, for qa4 the other seven readings of its two relations, for qa5 who gave and
  who received each object), each with its answer, in a random order.

  Asked after the story's own answer, they are right only for whoever is asked: "the last
  room mentioned" answers at most one of them, and with short attention segments the facts
  they need reach them only through the memory (docs/results.md, "Asking every actor").
  """
  if count <= 0:
    return ()
  others = list(story.others)
  rng.shuffle(others)
  return tuple(answered_question(q, a) for q, a in others[:count])


def _interleave(facts: Sequence[str], questions: Sequence[babi.Question],
                answered: Sequence[str]) -> list[str]:
  """The facts with each answered question put after the facts asked before it."""
  pieces, k = [], 0
  for i in range(len(facts) + 1):
    while k < len(questions) and questions[k].position <= i:
      pieces.append(answered[k])
      k += 1
    if i < len(facts):
      pieces.append(facts[i])
  return pieces


def answer_not_in_last_fact(story: babi.BabiSample) -> bool:
  """True when the fact just before the question does not contain the answer's words."""
  last = set(re.findall(r"[a-z]+", story.facts[-1].lower())) if story.facts else set()
  return not set(re.findall(r"[a-z]+", story.answer.lower())) <= last


def make_sample(task: str, length: str | int, index: int, seed: int = 0,
                tokenizer: Tokenizer | str | None = None, haystack: Haystack | str | None = None,
                *, reserve_tokens: int = PROMPT_RESERVE, split: str = "test",
                stats: dict | None = None, gap: int | None = None) -> dict:
  """Sample ``index`` of ``task`` at a nominal ``length``: ``{"input", "question", "target"}``.

  A pure function of its arguments (``split`` separates training draws from evaluation draws
  made with the same seed). ``tokenizer`` counts the length (default: bytes); ``haystack``
  gives the background (default: the built-in generator). ``stats`` (a dict) counts the
  stories redrawn because their facts did not fit. With ``length`` "0k" and ``gap`` tokens,
  the facts are followed by that much background before the question (the inserted-gap
  probe of the memory).
  """
  tokenizer = load_tokenizer(tokenizer or "byte")
  haystack = load_haystack(haystack)
  budget = input_budget(length, reserve_tokens)
  if gap is not None and budget is not None:
    raise ValueError("make_sample: gap= needs length 0k (the facts, then the gap)")
  return _build(babi.check_task(task), int(index), int(seed), tokenizer, haystack,
                budget=budget, fill=budget is not None, split=split, stats=stats, gap=gap)
