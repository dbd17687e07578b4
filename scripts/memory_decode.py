"""Is a fact lost under background, or still in the memory and not read? A linear probe.

    python scripts/memory_decode.py --checkpoint runs/a --task qa5 --gaps 0,1024 \
        --num-samples 500 --output decode.json

The inserted-gap samples of a task (`--task` qa1, qa4 or qa5; the same as
`scripts/memory_probe.py --gaps` draws with the same seed: the story's facts, then `g`
segments of background) are read up to the question, and the memory there, all memory
layers and slots flattened, is the probe's input. Per label key a ridge regression maps it
to the one-hot of the key's label: on qa1 each actor's room after the story's moves; on qa4
the room at each place (north or west end, middle, other end) of the line its two
relations draw; on qa5 the giver, object and receiver of the story's last give, the give
its question asks about. It is fitted on the first `--train-fraction` of the samples, its
penalty chosen by 5-fold cross-validation there, and scored on the rest: for the key the
question asks (what the model's answer needs) and for every key. Beside them, on the asked
key, how often the training labels' most frequent class is right, and how often the last
word of the key's kind the story names is (what a recency answer gets right: on qa1 the
last room mentioned).

If the asked label decodes from the memory about as well far from the facts as near
them while the model's own answers fall (memory_probe's gap curve on the same samples),
the fact is there and the read is what fails; if decoding falls with them, the fact is
gone. A linear probe is a lower bound on what the memory holds. The memory is taken after
the last complete segment: at gap 0 the last fact may still sit in the unfinished segment,
seen by attention and not yet written, so decoding at +0 understates the memory.

Three further questions, each a flag: `--answers` pairs the probe with the model's own free
answers to the same test samples (is the label in the memory where the model misses it?);
`--transfer` scores the probe fitted at the first gap on each later gap's memories, with
the fitting gap's unit statistics and with the later gap's own (does background move the
code, and is the move only each unit's offset and scale?); `--recentre` answers the test
samples with each later gap's memory moved onto the first gap's unit means, or means and
spreads, just before the question (does undoing that move let the model read the fact?),
or by moves that use each sample's own memory alone (each slot's mean over its units, each
unit's mean over the slots, onto the near average's), and reports how much of the move all
slots of a layer share (what a read centred over the slots, `memory.read_centre`, ignores).
The statistics are those of the probe's fitting samples at each gap: an oracle that a
model reading one sample cannot have, a test of the cause rather than a fix.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lm2_jax import checkpoint as ckpt  # pylint: disable=wrong-import-position
from lm2_jax.data import babi  # pylint: disable=wrong-import-position
from lm2_jax.data import babilong as bl  # pylint: disable=wrong-import-position
from lm2_jax.data.haystack import load_haystack  # pylint: disable=wrong-import-position
from lm2_jax.data.tokenizers import load_tokenizer  # pylint: disable=wrong-import-position
from lm2_jax.evaluation.gap_curve import gap_label, gap_samples  # pylint: disable=wrong-import-position
from lm2_jax.evaluation.report import wilson_interval, write_json  # pylint: disable=wrong-import-position
from lm2_jax.inference.engine import Engine  # pylint: disable=wrong-import-position
from lm2_jax.inference.sampling import SamplingParams  # pylint: disable=wrong-import-position
from lm2_jax.model import build_model  # pylint: disable=wrong-import-position
from lm2_jax.model.trace import make_memory_states  # pylint: disable=wrong-import-position
from paired_compare import mcnemar_p  # pylint: disable=wrong-import-position,import-error

PENALTIES = tuple(10.0 ** k for k in range(-1, 7))


def _sentences(text: str) -> list[list[str]]:
  """The words of each sentence of `text`, in order."""
  return [sentence.split() for sentence in text.replace("\n", " ").split(".")]


def _moves(text: str) -> list[str]:
  """The qa1 moves found in `text`, in order (background skipped)."""
  return [" ".join(words) + "." for words in _sentences(text)
          if len(words) >= 4 and words[0] in babi.ACTORS and words[-2] == "the"
          and words[-1] in babi.ROOMS]


def actor_rooms(text: str) -> dict[str, str]:
  """The room each actor is in after the qa1 moves found in `text`."""
  return babi.final_rooms(_moves(text))


def line_rooms(text: str) -> dict[str, str]:
  """qa4: the three rooms its two relations put on one line, from the north or west end.

  "The x is d of the y." is read as x before y along north-south or west-east; the room
  named in both facts is the middle one.
  """
  order = {}  # room -> the room right after it along the line
  for words in _sentences(text):
    if (len(words) == 7 and words[0] == "The" and words[2] == "is"
        and words[3] in babi.DIRECTIONS and words[4:6] == ["of", "the"]
        and words[1] in babi.ROOMS and words[6] in babi.ROOMS):
      x, d, y = words[1], words[3], words[6]
      first, after = (x, y) if d in ("north", "west") else (y, x)
      order[first] = after
  if len(order) != 2:
    return {}
  (start,) = set(order) - set(order.values())
  return {"first": start, "middle": order[start], "last": order[order[start]]}


def last_give(text: str) -> dict[str, str]:
  """qa5: who gave what to whom in the last give of `text` (what its question asks about)."""
  gives = [words for words in _sentences(text)
           if len(words) == 6 and words[0] in babi.QA5_ACTORS and words[1] in babi.GIVE_VERBS
           and words[2] == "the" and words[3] in babi.OBJECTS and words[4] == "to"
           and words[5] in babi.QA5_ACTORS]
  if not gives:
    return {}
  giver, _, _, obj, _, receiver = gives[-1]
  return {"giver": giver, "object": obj, "receiver": receiver}


def _qa1_asked(sample: dict, labels: dict[str, str]) -> str | None:
  actor = sample["question"].removeprefix("Where is ").rstrip("?")
  return actor if actor in labels else None


def _answer_key(sample: dict, labels: dict[str, str]) -> str | None:
  """The key whose label is the sample's answer (unique in qa4 and qa5)."""
  keys = [k for k, v in labels.items() if v == sample["target"]]
  return keys[0] if len(keys) == 1 else None


