"""scripts/binding_probe.py: controlled stories tell binding, recency and a deaf model apart."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))

import binding_probe  # pylint: disable=wrong-import-position,import-error

from lm2_jax.data import babi  # pylint: disable=wrong-import-position
from lm2_jax.data.tokenizers import ByteTokenizer  # pylint: disable=wrong-import-position
from lm2_jax.evaluation.answer_classes import story_moves  # pylint: disable=wrong-import-position


class _Oracle:
  """An engine with a fixed answering rule: the room it prefers costs 0 nats, others 5."""

  def __init__(self, rule):
    self.tokenizer, self.rule = ByteTokenizer(), rule

  def encode(self, prompt):
    return [self.tokenizer.bos_id] + self.tokenizer.encode(prompt)

  def token_nll(self, tokens):
    nll = np.zeros((tokens.shape[0], tokens.shape[1] - 1), np.float32)
    for i, row in enumerate(tokens):
      real = [int(t) for t in row[1:] if t != self.tokenizer.pad_id]
      text = self.tokenizer.decode(real)
      story, rest = text.split(" Question: Where is ")
      asked, answered = rest.split("? Answer: ")
      facts = [(actor, room) for actor, room, _, _ in story_moves(story)]
      if answered != self.rule(facts, asked):
        nll[i, len(real) - 1] = 5.0   # the room's last byte, inside the scored span
    return nll


def _recency(facts, asked):
  del asked
  return facts[-1][1]


def _binding(facts, asked):
  return [room for actor, room in facts if actor == asked][-1]


def test_stories_have_distinct_actors_and_rooms_and_repeat_with_the_seed():
  drawn = binding_probe.stories(3, 50, seed=4)
  assert len(drawn) == 50 and len({tuple(s) for s in drawn}) == 50
  for story in drawn:
    assert len({a for a, _, _ in story}) == 3 and len({r for _, _, r in story}) == 3
    assert all(v in babi.MOVE_VERBS for _, v, _ in story)
  assert drawn == binding_probe.stories(3, 50, seed=4)
  assert drawn != binding_probe.stories(3, 50, seed=5)


@pytest.mark.parametrize("rule,accuracy,deaf", [
    (_recency, {"1": 1.0, "2": 0.0, "3": 0.0}, True),
    (_binding, {"1": 1.0, "2": 1.0, "3": 1.0}, False)])
def test_the_probe_separates_recency_from_binding(rule, accuracy, deaf):
  engine = _Oracle(rule)
  result = binding_probe.probe(engine, engine.tokenizer, 3, 12, seed=0)
  by_place = result["accuracy_by_place_from_end"]
  assert {k: v["rate"] for k, v in by_place.items()} == accuracy
  assert all(v["n"] == 12 for v in by_place.values())
  tv = result["question_total_variation"]
  if deaf:   # the same answer to every question about a story
    assert tv["max"] < 1e-6
  else:      # different actors, different rooms: nearly all mass moves
    assert tv["mean"] > 0.9
