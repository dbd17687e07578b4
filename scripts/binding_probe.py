"""Does a qa1 model read the question? Controlled stories, each asked about every actor.

    python scripts/binding_probe.py runs/x [--facts 3] [--stories 200] [--output probe.json]

Draws stories of N facts with N distinct actors and N distinct rooms ("Sandra went to the
office. Mary moved to the garden. John journeyed to the kitchen."), asks "Where is X?"
about each actor in the compact template the models are trained on, and scores the six
rooms by the log-probability of each room's tokens after the prompt (no sampling; byte and
BPE models alike). Three models answer differently:
  - one that binds names the asked actor's room whatever the fact's place in the story;
  - one that answers by recency names the last fact's room, right only when the last
    fact's actor is asked;
  - one that ignores the question gives the same distribution to every question about one
    story: the total variation between the answers to two questions about one story is 0.
Prints accuracy by the asked fact's place counted from the end (1 = the story's last fact),
with n and a 95% interval, and that total variation (mean and largest). Accuracy on
generated BABILong samples mixes these cases with the rate at which bAbI happens to ask
about the last fact's actor (about half the time); this probe separates them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lm2_jax import checkpoint as ckpt  # pylint: disable=wrong-import-position
from lm2_jax.data import babi  # pylint: disable=wrong-import-position
from lm2_jax.data.babilong.prompts import COMPACT_TEMPLATE  # pylint: disable=wrong-import-position
from lm2_jax.data.tokenizers import load_tokenizer  # pylint: disable=wrong-import-position
from lm2_jax.evaluation.report import wilson_interval  # pylint: disable=wrong-import-position
from lm2_jax.inference.engine import Engine  # pylint: disable=wrong-import-position


def stories(num_facts: int, num_stories: int, seed: int) -> list[list[tuple[str, str, str]]]:
  """`num_stories` distinct stories of (actor, verb, room) facts, actors and rooms distinct."""
  rng = random.Random(seed)
  everything = [(a, r) for a in itertools.permutations(babi.ACTORS, num_facts)
                for r in itertools.permutations(babi.ROOMS, num_facts)]
  picked = rng.sample(everything, min(num_stories, len(everything)))
  return [[(a, rng.choice(babi.MOVE_VERBS), r) for a, r in zip(actors, rooms)]
          for actors, rooms in picked]


def room_logprobs(engine: Engine, tokenizer, prompts: list[str]) -> np.ndarray:
  """log p(room | prompt) summed over each room's tokens: float32 [len(prompts), 6]."""
  rows, spans = [], []
  for prompt in prompts:
    head = engine.encode(prompt)
    for room in babi.ROOMS:
      tail = tokenizer.encode(" " + room)
      rows.append(head + tail)
      spans.append((len(head) - 1, len(head) - 1 + len(tail)))  # targets of the room
  width = max(len(r) for r in rows)
  tokens = np.full((len(rows), width), tokenizer.pad_id, np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
  nll = engine.token_nll(tokens)
  scores = np.array([-nll[i, a:b].sum() for i, (a, b) in enumerate(spans)], np.float32)
  return scores.reshape(len(prompts), len(babi.ROOMS))


def probe(engine: Engine, tokenizer, num_facts: int, num_stories: int, seed: int) -> dict:
  """Accuracy by the asked fact's place and the answers' dependence on the question."""
  prompts, want, place = [], [], []
  drawn = stories(num_facts, num_stories, seed)
  for story in drawn:
    text = " ".join(f"{a} {v} the {r}." for a, v, r in story)
    for i, (actor, _, room) in enumerate(story):
      prompts.append(COMPACT_TEMPLATE.format(input=text, question=f"Where is {actor}?"))
      want.append(babi.ROOMS.index(room))
      place.append(num_facts - i)
  scores = room_logprobs(engine, tokenizer, prompts)
  probs = np.exp(scores - scores.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  right = scores.argmax(1) == np.asarray(want)
  place = np.asarray(place)
  by_place = {}
  for p in range(1, num_facts + 1):
    hits, n = int(right[place == p].sum()), int((place == p).sum())
    by_place[str(p)] = {"rate": hits / n, "n": n, "ci95": list(wilson_interval(hits, n))}
  per_story = probs.reshape(len(drawn), num_facts, len(babi.ROOMS))
  tv = [0.5 * np.abs(s[i] - s[j]).sum() for s in per_story
        for i, j in itertools.combinations(range(num_facts), 2)]
  return {"facts": num_facts, "stories": len(drawn), "accuracy_by_place_from_end": by_place,
          "question_total_variation": {"mean": float(np.mean(tv)), "max": float(np.max(tv))}}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("checkpoint", help="a work directory or one of its checkpoints")
  p.add_argument("--facts", type=int, default=3, help="facts per story (2-4)")
  p.add_argument("--stories", type=int, default=200)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--output", help="write the result as JSON here")
  p.add_argument("--segment-len", type=int, default=0,
                 help="probe with segments of this many tokens instead of the checkpoint's "
                      "(128 puts a whole story inside one attention window)")
  args = p.parse_args(argv)
  if not 2 <= args.facts <= len(babi.ACTORS):
    print(f"--facts {args.facts}: expected 2..{len(babi.ACTORS)} (one actor per fact)",
          file=sys.stderr)
    return 2
  if args.segment_len < 0:
    print(f"--segment-len {args.segment_len}: expected a positive length (0: the "
          "checkpoint's)", file=sys.stderr)
    return 2
  try:
    workdir, _ = ckpt.resolve(args.checkpoint)
    cfg = ckpt.load_workdir_config(workdir)
    cfg, params, step = ckpt.load_params(args.checkpoint, cfg)
  except (OSError, ValueError, ckpt.CheckpointError) as e:
    print(f"{args.checkpoint}: {e}", file=sys.stderr)
    return 2
  if args.segment_len:
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                             segment_len=args.segment_len))
  tokenizer = load_tokenizer(cfg.data.tokenizer)
  engine = Engine(cfg.model, params, tokenizer, batch_size=64)
  result = {"checkpoint": os.path.abspath(args.checkpoint), "step": int(step),
            "segment_len": cfg.model.segment_len,
            **probe(engine, tokenizer, args.facts, args.stories, args.seed)}
  print(f"{args.checkpoint} (step {step}), {args.facts}-fact stories, {result['stories']} "
        f"stories, every actor asked, segments of {cfg.model.segment_len} tokens")
  for place, c in result["accuracy_by_place_from_end"].items():
    lo, hi = c["ci95"]
    print(f"  asked about fact {place} from the end: {100 * c['rate']:.0f}% "
          f"({100 * lo:.0f}-{100 * hi:.0f}, n={c['n']})")
  tv = result["question_total_variation"]
  print(f"  total variation between two questions about one story: mean {tv['mean']:.4f}, "
        f"largest {tv['max']:.4f} (0: the question is ignored)")
  if args.output:
    with open(args.output, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
