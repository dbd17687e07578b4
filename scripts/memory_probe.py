"""Probe trained checkpoints' memory: the inserted-gap curve, BABILong lengths and the trace.

    python scripts/memory_probe.py --checkpoint runs/a --checkpoint runs/b \
        --gaps 0,4,16,64,256 --lengths 0k,1k,4k,16k --num-samples 100 --output probe.json

For each checkpoint: free-generation accuracy with `k` segments of background inserted
between the facts and the question (lm2_jax.evaluation.gap_curve), accuracy on generated
BABILong samples at the given lengths, the memory's statistics per segment over
`--trace-segments` segments of background (RMS, kept fraction per write, slot similarity,
read entropy and, with per-layer writes, the share of units still holding half of what they
held at the start), and the footprint of one fact over `--footprint-segments` segments of
background: `--footprint-pairs` qa1 stories, each beside itself with the supporting fact's
room changed, and the memory's relative difference between the two as background follows
(lm2_jax.model.trace.make_memory_footprint). Prints the tables and writes everything to one
JSON file. This is how the numbers of docs/results.md ("Retention") were measured.

Each model's free answers (gap curve and lengths) go to `<output>_predictions/<name>/`, one
CSV per task and gap (`qa1_+256.csv`) or length, as eval.py writes them: two models probed
with the same seed compare sample by sample with scripts/paired_compare.py, and a rerun of
the same command reuses the answers already there.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lm2_jax import checkpoint as ckpt  # pylint: disable=g-import-not-at-top,wrong-import-position
from lm2_jax.data import babilong as bl  # pylint: disable=wrong-import-position
from lm2_jax.data.haystack import load_haystack  # pylint: disable=wrong-import-position
from lm2_jax.data.tokenizers import load_tokenizer  # pylint: disable=wrong-import-position
from lm2_jax.evaluation import babilong as ev_babilong  # pylint: disable=wrong-import-position
from lm2_jax.evaluation import gap_curve  # pylint: disable=wrong-import-position
from lm2_jax.evaluation.report import write_json  # pylint: disable=wrong-import-position
from lm2_jax.data.babi import ROOMS  # pylint: disable=wrong-import-position
from lm2_jax.model.trace import make_memory_footprint, memory_trace  # pylint: disable=wrong-import-position
from lm2_jax.inference.engine import Engine  # pylint: disable=wrong-import-position
from lm2_jax.inference.sampling import SamplingParams  # pylint: disable=wrong-import-position


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x.strip()]


def _background_ids(tokenizer, haystack, seed: int, need: int) -> np.ndarray:
  """`need` tokens of background text."""
  sentences = haystack.sentences(random.Random(seed))
  text = ""
  while len(tokenizer.encode(text)) < need:
    text += " " + " ".join(next(sentences) for _ in range(32))
  return np.asarray(tokenizer.encode(text)[:need], np.int32)


def fact_pairs(tokenizer, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`count` held-out qa1 stories, each tokenised twice: as generated, and with the room of
  the supporting fact (the last sentence naming the asked actor) replaced by the next room
  that tokenises to as many tokens. Right-padded pairs and their lengths."""
  a_rows, b_rows = [], []
  index = 0
  while len(a_rows) < count:
    sample = bl.make_sample("qa1", "0k", index, seed, tokenizer=tokenizer)
    index += 1
    actor = sample["question"].removeprefix("Where is ").rstrip("?")
    sentences = sample["input"].split(". ")
    last = max(i for i, t in enumerate(sentences) if actor in t)
    room = sample["target"]
    a = tokenizer.encode(sample["input"])
    for other in ROOMS[ROOMS.index(room) + 1:] + ROOMS[:ROOMS.index(room)]:
      changed = list(sentences)
      changed[last] = changed[last].replace(room, other)
      b = tokenizer.encode(". ".join(changed))
      if len(b) == len(a):
        a_rows.append(a)
        b_rows.append(b)
        break
  lengths = np.array([len(r) for r in a_rows], np.int32)
  pad = lambda rows: np.array([r + [tokenizer.pad_id] * (lengths.max() - len(r))
                               for r in rows], np.int32)
  return pad(a_rows), pad(b_rows), lengths


def shift_keep_logits(params, update: str, shift: float):
  """`params` with `shift` added to the logit of what every memory write keeps.

  An intervention for probing, not a model: the convex update keeps 1 - sigmoid(x + b_in),
  so b_in falls by `shift`; the lstm update keeps sigmoid(x + b_f), so b_f rises by it. A
  positive shift makes every unit of every layer keep more per write (and write less).
  """
  target, sign = ("input_gate_bias", -1.0) if update == "convex" else ("forget_gate_bias", 1.0)

  def move(path, leaf):  # the name is the last dict key (a boxed leaf ends in `.value`)
    name = next((k.key for k in reversed(path) if isinstance(k, jax.tree_util.DictKey)), None)
    return leaf + sign * shift if name == target else leaf

  return jax.tree_util.tree_map_with_path(move, params)


