"""The LM2 paper's Table 1 (and its Fig. 5 ablation) at small scale, with one command.

    python scripts/replicate_table1.py --quick            # ~30 min on a 2-core CPU
    python scripts/replicate_table1.py --workdir runs/t1  # the full protocol, for a GPU
    python scripts/replicate_table1.py --staged --seed 1  # qa1 on the staged recipe

For every task, three models are trained from scratch with the same recipe, token budget,
optimizer settings and seed on BABILong generated on the fly (`configs/babilong_tiny.yaml`
and the overrides below), then evaluated with free generation on held-out generated samples
at every length (`eval.py --task babilong`, the three checkpoints side by side):

  lm2      the LM2 memory (the config's formulation), attention within a segment
  rmt      the recurrent memory transformer baseline (model.memory.kind=rmt), same
           backbone and segment length, attention within [memory; segment; memory]
  vanilla  no memory, ordinary causal attention over the whole input
           (model.memory.kind=none, attention_scope=full)

`--staged` trains the three models instead on the staged recipe of docs/results.md (qa1
only, a 512-token BPE, five stages on sequences of at most 4,096 tokens, the last with the
memory carried across sequences and episodes for LM2 and RMT): the stages of each model are
`scripts/binding_ablation.py`'s `STAGED`, trained in --workdir one after the other, each
from the one before. That is about two hours for LM2 and the vanilla model each on a 2-core
CPU, RMT about three times as long, and a full-attention model's evaluation grows with the
square of the length: `--max-length vanilla=16k` caps it.

The Fig. 5 ablation trains LM2 on the first task with memory in 1 block, half the blocks
and all of them. Everything lands in --workdir: one work directory per run, the evaluation
JSON/CSV/plots per task, and `results.json` / `results.md` with the tables (the paper's
Table 1 layout, 95% intervals), seeds, commands, wall times and the machine. A rerun
resumes: finished trainings and evaluations are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lm2_jax.data import babilong as bl  # pylint: disable=wrong-import-position
from lm2_jax.evaluation import babilong as ev_babilong  # pylint: disable=wrong-import-position
from lm2_jax.evaluation import plots  # pylint: disable=wrong-import-position

MODELS = {
    "lm2": [],
    "rmt": ["model.memory.kind=rmt"],
    "vanilla": ["model.memory.kind=none", "model.attention_scope=full"],
}
PROTOCOLS = {
    # ~30 minutes on a 2-core CPU: one task, lengths to 16k, 50 samples per cell.
    "quick": {"tasks": ["qa1"], "lengths": "0k,1k,2k,4k,8k,16k", "num_samples": 50,
              "steps": 600, "ablation": True},
    # The paper's protocol at small scale: qa1-qa5, 0k-128k, 100 samples per cell.
    "full": {"tasks": ["qa1", "qa2", "qa3", "qa4", "qa5"],
             "lengths": "0k,1k,2k,4k,8k,16k,32k,64k,128k", "num_samples": 100,
             "steps": 3000, "ablation": True},
    # The staged recipe (qa1 only; each model's stages set their own steps).
    "staged": {"tasks": ["qa1"], "lengths": "0k,1k,2k,4k,8k,16k,32k,64k,128k",
               "num_samples": 100, "steps": None, "ablation": False},
}


def _run(cmd: list[str], log_path: str) -> float:
  """Run a command with its output in log_path; raise with the log's tail if it fails."""
  start = time.perf_counter()
  with open(log_path, "a", encoding="utf-8") as log:
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
  if proc.returncode:
    with open(log_path, encoding="utf-8") as f:
      tail = "".join(f.readlines()[-15:])
    raise SystemExit(f"error: {shlex.join(cmd)} exited with {proc.returncode}; the end of "
                     f"{log_path}:\n{tail}")
  return time.perf_counter() - start


def _train(args, workdir: str, overrides: list[str], task: str, log: str) -> float:
  done = os.path.join(workdir, "checkpoints", str(args.steps))
  if os.path.isdir(done):
    return 0.0
  cmd = [sys.executable, "train.py", "--config", args.config, "--workdir", workdir,
         f"train.steps={args.steps}", f"train.seed={args.seed}", f"data.tasks=[{task}]",
         "train.eval_samples=0", *args.overrides, *overrides]
  print(f"train {os.path.relpath(workdir, args.workdir)}: {shlex.join(cmd[2:])}", flush=True)
  return _run(cmd, log)


