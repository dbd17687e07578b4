"""scripts/binding_synthetic.py: the single-token qa1 scores the right answers and flags."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))

import binding_synthetic as bs  # pylint: disable=wrong-import-position,import-error


def _replay(row, target, hard, filler=0):
  """Re-derives every scored answer from the text: the asked actor's last room so far."""
  where, last_actor, checked = {}, None, 0
  row, target, hard = [int(t) for t in row], [int(t) for t in target], [bool(h) for h in hard]
  for t in range(1, len(row)):
    if row[t] in bs.NAMES and row[t - 1] != bs.QUESTION:
      room = row[t + 1 + filler]
      assert room in bs.ROOMS
      where[row[t]], last_actor = room, row[t]
    if row[t] == bs.ANSWER:
      asked = row[t - 1]
      assert target[t] == where[asked]
      assert hard[t] == (asked != last_actor)
      checked += 1
    else:
      assert target[t] == -1 and not hard[t]
  return checked


def test_every_answer_is_the_asked_actors_last_room():
  rng = np.random.default_rng(0)
  x, y, hard = bs.batch(rng, 200, facts=5, filler=0, questions=3)
  assert x.shape == y.shape == hard.shape == (200, 1 + 5 * 2 + 3 * 4 + 3)
  counts = [_replay(*row) for row in zip(np.asarray(x), np.asarray(y), np.asarray(hard))]
  assert counts == [4] * 200
  # Earlier answers stay in the text (as a fact would), the final one is predicted at the end.
  assert int(x[0, -1]) == bs.ANSWER and int(y[0, -1]) in bs.ROOMS


def test_plain_format_has_one_answer_and_binding_questions_are_not_the_last_fact():
  x, y, hard = bs.batch(np.random.default_rng(1), 500, facts=3, filler=2)
  x, y, hard = np.asarray(x), np.asarray(y), np.asarray(hard)
  assert ((y >= 0).sum(axis=1) == 1).all()
  last_actor = x[:, -7]  # ... name f f room Q name A: the last fact's actor
  assert (hard[:, -1] == (x[:, -2] != last_actor)).all()
  # About 1 - 1/4 of the questions ask another actor than the last fact's (4 names).
  assert 0.5 < hard[:, -1].mean() < 0.85
  assert [_replay(*row, filler=2) for row in zip(x, y, hard)] == [1] * 500


def test_background_puts_the_gap_between_the_story_and_the_final_question():
  rng = np.random.default_rng(2)
  x, y, hard = (np.asarray(a) for a in bs.batch(rng, 300, facts=3, filler=0, background=24))
  assert x.shape == (300, 1 + 24 + 3 * 2 + 3)  # every sequence as long: one compiled shape
  assert [_replay(*row) for row in zip(x, y, hard)] == [1] * 300
  # The haystack before the question is drawn from 0..background, the rest precedes the story.
  gaps = [int(np.isin(row[:-3], bs.HAYSTACK)[::-1].argmin()) for row in x]
  assert min(gaps) == 0 and max(gaps) == 24 and len(set(gaps)) > 15
  x, _, _ = (np.asarray(a) for a in bs.batch(rng, 50, facts=3, filler=0, background=24, gap=7))
  assert np.isin(x[:, -10:-3], bs.HAYSTACK).all() and np.isin(x[:, -11], bs.ROOMS).all()
  assert np.isin(x[:, 1:1 + 24 - 7], bs.HAYSTACK).all() and np.isin(x[:, 18], bs.NAMES).all()


def test_plain_steps_train_on_the_plain_format_first():
  import argparse  # pylint: disable=import-outside-toplevel
  args = argparse.Namespace(facts=3, filler=0, questions=0, background=16, train_gap=None,
                            plain_steps=2, final_questions=1,
                            repeated_haystack=False, direct=False, copied_spans=False)
  rng = np.random.default_rng(3)
  shapes = [bs.train_batch(args, rng, i)[0].shape for i in (1, 2, 3)]
  assert shapes == [(64, 1 + 6 + 3), (64, 1 + 6 + 3), (64, 1 + 16 + 6 + 3)]


def test_final_questions_ask_about_the_whole_story_after_the_haystack():
  rng = np.random.default_rng(4)
  x, y, hard = (np.asarray(a) for a in bs.batch(rng, 300, facts=3, filler=0, background=8,
                                                  gap=8, final=3))
  assert x.shape == (300, 1 + 8 + 3 * 2 + 3 * 4 - 1)
  assert [_replay(*row) for row in zip(x, y, hard)] == [3] * 300
  # All three come after the haystack, the first two answered in the text.
  assert (x[:, -11] == bs.QUESTION).all() and (x[:, -7] == bs.QUESTION).all()
  assert np.isin(x[:, -12], bs.HAYSTACK).all() and np.isin(x[:, -8], bs.ROOMS).all()
  # They ask about any actor of the story: about half not the last fact's (as at the end
  # of the plain format: the asked one is drawn from the 3 facts, names may repeat).
  assert 0.35 < hard[:, [-9, -5, -1]].mean() < 0.65