def probe(path: str, args, predictions_dir: str | None = None) -> dict:
  """Every measurement of one checkpoint (work directory or step folder).

  The free answers of the gap curve and of the BABILong lengths go to `predictions_dir`
  (one CSV per task and gap or length, as eval.py writes them) when it is given.
  """
  cfg, params, step = ckpt.load_params(path)
  if args.keep_shift:
    params = shift_keep_logits(params, cfg.model.memory.update, args.keep_shift)
  tokenizer = load_tokenizer(cfg.data.tokenizer)
  haystack = load_haystack(args.haystack)
  engine = Engine(cfg.model, params, tokenizer, batch_size=args.batch_size)
  sampling = SamplingParams(max_new_tokens=args.max_new_tokens, stop=(".", "\n"))

  def generate(prompts):
    return [g.text for g in engine.generate(prompts, sampling)]

  tasks = ev_babilong.parse_tasks(args.tasks)
  out = {"checkpoint": os.path.abspath(path), "step": int(step), "keep_shift": args.keep_shift,
         "segment_len": cfg.model.segment_len, "memory": dict(vars(cfg.model.memory))}
  start = time.perf_counter()
  if args.gaps:
    out["gap_curve"] = gap_curve.evaluate_gap_curve(
        generate, tasks, _ints(args.gaps), cfg.model.segment_len, args.num_samples,
        seed=args.seed, tokenizer=tokenizer, haystack=haystack, batch_size=args.batch_size,
        predictions_dir=predictions_dir)
  if args.lengths:
    source = ev_babilong.SampleSource("generate", args.num_samples, seed=args.seed,
                                      tokenizer=tokenizer, haystack=haystack)
    out["babilong"] = ev_babilong.evaluate_babilong(
        generate, tasks, ev_babilong.parse_lengths(args.lengths), source,
        batch_size=args.batch_size, predictions_dir=predictions_dir)
  if args.trace_segments and cfg.model.num_memory_layers:
    ids = _background_ids(tokenizer, haystack, args.seed,
                          args.trace_segments * cfg.model.segment_len)[None]
    trace = memory_trace(engine.model, engine.variables, ids)
    out["trace"] = {k: [float(x) for x in v] for k, v in trace.items()}
  if args.footprint_segments and cfg.model.num_memory_layers:
    chunk = args.footprint_chunk * cfg.model.segment_len
    segments = -(-args.footprint_segments // args.footprint_chunk) * args.footprint_chunk
    background = _background_ids(tokenizer, haystack, args.seed + 1,
                                 segments * cfg.model.segment_len)
    a, b, lengths = fact_pairs(tokenizer, args.footprint_pairs, args.seed)
    curve = make_memory_footprint(engine.model)(engine.variables, a, b, lengths, background,
                                                chunk)
    out["footprint"] = {"segments": [k * args.footprint_chunk for k in range(len(curve))],
                        "relative_difference": [float(x) for x in curve],
                        "pairs": int(len(lengths))}
  out["seconds"] = time.perf_counter() - start
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", action="append", required=True)
  p.add_argument("--name", action="append", default=[])
  p.add_argument("--tasks", default="qa1")
  p.add_argument("--gaps", default="0,4,16,64,256", help="inserted segments; '' skips")
  p.add_argument("--lengths", default="0k,1k,4k,16k", help="BABILong lengths; '' skips")
  p.add_argument("--num-samples", type=int, default=100)
  p.add_argument("--trace-segments", type=int, default=512, help="0 skips the trace")
  p.add_argument("--footprint-segments", type=int, default=0,
                 help="background segments after the fact pairs; 0 skips the footprint")
  p.add_argument("--footprint-chunk", type=int, default=64,
                 help="segments of background between two footprint measurements")
  p.add_argument("--footprint-pairs", type=int, default=16)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--keep-shift", type=float, default=0.0,
                 help="add this to the logit of what every memory write keeps before probing "
                      "(an intervention: positive keeps more per write; 0 probes the model)")
  p.add_argument("--haystack", default="default")
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--max-new-tokens", type=int, default=12)
  p.add_argument("--output", required=True)
  args = p.parse_args(argv)
  names = args.name or [os.path.basename(os.path.normpath(c)) for c in args.checkpoint]
  if len(names) != len(args.checkpoint):
    print("error: give --name once per --checkpoint or not at all", file=sys.stderr)
    return 2
  results = {}
  for name, path in zip(names, args.checkpoint):
    predictions = os.path.join(f"{os.path.splitext(args.output)[0]}_predictions", name)
    try:
      results[name] = probe(path, args, predictions)
    except (ckpt.CheckpointError, ValueError) as e:
      print(f"error: {path}: {e}", file=sys.stderr)
      return 2
    r = results[name]
    if "trace" in r:
      t = r["trace"]
      marks = [i for i in (0, 15, 63, 255, 511, 1023, 2047, 4095, 8191)
               if i < len(t["memory_rms"])]
      print(f"[{name}] trace at segments {[i + 1 for i in marks]}: rms "
            f"{[round(t['memory_rms'][i], 3) for i in marks]}, kept "
            f"{[round(t['kept'][i], 4) for i in marks]}, slot similarity "
            f"{[round(t['slot_similarity'][i], 3) for i in marks]}, read entropy "
            f"{[round(t['read_entropy'][i], 3) for i in marks]}"
            + (f", held {[round(t['held'][i], 4) for i in marks]}" if "held" in t else ""),
            flush=True)
    if "footprint" in r:
      f = r["footprint"]
      marks = [i for i, k in enumerate(f["segments"]) if k == 0 or k & (k - 1) == 0
               or i == len(f["segments"]) - 1]
      print(f"[{name}] footprint of one fact (n = {f['pairs']} pairs) after "
            f"{[f['segments'][i] for i in marks]} background segments: "
            f"{[round(f['relative_difference'][i], 4) for i in marks]}", flush=True)
  if any("gap_curve" in r for r in results.values()):
    print(gap_curve.format_gap_table({n: r["gap_curve"] for n, r in results.items()}))
  if any("babilong" in r for r in results.values()):
    print(ev_babilong.format_table1({n: r["babilong"] for n, r in results.items()}))
  write_json(args.output, results)  # whole or not at all: a failed run keeps the old file
  print(f"written: {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
