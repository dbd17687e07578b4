"""Is a fact lost under background, or still in the memory and not read? A linear probe.

    python scripts/memory_decode.py --checkpoint runs/a --gaps 0,1024 --num-samples 500 \
        --output decode.json

The inserted-gap samples of qa1 (the same as `scripts/memory_probe.py --gaps` draws with
the same seed: the story's facts, then `g` segments of background) are read up to the
question, and the memory there, all memory layers and slots flattened, is the probe's
input. Per actor a ridge regression maps it to the one-hot of the room the facts leave that
actor in. It is fitted on the first `--train-fraction` of the samples, its penalty chosen by
5-fold cross-validation there, and scored on the rest: for the asked actor (what the model's
answer needs) and for every actor the story moved. Beside them, how often the asked actor's
room is simply the last room the story mentions (what a recency answer gets right).

If the asked actor's room decodes from the memory about as well far from the facts as near
them while the model's own answers fall (memory_probe's gap curve on the same samples),
the fact is there and the read is what fails; if decoding falls with them, the fact is
gone. A linear probe is a lower bound on what the memory holds. The memory is taken after
the last complete segment: at gap 0 the last fact may still sit in the unfinished segment,
seen by attention and not yet written, so decoding at +0 understates the memory.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lm2_jax import checkpoint as ckpt  # pylint: disable=wrong-import-position
from lm2_jax.data import babi  # pylint: disable=wrong-import-position
from lm2_jax.data.haystack import load_haystack  # pylint: disable=wrong-import-position
from lm2_jax.data.tokenizers import load_tokenizer  # pylint: disable=wrong-import-position
from lm2_jax.evaluation.gap_curve import gap_label, gap_samples  # pylint: disable=wrong-import-position
from lm2_jax.evaluation.report import wilson_interval, write_json  # pylint: disable=wrong-import-position
from lm2_jax.model import build_model  # pylint: disable=wrong-import-position
from lm2_jax.model.trace import make_memory_states  # pylint: disable=wrong-import-position

PENALTIES = tuple(10.0 ** k for k in range(-1, 7))


def _moves(text: str) -> list[str]:
  """The qa1 moves found in `text`, in order (background skipped)."""
  moves = []
  for sentence in text.replace("\n", " ").split("."):
    words = sentence.split()
    if (len(words) >= 4 and words[0] in babi.ACTORS and words[-2] == "the"
        and words[-1] in babi.ROOMS):
      moves.append(" ".join(words) + ".")
  return moves


def actor_rooms(text: str) -> dict[str, str]:
  """The room each actor is in after the qa1 moves found in `text`."""
  return babi.final_rooms(_moves(text))


def last_room(text: str) -> str:
  """The room of the last move in `text`: what a model on the recency plateau answers."""
  return _moves(text)[-1].rstrip(".").split()[-1]


def _fit(x_NxF: np.ndarray, y_NxC: np.ndarray, penalty: float) -> np.ndarray:
  """Ridge weights [F + 1, C] (the last row a bias), solved in the dual when N < F."""
  x = np.concatenate([x_NxF, np.ones((len(x_NxF), 1))], axis=1)
  if len(x) < x.shape[1]:
    return x.T @ np.linalg.solve(x @ x.T + penalty * np.eye(len(x)), y_NxC)
  return np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ y_NxC)


def _predict(w: np.ndarray, x_NxF: np.ndarray) -> np.ndarray:
  return np.concatenate([x_NxF, np.ones((len(x_NxF), 1))], axis=1) @ w


def ridge_probe(x_train: np.ndarray, labels_train: np.ndarray, x_test: np.ndarray,
                classes: int, *, folds: int = 5) -> tuple[np.ndarray, float]:
  """Predicted classes for `x_test` and the penalty chosen by `folds`-fold cross-validation.

  Features are standardised with the training rows' statistics; the classes are one-hot
  targets and the prediction is the largest output.
  """
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
  y = np.eye(classes)[labels_train]
  fold_of = np.arange(len(x_train)) % folds

  def cv_accuracy(penalty: float) -> float:
    right = 0
    for k in range(folds):
      fit, held = fold_of != k, fold_of == k
      if not held.any() or not fit.any():
        continue
      w = _fit(x_train[fit], y[fit], penalty)
      right += int((_predict(w, x_train[held]).argmax(1) == labels_train[held]).sum())
    return right

  penalty = max(PENALTIES, key=cv_accuracy)  # the first best on ties: the least penalty
  return _predict(_fit(x_train, y, penalty), x_test).argmax(1), penalty


def decode(memory_BxF: np.ndarray, samples: list[dict], train_fraction: float) -> dict:
  """Per actor a probe fitted on the first samples and scored on the rest."""
  rooms = [actor_rooms(s["input"]) for s in samples]
  asked = [s["question"].removeprefix("Where is ").rstrip("?") for s in samples]
  split = int(len(samples) * train_fraction)
  asked_right, asked_n, all_right, all_n, last_right, penalties = 0, 0, 0, 0, 0, {}
  asked_ok = [None] * len(samples)
  for actor in babi.ACTORS:
    rows = [i for i, r in enumerate(rooms) if actor in r]
    fit = [i for i in rows if i < split]
    test = [i for i in rows if i >= split]
    if len({rooms[i][actor] for i in fit}) < 2 or not test:
      continue
    labels = np.array([babi.ROOMS.index(rooms[i][actor]) for i in rows])
    predicted, penalties[actor] = ridge_probe(memory_BxF[fit], labels[:len(fit)],
                                              memory_BxF[test], len(babi.ROOMS))
    for i, p, label in zip(test, predicted, labels[len(fit):]):
      all_right, all_n = all_right + int(p == label), all_n + 1
      if asked[i] == actor:
        asked_ok[i] = bool(p == label)
        asked_right, asked_n = asked_right + int(p == label), asked_n + 1
        last_right += int(last_room(samples[i]["input"]) == rooms[i][actor])

  def cell(right, n):
    lo, hi = wilson_interval(right, n) if n else (0.0, 0.0)
    return {"accuracy": right / n if n else None, "n": n, "ci95": [lo, hi]}

  return {"asked_actor": cell(asked_right, asked_n), "every_actor": cell(all_right, all_n),
          "last_room": cell(last_right, asked_n),
          "penalty": penalties, "test_from": split,
          "asked_right": asked_ok[split:]}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", required=True)
  p.add_argument("--gaps", default="0,1024", help="inserted segments of background")
  p.add_argument("--num-samples", type=int, default=500)
  p.add_argument("--train-fraction", type=float, default=0.7)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--haystack", default="default")
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--output", required=True)
  args = p.parse_args(argv)
  if not 0 < args.train_fraction < 1:
    print(f"error: --train-fraction must be in (0, 1), got {args.train_fraction}",
          file=sys.stderr)
    return 2
  try:
    gaps = [int(g) for g in args.gaps.split(",") if g.strip()]
  except ValueError as e:
    print(f"error: --gaps {args.gaps!r}: {e}", file=sys.stderr)
    return 2
  try:
    cfg, params, step = ckpt.load_params(args.checkpoint)
  except ckpt.CheckpointError as e:
    print(f"error: {args.checkpoint}: {e}", file=sys.stderr)
    return 2
  model = build_model(cfg.model)
  try:
    states = make_memory_states(model)
  except ValueError as e:
    print(f"error: {args.checkpoint}: {e}", file=sys.stderr)
    return 2
  tokenizer = load_tokenizer(cfg.data.tokenizer)
  samples_of = gap_samples(cfg.model.segment_len, args.num_samples, seed=args.seed,
                           tokenizer=tokenizer, haystack=load_haystack(args.haystack))
  out = {"checkpoint": os.path.abspath(args.checkpoint), "step": int(step), "gaps": {}}
  for gap in gaps:
    label = gap_label(gap)
    samples = samples_of("qa1", label)
    rows = [[tokenizer.bos_id] + tokenizer.encode(s["input"].strip()) for s in samples]
    memory = np.concatenate([
        states({"params": params}, rows[i:i + args.batch_size])
        for i in range(0, len(rows), args.batch_size)])
    out["gaps"][label] = result = decode(memory, samples, args.train_fraction)
    a, e = result["asked_actor"], result["every_actor"]
    print(f"{label}: asked actor's room decoded {100 * a['accuracy']:.1f}% "
          f"({100 * a['ci95'][0]:.1f}-{100 * a['ci95'][1]:.1f}, n = {a['n']}), every actor "
          f"{100 * e['accuracy']:.1f}% (n = {e['n']}); the last room mentioned "
          f"{100 * result['last_room']['accuracy']:.1f}%; chance about "
          f"{100 / len(babi.ROOMS):.0f}%", flush=True)
  write_json(args.output, out)  # whole or not at all: a failed run keeps the old file
  print(f"written: {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
