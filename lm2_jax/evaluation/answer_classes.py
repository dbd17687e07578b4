"""What a qa1 answer got wrong: a stale room, another actor's room, or no use of the facts.

Accuracy near chance says little about why. For "Where is <actor>?" every wrong answer falls
into one class (`classify`): a room the asked actor was in *earlier* (the model kept an old
binding and missed the overwrite), a room the story placed *someone else* in (it kept rooms
but not who went there: a recency or bag-of-rooms answer), a room the story never names (it
used no fact at all), or no room. `summarize` adds the splits that separate the hypotheses:
accuracy by the number of facts after the supporting one, and how often the answer is the
room of the story's last fact (what a pure recency heuristic answers every time), and
accuracy by the story's number of facts (a model that binds is right on two-fact stories,
where recency is right about half the time).

Positions count tokens of the compact prompt behind a BOS token, which is what the two
boundary features need: `support_split`, the
supporting fact's actor and room fall into different segments (the binding had to be made
across a memory write), and `question_split`, the question's actor lies in an earlier
segment than the position that predicts the answer (the query had to cross one too).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence

from lm2_jax.data import babi
from lm2_jax.data.babilong.prompts import COMPACT_TEMPLATE
from lm2_jax.evaluation.report import wilson_interval

CLASSES = ("correct", "stale", "other actor's", "unmentioned room", "not a room")
_MOVE = re.compile(r"\b(" + "|".join(babi.ACTORS) + r") (?:" +
                   "|".join(babi.MOVE_VERBS + (babi.RETURN_VERB,)) +
                   r") the (" + "|".join(babi.ROOMS) + r")\.")


def story_moves(text: str) -> list[tuple[str, str, int, int]]:
  """(actor, room, room start, room end) of every qa1 fact in `text`, in order."""
  return [(m.group(1), m.group(2), m.start(2), m.end(2)) for m in _MOVE.finditer(text)]


def classify(sample: dict, output: str, segment_len: int, tokenizer=None) -> dict:
  """The class of `output` for a qa1 `sample` ({"input", "question", "target"}) and features.

  Raises ValueError when the facts found in the input do not give the sample's target (not
  a qa1 sample, or background text that imitates a fact). Positions are tokens of
  `tokenizer` (default bytes) after the BOS token; for a BPE, the tokens of the text before
  the position (exact up to a merge across it).
  """
  text = sample["input"].strip()
  prompt = COMPACT_TEMPLATE.format(input=text, question=sample["question"])

  def position(i: int) -> int:   # the token holding character i of the prompt, BOS first
    return i + 1 if tokenizer is None else len(tokenizer.encode(prompt[:i])) + 1

  moves = story_moves(text)
  actor = sample["question"].split()[-1].rstrip("?")
  own = [room for a, room, _, _ in moves if a == actor]
  if not own or own[-1] != sample["target"]:
    raise ValueError(f"the facts in the input do not answer {sample['question']!r} with "
                     f"{sample['target']!r}: found {[(a, r) for a, r, _, _ in moves]}")
  words = re.findall(r"[a-z]+", output.lower())
  answer = words[0] if words else ""
  support = max(i for i, (a, _, _, _) in enumerate(moves) if a == actor)
  actor_start = position(text.rfind(actor, 0, moves[support][2]))
  room_end = position(moves[support][3] - 1)   # the room's last byte
  if answer == sample["target"]:
    kind = "correct"
  elif answer in own:
    kind = "stale"
  elif answer in {room for _, room, _, _ in moves}:
    kind = "other actor's"
  elif answer in babi.ROOMS:
    kind = "unmentioned room"
  else:
    kind = "not a room"
  asked_at = position(prompt.rfind(actor))     # the question's actor; the answer is
  answered_at = position(len(prompt) - 1)       # predicted at the prompt's last token
  return {"class": kind, "answer": answer, "moves_of_actor": len(own),
          "facts_after_support": len(moves) - 1 - support, "story_facts": len(moves),
          "answer_is_last_room": answer == moves[-1][1],
          "target_is_last_room": sample["target"] == moves[-1][1],
          "support_split": actor_start // segment_len != room_end // segment_len,
          "question_split": asked_at // segment_len != answered_at // segment_len}


def _cell(hits: int, n: int) -> dict:
  lo, hi = wilson_interval(hits, n)
  return {"rate": hits / n if n else None, "n": n, "ci95": [lo, hi]}


def _facts_bucket(row: dict) -> str:
  n = row["story_facts"]
  if n <= 2:
    return str(n)
  return "3-4" if n <= 4 else "5-6" if n <= 6 else "7+"


def summarize(rows: Sequence[dict]) -> dict:
  """Class shares and accuracy splits of `classify` rows, each with n and a 95% interval."""
  n = len(rows)
  out = {"n": n, "classes": {c: _cell(sum(r["class"] == c for r in rows), n) for c in CLASSES}}

  def split(name, key):
    groups = collections.defaultdict(list)
    for r in rows:
      groups[key(r)].append(r["class"] == "correct")
    out[name] = {str(k): _cell(sum(v), len(v)) for k, v in sorted(groups.items())}

  split("accuracy_by_moves_of_actor", lambda r: "1" if r["moves_of_actor"] == 1 else "2+")
  split("accuracy_by_facts_after_support",
        lambda r: str(r["facts_after_support"]) if r["facts_after_support"] < 3 else "3+")
  split("accuracy_by_story_facts", _facts_bucket)
  split("accuracy_by_support_is_last_fact", lambda r: r["facts_after_support"] == 0)
  split("accuracy_by_support_split", lambda r: r["support_split"])
  split("accuracy_by_question_split", lambda r: r["question_split"])
  out["answers_last_room"] = _cell(sum(r["answer_is_last_room"] for r in rows), n)
  out["target_is_last_room"] = _cell(sum(r["target_is_last_room"] for r in rows), n)
  out["most_common_answers"] = collections.Counter(r["answer"] for r in rows).most_common(3)
  return out
