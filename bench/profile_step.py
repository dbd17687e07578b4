"""Where a train step's time goes: a jax.profiler trace mapped back to the JAX operations.

    python bench/profile_step.py [key=value ...]   # the `reference` shape, or config=PATH

Builds the step as train.py runs it (the same `StepCache` as `real_step`), warms it up,
traces a few steps and sums the duration of every compiled HLO instruction over XLA's
worker threads; each instruction is named by its kind (`ynn_fusion`: the matmul kernels,
`copy_*`: layout copies, ...) and by the JAX operation it came from (the `op_name` of the
compiled HLO, FWD/BWD for the forward and the backward).
"""

from __future__ import annotations

import collections
import glob
import os
import re
import sys
import tempfile

if __package__ in (None, ""):  # `python bench/profile_step.py` from the repository root
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from bench import reference  # noqa: E402
from bench.train_step import real_step  # noqa: E402
from lm2_jax.config import load_config  # noqa: E402


def _op_names(hlo_text: str) -> dict[str, str]:
  names = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", line)
    if m:
      op = m.group(2).replace("jit(train_step)/", "")
      op = op.replace("transpose(jvp(LM2))", "BWD").replace("jvp(LM2)", "FWD")
      names[m.group(1)] = re.sub(r"(while/body/)?closed_call/|core\.<lambda>/|core/", "", op)
  return names


def main(argv: list[str], steps: int = 5, top: int = 40) -> int:
  config = [a.split("=", 1)[1] for a in argv if a.startswith("config=")]
  over = [a for a in argv if not a.startswith("config=")]
  cfg = (load_config(config[0], over) if config else load_config(
      None, [*reference.SHAPE, "model.segment_len=256", "train.seq_len=256",
             "train.batch_size=4", *over]))
  run = real_step(cfg)
  step = run.step_cache
  for _ in range(3):
    jax.block_until_ready(run())
  # The executable the trace runs (StepCache keeps one per input shape; there is one here).
  names = _op_names(step.executables[0].as_text())
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(steps):
      jax.block_until_ready(run())
    jax.profiler.stop_trace()
    trace = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
    profile = jax.profiler.ProfileData.from_file(trace)
  by_kind, by_op = collections.Counter(), collections.Counter()
  for plane in profile.planes:
    for line in plane.lines:
      if "XLAEigen" not in line.name:  # XLA's worker threads run the compiled instructions
        continue
      for event in line.events:
        if event.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
          continue
        kind = re.sub(r"\.\d+$", "", event.name)
        by_kind[kind] += event.duration_ns
        by_op[(kind, names.get(event.name, ""))] += event.duration_ns
  total = sum(by_kind.values())
  print(f"op time summed over threads: {total / 1e6 / steps:.1f} ms per step")
  for kind, ns in by_kind.most_common(12):
    print(f"{100 * ns / total:5.1f}%  {kind}")
  print()
  for (kind, op), ns in by_op.most_common(top):
    print(f"{100 * ns / total:5.1f}%  {kind:28s} {op[:110]}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
