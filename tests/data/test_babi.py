"""The bAbI simulator: every answer follows from the facts, in the published wording."""

import collections
import random
import re

import pytest

import babi_solver
from lm2_jax.data import babi

NUM_SAMPLES = 400  # per task; the whole file runs in about two seconds


def _samples(task, n=NUM_SAMPLES, seed=0):
  rng = random.Random(seed)
  return [babi.generate_sample(task, rng) for _ in range(n)]


@pytest.mark.parametrize("task", babi.TASKS)
def test_independent_solver_agrees_with_the_simulator(task):
  for s in _samples(task):
    assert babi_solver.solve(s.facts, s.question) == s.answer, s


@pytest.mark.parametrize("task", babi.TASKS)
def test_every_question_of_a_story_is_determined_by_the_facts_before_it(task):
  rng = random.Random(7)
  for _ in range(100):
    story = babi.generate_story(task, rng)
    positions = [q.position for q in story.questions]
    assert positions == sorted(positions) and positions[0] >= 1
    for q in range(len(story.questions)):
      s = story.sample(q)
      assert babi_solver.solve(s.facts, s.question) == s.answer


@pytest.mark.parametrize("task", babi.TASKS)
def test_the_other_questions_a_story_answers_are_right_and_distinct(task):
  """Question.others (the recall questions): each is answered by the facts before it as
  listed, none is the question asked, none twice; only qa1-qa5 have them."""
  counts = []
  for s in _samples(task):
    questions = [q for q, _ in s.others]
    assert s.question not in questions and len(set(questions)) == len(questions)
    for question, answer in s.others:
      assert babi_solver.solve(s.facts, question) == answer, (s, question)
    counts.append(len(s.others))
  if task in babi.RECALL_TASKS:
    assert sum(counts) > len(counts) * 0.3   # qa3 has the fewest: 0.32 per sample
  else:
    assert not any(counts)


def test_qa1s_other_questions_ask_about_every_other_actor_named():
  for s in _samples("qa1"):
    asked = s.question.removeprefix("Where is ").removesuffix("?")
    assert s.others == tuple((f"Where is {a}?", room)
                             for a, room in babi.final_rooms(s.facts).items() if a != asked)


def test_qa4_and_qa5_ask_about_every_relation_and_the_latest_give_of_each_object():
  for s in _samples("qa4", 50):
    assert len(s.others) == 7     # two relations, each read four ways
  for s in _samples("qa5", 200):
    given = {m.group(1) for f in s.facts
             if (m := re.search(r" (?:gave|handed|passed) the (\w+) to ", f))}
    asked = {q.removeprefix("Who gave the ").removesuffix("?") for q, _ in s.others
             if re.fullmatch(r"Who gave the \w+\?", q)}
    asked |= {w for w in given if s.question in (f"Who gave the {w}?",)}
    assert asked == given, s


@pytest.mark.parametrize("task", babi.TASKS)
def test_same_generator_state_gives_the_same_story(task):
  a = babi.generate_story(task, random.Random(123))
  b = babi.generate_story(task, random.Random(123))
  assert a == b


_ACTORS = {
    "qa5": set(babi.QA5_ACTORS), "qa10": set(babi.QA10_ACTORS),
}
_ROOMS = {"qa10": set(babi.QA10_ROOMS)}


@pytest.mark.parametrize("task", babi.TASKS)
def test_stories_use_only_the_task_world(task):
  actors = _ACTORS.get(task, set(babi.ACTORS))
  rooms = _ROOMS.get(task, set(babi.ROOMS))
  for s in _samples(task, 200, seed=1):
    for fact in s.facts:
      words = re.findall(r"[A-Za-z]+", fact)
      names = {w for w in words if w[0].isupper() and w != "The"}
      assert names <= actors, fact
      places = {w for w in words if w in set(babi.ROOMS) | set(babi.QA10_ROOMS)}
      assert places <= rooms, fact


def test_qa1_uses_moves_only_and_asks_where_a_person_is():
  for s in _samples("qa1", 200):
    assert re.fullmatch(r"Where is [A-Z][a-z]+\?", s.question)
    assert 2 <= len(s.facts) <= 10
    assert all(" to the " in f for f in s.facts)


def test_qa4_is_two_relations_on_one_line():
  for s in _samples("qa4", 300):
    assert len(s.facts) == 2
    rooms = set(re.findall(r"[Tt]he (\w+)", " ".join(s.facts)))
    assert len(rooms) == 3
    dirs = set(re.findall(r"(north|south|east|west)", " ".join(s.facts)))
    assert dirs <= {"north", "south"} or dirs <= {"east", "west"}


def test_qa5_questions_cover_the_five_forms():
  forms = collections.Counter()
  for s in _samples("qa5", 300):
    forms[re.sub(r"(Bill|Fred|Jeff|Mary|apple|football|milk)", "X", s.question)] += 1
  assert set(forms) == {"What did X give to X?", "Who gave the X?", "Who gave the X to X?",
                        "Who received the X?", "Who did X give the X to?"}


def test_qa5_has_at_most_five_statements_between_the_give_and_its_question():
  for s in _samples("qa5", 300):
    last_give = max(i for i, f in enumerate(s.facts) if re.search(r" (gave|handed|passed) ", f))
    assert len(s.facts) - 1 - last_give <= 5


def test_yes_no_answers_are_balanced():
  counts = collections.Counter(s.answer for s in _samples("qa6"))
  assert 0.4 < counts["yes"] / NUM_SAMPLES < 0.6
  counts = collections.Counter(s.answer for s in _samples("qa10"))
  assert set(counts) == {"yes", "no", "maybe"}


def test_qa7_and_qa8_answer_formats():
  assert {s.answer for s in _samples("qa7")} <= {"none", "one", "two", "three"}
  answers = {s.answer for s in _samples("qa8")}
  assert "nothing" in answers and any("," in a for a in answers)
  for a in answers:
    assert a == "nothing" or re.fullmatch(r"(apple|football|milk)(,(apple|football|milk))*", a)


def test_qa9_uses_the_three_statement_forms():
  text = " ".join(f for s in _samples("qa9") for f in s.facts)
  for form in (" is in the ", " is not in the ", " is no longer in the ", " to the "):
    assert form in text


def test_unknown_task_is_rejected():
  with pytest.raises(ValueError, match="qa11"):
    babi.generate_story("qa11", random.Random(0))


def test_final_rooms_follow_each_actors_latest_move():
  facts = ("Mary went to the kitchen.", "John journeyed to the office.",
           "Mary went back to the garden.")
  assert babi.final_rooms(facts) == {"Mary": "garden", "John": "office"}
  assert list(babi.final_rooms(facts)) == ["Mary", "John"]
  with pytest.raises(ValueError, match="not a qa1 move: 'Mary got the milk.'"):
    babi.final_rooms(("Mary got the milk.",))