# Per task: the labels a sample's text gives ({key: word}), the words each key's label is
# one of, the key its question asks, and every word a recency answer could name.
_ACTORS_ROOMS = {a: babi.ROOMS for a in babi.ACTORS}
TASKS = {
    "qa1": (actor_rooms, _ACTORS_ROOMS, _qa1_asked),
    "qa4": (line_rooms, {k: babi.ROOMS for k in ("first", "middle", "last")}, _answer_key),
    "qa5": (last_give, {"giver": babi.QA5_ACTORS, "object": babi.OBJECTS,
                        "receiver": babi.QA5_ACTORS}, _answer_key),
}


def _is_fact(words: list[str]) -> bool:
  """A sentence of a qa1, qa4 or qa5 story rather than of the background."""
  return bool(words) and (words[0] in babi.ACTORS + babi.QA5_ACTORS or (
      len(words) > 2 and words[0] == "The" and words[1] in babi.ROOMS and words[2] == "is"))


def recency_answer(text: str, classes: tuple[str, ...]) -> str | None:
  """The last word of `classes` the story's facts name: what a model answers that names
  the last one it saw (on qa1, the last room mentioned)."""
  words = [w for sentence in _sentences(text) if _is_fact(sentence)
           for w in sentence if w in classes]
  return words[-1] if words else None


def _fit(x_NxF: np.ndarray, y_NxC: np.ndarray, penalty: float) -> np.ndarray:
  """Ridge weights [F + 1, C] (the last row a bias), solved in the dual when N < F."""
  x = np.concatenate([x_NxF, np.ones((len(x_NxF), 1))], axis=1)
  if len(x) < x.shape[1]:
    return x.T @ np.linalg.solve(x @ x.T + penalty * np.eye(len(x)), y_NxC)
  return np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ y_NxC)


def _predict(w: np.ndarray, x_NxF: np.ndarray) -> np.ndarray:
  return np.concatenate([x_NxF, np.ones((len(x_NxF), 1))], axis=1) @ w


def _standardise(x: np.ndarray, like: np.ndarray) -> np.ndarray:
  return (x - like.mean(0)) / (like.std(0) + 1e-6)


