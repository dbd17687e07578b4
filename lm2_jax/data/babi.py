"""The bAbI world, simulated from its rules: stories for tasks qa1-qa10 in the v1.2 wording.

The released files cannot be downloaded here, so a small simulator (actors, rooms, objects;
move/get/drop/give, each only when its precondition holds) writes every action in bAbI v1.2's
sentence forms. As in BABILong, a sample keeps one question and every fact before it
(``Story.sample``). The simulator answers from the true world but asks only what the text
written so far determines; the tests' independent solver (tests/data/babi_solver.py)
re-derives every answer from the text. docs/data.md lists the choices the published data
leaves open (qa3, qa4, qa8) and how they are fixed here.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

ACTORS = ("Mary", "John", "Sandra", "Daniel")
QA5_ACTORS = ("Bill", "Fred", "Jeff", "Mary")
QA10_ACTORS = ("Bill", "Fred", "Julie", "Mary")
ROOMS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
QA10_ROOMS = ("bedroom", "cinema", "kitchen", "office", "park", "school")
OBJECTS = ("apple", "football", "milk")

MOVE_VERBS = ("went to", "journeyed to", "travelled to", "moved to")
RETURN_VERB = "went back to"  # only for a room the text already placed the actor in
GET_VERBS = ("got", "grabbed", "picked up", "took")
DROP_VERBS = ("dropped", "discarded", "put down", "left")
GIVE_VERBS = ("gave", "handed", "passed")
DIRECTIONS = ("north", "south", "east", "west")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
NUMBER_WORDS = ("none", "one", "two", "three")

TASKS = tuple(f"qa{i}" for i in range(1, 11))
TASK_NAMES = {
    "qa1": "single-supporting-fact", "qa2": "two-supporting-facts",
    "qa3": "three-supporting-facts", "qa4": "two-arg-relations", "qa5": "three-arg-relations",
    "qa6": "yes-no-questions", "qa7": "counting", "qa8": "lists-sets",
    "qa9": "simple-negation", "qa10": "indefinite-knowledge",
}

# The tasks whose questions list the others their facts answer (Question.others): the
# training stream's recall questions (data.recall_tasks).
RECALL_TASKS = ("qa1", "qa2", "qa3", "qa4", "qa5")

# Every word a task's facts or questions use for a name, place, object or action: background
# text must not contain these (see haystack.py).
ENTITY_WORDS = frozenset(
    w.lower() for w in ACTORS + QA5_ACTORS + QA10_ACTORS + ROOMS + QA10_ROOMS + OBJECTS)


@dataclasses.dataclass(frozen=True)
class Question:
  position: int  # how many of the story's facts come before the question
  text: str
  answer: str
  # Every other question of the same kind that the facts so far answer, with its answer:
  # the training stream's recall questions (qa1-qa5; empty for the other tasks). Computing
  # them draws nothing, so stories are the same with or without them.
  others: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class BabiSample:
  """One question with every fact before it: what BABILong hides in background text."""
  task: str
  facts: tuple[str, ...]
  question: str
  answer: str
  others: tuple[tuple[str, str], ...] = ()  # Question.others


@dataclasses.dataclass(frozen=True)
class Story:
  task: str
  facts: tuple[str, ...]
  questions: tuple[Question, ...]

  def sample(self, q: int) -> BabiSample:
    question = self.questions[q]
    return BabiSample(self.task, self.facts[:question.position], question.text, question.answer,
                      question.others)


class _World:
  """True state of actors and objects, plus what the facts written so far reveal of it."""

  def __init__(self, rng: random.Random, actors: Sequence[str], rooms: Sequence[str],
               objects: Sequence[str] = OBJECTS):
    self.rng = rng
    self.actors, self.rooms, self.objects = tuple(actors), tuple(rooms), tuple(objects)
    # Everyone and everything starts somewhere the text has not said.
    self.loc = {a: rng.choice(self.rooms) for a in self.actors}
    self.known = dict.fromkeys(self.actors, False)       # the text says where the actor is
    self.placed = {a: set() for a in self.actors}        # rooms the text has put the actor in
    self.belief: dict[str, tuple] = {}                   # qa9/qa10: what the text says
    self.holder: dict[str, str | None] = dict.fromkeys(self.objects)
    self.spot = {o: rng.choice(self.rooms) for o in self.objects}  # where a lying object lies
    # Rooms each object has been in, oldest first, each with "does the text reveal it".
    self.trail = {o: [[self.spot[o], False]] for o in self.objects}
    self.carrying: dict[str, list[str]] = {a: [] for a in self.actors}  # in acquisition order
    self.mentioned: list[str] = []
    self.facts: list[str] = []

  # -- reading the state --------------------------------------------------------------------
  def where(self, obj: str) -> str:
    holder = self.holder[obj]
    return self.loc[holder] if holder is not None else self.spot[obj]

  def gettable(self) -> list[tuple[str, str]]:
    return [(a, o) for a in self.actors for o in self.objects
            if self.holder[o] is None and self.spot[o] == self.loc[a]]

  def droppable(self) -> list[tuple[str, str]]:
    return [(h, o) for o in self.objects if (h := self.holder[o]) is not None]

  def givable(self) -> list[tuple[str, str, str]]:
    return [(h, b, o) for o in self.objects if (h := self.holder[o]) is not None
            for b in self.actors if b != h and self.loc[b] == self.loc[h]]

  # -- acting (each writes one fact) ----------------------------------------------------------
  def _say(self, text: str, *actors: str) -> None:
    self.facts.append(text)
    for a in actors:
      if a not in self.mentioned:
        self.mentioned.append(a)

  def move(self, actor: str, room: str | None = None) -> None:
    if room is None:
      room = self.rng.choice([r for r in self.rooms if r != self.loc[actor]])
    assert room != self.loc[actor], "a move must change the room"
    if room in self.placed[actor] and self.rng.random() < 0.3:
      verb = RETURN_VERB
    else:
      verb = self.rng.choice(MOVE_VERBS)
    self.loc[actor] = room
    self.known[actor] = True
    self.placed[actor].add(room)
    self.belief[actor] = ("in", room)
    for obj in self.carrying[actor]:
      self.trail[obj].append([room, True])
    self._say(f"{actor} {verb} the {room}.", actor)

  def _there(self) -> str:
    return " there" if self.rng.random() < 0.5 else ""

  def get(self, actor: str, obj: str) -> None:
    assert self.holder[obj] is None and self.spot[obj] == self.loc[actor]
    self.holder[obj] = actor
    self.carrying[actor].append(obj)
    if self.known[actor]:
      self.trail[obj][-1][1] = True
    self._say(f"{actor} {self.rng.choice(GET_VERBS)} the {obj}{self._there()}.", actor)

  def drop(self, actor: str, obj: str) -> None:
    assert self.holder[obj] == actor
    self.holder[obj] = None
    self.spot[obj] = self.loc[actor]
    self.carrying[actor].remove(obj)
    if self.known[actor]:
      self.trail[obj][-1][1] = True
    self._say(f"{actor} {self.rng.choice(DROP_VERBS)} the {obj}{self._there()}.", actor)

  def give(self, giver: str, receiver: str, obj: str) -> None:
    assert self.holder[obj] == giver and self.loc[giver] == self.loc[receiver]
    assert giver != receiver
    self.holder[obj] = receiver
    self.carrying[giver].remove(obj)
    self.carrying[receiver].append(obj)
    self._say(f"{giver} {self.rng.choice(GIVE_VERBS)} the {obj} to {receiver}.", giver, receiver)

  # qa9/qa10 statements: the actor may have moved unseen; the statement is true afterwards.
  def state_in(self, actor: str) -> None:
    room = self.rng.choice(self.rooms)
    self.loc[actor] = room
    self.belief[actor] = ("in", room)
    self._say(f"{actor} is in the {room}.", actor)

  def state_not_in(self, actor: str) -> None:
    self.loc[actor] = self.rng.choice(self.rooms)
    room = self.rng.choice([r for r in self.rooms if r != self.loc[actor]])
    self.belief[actor] = ("not", room)
    self._say(f"{actor} is not in the {room}.", actor)

  def state_no_longer_in(self, actor: str) -> None:
    old = self.loc[actor]
    assert self.belief.get(actor) == ("in", old), "'no longer' needs a stated location"
    self.loc[actor] = self.rng.choice([r for r in self.rooms if r != old])
    self.belief[actor] = ("not", old)
    self._say(f"{actor} is no longer in the {old}.", actor)

  def state_either(self, actor: str) -> None:
    room = self.rng.choice(self.rooms)
    other = self.rng.choice([r for r in self.rooms if r != room])
    self.loc[actor] = room
    pair = (room, other) if self.rng.random() < 0.5 else (other, room)
    self.belief[actor] = ("either", pair)
    self._say(f"{actor} is either in the {pair[0]} or the {pair[1]}.", actor)

  # -- random actions with the biases that make stories interesting ------------------------
  def random_move(self) -> None:
    rng = self.rng
    actor = rng.choice(self.actors)
    here = self.loc[actor]
    targets: list[str] = []
    roll = rng.random()
    if roll < 0.3:  # towards a lying object
      targets = [self.spot[o] for o in self.objects if self.holder[o] is None]
    elif roll < 0.5:  # towards another actor (so that gives become possible)
      targets = [self.loc[b] for b in self.actors if b != actor]
    targets = [t for t in targets if t != here]
    self.move(actor, rng.choice(targets) if targets else None)

  def random_action(self, *, get_p: float, drop_p: float, give_p: float = 0.0,
                    carrier_move_p: float = 0.0) -> str:
    """One random action; returns its kind ("move", "get", "drop" or "give")."""
    rng = self.rng
    if give_p and (gives := self.givable()) and rng.random() < give_p:
      self.give(*rng.choice(gives))
      return "give"
    roll = rng.random()
    if roll < get_p and (gets := self.gettable()):
      self.get(*rng.choice(gets))
      return "get"
    if roll < get_p + drop_p and (drops := self.droppable()):
      self.drop(*rng.choice(drops))
      return "drop"
    carriers = [a for a in self.actors if self.carrying[a]]
    if carriers and rng.random() < carrier_move_p:
      self.move(rng.choice(carriers))
    else:
      self.random_move()
    return "move"


# -- one generator per task -------------------------------------------------------------------
Ask = Callable[[_World], "tuple[str, str] | None"]
# Every question of a task's kind the text answers now, with its answer; draws nothing.
Answerable = Callable[[_World], "list[tuple[str, str]]"]


def _others(asked: tuple[str, str], answerable: list[tuple[str, str]]) -> tuple:
  """``answerable`` but the asked question, each question once, in order."""
  seen, out = {asked[0]}, []
  for q, a in answerable:
    if q not in seen:
      seen.add(q)
      out.append((q, a))
  return tuple(out)


def _story_loop(w: _World, task: str, ask: Ask, step: Callable[[], object], *,
                num_questions: int, gap: tuple[int, int], max_facts: int,
                answerable: Answerable | None = None) -> Story:
  """Acts ``gap`` facts, asks when the text determines an answer, repeats; each question's
  ``others`` are ``answerable``'s at that point."""
  rng = w.rng
  questions: list[Question] = []
  while len(questions) < num_questions and len(w.facts) < max_facts:
    for _ in range(rng.randint(*gap)):
      step()
    qa = ask(w)
    while qa is None and len(w.facts) < max_facts:
      step()
      qa = ask(w)
    if qa is not None:
      others = _others(qa, answerable(w)) if answerable else ()
      questions.append(Question(len(w.facts), *qa, others))
  return Story(task, tuple(w.facts), tuple(questions))