def test_repeated_haystack_scores_only_tokens_an_earlier_pair_predicts():
  rng = np.random.default_rng(5)
  x, y, hard = (np.asarray(a) for a in bs.batch(rng, 200, facts=3, filler=0, background=16,
                                                  repeated=True))
  scored = 0
  for row, target in zip(x, y):
    for t in np.flatnonzero(target >= 0)[:-1]:  # the last one is the final answer
      assert row[t] in bs.HAYSTACK and target[t] == row[t + 1]
      earlier = [s for s in range(t) if row[s] == row[t]]
      assert earlier and row[earlier[-1] + 1] == row[t + 1]
      scored += 1
    assert target[-1] in bs.ROOMS
  # Each of the 8 block tokens is said twice; the story may cut one repeated pair apart.
  assert 5 * 200 < scored <= 7 * 200
  assert [_replay(r, np.where(np.isin(r, bs.HAYSTACK), -1, t), h)
          for r, t, h in zip(x, y, hard)] == [1] * 200


def test_copied_spans_repeat_at_varying_distances_and_score_what_an_earlier_pair_predicts():
  rng = np.random.default_rng(7)
  x, y, hard = (np.asarray(a) for a in bs.batch(rng, 200, facts=3, filler=0, background=32,
                                                  copied=True))
  distances = set()
  for row, target in zip(x, y):
    for t in np.flatnonzero(target >= 0)[:-1]:
      assert row[t] in bs.HAYSTACK and target[t] == row[t + 1]
      earlier = [s for s in range(t) if row[s] == row[t] and row[s + 1] == row[t + 1]]
      assert earlier
      distances.add(t - earlier[-1])
    assert target[-1] in bs.ROOMS
  # Copies land at many distances from their sources: no fixed offset predicts them.
  assert len(distances) > 15
  assert [_replay(r, np.where(np.isin(r, bs.HAYSTACK), -1, t), h)
          for r, t, h in zip(x, y, hard)] == [1] * 200


def test_init_from_copies_the_shared_parameters_and_keeps_the_new_ones_fresh(tmp_path, capsys):
  path = str(tmp_path / "backbone.npz")
  bs.save_params({"core": {"blocks": {"w": np.ones((2, 3))}, "head": np.zeros(3)}}, path)
  # The memory-on model's blocks are `memory_blocks`: they take the memory-off `blocks`.
  fresh = {"core": {"memory_blocks": {"w": np.full((2, 3), 7.0), "gate": np.full(4, 7.0)},
                    "head": np.full(3, 7.0)}}
  got = bs.load_shared(fresh, path)["core"]
  np.testing.assert_array_equal(got["memory_blocks"]["w"], np.ones((2, 3)))
  np.testing.assert_array_equal(got["head"], np.zeros(3))
  np.testing.assert_array_equal(got["memory_blocks"]["gate"], np.full(4, 7.0))
  assert "2 parameters copied, 1 fresh, 0 saved ones unused" in capsys.readouterr().out
  with pytest.raises(SystemExit, match="core/blocks/w has shape"):
    bs.load_shared({"core": {"blocks": {"w": np.ones((3, 3))}}}, path)


def test_direct_questions_put_the_room_right_after_the_asked_name():
  x, y, hard = (np.asarray(a) for a in bs.batch(np.random.default_rng(6), 100, facts=3,
                                                  filler=0, background=8, direct=True))
  assert x.shape == (100, 1 + 8 + 3 * 2 + 2)
  assert (x[:, -2] == bs.QUESTION).all() and np.isin(x[:, -1], bs.NAMES).all()
  assert ((y >= 0).sum(axis=1) == 1).all() and np.isin(y[:, -1], bs.ROOMS).all()
  for row, target, flag in zip(x, y, hard):
    facts = [t for t in range(1, len(row) - 2) if row[t] in bs.NAMES]
    last = max(t for t in facts if row[t] == row[-1])
    assert target[-1] == row[last + 1] and flag[-1] == (row[-1] != row[facts[-1]])


def test_options_that_cannot_build_a_sequence_exit_2_naming_the_flag(capsys):
  for argv, flag in ((["--final-questions", "0"], "--final-questions"),
                     (["--repeated-haystack", "--background", "200"], "--repeated-haystack"),
                     (["--copied-spans", "--background", "2"], "--copied-spans"),
                     (["--init-from", "/nonexistent/p.npz"], "--init-from"),
                     (["--backend", "transformers", "--save", "p.npz"], "--save")):
    with pytest.raises(SystemExit) as exit_info:
      bs.main(argv)
    assert exit_info.value.code == 2 and flag in capsys.readouterr().err
