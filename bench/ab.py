"""Same-run A/B timing of code versions or settings: the reference-shape train step.

    python bench/ab.py ROUNDS CHECKOUT_A "overrides A" CHECKOUT_B "overrides B" [...]

Each side is a worker process that imports lm2_jax from its own checkout (so two commits
can be compared in one run), builds the train step as train.py runs it (`real_step`) at the
`reference` benchmark's shape (or `config=PATH` among the overrides), compiles and warms
it up, then runs one step per request. Overrides are `key=value` config settings; those
starting with `--` go to the worker's XLA_FLAGS. The coordinator alternates the order of
the sides round by round and reports wall and process CPU time (both threads of XLA's pool)
per step, and each side's speedup over the first as the median of per-round ratios. On a
shared machine the CPU-time ratio is the steadier one: a worker waiting for a core is not
charged for it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

_WORKER = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["AB_CHECKOUT"])
import jax
from bench import reference
from bench.train_step import real_step
from lm2_jax.config import load_config
over = json.loads(os.environ["AB_OVERRIDES"])
config = [o.split("=", 1)[1] for o in over if o.startswith("config=")]
over = [o for o in over if not o.startswith("config=")]
if config:
  cfg = load_config(config[0], over)
else:
  cfg = load_config(None, [*reference.SHAPE, "model.segment_len=256", "train.seq_len=256",
                           "train.batch_size=4", *over])
step = real_step(cfg)
jax.block_until_ready(step()); jax.block_until_ready(step())
print("ready", flush=True)
for line in sys.stdin:
  if line.strip() != "go":
    break
  cpu, wall = time.process_time(), time.perf_counter()
  jax.block_until_ready(step())
  print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}),
        flush=True)
"""


def main(argv: list[str]) -> int:
  if len(argv) < 3 or len(argv) % 2 == 0:
    print("usage: bench/ab.py ROUNDS CHECKOUT_A 'overrides A' [CHECKOUT_B 'overrides B' ...]",
          file=sys.stderr)
    return 2
  rounds = int(argv[0])
  sides = [(os.path.abspath(argv[i]), argv[i + 1].split()) for i in range(1, len(argv), 2)]
  workers = []
  for checkout, over in sides:
    env = dict(os.environ, AB_CHECKOUT=checkout, PYTHONPATH=checkout,
               XLA_FLAGS=" ".join(o for o in over if o.startswith("--")),
               AB_OVERRIDES=json.dumps([o for o in over if not o.startswith("--")]))
    worker = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    if worker.stdout.readline().strip() != "ready":
      print(f"bench/ab.py: the worker for {checkout} {' '.join(over)!r} failed", file=sys.stderr)
      return 1
    workers.append(worker)
  times: list[list[dict]] = [[] for _ in sides]
  for r in range(rounds):
    for i in (range(len(sides)) if r % 2 == 0 else reversed(range(len(sides)))):
      workers[i].stdin.write("go\n")
      workers[i].stdin.flush()
      times[i].append(json.loads(workers[i].stdout.readline()))
  for worker in workers:
    worker.stdin.write("stop\n")
    worker.stdin.flush()
    worker.wait()
  for i, (checkout, over) in enumerate(sides):
    med = {k: statistics.median(t[k] for t in times[i]) for k in ("wall", "cpu")}
    speedup = {k: statistics.median(a[k] / b[k] for a, b in zip(times[0], times[i]))
               for k in ("wall", "cpu")}
    print(f"{i}: {checkout} {' '.join(over)!r}: wall {med['wall'] * 1e3:.1f} ms, "
          f"cpu {med['cpu'] * 1e3:.1f} ms per step; speedup over 0: wall {speedup['wall']:.3f}, "
          f"cpu {speedup['cpu']:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
