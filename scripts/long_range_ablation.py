"""The long-range ablation of docs/results.md: can training teach the memory to keep longer?

    python scripts/long_range_ablation.py [--workdir runs/long_range] [--num-samples 100]

Two levers, each from the embedded default's 600-step model (`configs/babilong_tiny.yaml`,
seed 0) or beside it:
  stage1          the embedded default as it is (600 steps)
  control         stage1, then 300 more steps of the same stream at 16 segments
  long            stage1, then 300 steps of 64-segment sequences holding up to 4 stories
                  each, with up to 64 segments of background before a question (the same
                  tokens per step as control)
  chrono          the default trained from scratch with the keep gate's chrono
                  initialisation (model.memory.gate_timescale=512)
  chrono+long     chrono, then the long stage
  chrono+long+128 then 200 steps of 128-segment sequences with up to 6 stories and up to
                  128 segments of background (again 8,192 tokens per step)
Every model is then probed by scripts/memory_probe.py (inserted-gap curve at +0..+256
segments, generated BABILong qa1 at 0k-16k, the memory's trace over 512 segments). A rerun
reuses finished trainings. Each training takes 10-20 minutes on a shared 2-core CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

from retention_ablation import MEASURED_INIT, ROOT, ablation_parser, pick_variants, probe, steps_of  # scripts/ is on sys.path
CONFIG = "configs/babilong_tiny.yaml"

STAGE2 = ["train.steps=300", "train.learning_rate=1.0e-3", "train.warmup_steps=20",
          "train.checkpoint_every=100"]
CONTROL = STAGE2 + ["train.curriculum.max_segments=[16]", "train.curriculum.min_segments=16"]
LONG = STAGE2 + ["train.seq_len=2048", "train.batch_size=4",
                 "train.curriculum.max_segments=[64]", "train.curriculum.min_segments=64",
                 "data.max_gap_segments=64", "data.questions_per_sequence=4"]
LONG128 = ["train.steps=200", "train.learning_rate=1.0e-3", "train.warmup_steps=20",
           "train.checkpoint_every=100", "train.seq_len=4096", "train.batch_size=2",
           "train.curriculum.max_segments=[128]", "train.curriculum.min_segments=128",
           "data.max_gap_segments=128", "data.questions_per_sequence=6"]
CHRONO = ["model.memory.gate_timescale=512"]

# name: (starts from, overrides); stage 1 runs are 600 steps of the config as it is.
VARIANTS = {
    "stage1": (None, ["train.steps=600"]),
    "control": ("stage1", CONTROL),
    "long": ("stage1", LONG),
    "chrono": (None, ["train.steps=600", *CHRONO]),
    "chrono+long": ("chrono", LONG + CHRONO),
    "chrono+long+128": ("chrono+long", LONG128 + CHRONO),
}


def main(argv=None) -> int:
  args = ablation_parser(__doc__, "long_range", VARIANTS).parse_args(argv)
  names = pick_variants(args.variants, VARIANTS)
  if names is None:
    return 2
  needed = list(names)
  for name in names:   # a stage needs the stage it starts from
    parent = VARIANTS[name][0]
    if parent and parent not in needed:
      needed.insert(needed.index(name), parent)

  def workdir(name):
    return os.path.join(args.workdir, name.replace("+", "_"))

  for name in needed:
    parent, over = VARIANTS[name]
    steps = steps_of(over)
    if os.path.isdir(os.path.join(workdir(name), "checkpoints", str(steps))):
      continue
    cmd = [sys.executable, "train.py", "--config", CONFIG, "--workdir", workdir(name),
           f"train.seed={args.seed}", "train.eval_samples=0", MEASURED_INIT, *over]
    if parent:
      cmd.append(f"train.init_from={workdir(parent)}")
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
  return probe({name: workdir(name) for name in names}, "0,4,16,64,128,256", args)


if __name__ == "__main__":
  sys.exit(main())
