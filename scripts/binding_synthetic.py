"""qa1's binding stripped to single tokens: how long does the decoder take to learn it?

    python scripts/binding_synthetic.py [--steps 3000] [--facts 3] [--questions 0]
        [--seed 0] [--learning-rate 2e-3] [--weight-decay 0.1] [key=value ...]

A sequence is [BOS, name, (filler...), room, name, room, ..., Q, name, A] with 4 names and 6
rooms drawn at random (names may repeat: the answer is the room of the asked name's last
fact), and the model predicts the room at A: qa1 without the words. ``--questions K`` asks K
more questions after random earlier facts, answered in the text and scored, so a sequence
gives several answers (as `data.interleaved_questions` does for the BABILong stream). The
model is the library's (`build_model`, `configs/babilong_tiny.yaml` with the memory off and
full causal attention; more `key=value` overrides go to the model config), trained with AdamW
(b2 0.95, constant learning rate) on fresh batches of 64 sequences. The weights start at the
library's default scale, 1/sqrt(width); `model.initializer_std=0.02` gives the old one, on
which this decoder sits on the recency plateau for thousands of steps (docs/results.md).

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

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lm2_jax.config import load_config  # pylint: disable=wrong-import-position
from lm2_jax.evaluation.report import wilson_interval  # pylint: disable=wrong-import-position
from lm2_jax.model import build_model  # pylint: disable=wrong-import-position

BOS, QUESTION, ANSWER = 1, 5, 6
NAMES, ROOMS = np.arange(10, 14), np.arange(20, 26)


def batch(rng: np.random.Generator, size: int, facts: int, filler: int, questions: int = 0):
  """tokens int32[size, T], targets int32[size, T] (-1 where nothing is scored), and
  bool[size, T]: the scored answers whose actor is not the last fact's (recency is wrong there).

  The final question is always there; ``questions`` more are asked after random earlier facts,
  each about an actor seen so far, answered, so one sequence scores several answers."""
  fill = list(range(30, 30 + filler))
  rows, targets, binding = [], [], []
  for _ in range(size):
    names, rooms = rng.choice(NAMES, facts), rng.choice(ROOMS, facts)
    after = set(rng.choice(np.arange(facts - 1), min(questions, facts - 1), replace=False)
                ) if questions and facts > 1 else set()
    seq, target, hard = [BOS], [-1], [False]
    def ask(seen: int, final: bool) -> None:
      # The logits at ANSWER predict the room; an earlier answer stays in the text.
      asked = rng.choice(names[:seen])
      room = rooms[np.where(names[:seen] == asked)[0][-1]]
      seq.extend([QUESTION, asked, ANSWER]); target.extend([-1, -1, room])
      hard.extend([False, False, bool(asked != names[seen - 1])])
      if not final:
        seq.append(room); target.append(-1); hard.append(False)
    for i, (n, r) in enumerate(zip(names, rooms)):
      seq += [n] + fill + [r]; target += [-1] * (2 + len(fill)); hard += [False] * (2 + len(fill))
      if i in after:
        ask(i + 1, final=False)
    ask(facts, final=True)
    rows.append(seq); targets.append(target); binding.append(hard)
  return jnp.array(rows), jnp.array(targets), jnp.array(binding)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--facts", type=int, default=3)
  p.add_argument("--filler", type=int, default=0, help="tokens between a name and its room")
  p.add_argument("--questions", type=int, default=0,
                 help="extra questions asked (and scored) after random earlier facts")
  p.add_argument("--learning-rate", type=float, default=2e-3)
  p.add_argument("--weight-decay", type=float, default=0.1)
  p.add_argument("--seed", type=int, default=0, help="draws the batches and the initialisation")
  p.add_argument("--eval-samples", type=int, default=2048)
  p.add_argument("--eval-every", type=int, default=500)
  p.add_argument("--backend", choices=("jax", "transformers"), default="jax",
                 help="transformers: Hugging Face's LlamaForCausalLM of the same shape in "
                      "PyTorch (its own initialisation, torch AdamW): is the plateau ours?")
  p.add_argument("overrides", nargs="*", help="model config key=value")
  args = p.parse_args(argv)
  cfg = load_config("configs/babilong_tiny.yaml",
                    ["model.memory.kind=none", "model.attention_scope=full",
                     "model.vocab_size=512", "model.segment_len=32", *args.overrides])
  rng = np.random.default_rng(args.seed)
  # Held out: the plain format (one final question), drawn from a generator of its own.
  held = batch(np.random.default_rng(10_000 + args.seed), args.eval_samples, args.facts,
               args.filler)
  if args.backend == "transformers":
    return _train_transformers(args, cfg, rng, held)
  held_x, held_y, _ = held
  model = build_model(cfg.model)
  params = model.init(jax.random.PRNGKey(args.seed), held_x[:2])["params"]
  tx = optax.adamw(args.learning_rate, b2=0.95, weight_decay=args.weight_decay)
  opt = tx.init(params)

  def scored(p, x, y):
    """Mean loss over the scored positions, and whether each position's argmax is right."""
    logits = model.apply({"params": p}, x)
    mask = y >= 0
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(y, 0))
    return (nll * mask).sum() / mask.sum(), (logits.argmax(-1) == y) & mask

  @jax.jit
  def step(params, opt, x, y):
    (value, right), grads = jax.value_and_grad(scored, has_aux=True)(params, x, y)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, value, right

  evaluate = jax.jit(scored)

  start = time.time()
  for i in range(1, args.steps + 1):
    x, y, hard = batch(rng, 64, args.facts, args.filler, args.questions)
    params, opt, value, right = step(params, opt, x, y)
    if i % args.eval_every == 0 or i == args.steps:
      report(i, value, right, hard, evaluate(params, held_x, held_y)[1], held, start)
  return 0


def report(i: int, value, right, hard, held_right, held, start: float) -> None:
  """One line: training loss, batch binding accuracy, held-out accuracy with intervals."""
  right, hard, held_right = np.asarray(right), np.asarray(hard), np.asarray(held_right)
  _, held_y, held_hard = (np.asarray(a) for a in held)
  k, n = int(held_right.sum()), int((held_y >= 0).sum())
  kb, nb = int((held_right & held_hard).sum()), int(held_hard.sum())
  (lo, hi), (blo, bhi) = wilson_interval(k, n), wilson_interval(kb, nb)
  print(f"step {i}: loss {float(value):.4f}, batch binding accuracy "
        f"{(right & hard).sum() / max(hard.sum(), 1):.3f}; held out {k / n:.3f} "
        f"[{lo:.3f}, {hi:.3f}] n={n}, binding {kb / max(nb, 1):.3f} [{blo:.3f}, {bhi:.3f}] "
        f"n={nb}; {time.time() - start:.0f} s", flush=True)


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
    right = np.zeros(y.shape, bool)
    right[mask.numpy()] = (logits[mask].argmax(-1) == y[mask]).numpy()
    return nll, right

  start = time.time()
  for i in range(1, args.steps + 1):
    x, y, hard = batch(rng, 64, args.facts, args.filler, args.questions)
    value, right = scored(x, y)
    opt.zero_grad()
    value.backward()
    opt.step()
    if i % args.eval_every == 0 or i == args.steps:
      with torch.no_grad():
        held_right = scored(held[0], held[1])[1]
      report(i, value.item(), right, hard, held_right, held, start)
  return 0


if __name__ == "__main__":
  sys.exit(main())
