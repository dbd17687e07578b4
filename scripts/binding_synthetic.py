"""qa1's binding stripped to single tokens: how long does the decoder take to learn it?

    python scripts/binding_synthetic.py [--steps 3000] [--facts 3] [--filler 0] [key=value ...]

A sequence is [BOS, name, (filler...), room, name, room, ..., Q, name, A] with 4 names and 6
rooms drawn at random (names may repeat: the answer is the room of the asked name's last
fact), and the model predicts the room at the final position: qa1 without the words. The
model is the library's (`build_model`, `configs/babilong_tiny.yaml` with the memory off and
full causal attention; more `key=value` overrides go to the model config), trained with AdamW
(b2 0.95, weight decay 0.1 unless --weight-decay, constant learning rate) on fresh batches of 64. It prints the
loss and the batch accuracy every 250 steps: the plateau where the model answers by recency
(about half right at three facts) and the step where it leaves it are the measurement.
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
from lm2_jax.model import build_model  # pylint: disable=wrong-import-position

BOS, QUESTION, ANSWER = 1, 5, 6
NAMES, ROOMS = np.arange(10, 14), np.arange(20, 26)


def batch(rng: np.random.Generator, size: int, facts: int, filler: int):
  """tokens int32[size, 3 + facts * (2 + filler)], target room int32[size]."""
  fill = list(range(30, 30 + filler))
  rows, targets = [], []
  for _ in range(size):
    names, rooms = rng.choice(NAMES, facts), rng.choice(ROOMS, facts)
    seq = [BOS]
    for n, r in zip(names, rooms):
      seq += [n] + fill + [r]
    asked = rng.choice(names)
    seq += [QUESTION, asked, ANSWER]
    rows.append(seq)
    targets.append(rooms[np.where(names == asked)[0][-1]])
  return jnp.array(rows), jnp.array(targets)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--facts", type=int, default=3)
  p.add_argument("--filler", type=int, default=0, help="tokens between a name and its room")
  p.add_argument("--learning-rate", type=float, default=2e-3)
  p.add_argument("--weight-decay", type=float, default=0.1)
  p.add_argument("--seed", type=int, default=0, help="draws the batches and the initialisation")
  p.add_argument("overrides", nargs="*", help="model config key=value")
  args = p.parse_args(argv)
  cfg = load_config("configs/babilong_tiny.yaml",
                    ["model.memory.kind=none", "model.attention_scope=full",
                     "model.vocab_size=512", "model.segment_len=32", *args.overrides])
  model = build_model(cfg.model)
  rng = np.random.default_rng(args.seed)
  x, _ = batch(rng, 2, args.facts, args.filler)
  params = model.init(jax.random.PRNGKey(args.seed), x)["params"]
  tx = optax.adamw(args.learning_rate, b2=0.95, weight_decay=args.weight_decay)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x, y):
    def loss(p):
      logits = model.apply({"params": p}, x)[:, -1]
      return (optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
              (logits.argmax(-1) == y).mean())
    (value, accuracy), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, value, accuracy

  start = time.time()
  for i in range(args.steps):
    x, y = batch(rng, 64, args.facts, args.filler)
    params, opt, value, accuracy = step(params, opt, x, y)
    if (i + 1) % 250 == 0:
      print(f"step {i + 1}: loss {float(value):.4f}, batch accuracy {float(accuracy):.3f}, "
            f"{time.time() - start:.0f} s", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
