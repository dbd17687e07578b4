"""qa1's binding stripped to single tokens: how long does the decoder take to learn it?

    python scripts/binding_synthetic.py [--steps 3000] [--facts 3] [--questions 0]
        [--final-questions 1] [--repeated-haystack | --copied-spans] [--direct] [--seed 0]
        [--learning-rate 2e-3] [--weight-decay 0.1] [--save PARAMS.npz] [--init-from PARAMS.npz]
        [--background 0 --train-gap G --plain-steps 0 --eval-gaps 0,128,512] [key=value ...]

A sequence is [BOS, name, (filler...), room, name, room, ..., Q, name, A] with 4 names and 6
rooms drawn at random (names may repeat: the answer is the room of the asked name's last
fact), and the model predicts the room at A: qa1 without the words. ``--questions K`` asks K
more questions after random earlier facts, answered in the text and scored, so a sequence
gives several answers (as `data.interleaved_questions` does for the BABILong stream);
``--final-questions K`` ends each training sequence with K questions about the whole story
instead of one (multi-query associative recall), every answer scored. The
model is the library's (`build_model`, `configs/babilong_tiny.yaml` with the memory off and
full causal attention; more `key=value` overrides go to the model config), trained with AdamW
(b2 0.95, constant learning rate) on fresh batches of 64 sequences. The weights start at the
library's default scale, 1/sqrt(width); `model.initializer_std=0.02` gives the old one, on
which this decoder sits on the recency plateau for thousands of steps (docs/results.md).

``--background N`` surrounds the story with N random haystack tokens, up to N of them between
the last fact and the question; with the memory on and attention within short segments
(`model.memory.kind=lm2 model.attention_scope=segment model.segment_len=8`) the binding then
has to cross segments through the memory, and ``--eval-gaps`` measures it at gaps longer
than any trained (held-out sequences hold the story first and the whole haystack after it,
so gap 0 is the plain format).

``--save`` writes the trained parameters, ``--init-from`` starts from saved ones: every
parameter the two models share (same path, same shape) is copied and the rest keep their
fresh initialisation, so a backbone trained with the memory off can be given a memory
(`model.memory.kind=lm2 model.memory.zero_init=true` starts it computing exactly the
backbone's function, as the Hugging Face import does).

Every ``--eval-every`` steps it prints the training loss and a held-out accuracy on 2,048
sequences of the plain format (one final question) with its 95% interval, overall and on the
"binding" questions alone: those whose actor is not the last fact's, where answering the
last room mentioned (the recency plateau) is right only when two rooms coincide (about 1 in
6). The step where binding accuracy leaves that floor is the measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lm2_jax.config import load_config  # pylint: disable=wrong-import-position
from lm2_jax.evaluation.report import wilson_interval  # pylint: disable=wrong-import-position
from lm2_jax.model import build_model  # pylint: disable=wrong-import-position

BOS, QUESTION, ANSWER = 1, 5, 6
NAMES, ROOMS, HAYSTACK = np.arange(10, 14), np.arange(20, 26), np.arange(100, 164)
HAYSTACK_SET = frozenset(HAYSTACK.tolist())


def batch(rng: np.random.Generator, size: int, facts: int, filler: int, questions: int = 0,
          background: int = 0, gap: int | None = None, final: int = 1, repeated: bool = False,
          direct: bool = False, copied: bool = False):
  """tokens int32[size, T], targets int32[size, T] (-1 where nothing is scored), and
  bool[size, T]: the scored answers whose actor is not the last fact's (recency is wrong there).

  The final question is always there; ``questions`` more are asked after random earlier facts,
  each about an actor seen so far, answered, so one sequence scores several answers.
  ``background`` random haystack tokens surround the story: ``gap`` of them (drawn uniformly
  from 0..background per sequence when None) lie between the story and the final question,
  the rest before the story, so every sequence has the same length. ``final`` questions end
  the sequence, one after another about actors drawn from the whole story (all scored, the
  earlier ones answered in the text), as in multi-query associative recall. ``repeated``
  makes the haystack a block of distinct tokens said twice and scores the next token wherever
  the pair it completes came earlier in the sequence: the copying a language-model loss on
  text teaches (an induction head), the circuit that finds a fact by its name. The block is
  said again at one distance, so a head that attends by position alone predicts it;
  ``copied`` instead builds the haystack from spans of 3-6 of its own earlier tokens copied
  at random distances (scored the same way), which only a head that matches content can
  predict."""
  fill = list(range(30, 30 + filler))
  rows, targets, binding = [], [], []
  for _ in range(size):
    names, rooms = rng.choice(NAMES, facts), rng.choice(ROOMS, facts)
    haystack, between = [], 0
    if background:  # (draws nothing otherwise: the plain format's stream stays as it was)
      between = int(rng.integers(0, background + 1)) if gap is None else gap
      if repeated:
        block = rng.choice(HAYSTACK, (background + 1) // 2, replace=False).tolist()
        haystack = (block + block)[:background]
      elif copied:
        haystack = _copied_spans(rng, background)
      else:
        haystack = rng.choice(HAYSTACK, background).tolist()
    after = set(rng.choice(np.arange(facts - 1), min(questions, facts - 1), replace=False)
                ) if questions and facts > 1 else set()
    seq = [BOS] + haystack[between:]
    target, hard = [-1] * len(seq), [False] * len(seq)
    def ask(seen: int, final: bool) -> None:
      # The logits at ANSWER (at the asked name when direct) predict the room; an earlier
      # answer stays in the text.
      asked = rng.choice(names[:seen])
      room = rooms[np.where(names[:seen] == asked)[0][-1]]
      question = [QUESTION, asked] + ([] if direct else [ANSWER])
      seq.extend(question); target.extend([-1] * (len(question) - 1) + [room])
      hard.extend([False] * (len(question) - 1) + [bool(asked != names[seen - 1])])
      if not final:
        seq.append(room); target.append(-1); hard.append(False)
    for i, (n, r) in enumerate(zip(names, rooms)):
      seq += [n] + fill + [r]; target += [-1] * (2 + len(fill)); hard += [False] * (2 + len(fill))
      if i in after:
        ask(i + 1, final=False)
    seq += haystack[:between]; target += [-1] * between; hard += [False] * between
    for k in range(final):
      ask(facts, final=k == final - 1)
    if repeated or copied:
      _score_repeats(seq, target)
    rows.append(seq); targets.append(target); binding.append(hard)
  return jnp.array(rows), jnp.array(targets), jnp.array(binding)


def _copied_spans(rng: np.random.Generator, n: int) -> list:
  """n haystack tokens: fresh ones, or (half the time, once the span fits) a span of 3-6 of
  the tokens so far copied to the end, so the distance from a copy to its source varies."""
  out: list = []
  while len(out) < n:
    length = int(rng.integers(3, 7))
    if len(out) >= length and rng.random() < 0.5:
      start = int(rng.integers(0, len(out) - length + 1))
      out += out[start:start + length]
    else:
      out.append(int(rng.choice(HAYSTACK)))
  return out[:n]


def _score_repeats(seq: list, target: list) -> None:
  """Scores the next haystack token where the pair (seq[t], seq[t + 1]) occurred before."""
  seen = set()
  for t in range(len(seq) - 1):
    pair = (seq[t], seq[t + 1])
    if pair in seen and seq[t] in HAYSTACK_SET and seq[t + 1] in HAYSTACK_SET:
      target[t] = seq[t + 1]
    seen.add(pair)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--facts", type=int, default=3)
  p.add_argument("--filler", type=int, default=0, help="tokens between a name and its room")
  p.add_argument("--questions", type=int, default=0,
                 help="extra questions asked (and scored) after random earlier facts")
  p.add_argument("--final-questions", type=int, default=1,
                 help="questions at the end of each training sequence, each about an actor "
                      "of the whole story, all scored (held-out sets keep one)")
  p.add_argument("--repeated-haystack", action="store_true",
                 help="training haystack: a block said twice, its predictable tokens scored "
                      "(a language-model signal for copying; held-out sets stay random)")
  p.add_argument("--copied-spans", action="store_true",
                 help="training haystack: spans of its own tokens copied at random distances, "
                      "the predictable tokens scored (copying that position alone cannot do)")
  p.add_argument("--direct", action="store_true",
                 help="questions without the ANSWER marker, in training and held out: the room "
                      "follows the asked name, as it follows the name in a fact")
  p.add_argument("--learning-rate", type=float, default=2e-3)
  p.add_argument("--weight-decay", type=float, default=0.1)
  p.add_argument("--seed", type=int, default=0, help="draws the batches and the initialisation")
  p.add_argument("--eval-samples", type=int, default=2048)
  p.add_argument("--eval-every", type=int, default=500)
  p.add_argument("--background", type=int, default=0,
                 help="haystack tokens per training sequence; the gap between the story and "
                      "the final question is drawn from 0..background")
  p.add_argument("--train-gap", type=int, default=None,
                 help="a fixed gap in training (default: drawn from 0..background); 0 puts "
                      "all the haystack before the story, at a random place")
  p.add_argument("--plain-steps", type=int, default=0,
                 help="a curriculum: the first steps train on the plain format (no haystack), "
                      "the rest with --background")
  p.add_argument("--eval-gaps", default="",
                 help="comma-separated gaps (haystack tokens before the final question) of "
                      "extra held-out sets, e.g. 0,64,512: how far the binding carries")
  p.add_argument("--backend", choices=("jax", "transformers"), default="jax",
                 help="transformers: Hugging Face's LlamaForCausalLM of the same shape in "
                      "PyTorch (its own initialisation, torch AdamW): is the plateau ours?")
  p.add_argument("--save", default="", help="write the trained parameters to this .npz")
  p.add_argument("--init-from", default="",
                 help="start from the parameters of a --save file: the shared ones copied, "
                      "the rest (e.g. a memory added now) freshly initialised")
  p.add_argument("overrides", nargs="*", help="model config key=value")
  args = p.parse_args(argv)
  if args.final_questions < 1:
    p.error(f"--final-questions must be at least 1, got {args.final_questions}")
  if args.repeated_haystack and not 2 <= args.background <= 2 * len(HAYSTACK):
    p.error(f"--repeated-haystack needs --background between 2 and {2 * len(HAYSTACK)} (a "
            f"block of distinct haystack tokens said twice), got {args.background}")
  if args.copied_spans and (args.repeated_haystack or args.background < 4):
    p.error("--copied-spans needs --background of at least 4 and no --repeated-haystack, got "
            f"--background {args.background}"
            + (" with --repeated-haystack" if args.repeated_haystack else ""))
  if args.backend == "transformers" and (args.save or args.init_from):
    p.error("--save and --init-from work with --backend jax only")
  if args.init_from and not os.path.isfile(args.init_from):
    p.error(f"--init-from {args.init_from}: no such file (expected a --save .npz)")
  cfg = load_config("configs/babilong_tiny.yaml",
                    ["model.memory.kind=none", "model.attention_scope=full",
                     "model.vocab_size=512", "model.segment_len=32", *args.overrides])
  rng = np.random.default_rng(args.seed)
  # Held out: the plain format (one final question), drawn from a generator of its own; with
  # --background, at the largest gap trained, then at every --eval-gaps gap.
  gaps = [args.background] + [int(g) for g in args.eval_gaps.split(",") if g.strip()]
  held = {gap: batch(np.random.default_rng(10_000 + args.seed), args.eval_samples, args.facts,
                     args.filler, background=gap, gap=gap, direct=args.direct)
          for gap in dict.fromkeys(gaps)}
  if args.backend == "transformers":
    return _train_transformers(args, cfg, rng, held)
  model = build_model(cfg.model)
  params = model.init(jax.random.PRNGKey(args.seed), held[args.background][0][:2])["params"]
  params = flax.linen.meta.unbox(params)  # plain arrays: the same values, without sharding names
  if args.init_from:
    params = load_shared(params, args.init_from)
  tx = optax.adamw(args.learning_rate, b2=0.95, weight_decay=args.weight_decay)
  opt = tx.init(params)

  def scored(p, x, y):
    """Mean loss over the scored positions, and the argmax at every position."""
    logits = model.apply({"params": p}, x)
    mask = y >= 0
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(y, 0))
    return (nll * mask).sum() / mask.sum(), logits.argmax(-1)

  @jax.jit
  def step(params, opt, x, y):
    (value, guess), grads = jax.value_and_grad(scored, has_aux=True)(params, x, y)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, value, (guess == y) & (y >= 0)

  evaluate = jax.jit(lambda p, x, y: scored(p, x, y)[1])

  start = time.time()
  for i in range(1, args.steps + 1):
    x, y, hard = train_batch(args, rng, i)
    params, opt, value, right = step(params, opt, x, y)
    if i % args.eval_every == 0 or i == args.steps:
      guesses = held_guesses(lambda x, y: evaluate(params, x, y), held)
      report(i, value, right, hard, guesses, held, start)
  if args.save:
    save_params(params, args.save)
  return 0


def save_params(params, path: str) -> None:
  """Every parameter under its '/'-joined path, in one .npz (written whole, then renamed)."""
  flat = flax.traverse_util.flatten_dict(jax.device_get(params), sep="/")
  tmp = path + ".tmp.npz"
  np.savez(tmp, **{k: np.asarray(v) for k, v in flat.items()})
  os.replace(tmp, path)
  print(f"saved {len(flat)} parameters to {path}", flush=True)


def load_shared(params, path: str):
  """`params` with every leaf that `path` holds at the same path and shape replaced by the
  saved one; says how many were copied, kept fresh, and left unused. A memory-on model's
  decoder blocks (`memory_blocks`, with the memory in every block) take the weights of a
  memory-off model's `blocks`."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  with np.load(path) as npz:
    saved = {k: npz[k] for k in npz.files}  # each array read from the file once
  common = {}
  for k in flat:
    source = k if k in saved else k.replace("core/memory_blocks/", "core/blocks/")
    if source in saved:
      common[k] = source
  clash = sorted(k for k, s in common.items() if saved[s].shape != flat[k].shape)
  if clash:
    raise SystemExit(f"--init-from {path}: {common[clash[0]]} has shape "
                     f"{saved[common[clash[0]]].shape}, the model wants {flat[clash[0]].shape} "
                     f"({len(clash)} such)")
  unused = len(set(saved) - set(common.values()))
  flat = {k: jnp.asarray(saved[common[k]]) if k in common else v for k, v in flat.items()}
  print(f"--init-from {path}: {len(common)} parameters copied, {len(flat) - len(common)} "
        f"fresh, {unused} saved ones unused", flush=True)
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def train_batch(args, rng: np.random.Generator, i: int):
  """Training step i's 64 sequences (1-based): plain for the first --plain-steps steps."""
  plain = i <= args.plain_steps
  return batch(rng, 64, args.facts, args.filler, args.questions,
               0 if plain else args.background, 0 if plain else args.train_gap,
               args.final_questions, args.repeated_haystack, args.direct, args.copied_spans)