def _pick(answerable: Answerable) -> Ask:
  """Ask one of ``answerable``'s questions, drawn uniformly (None while there is none)."""
  return lambda w: w.rng.choice(options) if (options := answerable(w)) else None


def _where_actors(w: _World) -> list[tuple[str, str]]:
  return [(f"Where is {a}?", w.loc[a]) for a in w.mentioned if w.known[a]]


def final_rooms(facts: Sequence[str]) -> dict[str, str]:
  """qa1: the room each actor of ``facts`` is in after them (their latest move), actors in
  the order the facts first name them. Raises ValueError on a fact that is not a qa1 move."""
  rooms: dict[str, str] = {}
  for fact in facts:
    words = fact.rstrip(".").split(" ")
    if len(words) < 4 or words[-2] != "the" or words[-1] not in ROOMS:
      raise ValueError(f"not a qa1 move: {fact!r}")
    rooms[words[0]] = words[-1]
  return rooms


def _qa1(rng: random.Random) -> Story:
  w = _World(rng, ACTORS, ROOMS)
  return _story_loop(w, "qa1", _pick(_where_actors), w.random_move,
                     num_questions=5, gap=(2, 2), max_facts=10, answerable=_where_actors)


def _where_objects(w: _World) -> list[tuple[str, str]]:
  return [(f"Where is the {o}?", w.where(o)) for o in w.objects if w.trail[o][-1][1]]


