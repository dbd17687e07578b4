"""BABILong: bAbI facts hidden in long background text, its prompts, its scoring rule, its files.

Lengths. "16k" means 16,000 tokens and "1M" 1,000,000, as in the published benchmark's
generation script (``message_lengths = [0, 1000, 2000, 4000, ...]``). The published data keeps
300 tokens free for the prompt, so a "4k" sample has at most 4,000 - 300 = 3,700 input tokens,
counted with the tokenizer the samples are made for. "0k" is the facts alone, joined by spaces.

Samples. ``make_sample(task, length, index, seed, tokenizer, haystack)`` is a pure function of
its arguments: sample i never requires samples 0..i-1, which lets a Grain source over an index
range serve an endless training stream and resume by index. The story of sample i depends on
(seed, split, task, index) only, so sample i at 1k and at 128k hides the same facts (unless the
story did not fit the smaller budget and was redrawn, as the published data drops such
stories). Facts are inserted, in order, before background sentences at random gaps.

Scoring. ``compare_answers`` reproduces the published rule exactly (see its docstring); the
``"word"`` rule matches whole words instead of substrings.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import math
import os
import random
import re
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

from lm2_jax.data import babi
from lm2_jax.data.errors import DataError
from lm2_jax.data.haystack import Haystack, load_haystack
from lm2_jax.data.tokenizers import ByteTokenizer, Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

TASKS = babi.TASKS
LENGTHS = ("0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k")
PROMPT_RESERVE = 300  # tokens the published data leaves free for the prompt
_MAX_ATTEMPTS = 2000
_LOOKAHEAD = 16  # sentences tried for the last gap before one is cut short

_ROOMS = frozenset(babi.ROOMS)
TASK_LABELS: dict[str, frozenset[str]] = {
    "qa1": _ROOMS, "qa2": _ROOMS, "qa3": _ROOMS, "qa4": _ROOMS,
    "qa5": frozenset({"Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"}),
    "qa6": frozenset({"no", "yes"}),
    "qa7": frozenset({"none", "one", "two", "three"}),
    "qa8": frozenset({"apple", "football", "milk", "nothing"}),
    "qa9": frozenset({"no", "yes"}),
    "qa10": frozenset({"maybe", "no", "yes"}),
}


# --- lengths ----------------------------------------------------------------------------------
def parse_length(length: str | int) -> int:
  """Nominal length in tokens: ``"16k"`` -> 16000, ``"1M"`` -> 1000000, ``"0k"`` -> 0."""
  if isinstance(length, (int, np.integer)):
    if length < 0:
      raise ValueError(f"length must be >= 0, got {length}")
    return int(length)
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", str(length))
  if not m:
    raise ValueError(f"bad length {length!r}: expected a token count such as 0k, 4k, 128k, 1M "
                     "or 2500")
  scale = {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()]
  return int(round(float(m.group(1)) * scale))


def length_name(tokens: int) -> str:
  """The published name of a length: 16000 -> "16k", 1000000 -> "1M", 0 -> "0k"."""
  if tokens == 0:
    return "0k"
  if tokens % 1_000_000 == 0:
    return f"{tokens // 1_000_000}M"
  if tokens % 1000 == 0:
    return f"{tokens // 1000}k"
  return str(tokens)


def input_budget(length: str | int, reserve_tokens: int = PROMPT_RESERVE) -> int | None:
  """Most input tokens a sample of this nominal length may have; None for 0k (facts only)."""
  nominal = parse_length(length)
  if nominal == 0:
    return None
  if nominal <= reserve_tokens:
    raise ValueError(f"length {length!r} leaves no room for input after reserving "
                     f"{reserve_tokens} tokens for the prompt")
  return nominal - reserve_tokens


# --- sample generation -----------------------------------------------------------------------
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
           stats: dict | None = None, gap: int | None = None) -> dict:
  """The sample for (task, index): a story that fits ``budget``, padded with background.

  Stories whose facts do not fit are redrawn (as the published data drops them); ``stats``,
  when given, counts the redraws under "redrawn".
  """
  for attempt in range(_MAX_ATTEMPTS):
    if stats is not None and attempt:
      stats["redrawn"] = stats.get("redrawn", 0) + 1
    story = babi.generate_sample(task, _rng(seed, split, "story", task, index, attempt))
    limit = budget
    if limit is not None and overhead is not None:
      limit -= overhead(story)
    if gap is not None and budget is None:  # the facts, then `gap` tokens of background
      limit, fill = sum(_count(tokenizer, [" " + f for f in story.facts])) + gap, True
    if not fill or limit is None:
      text = " ".join(story.facts)
      if limit is not None and _count(tokenizer, [text])[0] > limit:
        continue
    else:
      rng = _rng(seed, split, "haystack", task, index, limit, attempt)
      text = _assemble(story.facts, limit, tokenizer, haystack.sentences(rng), rng, gap)
      if text is None:
        continue
    return {"input": text, "question": story.question, "target": story.answer}
  raise ValueError(f"{task}: no story fits in {budget} tokens after {_MAX_ATTEMPTS} draws; "
                   "use a longer length")


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


class BabilongSource:
  """A Grain random-access source of BABILong samples over an (almost) endless index range.

  Record i draws its task and length from (seed, i) and is ``make_sample(task, length, i,
  seed, ...)`` plus ``"task"`` and ``"length"`` keys. Any slice of the index range (e.g. one
  host's shard) is a valid stream, and resuming is restarting at an index.
  """

  def __init__(self, tasks: Sequence[str] = TASKS, lengths: Sequence[str | int] = ("0k",), *,
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


# --- scoring -----------------------------------------------------------------------------------
def _official_cut(output: str) -> str:
  output = output.lower()
  output = output.split(".")[0]
  output = output.split("<context>")[0]
  output = output.split("<example>")[0]
  # The published code then also cuts at "Question", but after lower-casing: it never matches,
  # so it is left out here to the same effect.
  return output


def compare_answers(target: str, output: str, question: str, task: str,
                    rule: str = "official") -> bool:
  """Whether a model's ``output`` answers a BABILong question correctly.

  ``rule="official"`` is the published rule: lower-case the output and keep only the text
  before the first ".", before any "<context>" and before any "<example>"; collect every label
  of the task's label set that occurs in it as a substring; remove labels that also occur in
  the question; a target with a comma (qa8 lists) is right when every sub-target was found and
  nothing else, any other target when it is the only label found. Substring matching has
  quirks that are kept: a qa7 answer "none" also contains "one", so the official rule never
  credits it. ``rule="word"`` does the same with whole words.
  """
  labels = {label.lower() for label in TASK_LABELS[babi.check_task(task)]}
  output = _official_cut(output)
  question = question.lower()
  if rule == "official":
    found = {label for label in labels if label in output}
    in_question = {label for label in labels if label in question}
  elif rule == "word":
    found = labels & set(re.findall(r"[a-z]+", output))
    in_question = labels & set(re.findall(r"[a-z]+", question))
  else:
    raise ValueError(f"unknown scoring rule {rule!r}; expected 'official' or 'word'")
  found -= in_question
  target = target.lower().strip()
  if "," in target:
    return found == {t.strip() for t in target.split(",")}
  return found == {target}


# --- prompts -----------------------------------------------------------------------------------
_LOCATION_INSTRUCTION = (
    "The context below hides short facts about people and things among unrelated sentences. "
    "Use only those facts to answer the question. When someone has been in several places, "
    "the latest fact about them counts.")


def _examples(*pairs: tuple[str, str]) -> str:
  return "\n".join(f"<example>\n{text}\nAnswer: {answer}\n</example>" for text, answer in pairs)


PROMPTS: dict[str, dict[str, str]] = {
    "qa1": {
        "instruction": _LOCATION_INSTRUCTION,
        "examples": _examples(
            ("John travelled to the garden. Sandra moved to the office. John went to the "
             "kitchen. Where is John?", "kitchen"),
            ("Mary journeyed to the bedroom. Daniel moved to the hallway. Where is Daniel?",
             "hallway")),
        "post_prompt": "Answer with a single word, the room. Write nothing else.",
    },
    "qa2": {
        "instruction": _LOCATION_INSTRUCTION + " A thing someone carries is wherever that "
                       "person is; a thing put down stays in the room where it was put down.",
        "examples": _examples(
            ("Daniel went to the office. Daniel picked up the milk there. Daniel journeyed to "
             "the garden. Where is the milk?", "garden"),
            ("Sandra went to the bathroom. Sandra grabbed the apple. Sandra travelled to the "
             "hallway. Sandra dropped the apple. John moved to the kitchen. Where is the apple?",
             "hallway")),
        "post_prompt": "Answer with a single word, the room. Write nothing else.",
    },
    "qa3": {
        "instruction": _LOCATION_INSTRUCTION + " A thing someone carries goes wherever that "
                       "person goes. Follow the thing room by room.",
        "examples": _examples(
            ("Mary took the football. Mary went to the hallway. Mary moved to the bedroom. "
             "Where was the football before the bedroom?", "hallway"),
            ("John went to the kitchen. John got the apple there. John journeyed to the office. "
             "Sandra went to the garden. John travelled to the bathroom. Where was the apple "
             "before the bathroom?", "office")),
        "post_prompt": "Answer with a single word, the room. Write nothing else.",
    },
    "qa4": {
        "instruction": "The context below hides facts about how rooms lie relative to each "
                       "other among unrelated sentences. Use only those facts to answer.",
        "examples": _examples(
            ("The garden is west of the office. The office is west of the kitchen. What is "
             "east of the garden?", "office"),
            ("The hallway is south of the bedroom. The bathroom is north of the bedroom. What "
             "is the bedroom north of?", "hallway")),
        "post_prompt": "Answer with a single word, the room. Write nothing else.",
    },
    "qa5": {
        "instruction": "The context below hides facts about people moving and passing things "
                       "to one another among unrelated sentences. Use only those facts; the "
                       "latest hand-over counts.",
        "examples": _examples(
            ("Fred went to the kitchen. Bill journeyed to the kitchen. Fred picked up the milk "
             "there. Fred handed the milk to Bill. Jeff moved to the garden. Who received the "
             "milk?", "Bill"),
            ("Mary took the football. Jeff went to the office. Mary travelled to the office. "
             "Mary gave the football to Jeff. What did Mary give to Jeff?", "football")),
        "post_prompt": "Answer with a single word, a name or a thing. Write nothing else.",
    },
    "qa6": {
        "instruction": _LOCATION_INSTRUCTION,
        "examples": _examples(
            ("John went to the hallway. Daniel moved to the garden. Is John in the hallway?",
             "yes"),
            ("Sandra journeyed to the office. Sandra travelled to the bathroom. Is Sandra in "
             "the office?", "no")),
        "post_prompt": "Answer yes or no. Write nothing else.",
    },
    "qa7": {
        "instruction": "The context below hides facts about people picking up, putting down "
                       "and passing things among unrelated sentences. Use only those facts.",
        "examples": _examples(
            ("Daniel grabbed the apple. Daniel went to the garden. Daniel picked up the milk "
             "there. How many objects is Daniel carrying?", "two"),
            ("Sandra got the milk. Sandra discarded the milk. How many objects is Sandra "
             "carrying?", "none")),
        "post_prompt": "Answer with one word: none, one, two or three. Write nothing else.",
    },
    "qa8": {
        "instruction": "The context below hides facts about people picking up, putting down "
                       "and passing things among unrelated sentences. Use only those facts.",
        "examples": _examples(
            ("John picked up the apple there. John moved to the office. John took the football "
             "there. What is John carrying?", "apple,football"),
            ("Daniel grabbed the milk. Daniel put down the milk. What is Daniel carrying?",
             "nothing")),
        "post_prompt": "Answer with nothing, or the things joined by commas without spaces "
                       "(for example apple,milk). Write nothing else.",
    },
    "qa9": {
        "instruction": _LOCATION_INSTRUCTION + " Some facts only say where a person is not.",
        "examples": _examples(
            ("Mary is in the kitchen. Mary is no longer in the kitchen. Is Mary in the "
             "kitchen?", "no"),
            ("Daniel is not in the garden. Daniel journeyed to the office. Is Daniel in the "
             "office?", "yes")),
        "post_prompt": "Answer yes or no. Write nothing else.",
    },
    "qa10": {
        "instruction": _LOCATION_INSTRUCTION + " Some facts leave two places open; then the "
                       "answer for either of them is maybe.",
        "examples": _examples(
            ("Julie is either in the park or the school. Is Julie in the park?", "maybe"),
            ("Bill went to the cinema. Fred is in the office. Is Bill in the kitchen?", "no")),
        "post_prompt": "Answer yes, no or maybe. Write nothing else.",
    },
}

COMPACT_TEMPLATE = "{input} Question: {question} Answer:"


def format_prompt(sample: dict, task: str, template: str = "full", *, instruction: bool = True,
                  examples: bool = True, post_prompt: bool = True) -> str:
  """The text a model reads before answering.

  ``"full"``: the published evaluation's layout (instruction, worked examples, a post-prompt
  fixing the answer format, ``<context>`` + input + ``</context>``, ``Question: ...``), parts
  separated by blank lines; each of the first three parts can be switched off. ``"compact"``:
  ``COMPACT_TEMPLATE``, for small models trained on our format.
  """
  if template == "compact":
    return COMPACT_TEMPLATE.format(input=sample["input"].strip(), question=sample["question"])
  if template != "full":
    raise ValueError(f"unknown template {template!r}; expected 'full' or 'compact'")
  prompt = PROMPTS[babi.check_task(task)]
  parts = [prompt["instruction"] if instruction else "",
           prompt["examples"] if examples else "",
           prompt["post_prompt"] if post_prompt else "",
           f"<context>\n{sample['input'].strip()}\n</context>",
           f"Question: {sample['question']}"]
  return "\n\n".join(p for p in parts if p)


def format_training_example(sample: dict, task: str | None = None) -> tuple[str, str]:
  """(prompt, answer) in the compact template; the answer has a leading space: " kitchen"."""
  del task  # the compact template is the same for every task
  return format_prompt(sample, "qa1", "compact"), " " + sample["target"]


# --- training stream ---------------------------------------------------------------------------
_truncated = 0


def _example_ids(sample: dict, tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
  """The compact template's prompt ids, and the answer's ids closed by EOS (the targets)."""
  prompt, answer = format_training_example(sample)
  return tokenizer.encode(prompt), tokenizer.encode(answer) + [tokenizer.eos_id]


def sample_to_arrays(sample: dict, tokenizer: Tokenizer, seq_len: int, *, add_bos: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
  """One sample as ``tokens int32[seq_len]`` and ``loss_mask float32[seq_len]``.

  Tokens are [BOS] + prompt + answer + EOS in the compact template, right-padded with PAD.
  ``loss_mask[t]`` is 1 where ``tokens[t]`` is a target, i.e. on the answer tokens and their
  EOS: the training step predicts ``tokens[:, 1:]`` from ``tokens[:, :-1]`` and weights the
  loss with ``loss_mask[:, 1:]``. A sequence longer than ``seq_len`` loses the oldest prompt
  tokens (the start of the context; it may cut facts, so such cuts are counted and logged —
  samples built by ``make_babilong_dataset`` are sized to fit and are never cut).
  """
  global _truncated
  prompt_ids, answer_ids = _example_ids(sample, tokenizer)
  head = [tokenizer.bos_id] if add_bos else []
  over = len(head) + len(prompt_ids) + len(answer_ids) - seq_len
  if over > 0:
    if over >= len(prompt_ids):
      raise ValueError(f"seq_len={seq_len} cannot hold the question and answer of this sample")
    prompt_ids = prompt_ids[over:]
    _truncated += 1
    log.warning("BABILong sample longer than seq_len=%d by %d tokens: cut from the left "
                "(%d samples cut so far)", seq_len, over, _truncated)
  ids = head + prompt_ids + answer_ids
  tokens = np.full((seq_len,), tokenizer.pad_id, np.int32)
  tokens[:len(ids)] = ids
  loss_mask = np.zeros((seq_len,), np.float32)
  loss_mask[len(head) + len(prompt_ids):len(ids)] = 1.0
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
  the memory must also let a later story overwrite an earlier one.
  """

  def __init__(self, tasks, lengths, tokenizer, haystack, seq_len, seed, add_bos,
               end_jitter=0, max_gap=0, questions=1):
    self.tasks = tuple(babi.check_task(t) for t in tasks)
    self.lengths = tuple(min(parse_length(x), seq_len) for x in lengths)
    self.tokenizer, self.haystack = tokenizer, haystack
    self.seq_len, self.seed, self.add_bos = seq_len, seed, add_bos
    self.end_jitter, self.max_gap, self.questions = end_jitter, max_gap, questions
    # Boundary effects of subword tokenizers can add a token where prompt parts meet.
    self.slack = 0 if isinstance(tokenizer, ByteTokenizer) else 3

  def _overhead(self, story: babi.BabiSample) -> int:
    """Tokens of everything but the input: question and answer in the template, BOS, EOS."""
    rest = COMPACT_TEMPLATE.format(input="", question=story.question)
    cost = _count(self.tokenizer, [rest, " " + story.answer])
    return sum(cost) + 1 + int(self.add_bos) + self.slack

  def __len__(self) -> int:
    return 2**31 - 1

  def _sample(self, pick: random.Random, index, budget: int, fill: bool) -> dict:
    gap = None
    if self.max_gap:
      gap = int(math.exp(pick.uniform(0.0, math.log(self.max_gap + 1)))) - 1
    return _build(pick.choice(self.tasks), index, self.seed, self.tokenizer, self.haystack,
                  budget=budget, fill=fill, split="train", overhead=self._overhead, gap=gap)

  def __getitem__(self, i: int) -> dict:
    i = int(i)
    pick = _rng(self.seed, "train", "pick", i)
    length = pick.choice(self.lengths)
    budget = length or self.seq_len
    if self.end_jitter:
      budget -= pick.randrange(min(self.end_jitter, budget // 2))
    count = pick.randint(1, self.questions) if length and self.questions > 1 else 1
    if count == 1:
      sample = self._sample(pick, i, budget, fill=length > 0)
      tokens, loss_mask = sample_to_arrays(sample, self.tokenizer, self.seq_len,
                                           add_bos=self.add_bos)
      return {"tokens": tokens, "loss_mask": loss_mask}
    # Stories of 0.5x to 1.5x the mean share, together filling the budget.
    weights = [pick.uniform(0.5, 1.5) for _ in range(count)]
    shares = [int(budget * w / sum(weights)) for w in weights]
    ids: list[int] = [self.tokenizer.bos_id] if self.add_bos else []
    targets: list[tuple[int, int]] = []
    for j, share in enumerate(shares):
      prompt, answer = _example_ids(self._sample(pick, (i, j), share, True), self.tokenizer)
      targets.append((len(ids) + len(prompt), len(ids) + len(prompt) + len(answer)))
      ids += prompt + answer
    tokens = np.full((self.seq_len,), self.tokenizer.pad_id, np.int32)
    tokens[:len(ids)] = ids
    loss_mask = np.zeros((self.seq_len,), np.float32)
    for start, stop in targets:
      loss_mask[start:stop] = 1.0
    return {"tokens": tokens, "loss_mask": loss_mask}


def make_babilong_dataset(tasks: Sequence[str], lengths: Sequence[str | int] | None,
                          tokenizer: Tokenizer | str, seq_len: int, batch_size: int, *,
                          seed: int = 0, shard_index: int = 0, shard_count: int = 1,
                          haystack: Haystack | str | None = None, add_bos: bool = True,
                          num_threads: int = 0, end_jitter: int = 0, max_gap: int = 0,
                          questions: int = 1):
  """An endless Grain stream of BABILong training batches in the compact template.

  Each batch is ``{"tokens": int32[batch_size, seq_len], "loss_mask": float32[batch_size,
  seq_len]}`` with ``loss_mask`` 1 only on the answer tokens and their EOS (conventions in
  ``sample_to_arrays``). Record i picks its task from ``tasks`` and a total length from
  ``lengths`` (token counts such as 512 or "1k", capped at ``seq_len``; 0 or "0k" means the
  facts alone; ``None`` means ``[seq_len]``) and fills that many tokens — prompt, answer and
  special tokens included — so nothing is ever cut. ``end_jitter`` and ``max_gap`` vary where
  the question ends and how far the last fact lies before it, ``questions`` how many stories
  one sequence may hold (``_TrainingSource``). Building
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
                           seq_len, seed, add_bos, end_jitter, max_gap, questions)
  ds = grain.MapDataset.source(source)[shard_index::shard_count]
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(2 * batch_size, 1))
  return ds.to_iter_dataset(read).batch(batch_size, drop_remainder=True)


# --- published files ---------------------------------------------------------------------------
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


# --- command line ------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
  from lm2_jax.cli import OneLineParser  # pylint: disable=g-import-not-at-top
  p = OneLineParser(
      prog="python -m lm2_jax.data.babilong",
      description="Generate BABILong samples offline in the published layout DIR/<task>/<length>.json.")
  p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, e.g. qa1,qa2")
  p.add_argument("--lengths", default="0k,1k,2k,4k",
                 help="comma-separated nominal lengths; 1k = 1000 tokens, 300 kept for the prompt")
  p.add_argument("--num-samples", type=int, default=100)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--output-dir", required=True)
  p.add_argument("--haystack", default="default",
                 help="'default' (built-in generator), a folder of .txt files, or pg19:DIR")
  p.add_argument("--tokenizer", default="byte",
                 help="'byte', a tokenizer.json (or its folder), or a SentencePiece .model")
  p.add_argument("--reserve-tokens", type=int, default=PROMPT_RESERVE)
  p.add_argument("--split", default="test", help="draw namespace; training streams use 'train'")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  try:
    if args.num_samples < 1:
      raise DataError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.reserve_tokens < 0:
      raise DataError(f"--reserve-tokens must be >= 0, got {args.reserve_tokens}")
    tasks = [babi.check_task(t.strip()) for t in args.tasks.split(",") if t.strip()]
    lengths = [length_name(parse_length(x)) for x in args.lengths.split(",") if x.strip()]
    if not tasks or not lengths:
      raise DataError(f"--{'tasks' if not tasks else 'lengths'}: nothing given")
    for length in lengths:
      input_budget(length, args.reserve_tokens)
    tokenizer = load_tokenizer(args.tokenizer)
    haystack = load_haystack(args.haystack)
    _check_output_dir(args.output_dir)
    for task in tasks:
      os.makedirs(os.path.join(args.output_dir, task), exist_ok=True)
      for length in lengths:
        start, stats = time.perf_counter(), {}
        samples = [make_sample(task, length, i, args.seed, tokenizer, haystack,
                               reserve_tokens=args.reserve_tokens, split=args.split, stats=stats)
                   for i in range(args.num_samples)]
        out = os.path.join(args.output_dir, task, f"{length}.json")
        with open(out, "w", encoding="utf-8") as f:
          json.dump(samples, f, ensure_ascii=False)
        redrawn = stats.get("redrawn", 0)
        note = f", {redrawn} stories redrawn because their facts did not fit" if redrawn else ""
        print(f"{task} {length}: {len(samples)} samples in {time.perf_counter() - start:.2f} s"
              f"{note} -> {out}", flush=True)
  except (DataError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # a full or failing disk while writing
    print(f"error: --output-dir {args.output_dir}: {e.strerror or e} ({e.filename})",
          file=sys.stderr)
    return 1
  return 0


def _check_output_dir(path: str) -> None:
  """--output-dir is (or can become) a writable folder; checked before generating."""
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise DataError(f"--output-dir {path}: {existing} is a file, expected a folder")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise DataError(f"--output-dir {path}: {existing} is not writable")


if __name__ == "__main__":
  sys.exit(main())