def held_guesses(guess, held: dict, chunk: int = 256) -> dict:
  """The argmax at every position of each held-out set, `guess(x, y)` called on chunks of
  rows (long gaps make the logits of 2,048 rows large)."""
  return {gap: np.concatenate([np.asarray(guess(x[j:j + chunk], y[j:j + chunk]))
                               for j in range(0, len(x), chunk)])
          for gap, (x, y, _) in held.items()}


def report(i: int, value, right, hard, held_guess: dict, held: dict, start: float) -> None:
  """Training loss and batch binding accuracy, then per held-out gap (one line when there is
  one set, as without --background) the accuracy with intervals, and what the binding
  questions were answered with: a room of the story ("story"; one drawn from the story's
  facts at random is right on 44% of them with 3 facts: rooms known, not who is where) or
  the last fact's room ("last")."""
  right, hard = np.asarray(right), np.asarray(hard)
  print(f"step {i}: loss {float(value):.4f}, batch binding accuracy "
        f"{(right & hard).sum() / max(hard.sum(), 1):.3f};", end="" if len(held) == 1 else "\n")
  for gap, (_, held_y, held_hard) in held.items():
    held_x, held_y, held_hard = (np.asarray(a) for a in held[gap])
    guess = np.asarray(held_guess[gap])
    got = (guess == held_y) & (held_y >= 0)
    final, binds = guess[:, -1], held_hard[:, -1]  # the final question of each sequence
    story = (np.isin(held_x, ROOMS) & (held_x == final[:, None])).any(axis=1)
    rooms = np.isin(held_x, ROOMS)  # (no answers in the text: only the facts' rooms)
    last_room = held_x[np.arange(len(held_x)), held_x.shape[1] - 1 - rooms[:, ::-1].argmax(1)]
    last = final == last_room
    k, n = int(got.sum()), int((held_y >= 0).sum())
    kb, nb = int((got & held_hard).sum()), int(held_hard.sum())
    (lo, hi), (blo, bhi) = wilson_interval(k, n), wilson_interval(kb, nb)
    where = "" if len(held) == 1 else f"  gap {gap}:"
    print(f"{where} held out {k / n:.3f} [{lo:.3f}, {hi:.3f}] n={n}, binding "
          f"{kb / max(nb, 1):.3f} [{blo:.3f}, {bhi:.3f}] n={nb} (story {story[binds].mean():.2f}"
          f", last {last[binds].mean():.2f}); {time.time() - start:.0f} s", flush=True)