def _qa2(rng: random.Random) -> Story:
  w = _World(rng, ACTORS, ROOMS)
  step = lambda: w.random_action(get_p=0.3, drop_p=0.15, carrier_move_p=0.4)
  return _story_loop(w, "qa2", _pick(_where_objects), step,
                     num_questions=rng.randint(1, 5), gap=(1, 8), max_facts=68,
                     answerable=_where_objects)


def _where_before(w: _World) -> list[tuple[str, str]]:
  options = []
  for obj in w.objects:
    trail = w.trail[obj]
    if len(trail) < 2 or not (trail[-1][1] and trail[-2][1]):
      continue
    here = trail[-1][0]
    if any(room == here for room, _ in trail[:-1]):
      continue  # the object was in L before: "before the L" would be ambiguous
    options.append((f"Where was the {obj} before the {here}?", trail[-2][0]))
  return options


def _qa3(rng: random.Random) -> Story:
  w = _World(rng, ACTORS, ROOMS)
  step = lambda: w.random_action(get_p=0.4, drop_p=0.1, carrier_move_p=0.6)
  return _story_loop(w, "qa3", _pick(_where_before), step,
                     num_questions=rng.randint(1, 5), gap=(2, 8), max_facts=64,
                     answerable=_where_before)


def _qa4(rng: random.Random) -> Story:
  a, b, c = rng.sample(ROOMS, 3)  # a-b-c on one line, b in the middle
  first, second = ("north", "south") if rng.random() < 0.5 else ("west", "east")
  # Pairs (x, d, y) meaning "x is d of y": a is `first` of b, b is `first` of c.
  pairs = [(a, first, b), (b, first, c)]

  def phrase(x: str, d: str, y: str) -> str:
    if rng.random() < 0.5:
      return f"The {x} is {d} of the {y}."
    return f"The {y} is {OPPOSITE[d]} of the {x}."

  facts = [phrase(*p) for p in pairs]
  rng.shuffle(facts)
  x, d, y = rng.choice(pairs)
  if rng.random() < 0.5:  # ask about the other side of the relation
    x, d, y = y, OPPOSITE[d], x
  if rng.random() < 0.5:
    question, answer = f"What is {d} of the {y}?", x
  else:
    question, answer = f"What is the {x} {d} of?", y
  # The two relations answer eight questions, each one way: a-b-c lie on one line.
  both = [*pairs, *((y, OPPOSITE[d], x) for x, d, y in pairs)]
  answerable = [q for x, d, y in both
                for q in ((f"What is {d} of the {y}?", x), (f"What is the {x} {d} of?", y))]
  return Story("qa4", tuple(facts),
               (Question(2, question, answer, _others((question, answer), answerable)),))


