"""An independent bAbI solver: answers a question from the text of the facts alone.

It shares nothing with the simulator in ``babi.py`` but the sentence forms: it parses each
fact with its own patterns, keeps its own record of what the text says, and answers or
returns ``None`` when the text does not determine the answer. The tests run it on every
generated sample; agreement shows that each target follows from the facts as written.
It accepts facts hidden in background text too, when given the facts list of a sample.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_W = r"([A-Za-z]+)"
_FACTS = [
    ("move", re.compile(rf"^{_W} (?:went back to|went to|journeyed to|travelled to|moved to) "
                        rf"the {_W}\.$")),
    ("get", re.compile(rf"^{_W} (?:got|grabbed|picked up|took) the {_W}(?: there)?\.$")),
    ("drop", re.compile(rf"^{_W} (?:dropped|discarded|put down|left) the {_W}(?: there)?\.$")),
    ("give", re.compile(rf"^{_W} (?:gave|handed|passed) the {_W} to {_W}\.$")),
    ("in", re.compile(rf"^{_W} is in the {_W}\.$")),
    ("not", re.compile(rf"^{_W} is (?:not|no longer) in the {_W}\.$")),
    ("either", re.compile(rf"^{_W} is either in the {_W} or the {_W}\.$")),
    ("rel", re.compile(rf"^The {_W} is (north|south|east|west) of the {_W}\.$")),
]
_COUNTS = ("none", "one", "two", "three")
_OPP = {"north": "south", "south": "north", "east": "west", "west": "east"}


class _Reading:
  """What the facts say, in the order they say it."""

  def __init__(self):
    self.actor_room: dict[str, str] = {}       # actors whose room the text gives
    self.belief: dict[str, tuple] = {}         # ("in", r) | ("not", r) | ("either", {r1, r2})
    self.holder: dict[str, str | None] = {}
    self.object_room: dict[str, str | None] = {}
    self.rooms_of: dict[str, list[str | None]] = {}  # object -> rooms it passed through
    self.held: dict[str, list[str]] = {}       # actor -> objects, in the order acquired
    self.gives: list[tuple[str, str, str]] = []  # (giver, object, receiver)
    self.relation: dict[tuple[str, str], str] = {}  # (direction, y) -> the x that is dir of y

  def _track(self, obj: str) -> None:
    self.holder.setdefault(obj, None)
    self.object_room.setdefault(obj, None)
    self.rooms_of.setdefault(obj, [None])

  def read(self, fact: str) -> None:
    for kind, pattern in _FACTS:
      m = pattern.match(fact)
      if m:
        getattr(self, "_" + kind)(*m.groups())
        return
    raise ValueError(f"not a bAbI fact: {fact!r}")

  def _move(self, actor: str, room: str) -> None:
    self.actor_room[actor] = room
    self.belief[actor] = ("in", room)
    for obj in self.held.get(actor, []):
      self.object_room[obj] = room
      self.rooms_of[obj].append(room)

  def _get(self, actor: str, obj: str) -> None:
    self._track(obj)
    self.holder[obj] = actor
    self.held.setdefault(actor, []).append(obj)
    self._seen_at(obj, self.actor_room.get(actor))

  def _drop(self, actor: str, obj: str) -> None:
    self._track(obj)
    self.holder[obj] = None
    self.held[actor].remove(obj)
    self._seen_at(obj, self.actor_room.get(actor))

  def _seen_at(self, obj: str, room: str | None) -> None:
    if room is not None:
      self.object_room[obj] = room
      self.rooms_of[obj][-1] = room

  def _give(self, giver: str, obj: str, receiver: str) -> None:
    self._track(obj)
    self.holder[obj] = receiver
    self.held[giver].remove(obj)
    self.held.setdefault(receiver, []).append(obj)
    self.gives.append((giver, obj, receiver))

  def _in(self, actor: str, room: str) -> None:
    self.actor_room[actor] = room
    self.belief[actor] = ("in", room)

  def _not(self, actor: str, room: str) -> None:
    self.actor_room.pop(actor, None)
    self.belief[actor] = ("not", room)

  def _either(self, actor: str, room1: str, room2: str) -> None:
    self.actor_room.pop(actor, None)
    self.belief[actor] = ("either", {room1, room2})

  def _rel(self, x: str, direction: str, y: str) -> None:
    self.relation[(direction, y)] = x
    self.relation[(_OPP[direction], x)] = y


_QUESTIONS = [
    ("where_object", re.compile(rf"^Where is the {_W}\?$")),
    ("where_actor", re.compile(rf"^Where is {_W}\?$")),
    ("before", re.compile(rf"^Where was the {_W} before the {_W}\?$")),
    ("what_dir_of", re.compile(rf"^What is (north|south|east|west) of the {_W}\?$")),
    ("x_dir_of", re.compile(rf"^What is the {_W} (north|south|east|west) of\?$")),
    ("what_give", re.compile(rf"^What did {_W} give to {_W}\?$")),
    ("who_gave_to", re.compile(rf"^Who gave the {_W} to {_W}\?$")),
    ("who_gave", re.compile(rf"^Who gave the {_W}\?$")),
    ("who_received", re.compile(rf"^Who received the {_W}\?$")),
    ("give_to_whom", re.compile(rf"^Who did {_W} give the {_W} to\?$")),
    ("is_in", re.compile(rf"^Is {_W} in the {_W}\?$")),
    ("how_many", re.compile(rf"^How many objects is {_W} carrying\?$")),
    ("carrying", re.compile(rf"^What is {_W} carrying\?$")),
]


def _last(items, match) -> tuple | None:
  for item in reversed(items):
    if match(item):
      return item
  return None


def _answer(r: _Reading, kind: str, args: tuple[str, ...]) -> str | None:
  if kind == "where_actor":
    return r.actor_room.get(args[0])
  if kind == "where_object":
    return r.object_room.get(args[0])
  if kind == "before":
    obj, room = args
    rooms = r.rooms_of.get(obj, [])
    idx = max((i for i, x in enumerate(rooms) if x == room), default=0)
    return rooms[idx - 1] if idx > 0 else None
  if kind == "what_dir_of":
    return r.relation.get((args[0], args[1]))
  if kind == "x_dir_of":
    x, direction = args
    return r.relation.get((_OPP[direction], x))
  if kind == "what_give":
    give = _last(r.gives, lambda g: g[0] == args[0] and g[2] == args[1])
    return give and give[1]
  if kind == "who_gave_to":
    give = _last(r.gives, lambda g: g[1] == args[0] and g[2] == args[1])
    return give and give[0]
  if kind == "who_gave":
    give = _last(r.gives, lambda g: g[1] == args[0])
    return give and give[0]
  if kind == "who_received":
    give = _last(r.gives, lambda g: g[1] == args[0])
    return give and give[2]
  if kind == "give_to_whom":
    give = _last(r.gives, lambda g: g[0] == args[0] and g[1] == args[1])
    return give and give[2]
  if kind == "is_in":
    actor, room = args
    belief = r.belief.get(actor)
    if belief is None:
      return None
    if belief[0] == "in":
      return "yes" if belief[1] == room else "no"
    if belief[0] == "not":
      return "no" if belief[1] == room else None
    return "maybe" if room in belief[1] else "no"
  if kind == "how_many":
    return _COUNTS[len(r.held.get(args[0], []))]
  if kind == "carrying":
    return ",".join(r.held.get(args[0], [])) or "nothing"
  raise AssertionError(kind)


def is_fact(sentence: str) -> bool:
  """Whether ``sentence`` is a bAbI fact (used to find the facts hidden in a BABILong input)."""
  return any(pattern.match(sentence) for _, pattern in _FACTS)


def solve(facts: Sequence[str], question: str) -> str | None:
  """The answer the facts give to ``question``, or ``None`` when they do not determine it.

  Raises ``ValueError`` for a fact or question that is not in bAbI's wording.
  """
  reading = _Reading()
  for fact in facts:
    reading.read(fact)
  for kind, pattern in _QUESTIONS:
    m = pattern.match(question)
    if m:
      return _answer(reading, kind, m.groups())
  raise ValueError(f"not a bAbI question: {question!r}")