def ridge_probe(x_train: np.ndarray, labels_train: np.ndarray, x_test: np.ndarray,
                classes: int, *, folds: int = 5, own_stats: bool = False
                ) -> tuple[np.ndarray, float]:
  """Predicted classes for `x_test` and the penalty chosen by `folds`-fold cross-validation.

  Features are standardised with the training rows' statistics (with `own_stats`, the test
  rows with their own: a probe carried to memories whose units drifted in mean and scale
  only); the classes are one-hot targets and the prediction is the largest output.
  """
  x_train, x_test = (_standardise(x_train, x_train),
                     _standardise(x_test, x_test if own_stats else x_train))
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


def decode(memory_BxF: np.ndarray, samples: list[dict], train_fraction: float,
           task: str = "qa1", *, fit_memory_BxF: np.ndarray | None = None,
           own_stats: bool = False) -> dict:
  """Per label key (qa1: each actor's room; qa4: each place on the line; qa5: the last
  give's giver, object and receiver) a probe fitted on the first samples and scored on the
  rest: for the key each question asks, for every key, and beside them how often the
  training labels' most frequent class and the recency answer are right on the asked key.

  With `fit_memory_BxF` (the same samples' memories at another gap) the probe is fitted on
  those and scored on `memory_BxF`: does what the memory holds keep its code under
  background? `own_stats` as in `ridge_probe`.
  """
  fit_memory_BxF = memory_BxF if fit_memory_BxF is None else fit_memory_BxF
  read, classes_of, asked_key = TASKS[task]
  labels = [read(s["input"]) for s in samples]
  asked = [asked_key(s, lab) for s, lab in zip(samples, labels)]
  split = int(len(samples) * train_fraction)
  counts = {k: [0, 0] for k in ("asked", "every", "majority", "recency")}
  penalties, asked_ok = {}, [None] * len(samples)
  for key, classes in classes_of.items():
    rows = [i for i, lab in enumerate(labels) if key in lab]
    fit = [i for i in rows if i < split]
    test = [i for i in rows if i >= split]
    if len({labels[i][key] for i in fit}) < 2 or not test:
      continue
    y = np.array([classes.index(labels[i][key]) for i in rows])
    predicted, penalties[key] = ridge_probe(fit_memory_BxF[fit], y[:len(fit)],
                                            memory_BxF[test], len(classes),
                                            own_stats=own_stats)
    majority = np.bincount(y[:len(fit)], minlength=len(classes)).argmax()
    for i, p, label in zip(test, predicted, y[len(fit):]):
      counts["every"][0] += int(p == label)
      counts["every"][1] += 1
      if asked[i] != key:
        continue
      asked_ok[i] = bool(p == label)
      for name, right in (("asked", p == label), ("majority", majority == label),
                          ("recency", recency_answer(samples[i]["input"], classes)
                           == labels[i][key])):
        counts[name][0] += int(right)
        counts[name][1] += 1

  def cell(right, n):
    lo, hi = wilson_interval(right, n) if n else (0.0, 0.0)
    return {"accuracy": right / n if n else None, "n": n, "ci95": [lo, hi]}

  return {**{name: cell(*c) for name, c in counts.items()}, "task": task,
          "penalty": penalties, "test_from": split, "asked_right": asked_ok[split:]}


def against_the_model(probe_right: list, model_right: list[bool]) -> dict:
  """The probe's and the model's right answers on the same test samples, paired: is the
  label in the memory where the model misses it? Samples without an asked label are left
  out."""
  pairs = [(bool(p), bool(m)) for p, m in zip(probe_right, model_right) if p is not None]
  both = sum(p and m for p, m in pairs)
  probe_only = sum(p and not m for p, m in pairs)
  model_only = sum(m and not p for p, m in pairs)
  n = len(pairs)
  right = both + model_only
  lo, hi = wilson_interval(right, n) if n else (0.0, 0.0)
  return {"model": {"accuracy": right / n if n else None, "n": n, "ci95": [lo, hi]},
          "both": both, "probe_only": probe_only, "model_only": model_only,
          "neither": n - both - probe_only - model_only,
          "p": mcnemar_p(probe_only, model_only)}