def _qa5(rng: random.Random) -> Story:
  w = _World(rng, QA5_ACTORS, ROOMS)
  questions: list[Question] = []
  num_questions = rng.randint(1, 5)
  while len(questions) < num_questions and len(w.facts) < 120:
    if w.random_action(get_p=0.45, drop_p=0.1, give_p=0.7, carrier_move_p=0.3) != "give":
      continue
    giver, obj, receiver = _last_give(w.facts[-1])
    for _ in range(rng.randint(0, 5)):  # unrelated statements, no further give
      w.random_action(get_p=0.3, drop_p=0.15)
    kind = rng.randrange(5)
    if kind == 0:
      qa = (f"What did {giver} give to {receiver}?", obj)
    elif kind == 1:
      qa = (f"Who gave the {obj}?", giver)
    elif kind == 2:
      qa = (f"Who gave the {obj} to {receiver}?", giver)
    elif kind == 3:
      qa = (f"Who received the {obj}?", receiver)
    else:
      qa = (f"Who did {giver} give the {obj} to?", receiver)
    questions.append(Question(len(w.facts), *qa, _others(qa, _about_gives(w.facts))))
  return Story("qa5", tuple(w.facts), tuple(questions))


def _about_gives(facts: Sequence[str]) -> list[tuple[str, str]]:
  """qa5: the five questions about the last give, then who last gave and who last received
  each object given before it (an object's latest give answers them, as when qa5 asks)."""
  gives = [_last_give(f) for f in facts if f.split(" ", 2)[1] in GIVE_VERBS]
  giver, obj, receiver = gives[-1]
  latest = {o: (g, r) for g, o, r in gives}
  return [(f"What did {giver} give to {receiver}?", obj), (f"Who gave the {obj}?", giver),
          (f"Who gave the {obj} to {receiver}?", giver), (f"Who received the {obj}?", receiver),
          (f"Who did {giver} give the {obj} to?", receiver),
          *((q, a) for o, (g, r) in latest.items() if o != obj
            for q, a in ((f"Who gave the {o}?", g), (f"Who received the {o}?", r)))]


