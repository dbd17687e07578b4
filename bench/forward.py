"""Time one jitted forward of a config at a given length, for each attention scope.

    python bench/forward.py --config configs/tiny.yaml --tokens 4096 [--batch 1] [key=value ...]

Prints compile time, the median of --repeats timed runs, tokens/s, and the ratio of the
scopes measured in the same run (full / segment).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from lm2_jax.config import load_config
from lm2_jax.model import build_model


def time_forward(cfg, batch: int, tokens: int, repeats: int) -> dict:
  model = build_model(cfg.model)
  x = jax.random.randint(jax.random.key(0), (batch, tokens), 0, cfg.model.vocab_size)
  variables = jax.jit(model.init)(jax.random.key(1), x[:, :cfg.model.segment_len])
  fwd = jax.jit(model.apply)
  start = time.perf_counter()
  jax.block_until_ready(fwd(variables, x))
  compile_s = time.perf_counter() - start
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fwd(variables, x))
    runs.append(time.perf_counter() - start)
  median = statistics.median(runs)
  return {"compile_s": compile_s, "forward_s": median, "tokens_per_s": batch * tokens / median}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="configs/tiny.yaml")
  p.add_argument("--tokens", type=int, default=4096)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("overrides", nargs="*")
  args = p.parse_args()
  results = {}
  for scope in ("segment", "full"):
    cfg = load_config(args.config, [*args.overrides, f"model.attention_scope={scope}"])
    r = results[scope] = time_forward(cfg, args.batch, args.tokens, args.repeats)
    print(f"{scope:>8}: forward {r['forward_s'] * 1e3:8.1f} ms  ({r['tokens_per_s']:,.0f} tok/s), "
          f"compile {r['compile_s']:.1f} s  [{jax.devices()[0].platform}, batch {args.batch}, "
          f"{args.tokens} tokens]")
  print(f"full / segment time ratio: {results['full']['forward_s'] / results['segment']['forward_s']:.2f}")


if __name__ == "__main__":
  main()
