"""What the training loop does between steps, each job on its own interval.

As Levanter's `Trainer.add_hook`: saving and evaluation register here with an `every`
instead of being interleaved with the step, and the loop asks once per step which of them
are due. A hook runs after step s when s % every == 0 (every=0: never on an interval), after
the run's last step, and, if it asked for it (`on_stop`), after the step at which a stop
signal arrived: a preempted run must save, but has no time to evaluate.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Hook:
  """`fn(step, state)` after every `every`-th step and at the end."""

  name: str
  fn: Callable[[int, Any], None]
  every: int
  on_stop: bool = False

  def due(self, step: int, *, end: bool = False, stopping: bool = False) -> bool:
    return (end or (stopping and self.on_stop)
            or (self.every > 0 and step % self.every == 0))

  def __call__(self, step: int, state: Any) -> None:
    self.fn(step, state)


class Hooks:
  """The registered hooks, run in the order they were added."""

  def __init__(self):
    self._hooks: list[Hook] = []

  def add(self, name: str, fn: Callable[[int, Any], None], *, every: int,
          on_stop: bool = False) -> Hook:
    if every < 0:
      raise ValueError(f"hook {name!r}: every must be >= 0, got {every}")
    hook = Hook(name, fn, every, on_stop)
    self._hooks.append(hook)
    return hook

  def due(self, step: int, *, end: bool = False, stopping: bool = False) -> list[Hook]:
    """The hooks to run after `step`; `end`: it is the run's last, `stopping`: preempted."""
    return [h for h in self._hooks if h.due(step, end=end, stopping=stopping)]