def _last_give(fact: str) -> tuple[str, str, str]:
  words = fact.rstrip(".").split()
  # "<giver> <verb> the <obj> to <receiver>"
  return words[0], words[-3], words[-1]


def _qa6(rng: random.Random) -> Story:
  w = _World(rng, ACTORS, ROOMS)

  def ask(w: _World) -> tuple[str, str] | None:
    known = [a for a in w.mentioned if w.known[a]]
    if not known:
      return None
    actor = rng.choice(known)
    if rng.random() < 0.5:
      return f"Is {actor} in the {w.loc[actor]}?", "yes"
    other = rng.choice([r for r in ROOMS if r != w.loc[actor]])
    return f"Is {actor} in the {other}?", "no"

  step = lambda: w.random_action(get_p=0.2, drop_p=0.1)
  return _story_loop(w, "qa6", ask, step, num_questions=rng.randint(1, 5), gap=(2, 4),
                     max_facts=26)


def _someone_to_ask_about(w: _World) -> str | None:
  """A mentioned actor, more often one who carries something (else most answers are 'none')."""
  if not w.mentioned:
    return None
  carriers = [a for a in w.mentioned if w.carrying[a]]
  if carriers and w.rng.random() < 0.6:
    return w.rng.choice(carriers)
  return w.rng.choice(w.mentioned)


def _qa7(rng: random.Random) -> Story:
  w = _World(rng, ACTORS, ROOMS)

  def ask(w: _World) -> tuple[str, str] | None:
    actor = _someone_to_ask_about(w)
    if actor is None:
      return None
    return f"How many objects is {actor} carrying?", NUMBER_WORDS[len(w.carrying[actor])]

  step = lambda: w.random_action(get_p=0.5, drop_p=0.15, give_p=0.2)
  return _story_loop(w, "qa7", ask, step, num_questions=rng.randint(1, 5), gap=(1, 5),
                     max_facts=52)


