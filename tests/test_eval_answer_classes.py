"""The qa1 answer classes: each wrong answer lands in the class that explains it."""

import pytest

from lm2_jax.data import babilong as bl
from lm2_jax.evaluation import answer_classes as ac

SAMPLE = {"input": "Mary went to the kitchen. Some filler text here. John moved to the office. "
                   "Mary journeyed to the garden. Sandra went to the bathroom.",
          "question": "Where is Mary?", "target": "garden"}


@pytest.mark.parametrize("output,kind", [
    ("garden", "correct"), (" Garden.", "correct"), ("kitchen", "stale"),
    ("office", "other actor's"), ("bathroom", "other actor's"),
    ("hallway", "unmentioned room"), ("kiccchen", "not a room"), ("", "not a room")])
def test_each_answer_gets_the_class_that_explains_it(output, kind):
  assert ac.classify(SAMPLE, output, 32)["class"] == kind


def test_features_of_the_sample():
  row = ac.classify(SAMPLE, "bathroom", 32)
  assert row["moves_of_actor"] == 2
  assert row["facts_after_support"] == 1
  assert row["story_facts"] == 4
  assert row["answer_is_last_room"] and not row["target_is_last_room"]
  # The supporting fact's "Mary" is token 76 (after BOS), the last byte of "garden" token
  # 103: one segment of 128, but segments 2 and 3 of 32.
  assert not ac.classify(SAMPLE, "garden", 128)["support_split"]
  assert ac.classify(SAMPLE, "garden", 32)["support_split"]
  # The question's "Mary" is token 154, the answer is predicted at token 166 (the final ":").
  assert not ac.classify(SAMPLE, "garden", 200)["question_split"]  # both in segment 0
  assert ac.classify(SAMPLE, "garden", 32)["question_split"]       # segments 4 and 5


def test_a_sample_whose_facts_do_not_give_the_target_is_refused():
  with pytest.raises(ValueError, match="do not answer 'Where is Mary\\?' with 'office'"):
    ac.classify(dict(SAMPLE, target="office"), "office", 32)


def test_recency_answers_score_exactly_the_last_room_share_on_generated_samples():
  samples = [bl.make_sample("qa1", "1k", i, 0) for i in range(40)]
  rows = [ac.classify(s, ac.story_moves(s["input"].strip())[-1][1], 32) for s in samples]
  summary = ac.summarize(rows)
  assert summary["n"] == 40
  assert summary["answers_last_room"]["rate"] == 1.0
  assert summary["classes"]["correct"]["rate"] == summary["target_is_last_room"]["rate"]
  assert summary["classes"]["unmentioned room"]["rate"] == 0.0
  lo, hi = summary["classes"]["correct"]["ci95"]
  assert lo <= summary["classes"]["correct"]["rate"] <= hi
  # Whenever the supporting fact is the last one, recency is right.
  assert summary["accuracy_by_facts_after_support"]["0"]["rate"] == 1.0
  assert summary["accuracy_by_support_is_last_fact"]["True"]["rate"] == 1.0
  assert sum(c["n"] for c in summary["accuracy_by_facts_after_support"].values()) == 40


def test_accuracy_by_story_facts_buckets_two_then_pairs_then_seven_and_more():
  rows = [{"class": "correct" if n % 2 else "stale", "story_facts": n, "moves_of_actor": 1,
           "facts_after_support": 0, "support_split": False, "question_split": False,
           "answer_is_last_room": False, "target_is_last_room": False, "answer": "x"}
          for n in range(1, 11)]
  cells = ac.summarize(rows)["accuracy_by_story_facts"]
  assert {k: c["n"] for k, c in cells.items()} == {"1": 1, "2": 1, "3-4": 2, "5-6": 2, "7+": 4}
  assert cells["3-4"]["rate"] == 0.5 and cells["7+"]["rate"] == 0.5 and cells["2"]["rate"] == 0
