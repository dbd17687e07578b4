"""Time a jitted training step (forward, backward, AdamW) of one or more configs.

    python bench/train_step.py --config configs/llama3.2_1b.yaml --config configs/lm2_1.7b.yaml \
        --batch 1 --seq-len 4096 [--peak-tflops 790] [key=value ...]

Each config runs in the same process on the same device, so the printed ratios compare
like with like. MFU = analytic training FLOPs per token (lm2_jax/model/flops.py) x tokens
per second / peak FLOP/s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lm2_jax.config import load_config
from lm2_jax.model import build_model
from lm2_jax.model.flops import flops_per_token


def bench(cfg, batch: int, seq_len: int, repeats: int) -> dict:
  model = build_model(cfg.model)
  tokens = jax.random.randint(jax.random.key(0), (batch, seq_len + 1), 0, cfg.model.vocab_size)
  params = jax.jit(lambda k: nn.unbox(model.init(k, tokens[:, :cfg.model.segment_len]))["params"])(
      jax.random.key(1))
  opt = optax.adamw(1e-4)
  opt_state = jax.jit(opt.init)(params)

  def loss_fn(p, tok):
    logits = model.apply({"params": p}, tok[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tok[:, 1:]).mean()

  @jax.jit
  def step(p, s, tok):
    loss, grads = jax.value_and_grad(loss_fn)(p, tok)
    updates, s = opt.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  start = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, tokens)
  jax.block_until_ready(loss)
  compile_s = time.perf_counter() - start
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, tokens)
    jax.block_until_ready(loss)
    runs.append(time.perf_counter() - start)
  step_s = statistics.median(runs)
  tps = batch * seq_len / step_s
  flops = flops_per_token(cfg.model, seq_len)["train"]
  return {"step_s": step_s, "tokens_per_s": tps, "compile_s": compile_s,
          "flops_per_s": flops * tps, "loss": float(loss)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", action="append", required=True)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--seq-len", type=int, default=1024)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--peak-tflops", type=float, default=0.0, help="for MFU; 0 to omit")
  p.add_argument("overrides", nargs="*")
  args = p.parse_args()
  first = None
  for path in args.config:
    cfg = load_config(path, [*args.overrides, f"train.seq_len={args.seq_len}"])
    r = bench(cfg, args.batch, args.seq_len, args.repeats)
    first = first or r
    mfu = f", MFU {r['flops_per_s'] / (args.peak_tflops * 1e12):.1%}" if args.peak_tflops else ""
    print(f"{path}: step {r['step_s'] * 1e3:.1f} ms, {r['tokens_per_s']:,.0f} tok/s, "
          f"{r['flops_per_s'] / 1e12:.2f} TFLOP/s{mfu}, compile {r['compile_s']:.0f} s, "
          f"time ratio to first {r['step_s'] / first['step_s']:.2f}  "
          f"[{jax.devices()[0].device_kind}, batch {args.batch} x {args.seq_len}]", flush=True)


if __name__ == "__main__":
  main()