def _evaluate(args, names: list[str], workdirs: list[str], task: str, output: str,
              log: str, lengths: str | None = None) -> dict:
  if not os.path.exists(output):
    cmd = [sys.executable, "eval.py", "--task", "babilong", "--tasks", task, "--lengths",
           lengths or args.lengths, "--num-samples", str(args.num_samples), "--seed",
           str(args.seed), "--batch-size", str(args.batch_size), "--no-progress", "--output",
           output]
    for name, workdir in zip(names, workdirs):
      cmd += ["--checkpoint", workdir, "--name", name]
    print(f"evaluate {task}: {', '.join(names)}", flush=True)
    _run(cmd, log)
  with open(output, encoding="utf-8") as f:
    report = json.load(f)
  return {m["name"]: m["results"] for m in report["models"]}


def _machine() -> str:
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  import jax  # pylint: disable=g-import-not-at-top
  dev = jax.devices()[0]
  return f"{model}, {os.cpu_count()} cores; JAX {jax.__version__} on {dev.platform} ({dev.device_kind})"


def _max_lengths(items: list[str], models: list[str], lengths: list[str]) -> dict[str, str]:
  """--max-length MODEL=LENGTH pairs -> each model's comma-separated lengths."""
  out = {m: ",".join(lengths) for m in models}
  for item in items:
    model, sep, cap = item.partition("=")
    if not sep or model not in out:
      raise ValueError(f"--max-length {item!r}: expected MODEL=LENGTH with MODEL one of "
                       f"{', '.join(models)}")
    limit = bl.parse_length(ev_babilong.parse_lengths(cap)[0])
    out[model] = ",".join(x for x in lengths if bl.parse_length(x) <= limit)
    if not out[model]:
      raise ValueError(f"--max-length {item!r}: no length of {','.join(lengths)} is <= {cap}")
  return out