def _qa8(rng: random.Random) -> Story:
  w = _World(rng, ACTORS, ROOMS)

  def ask(w: _World) -> tuple[str, str] | None:
    actor = _someone_to_ask_about(w)
    if actor is None:
      return None
    return f"What is {actor} carrying?", ",".join(w.carrying[actor]) or "nothing"

  step = lambda: w.random_action(get_p=0.5, drop_p=0.15, give_p=0.2)
  return _story_loop(w, "qa8", ask, step, num_questions=rng.randint(1, 5), gap=(1, 5),
                     max_facts=50)


def _qa9(rng: random.Random) -> Story:
  w = _World(rng, ACTORS, ROOMS)

  def step() -> None:
    actor = rng.choice(ACTORS)
    roll = rng.random()
    if roll < 0.45:
      w.move(actor)
    elif roll < 0.6:
      w.state_in(actor)
    elif roll < 0.8 and w.belief.get(actor) == ("in", w.loc[actor]):
      w.state_no_longer_in(actor)
    else:
      w.state_not_in(actor)

  def ask(w: _World) -> tuple[str, str] | None:
    placed = [a for a in w.mentioned if w.belief[a][0] == "in"]
    negated = [a for a in w.mentioned if w.belief[a][0] == "not"]
    if not placed and not negated:
      return None
    if placed and rng.random() < 0.5:
      actor = rng.choice(placed)
      return f"Is {actor} in the {w.loc[actor]}?", "yes"
    actor = rng.choice(placed + negated)
    if w.belief[actor][0] == "not":
      return f"Is {actor} in the {w.belief[actor][1]}?", "no"
    other = rng.choice([r for r in ROOMS if r != w.loc[actor]])
    return f"Is {actor} in the {other}?", "no"

  return _story_loop(w, "qa9", ask, step, num_questions=5, gap=(2, 2), max_facts=10)


def _qa10(rng: random.Random) -> Story:
  w = _World(rng, QA10_ACTORS, QA10_ROOMS, objects=())

  def step() -> None:
    actor = rng.choice(QA10_ACTORS)
    roll = rng.random()
    if roll < 0.4:
      w.move(actor)
    elif roll < 0.6:
      w.state_in(actor)
    else:
      w.state_either(actor)

  def ask(w: _World) -> tuple[str, str] | None:
    options: dict[str, list[tuple[str, str]]] = {"yes": [], "no": [], "maybe": []}
    for actor in w.mentioned:
      kind, where = w.belief[actor]
      if kind == "in":
        options["yes"].append((actor, where))
        options["no"] += [(actor, r) for r in QA10_ROOMS if r != where]
      else:
        options["maybe"] += [(actor, r) for r in where]
        options["no"] += [(actor, r) for r in QA10_ROOMS if r not in where]
    answers = [a for a in ("yes", "no", "maybe") if options[a]]
    if not answers:
      return None
    answer = rng.choice(answers)
    actor, room = rng.choice(options[answer])
    return f"Is {actor} in the {room}?", answer

  return _story_loop(w, "qa10", ask, step, num_questions=5, gap=(2, 2), max_facts=10)


_GENERATORS: dict[str, Callable[[random.Random], Story]] = {
    "qa1": _qa1, "qa2": _qa2, "qa3": _qa3, "qa4": _qa4, "qa5": _qa5,
    "qa6": _qa6, "qa7": _qa7, "qa8": _qa8, "qa9": _qa9, "qa10": _qa10,
}


def check_task(task: str) -> str:
  if task not in _GENERATORS:
    raise ValueError(f"unknown bAbI task {task!r}; expected one of {', '.join(TASKS)}")
  return task


def generate_story(task: str, rng: random.Random) -> Story:
  """A story with at least one question, drawn with ``rng``."""
  gen = _GENERATORS[check_task(task)]
  while True:
    story = gen(rng)
    if story.questions:
      return story


def generate_sample(task: str, rng: random.Random) -> BabiSample:
  """One published-style sample: a story's question, chosen uniformly, and every fact before it."""
  story = generate_story(task, rng)
  return story.sample(rng.randrange(len(story.questions)))
