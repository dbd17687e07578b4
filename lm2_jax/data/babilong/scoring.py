"""The BABILong scoring rule: the published substring rule, and a whole-word variant.

``compare_answers`` reproduces the published rule exactly (see its docstring); each task's
label set is the vocabulary of answers it can have.
"""

from __future__ import annotations

import re

from lm2_jax.data import babi

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