def _train_staged(args, model: str, log: str) -> tuple[str, float]:
  """Train `model`'s stages of the staged recipe in --workdir; returns the last one's."""
  import binding_ablation  # pylint: disable=g-import-not-at-top  (scripts/ is on sys.path)
  start = time.perf_counter()
  workdir = ""
  for name in binding_ablation.STAGED[model]:
    workdir = binding_ablation.train_variant(
        name, args.workdir, args.seed, run=lambda cmd, **_: _run(cmd, log))
  return workdir, time.perf_counter() - start


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true", help="the ~30-minute CPU protocol")
  mode.add_argument("--staged", action="store_true",
                    help="qa1 on the staged BPE recipe of docs/results.md (hours on a CPU)")
  p.add_argument("--workdir", default=None, help="default: runs/table1[_quick|_staged]")
  p.add_argument("--config", default="configs/babilong_tiny.yaml")
  p.add_argument("--tasks", help="override the protocol's tasks, e.g. qa1,qa2")
  p.add_argument("--lengths", help="override the protocol's lengths, e.g. 0k,1k,4k")
  p.add_argument("--max-length", action="append", default=[], metavar="MODEL=LENGTH",
                 help="evaluate MODEL only up to LENGTH, e.g. vanilla=16k (repeatable)")
  p.add_argument("--num-samples", type=int, help="override the samples per cell")
  p.add_argument("--steps", type=int, help="override the training steps of every model")
  p.add_argument("--models", default="lm2,rmt,vanilla")
  p.add_argument("--no-ablation", action="store_true", help="skip the Fig. 5 ablation")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--batch-size", type=int, default=32, help="evaluation prompts per call")
  p.add_argument("overrides", nargs="*", help="config overrides for every training run")
  args = p.parse_args(argv)
  protocol = "quick" if args.quick else "staged" if args.staged else "full"
  proto = PROTOCOLS[protocol]
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  try:
    args.tasks = ev_babilong.parse_tasks(args.tasks or proto["tasks"])
    lengths = ev_babilong.parse_lengths(args.lengths or proto["lengths"])
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
      raise ValueError(f"--models {args.models!r}: expected some of {', '.join(MODELS)}")
    model_lengths = _max_lengths(args.max_length, models, lengths)
    if args.staged and (args.tasks != ["qa1"] or args.steps or args.overrides):
      raise ValueError("--staged trains qa1 with each stage's own steps and settings: "
                       "--tasks other than qa1, --steps and config overrides do not apply")
  except (ValueError, ev_babilong.EvaluationError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  args.lengths = ",".join(lengths)
  args.num_samples = args.num_samples or proto["num_samples"]
  args.steps = args.steps or proto["steps"]
  if args.num_samples < 1 or (args.steps is not None and args.steps < 1):
    print(f"error: --num-samples and --steps must be >= 1 (got {args.num_samples}, "
          f"{args.steps})", file=sys.stderr)
    return 2
  args.workdir = os.path.abspath(args.workdir or os.path.join(
      ROOT, "runs", "table1" if protocol == "full" else f"table1_{protocol}"))
  os.makedirs(args.workdir, exist_ok=True)
  log = os.path.join(args.workdir, "commands.log")
  started = time.perf_counter()
  walls: dict[str, float] = {}
  table: dict[str, dict] = {m: {} for m in models}
  for task in args.tasks:
    if args.staged:
      workdirs = []
      for m in models:
        w, walls[f"train {task} {m}"] = _train_staged(args, m, log)
        workdirs.append(w)
    else:
      workdirs = [os.path.join(args.workdir, task, m) for m in models]
      for m, w in zip(models, workdirs):
        walls[f"train {task} {m}"] = _train(args, w, MODELS[m], task, log)
    # One side-by-side evaluation per set of lengths (all models unless --max-length).
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(models):
      groups.setdefault(model_lengths[m], []).append(i)
    t0 = time.perf_counter()
    for group_lengths, idx in groups.items():
      names = [models[i] for i in idx]
      output = os.path.join(args.workdir, task, "eval", "babilong.json" if len(groups) == 1
                            else f"babilong_{'_'.join(names)}.json")
      os.makedirs(os.path.dirname(output), exist_ok=True)
      res = _evaluate(args, names, [workdirs[i] for i in idx], task, output, log,
                      group_lengths)
      for m in names:
        table[m].update(res[m])
    walls[f"evaluate {task}"] = time.perf_counter() - t0
  ablation = {}
  if proto["ablation"] and not args.no_ablation and "lm2" in models:
    task = args.tasks[0]
    from lm2_jax.config import load_config  # pylint: disable=g-import-not-at-top
    layers = load_config(os.path.join(ROOT, args.config), args.overrides).model.num_layers
    counts = sorted({1, max(1, layers // 2), layers})
    names = [f"memory in {k}/{layers} blocks" for k in counts]
    workdirs = []
    for k in counts:
      w = os.path.join(args.workdir, task, "lm2" if k == layers else f"lm2_layers{k}")
      walls[f"train {task} lm2 layers={k}"] = _train(
          args, w, [f"model.memory.layers={k}"] if k != layers else [], task, log)
      workdirs.append(w)
    res = _evaluate(args, names, workdirs, task,
                    os.path.join(args.workdir, task, "eval", "ablation.json"), log)
    ablation = res
  out = os.path.join(args.workdir, "results")
  plots.accuracy_vs_length(table, out + "_accuracy.png")
  plots.capability_radar(table, out + "_radar.png")
  md = [ev_babilong.format_table1(table)]
  if ablation:
    md.append(ev_babilong.format_table1(ablation, "Fig. 5 ablation: memory in 1, half and "
                                        "all blocks (accuracy %)"))
  summary = {"protocol": protocol, "tasks": args.tasks,
             "lengths": args.lengths.split(","), "num_samples": args.num_samples,
             "steps": args.steps, "seed": args.seed, "config": args.config,
             "overrides": args.overrides, "max_lengths": model_lengths,
             "models": {m: MODELS[m] for m in models},
             "machine": _machine(), "wall_seconds": walls,
             "total_seconds": time.perf_counter() - started,
             "results": table, "ablation": ablation}
  with open(out + ".json", "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write("\n\n".join(md) + "\n")
  print("\n\n".join(md))
  print(f"written: {out}.json, {out}.md, {out}_accuracy.png, {out}_radar.png "
        f"({summary['total_seconds'] / 60:.1f} min)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