def _train_transformers(args, cfg, rng, held) -> int:
  """The same task and optimiser settings on Hugging Face's Llama (needs torch)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  from lm2_jax.convert.mapping import config_to_hf  # pylint: disable=import-outside-toplevel
  torch.manual_seed(args.seed)
  torch.set_num_threads(2)
  # config_to_hf carries the initialisation scale (initializer_range) along with the shape.
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config_to_hf(cfg)))
  opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.95),
                          weight_decay=args.weight_decay)

  def scored(x, y):
    logits = model(input_ids=torch.from_numpy(np.array(x)).long()).logits
    y = torch.from_numpy(np.array(y)).long()
    mask = y >= 0
    nll = torch.nn.functional.cross_entropy(logits[mask], y[mask])
    return nll, logits.argmax(-1).numpy()

  start = time.time()
  for i in range(1, args.steps + 1):
    x, y, hard = train_batch(args, rng, i)
    value, guess = scored(x, y)
    right = (guess == np.asarray(y)) & (np.asarray(y) >= 0)
    opt.zero_grad()
    value.backward()
    opt.step()
    if i % args.eval_every == 0 or i == args.steps:
      with torch.no_grad():
        guesses = held_guesses(lambda x, y: scored(x, y)[1], held)
      report(i, value.item(), right, hard, guesses, held, start)
  return 0


if __name__ == "__main__":
  sys.exit(main())