def model_answers(engine: Engine, samples: list[dict], task: str, batch_size: int,
                  max_new_tokens: int) -> list[str]:
  """The model's free answer to each sample (eval.py's prompt and stop rule)."""
  sampling = SamplingParams(max_new_tokens=max_new_tokens, stop=(".", "\n"))
  outputs = []
  for i in range(0, len(samples), batch_size):
    batch = samples[i:i + batch_size]
    outputs += [g.text.strip() for g in engine.generate(
        [bl.format_prompt(s, task, "compact") for s in batch], sampling)]
  return outputs


def unit_stats(memory_BxF: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each unit's mean and spread over the rows."""
  return memory_BxF.mean(0), memory_BxF.std(0) + 1e-6


def memory_shape(cfg, features: int) -> tuple[int, int, int]:
  """(layers, slots, units) of one flattened memory of `features` numbers."""
  return (features // (cfg.memory.num_slots * cfg.width), cfg.memory.num_slots, cfg.width)


def _slot_means(memory_BxF: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
  """Each slot's mean over its units, repeated over them: [B, F] (`shape` is (layers,
  slots, units) of one memory)."""
  slots = memory_BxF.reshape(len(memory_BxF), -1, shape[-1])
  return np.repeat(slots.mean(-1), shape[-1], axis=-1).reshape(memory_BxF.shape)


def _unit_means(memory_BxF: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
  """Each unit's mean over the slots of its layer, repeated over them: [B, F]."""
  m = memory_BxF.reshape(len(memory_BxF), *shape)
  return np.broadcast_to(m.mean(2, keepdims=True), m.shape).reshape(memory_BxF.shape)


def _unit_spreads(memory_BxF: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
  """Each unit's spread over the slots of its layer, repeated over them: [B, F]."""
  m = memory_BxF.reshape(len(memory_BxF), *shape)
  return np.broadcast_to(m.std(2, keepdims=True) + 1e-6, m.shape).reshape(memory_BxF.shape)


def shared_drift(near_BxF: np.ndarray, far_BxF: np.ndarray,
                 shape: tuple[int, int, int]) -> float:
  """The part of the move of the unit means from near to far that all slots of a layer
  share (what a read centred over the slots would cancel): its share of the squared move."""
  move = (far_BxF.mean(0) - near_BxF.mean(0))[None]
  return float((_unit_means(move, shape) ** 2).sum() / max((move ** 2).sum(), 1e-30))


# How `answers_from_memory` moves a far memory towards the near gap's units (stats: (mean,
# spread) per unit near, then far; `shape` (layers, slots, units) of one memory): not at
# all, by the difference of the means, onto the near means and spreads, or, per sample,
# each slot's mean over its units (slot_mean) or each unit's mean over the slots
# (unit_mean; and its spread over them, unit_mean_and_spread) replaced by what the near
# memories' mean has: moves a model could make itself with one learned offset per slot, or
# per unit of a read centred (and scaled) over the slots.
MOVES = {
    "as_is": lambda m, near, far, shape: m,
    "mean": lambda m, near, far, shape: m - far[0] + near[0],
    "mean_and_scale": lambda m, near, far, shape: (m - far[0]) / far[1] * near[1] + near[0],
    "slot_mean": lambda m, near, far, shape: (
        m - _slot_means(m, shape) + _slot_means(near[0][None], shape)),
    "unit_mean": lambda m, near, far, shape: (
        m - _unit_means(m, shape) + _unit_means(near[0][None], shape)),
    "unit_mean_and_spread": lambda m, near, far, shape: (
        (m - _unit_means(m, shape)) / _unit_spreads(m, shape)
        * _unit_spreads(near[0][None], shape) + _unit_means(near[0][None], shape)),
}


def answers_from_memory(model, params, engine: Engine, states, samples: list[dict],
                        memory_BxF: np.ndarray, task: str, moves: dict, *, batch_size: int,
                        max_new_tokens: int) -> dict[str, list[str]]:
  """Greedy answers when the memory the question is read with first goes through each of
  `moves` ({name: memory_BxF -> memory_BxF}).

  `memory_BxF` is what `states` gave for the samples' stories and background read to
  their last segment boundary (as `main` computes it); the rest of each prompt and the
  answer run from the moved memory. With the identity this is the model's own greedy
  answer (streaming equals one-shot).
  """
  seg = model.cfg.segment_len
  prompts = [engine.encode(bl.format_prompt(s, task, "compact")) for s in samples]
  memory_BxF, heads = memory_BxF.copy(), []
  for i, (s, ids) in enumerate(zip(samples, prompts)):
    context = engine.encode(s["input"].strip())
    k = len(context) // seg * seg
    if ids[:k] != context[:k]:  # the prompt tokenises the story's end otherwise: read less
      while k and ids[:k] != context[:k]:
        k -= seg
      memory_BxF[i] = states({"params": params}, [ids[:max(k, 1)]])[0]
    heads.append(k)

  @jax.jit
  def logits_from(memory_MxBxNxD, tokens_BxT):
    logits, _ = model.apply({"params": params}, tokens_BxT, memory_MxBxNxD=memory_MxBxNxD,
                            fresh_B=jnp.zeros((tokens_BxT.shape[0],), bool))
    return logits

  def greedy(memory_MxBxNxD, tails: list[list[int]]) -> list[str]:
    tail_len = -(-(max(map(len, tails)) + max_new_tokens) // seg) * seg
    out, done = [[] for _ in tails], [False] * len(tails)
    for _ in range(max_new_tokens):
      tokens = np.zeros((len(tails), tail_len), np.int32)
      for r, t in enumerate(tails):
        tokens[r, :len(t)] = t
      logits = np.asarray(logits_from(memory_MxBxNxD, tokens))
      for r, t in enumerate(tails):
        if not done[r]:
          nxt = int(logits[r, len(t) - 1].argmax())
          t.append(nxt)
          out[r].append(nxt)
          text = engine.tokenizer.decode(out[r])
          done[r] = nxt == engine.tokenizer.eos_id or "." in text or "\n" in text
      if all(done):
        break
    return [engine.tokenizer.decode(o).split(".")[0].split("\n")[0].strip() for o in out]

  shape = memory_shape(model.cfg, memory_BxF.shape[1])
  answers = {name: [] for name in moves}
  for start in range(0, len(samples), batch_size):
    idx = range(start, min(start + batch_size, len(samples)))
    for name, move in moves.items():
      moved = move(memory_BxF[start:idx.stop]).reshape(len(idx), *shape).swapaxes(0, 1)
      answers[name] += greedy(jnp.asarray(moved, jnp.float32),
                              [list(prompts[i][heads[i]:]) for i in idx])
  return answers


def _right(samples: list[dict], outputs: list[str], task: str) -> list[bool]:
  return [bool(bl.compare_answers(s["target"], o, s["question"], task, "official"))
          for s, o in zip(samples, outputs)]


def recentre(model, params, engine, states, samples, split, near_BxF, far_BxF,
             args) -> dict:
  """The test samples answered with the far memory as it is and moved (`MOVES`) towards the
  near gap's units, the statistics taken over the probe's fitting samples at each gap:
  {"moves": {move: answers and their pairing with as_is}, "shared_drift": `shared_drift`}."""
  near, far = unit_stats(near_BxF[:split]), unit_stats(far_BxF[:split])
  test, shape = samples[split:], memory_shape(model.cfg, near_BxF.shape[1])
  shared = shared_drift(near_BxF[:split], far_BxF[:split], shape)
  print(f"{args.task}: {100 * shared:.1f}% of the unit means' move is shared by the slots "
        "of a layer", flush=True)
  answers = answers_from_memory(
      model, params, engine, states, test, far_BxF[split:], args.task,
      {name: (lambda m, move=move: move(m, near, far, shape))
       for name, move in MOVES.items()},
      batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
  out, base = {}, _right(test, answers["as_is"], args.task)
  for name, outputs in answers.items():
    right = _right(test, outputs, args.task)
    lo, hi = wilson_interval(sum(right), len(right))
    out[name] = cell = {"accuracy": sum(right) / len(right), "n": len(right),
                        "ci95": [lo, hi], "outputs": outputs}
    if name != "as_is":
      cell["only_moved"] = sum(r and not b for r, b in zip(right, base))
      cell["only_as_is"] = sum(b and not r for r, b in zip(right, base))
      cell["p"] = mcnemar_p(cell["only_moved"], cell["only_as_is"])
    print(f"{args.task}: the memory {name.replace('_', ' ')}: {100 * cell['accuracy']:.1f}% "
          f"({100 * lo:.1f}-{100 * hi:.1f}, n = {len(right)})"
          + (f"; right only moved {cell['only_moved']}, only as is {cell['only_as_is']} "
             f"(p = {cell['p']:.2g})" if "p" in cell else ""), flush=True)
  return {"moves": out, "shared_drift": shared}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", required=True)
  p.add_argument("--task", default="qa1", choices=sorted(TASKS))
  p.add_argument("--gaps", default="0,1024", help="inserted segments of background")
  p.add_argument("--num-samples", type=int, default=500)
  p.add_argument("--train-fraction", type=float, default=0.7)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--haystack", default="default")
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--answers", action="store_true",
                 help="also generate the model's answers to the test samples and pair them "
                      "with the probe's")
  p.add_argument("--max-new-tokens", type=int, default=12)
  p.add_argument("--transfer", action="store_true",
                 help="also score the probe fitted at the first gap on every later gap")
  p.add_argument("--recentre", action="store_true",
                 help="at every later gap, also answer the test samples with the memory moved "
                      "towards the first gap's unit means (and spreads) before the question")
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
  if (args.transfer or args.recentre) and len(gaps) < 2:
    print(f"error: --transfer and --recentre compare each later gap with the first; --gaps "
          f"{args.gaps!r} gives {len(gaps)}", file=sys.stderr)
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
  out = {"checkpoint": os.path.abspath(args.checkpoint), "step": int(step),
         "task": args.task, "gaps": {}}
  engine, first = None, None
  if args.recentre:
    engine = Engine(cfg.model, params, tokenizer, batch_size=args.batch_size)
  for gap in gaps:
    label = gap_label(gap)
    samples = samples_of(args.task, label)
    rows = [[tokenizer.bos_id] + tokenizer.encode(s["input"].strip()) for s in samples]
    memory = np.concatenate([
        states({"params": params}, rows[i:i + args.batch_size])
        for i in range(0, len(rows), args.batch_size)])
    out["gaps"][label] = result = decode(memory, samples, args.train_fraction, args.task)
    a, e = result["asked"], result["every"]
    print(f"{args.task} {label}: the asked label decoded {100 * a['accuracy']:.1f}% "
          f"({100 * a['ci95'][0]:.1f}-{100 * a['ci95'][1]:.1f}, n = {a['n']}), every label "
          f"{100 * e['accuracy']:.1f}% (n = {e['n']}); on the asked label the most frequent "
          f"class {100 * result['majority']['accuracy']:.1f}%, the recency answer "
          f"{100 * result['recency']['accuracy']:.1f}%", flush=True)
    if args.transfer and first is not None:
      source, source_memory = first
      result["transfer"] = {"from": source, **{
          name: decode(memory, samples, args.train_fraction, args.task,
                       fit_memory_BxF=source_memory, own_stats=own)["asked"]
          for name, own in (("asked", False), ("asked_own_stats", True))}}
      t = result["transfer"]
      print(f"{args.task} {label}: the probe fitted at {source} reads the asked label "
            f"{100 * t['asked']['accuracy']:.1f}% here, "
            f"{100 * t['asked_own_stats']['accuracy']:.1f}% with this gap's own unit "
            "statistics", flush=True)
    if args.recentre and first is not None:
      result["recentred"] = recentre(model, params, engine, states, samples,
                                     result["test_from"], first[1], memory, args)
    first = first or (label, memory)
    if args.answers:
      engine = engine or Engine(cfg.model, params, tokenizer, batch_size=args.batch_size)
      test = samples[result["test_from"]:]
      outputs = model_answers(engine, test, args.task, args.batch_size, args.max_new_tokens)
      result["against_model"] = c = against_the_model(result["asked_right"],
                                                      _right(test, outputs, args.task))
      c["outputs"] = outputs
      print(f"{args.task} {label}: the model answers {100 * c['model']['accuracy']:.1f}% of "
            f"the same test samples; right for the probe only {c['probe_only']}, for the "
            f"model only {c['model_only']} (p = {c['p']:.2g}), both {c['both']}, neither "
            f"{c['neither']}", flush=True)
  write_json(args.output, out)  # whole or not at all: a failed run keeps the old file
  print(f"written: {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
