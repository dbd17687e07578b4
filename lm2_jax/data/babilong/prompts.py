"""What a model reads before answering: the published layout per task, and our compact one."""

from __future__ import annotations

from lm2_jax.data import babi

_LOCATION_INSTRUCTION = (
    "The context below hides short facts about people and things among unrelated sentences. "
    "Use only those facts to answer the question. When someone has been in several places, "
    "the latest fact about them counts.")


def _examples(*pairs: tuple[str, str]) -> str:
  return "\n".join(f"<example>\n{text}\nAnswer: {answer}\n</example>" for text, answer in pairs)


PROMPTS: dict[str, dict[str, str]] = {
    "qa1": {
        "instruction": _LOCATION_INSTRUCTION,
        "examples": _examples(
            ("John travelled to the garden. Sandra moved to the office. John went to the "
             "kitchen. Where is John?", "kitchen"),
            ("Mary journeyed to the bedroom. Daniel moved to the hallway. Where is Daniel?",
             "hallway")),
        "post_prompt": "Answer with a single word, the room. Write nothing else.",
    },
    "qa2": {
        "instruction": _LOCATION_INSTRUCTION + " A thing someone carries is wherever that "
                       "person is; a thing put down stays in the room where it was put down.",
        "examples": _examples(
            ("Daniel went to the office. Daniel picked up the milk there. Daniel journeyed to "
             "the garden. Where is the milk?", "garden"),
            ("Sandra went to the bathroom. Sandra grabbed the apple. Sandra travelled to the "
             "hallway. Sandra dropped the apple. John moved to the kitchen. Where is the apple?",
             "hallway")),
        "post_prompt": "Answer with a single word, the room. Write nothing else.",
    },
    "qa3": {
        "instruction": _LOCATION_INSTRUCTION + " A thing someone carries goes wherever that "
                       "person goes. Follow the thing room by room.",
        "examples": _examples(
            ("Mary took the football. Mary went to the hallway. Mary moved to the bedroom. "
             "Where was the football before the bedroom?", "hallway"),
            ("John went to the kitchen. John got the apple there. John journeyed to the office. "
             "Sandra went to the garden. John travelled to the bathroom. Where was the apple "
             "before the bathroom?", "office")),
        "post_prompt": "Answer with a single word, the room. Write nothing else.",
    },
    "qa4": {
        "instruction": "The context below hides facts about how rooms lie relative to each "
                       "other among unrelated sentences. Use only those facts to answer.",
        "examples": _examples(
            ("The garden is west of the office. The office is west of the kitchen. What is "
             "east of the garden?", "office"),
            ("The hallway is south of the bedroom. The bathroom is north of the bedroom. What "
             "is the bedroom north of?", "hallway")),
        "post_prompt": "Answer with a single word, the room. Write nothing else.",
    },
    "qa5": {
        "instruction": "The context below hides facts about people moving and passing things "
                       "to one another among unrelated sentences. Use only those facts; the "
                       "latest hand-over counts.",
        "examples": _examples(
            ("Fred went to the kitchen. Bill journeyed to the kitchen. Fred picked up the milk "
             "there. Fred handed the milk to Bill. Jeff moved to the garden. Who received the "
             "milk?", "Bill"),
            ("Mary took the football. Jeff went to the office. Mary travelled to the office. "
             "Mary gave the football to Jeff. What did Mary give to Jeff?", "football")),
        "post_prompt": "Answer with a single word, a name or a thing. Write nothing else.",
    },
    "qa6": {
        "instruction": _LOCATION_INSTRUCTION,
        "examples": _examples(
            ("John went to the hallway. Daniel moved to the garden. Is John in the hallway?",
             "yes"),
            ("Sandra journeyed to the office. Sandra travelled to the bathroom. Is Sandra in "
             "the office?", "no")),
        "post_prompt": "Answer yes or no. Write nothing else.",
    },
    "qa7": {
        "instruction": "The context below hides facts about people picking up, putting down "
                       "and passing things among unrelated sentences. Use only those facts.",
        "examples": _examples(
            ("Daniel grabbed the apple. Daniel went to the garden. Daniel picked up the milk "
             "there. How many objects is Daniel carrying?", "two"),
            ("Sandra got the milk. Sandra discarded the milk. How many objects is Sandra "
             "carrying?", "none")),
        "post_prompt": "Answer with one word: none, one, two or three. Write nothing else.",
    },
    "qa8": {
        "instruction": "The context below hides facts about people picking up, putting down "
                       "and passing things among unrelated sentences. Use only those facts.",
        "examples": _examples(
            ("John picked up the apple there. John moved to the office. John took the football "
             "there. What is John carrying?", "apple,football"),
            ("Daniel grabbed the milk. Daniel put down the milk. What is Daniel carrying?",
             "nothing")),
        "post_prompt": "Answer with nothing, or the things joined by commas without spaces "
                       "(for example apple,milk). Write nothing else.",
    },
    "qa9": {
        "instruction": _LOCATION_INSTRUCTION + " Some facts only say where a person is not.",
        "examples": _examples(
            ("Mary is in the kitchen. Mary is no longer in the kitchen. Is Mary in the "
             "kitchen?", "no"),
            ("Daniel is not in the garden. Daniel journeyed to the office. Is Daniel in the "
             "office?", "yes")),
        "post_prompt": "Answer yes or no. Write nothing else.",
    },
    "qa10": {
        "instruction": _LOCATION_INSTRUCTION + " Some facts leave two places open; then the "
                       "answer for either of them is maybe.",
        "examples": _examples(
            ("Julie is either in the park or the school. Is Julie in the park?", "maybe"),
            ("Bill went to the cinema. Fred is in the office. Is Bill in the kitchen?", "no")),
        "post_prompt": "Answer yes, no or maybe. Write nothing else.",
    },
}

COMPACT_TEMPLATE = "{input} Question: {question} Answer:"


def format_prompt(sample: dict, task: str, template: str = "full", *, instruction: bool = True,
                  examples: bool = True, post_prompt: bool = True) -> str:
  """The text a model reads before answering.

  ``"full"``: the published evaluation's layout (instruction, worked examples, a post-prompt
  fixing the answer format, ``<context>`` + input + ``</context>``, ``Question: ...``), parts
  separated by blank lines; each of the first three parts can be switched off. ``"compact"``:
  ``COMPACT_TEMPLATE``, for small models trained on our format.
  """
  if template == "compact":
    return COMPACT_TEMPLATE.format(input=sample["input"].strip(), question=sample["question"])
  if template != "full":
    raise ValueError(f"unknown template {template!r}; expected 'full' or 'compact'")
  prompt = PROMPTS[babi.check_task(task)]
  parts = [prompt["instruction"] if instruction else "",
           prompt["examples"] if examples else "",
           prompt["post_prompt"] if post_prompt else "",
           f"<context>\n{sample['input'].strip()}\n</context>",
           f"Question: {sample['question']}"]
  return "\n\n".join(p for p in parts if p)


def answered_question(question: str, answer: str) -> str:
  """An earlier question of the story with its answer, as interleaved training text reads it.

  The same words as the compact template's question and answer, so the last question of a
  sample and the ones before it look alike; a full stop closes it (unscored) as it closes
  the facts and background sentences around it.
  """
  return COMPACT_TEMPLATE.format(input="", question=question).lstrip() + f" {answer}."


def format_training_example(sample: dict, task: str | None = None) -> tuple[str, str]:
  """(prompt, answer) in the compact template; the answer has a leading space: " kitchen"."""
  del task  # the compact template is the same for every task
  return format_prompt(sample, "qa1", "compact"), " " + sample["target"]
