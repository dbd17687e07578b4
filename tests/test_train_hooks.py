"""`lm2_jax.train.hooks`: which hooks run after which step, and in which order."""

import pytest

from lm2_jax.train.hooks import Hooks


def schedule(hooks, total, stop_at=None):
  """Run the hooks as the training loop does over `total` steps, preempted at `stop_at`."""
  for step in range(1, total + 1):
    stopping = step == stop_at
    for hook in hooks.due(step, end=step == total, stopping=stopping):
      hook(step, None)
    if stopping:
      break


def recording_hooks(ran, **every):
  hooks = Hooks()
  hooks.add("save", lambda s, _: ran.append((s, "save")), every=every["save"], on_stop=True)
  hooks.add("evaluate", lambda s, _: ran.append((s, "evaluate")), every=every["evaluate"])
  return hooks


def test_hooks_run_on_their_interval_and_at_the_end_in_registration_order():
  ran = []
  schedule(recording_hooks(ran, save=4, evaluate=6), total=13)
  assert ran == [(4, "save"), (6, "evaluate"), (8, "save"), (12, "save"), (12, "evaluate"),
                 (13, "save"), (13, "evaluate")]


def test_every_zero_runs_only_at_the_end():
  ran = []
  schedule(recording_hooks(ran, save=5, evaluate=0), total=7)
  assert ran == [(5, "save"), (7, "save"), (7, "evaluate")]


def test_a_stop_runs_only_the_hooks_that_asked_for_it():
  ran = []
  schedule(recording_hooks(ran, save=4, evaluate=2), total=10, stop_at=5)
  assert ran == [(2, "evaluate"), (4, "save"), (4, "evaluate"), (5, "save")]


def test_a_negative_interval_is_refused_naming_the_hook():
  with pytest.raises(ValueError, match="'save'.*>= 0"):
    Hooks().add("save", lambda s, _: None, every=-1)
