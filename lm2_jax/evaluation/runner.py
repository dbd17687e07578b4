"""`python eval.py`: BABILong, MMLU, perplexity and memory maps for one or more checkpoints.

    python eval.py --checkpoint WORKDIR [--checkpoint WORKDIR2 ...] [--config CFG ...] \\
        --task babilong|mmlu|perplexity|memory-map --output results.json [options] [key=value ...]

Every input is checked before anything is written or compiled (config, checkpoints, task
options, data folders); a bad one is reported in one line with exit code 2. Outputs sit next
to the JSON (stem = the JSON's path without .json): `<stem>.csv` (the table, flat),
`<stem>_*.png` (pictures) and `<stem>_predictions/<model>/` (per-sample predictions, the
journal that an interrupted run resumes from when the same command is run again).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from lm2_jax import checkpoint as ckpt
from lm2_jax import sharding
from lm2_jax.config import Config, ConfigError, load_config
from lm2_jax.data import babilong as data_babilong
from lm2_jax.data.errors import DataError
from lm2_jax.data.haystack import load_haystack
from lm2_jax.data.tokenizers import check_vocab, load_tokenizer
from lm2_jax.evaluation import babilong as ev_babilong
from lm2_jax.evaluation import memory_map as ev_memory
from lm2_jax.evaluation import mmlu as ev_mmlu
from lm2_jax.evaluation import perplexity as ev_ppl
from lm2_jax.evaluation.report import EvaluationError, write_atomic, write_csv, write_json
from lm2_jax.inference import Engine, InferenceError, SamplingParams
from lm2_jax.lock import LockedError, RunLock

TASKS = ("babilong", "mmlu", "perplexity", "memory-map")
# The longest BABILong length accepted without --allow-long: the longest of the published
# suite that a single host evaluates in hours, not days.
MAX_LENGTH = 1_000_000
ERRORS = (ConfigError, ckpt.CheckpointError, DataError, EvaluationError, InferenceError)


class _Parser(argparse.ArgumentParser):
  """Command-line mistakes, like every other bad input, are one line and exit code 2."""

  def error(self, message: str):
    self.exit(2, f"error: {message} (see python eval.py --help)\n")


def build_parser() -> argparse.ArgumentParser:
  p = _Parser(
      prog="python eval.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", action="append", required=True,
                 help="a training work directory (its latest checkpoint) or one step's "
                      "directory <workdir>/checkpoints/<step>; repeat to compare models")
  p.add_argument("--config", action="append", default=[],
                 help="YAML config, once for all checkpoints or once per checkpoint "
                      "(default: each work directory's config.yaml)")
  p.add_argument("--name", action="append", default=[],
                 help="a name per checkpoint for the tables (default: the work directory's)")
  p.add_argument("--task", required=True, help="|".join(TASKS))
  p.add_argument("--output", required=True, help="the results JSON; other files sit next to it")
  p.add_argument("--tokenizer", help="byte | tokenizer.json | .model (default: the work "
                 "directory's tokenizer.json, else the config's data.tokenizer, else byte)")
  p.add_argument("--batch-size", type=int, default=8, help="prompts per compiled call")
  p.add_argument("--limit", type=int, help="quick look: at most this many samples per task "
                 "and length (babilong), questions per subject (mmlu) or sequences (perplexity)")
  p.add_argument("--seed", type=int, default=0, help="sample generation seed")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  g = p.add_argument_group("babilong")
  g.add_argument("--tasks", help="e.g. qa1,qa2 (default: the tasks the config trains on, "
                 "else qa1-qa5)")
  g.add_argument("--lengths", help="e.g. 0k,1k,4k,16k (default: 0k, 1k, 2k, ... up to 4x the "
                 "training length)")
  g.add_argument("--num-samples", type=int, default=100, help="samples per task and length")
  g.add_argument("--allow-long", action="store_true",
                 help=f"accept lengths above {MAX_LENGTH // 1_000_000}M tokens and a memory "
                      "estimate above the host's available memory")
  g.add_argument("--data", default="generate",
                 help="babilong: 'generate' or a folder in the published layout; perplexity: "
                      "'generate', text files/folders, token shards or tfds:NAME")
  g.add_argument("--haystack", default="default", help="background text for generated "
                 "samples: default | a folder of .txt | pg19:DIR")
  g.add_argument("--prompt", help="babilong: compact (default) | full; memory-map: the prompt "
                 "text (default: a qa1 story in the compact template)")
  g.add_argument("--max-new-tokens", type=int, default=16, help="babilong answer length cap")
  g = p.add_argument_group("mmlu")
  g.add_argument("--mmlu-dir", help="MMLU in the original CSV or the parquet layout")
  g.add_argument("--shots", type=int, default=5)
  g.add_argument("--max-prompt-tokens", type=int,
                 help="drop shots until the prompt has at most this many tokens")
  g = p.add_argument_group("perplexity")
  g.add_argument("--seq-len", type=int, help="predictions per sequence (default: 8 segments)")
  g.add_argument("--num-sequences", type=int, default=16)
  p.add_argument("overrides", nargs="*", help="dotted key=value config overrides, e.g. "
                 "model.attention_scope=full; mesh.data=8 (mesh.* as for train.py) evaluates "
                 "on a device mesh")
  return p


@dataclasses.dataclass
class Model:
  name: str
  checkpoint: str
  step: int
  cfg: Config
  params: Any
  tokenizer: Any
  mesh: Any = None

  def meta(self) -> dict:
    return {"name": self.name, "checkpoint": self.checkpoint, "step": self.step}


def _tokenizer(spec: str | None, workdir: str, cfg: Config):
  if not spec:
    local = os.path.join(workdir, "tokenizer.json")
    data = getattr(cfg, "data", None)
    spec = local if os.path.exists(local) else (getattr(data, "tokenizer", None) or "byte")
  tok = load_tokenizer(spec)
  try:
    check_vocab(tok, cfg.model.vocab_size)
  except ValueError as e:
    raise EvaluationError(f"--tokenizer {spec}: {e}") from None
  return tok


def load_models(args) -> list[Model]:
  """Configs, parameters and tokenizers of every --checkpoint (mismatches refused by name)."""
  paths = args.checkpoint
  if len(args.config) not in (0, 1, len(paths)):
    raise EvaluationError(f"--config given {len(args.config)} times for {len(paths)} "
                          "checkpoints; give it once for all or once per checkpoint")
  if args.name and len(args.name) != len(paths):
    raise EvaluationError(f"--name given {len(args.name)} times for {len(paths)} checkpoints")
  models, used = [], set()
  for i, path in enumerate(paths):
    workdir, step = ckpt.resolve(path)
    if args.config:
      cfg = load_config(args.config[i if len(args.config) > 1 else 0], args.overrides)
    else:
      cfg = ckpt.load_workdir_config(workdir, args.overrides)
    tokenizer = _tokenizer(args.tokenizer, workdir, cfg)
    mesh = _mesh(cfg, args.overrides)
    shardings = None if mesh is None else sharding.param_shardings(cfg.model, mesh)
    cfg, params, step = ckpt.load_params(path, cfg, shardings)  # straight onto the shards
    name = args.name[i] if args.name else os.path.basename(workdir) + (
        f"@{step}" if os.path.abspath(path) != workdir else "")
    base, k = name, 2
    while name in used:
      name, k = f"{base}-{k}", k + 1
    used.add(name)
    models.append(Model(name, os.path.abspath(path), int(step), cfg, params, tokenizer, mesh))
  return models


def _mesh(cfg: Config, overrides: Sequence[str]):
  """One device, unless mesh.* settings are given on the command line: then the config's
  mesh over every device, as train.py builds it (a work directory's training mesh is not
  reused on its own, since evaluation often runs on other machines)."""
  if not any(o.split("=", 1)[0].startswith("mesh.") for o in overrides):
    return None
  return sharding.make_mesh(cfg.mesh)


class Outputs:
  """Paths next to the results JSON."""

  def __init__(self, output: str):
    if not output.endswith(".json"):
      raise EvaluationError(f"--output {output}: expected a .json path")
    if os.path.isdir(output):
      raise EvaluationError(f"--output {output}: is a folder")
    self.json = os.path.abspath(output)
    self.stem = self.json[:-len(".json")]
    folder = os.path.dirname(self.json)
    existing = folder
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
      why = "not a folder" if not os.path.isdir(existing) else "not writable"
      raise EvaluationError(f"--output {output}: cannot write there ({existing} is {why})")
    self.lock = RunLock(f"{self.stem}.lock", f"--output {output}")

  def claim(self) -> None:
    """Create the folder and lock the output (one evaluation at a time): each task calls
    this once its own checks have passed, before its first write."""
    try:
      os.makedirs(os.path.dirname(self.json), exist_ok=True)
      self.lock.acquire()
    except LockedError as e:
      raise EvaluationError(str(e)) from None
    except OSError as e:
      raise EvaluationError(f"--output {self.json}: cannot write there "
                            f"({e.strerror or e})") from None

  def file(self, suffix: str) -> str:
    return f"{self.stem}{suffix}"

  def predictions(self, model: Model) -> str:
    """One folder per model and checkpoint step: a later checkpoint starts afresh beside the
    predictions of an earlier one instead of being refused or mixed with them."""
    return os.path.join(f"{self.stem}_predictions",
                        f"{model.name.replace(os.sep, '_')}_step{model.step}")


def _settings_guard(folder: str, settings: dict, model: Model, args):
  """Refuse to resume predictions made with other settings; record the settings otherwise."""
  settings = {**settings, "checkpoint": model.checkpoint, "step": model.step,
              "overrides": list(args.overrides), "tokenizer": repr(model.tokenizer)}
  path = os.path.join(folder, "settings.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    if old != settings:
      diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
      raise EvaluationError(f"{folder}: predictions there were made with other settings "
                            f"({', '.join(diff)}); move it away or choose another --output")
  else:
    write_json(path, settings)


class _Progress:
  def __init__(self, total: int, desc: str, enabled: bool):
    self.bar = None
    if enabled:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm(total=total, desc=desc, unit="sample", file=sys.stderr,
                      dynamic_ncols=True, mininterval=1.0)

  def __call__(self, k: int):
    if self.bar is not None:
      self.bar.update(k)

  def close(self):
    if self.bar is not None:
      self.bar.close()


def _engine(model: Model, args) -> Engine:
  def report(line: str):
    print(f"[{model.name}] memory: {line}", file=sys.stderr, flush=True)

  return Engine(model.cfg.model, model.params, model.tokenizer, batch_size=args.batch_size,
                report=report, mesh=model.mesh)


def _say(line: str):
  print(line, flush=True)


# --- tasks -------------------------------------------------------------------------------------
def run_babilong(args, models: list[Model], out: Outputs) -> dict:
  cfg0 = models[0].cfg
  data_cfg = getattr(cfg0, "data", None)
  trained = list(data_cfg.tasks) if getattr(data_cfg, "kind", "") == "babilong" else []
  tasks = ev_babilong.parse_tasks(args.tasks or trained or ["qa1", "qa2", "qa3", "qa4", "qa5"])
  lengths = ev_babilong.parse_lengths(args.lengths or
                                      ev_babilong.default_lengths(cfg0.train.seq_len))
  prompt = args.prompt or "compact"
  if prompt not in ("compact", "full"):
    raise EvaluationError(f"--prompt {prompt!r}: expected compact or full for babilong")
  if args.max_new_tokens < 1:
    raise EvaluationError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
  num = min(args.num_samples, args.limit) if args.limit else args.num_samples
  try:
    haystack = load_haystack(args.haystack)
  except (DataError, ValueError) as e:
    raise EvaluationError(f"--haystack {args.haystack}: {e}") from None
  sources = {m.name: ev_babilong.SampleSource(args.data, num, seed=args.seed,
                                             tokenizer=m.tokenizer, haystack=haystack)
             for m in models}
  next(iter(sources.values())).check(tasks, lengths)
  _check_memory(models, lengths, num, args)
  out.claim()
  data = args.data if args.data == "generate" else os.path.abspath(args.data)
  sampling = SamplingParams(max_new_tokens=args.max_new_tokens, stop=(".", "\n"))
  results = {}
  for m in models:
    engine = _engine(m, args)
    folder = out.predictions(m)
    _settings_guard(folder, {"task": "babilong", "prompt": prompt, "data": data,
                             "seed": args.seed, "haystack": args.haystack,
                             "max_new_tokens": args.max_new_tokens}, m, args)

    def generate(prompts, engine=engine):
      return [g.text for g in engine.generate(prompts, sampling)]

    bar = _Progress(len(tasks) * len(lengths) * num, m.name, not args.no_progress)
    try:
      results[m.name] = ev_babilong.evaluate_babilong(
          generate, tasks, lengths, sources[m.name], prompt=prompt, predictions_dir=folder,
          batch_size=args.batch_size, progress=bar)
    finally:
      bar.close()
  first = models[0].name
  report = {"task": "babilong", "results": results[first],
            "summary": ev_babilong.summarize(results[first]),
            "models": [{**m.meta(), "results": results[m.name],
                        "summary": ev_babilong.summarize(results[m.name])} for m in models],
            "settings": {"tasks": tasks, "lengths": lengths, "num_samples": num,
                         "prompt": prompt, "data": data, "seed": args.seed,
                         "capability_groups": {g: list(t) for g, t in
                                               ev_babilong.CAPABILITIES.items()}}}
  from lm2_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  files = {"json": out.json, "csv": out.file(".csv"),
           "accuracy_png": out.file("_accuracy.png"), "radar_png": out.file("_radar.png"),
           "predictions": {m.name: out.predictions(m) for m in models}}
  write_csv(files["csv"], ["model", "task", "length", "accuracy", "accuracy_word", "n",
                           "ci95_low", "ci95_high"],
            [[name, t, x, c["accuracy"], c["accuracy_word"], c["n"], *c["ci95"]]
             for name, res in results.items() for t, by in res.items() for x, c in by.items()])
  plots.accuracy_vs_length(results, files["accuracy_png"])
  plots.capability_radar(results, files["radar_png"])
  report["files"] = files
  write_json(out.json, report)
  _say(ev_babilong.format_table1(results))
  return report


def _available_memory() -> int | None:
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def babilong_memory_bytes(cfg: Config, length: int, num_samples: int, batch_size: int) -> int:
  """A rough upper bound on the memory one (task, length) cell needs.

  The cell's samples are held as text and token ids (about 8 bytes per token: a few
  characters and an int32); a batch of prompts is encoded at once; attention keeps keys and
  values of the whole prompt under full attention, of one segment otherwise; one
  segment's logits.
  """
  m = cfg.model
  kv_len = length if m.attention_scope == "full" else m.segment_len
  kv = batch_size * kv_len * m.num_layers * 2 * m.num_kv_heads * m.resolved_head_dim * 4
  logits = batch_size * m.segment_len * m.vocab_size * 4
  return num_samples * length * 8 + batch_size * length * 4 + kv + logits


def _check_memory(models: list[Model], lengths: list[str], num: int, args) -> None:
  """Refuse, before generating anything, a request that cannot fit in the host's memory."""
  available = _available_memory()
  if available is None or args.allow_long:
    return
  longest = max(data_babilong.parse_length(x) for x in lengths)
  need = max(babilong_memory_bytes(m.cfg, longest, num, args.batch_size) for m in models)
  if need > available:
    raise EvaluationError(
        f"--lengths {data_babilong.length_name(longest)} x --num-samples {num}: about "
        f"{need / 2**30:.1f} GiB needed, {available / 2**30:.1f} GiB available on this host; "
        "lower them, or pass --allow-long to try anyway")


def run_mmlu(args, models: list[Model], out: Outputs) -> dict:
  if not args.mmlu_dir:
    raise EvaluationError("--task mmlu needs --mmlu-dir DIR (the original CSV or the parquet "
                          "layout)")
  test, dev = ev_mmlu.load_questions(args.mmlu_dir, args.shots, args.limit)
  for m in models:
    ev_mmlu.letter_ids(m.tokenizer)
  out.claim()
  reports = {}
  for m in models:
    engine = _engine(m, args)
    fits = (lambda text: True) if not args.max_prompt_tokens else (
        lambda text, tok=m.tokenizer: len(tok.encode(text)) + 2 <= args.max_prompt_tokens)
    folder = out.predictions(m)
    _settings_guard(folder, {"task": "mmlu", "mmlu_dir": os.path.abspath(args.mmlu_dir),
                             "shots": args.shots, "limit": args.limit,
                             "max_prompt_tokens": args.max_prompt_tokens}, m, args)
    bar = _Progress(len(test), m.name, not args.no_progress)
    try:
      reports[m.name] = ev_mmlu.evaluate_mmlu(
          ev_mmlu.engine_scorer(engine, m.tokenizer), test, dev, shots=args.shots, fits=fits,
          predictions_path=ev_mmlu.predictions_file(folder), batch_size=args.batch_size,
          progress=bar)
    finally:
      bar.close()
  first = reports[models[0].name]
  report = {"task": "mmlu", **first,
            "models": [{**m.meta(), **reports[m.name]} for m in models],
            "settings": {"mmlu_dir": os.path.abspath(args.mmlu_dir), "shots": args.shots,
                         "limit_per_subject": args.limit}}
  files = {"json": out.json, "csv": out.file(".csv"),
           "predictions": {m.name: out.predictions(m) for m in models}}
  rows = []
  for name, rep in reports.items():
    rows.append([name, "overall", "all", rep["overall"]["accuracy"], rep["overall"]["n"]])
    for group in ("by_category", "by_difficulty", "by_subject"):
      rows += [[name, group[3:], k, v["accuracy"], v["n"]] for k, v in rep[group].items()]
  write_csv(files["csv"], ["model", "group", "name", "accuracy", "n"], rows)
  report["files"] = files
  write_json(out.json, report)
  _say(ev_mmlu.format_table2(reports))
  return report


def run_perplexity(args, models: list[Model], out: Outputs) -> dict:
  seg = models[0].cfg.model.segment_len
  seq_len = args.seq_len or 8 * seg
  num = min(args.num_sequences, args.limit) if args.limit else args.num_sequences
  ev_ppl.check_lengths(seq_len, num)
  sequences = {}
  for m in models:
    if args.data == "generate":
      sequences[m.name] = ev_ppl.generated_sequences(m.tokenizer, seq_len, num, args.seed)
    else:
      data_cfg = getattr(m.cfg, "data", None)
      sequences[m.name] = ev_ppl.file_sequences(
          args.data, m.tokenizer, seq_len, num,
          **({"text_key": data_cfg.text_key} if data_cfg is not None else {}))
  out.claim()
  reports = {}
  for m in models:
    engine = _engine(m, args)
    folder = out.predictions(m)
    data = args.data if args.data == "generate" else os.path.abspath(args.data)
    _settings_guard(folder, {"task": "perplexity", "data": data, "seq_len": seq_len,
                             "seed": args.seed}, m, args)
    bar = _Progress(len(sequences[m.name]), m.name, not args.no_progress)
    try:
      reports[m.name] = ev_ppl.evaluate_perplexity(
          engine.token_nll, sequences[m.name], m.cfg.model.segment_len,
          predictions_path=os.path.join(folder, "perplexity.csv"),
          batch_size=args.batch_size, progress=bar)
    finally:
      bar.close()
  from lm2_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  first = reports[models[0].name]
  report = {"task": "perplexity", **first,
            "models": [{**m.meta(), **reports[m.name]} for m in models],
            "settings": {"data": args.data, "seq_len": seq_len, "seed": args.seed}}
  files = {"json": out.json, "csv": out.file(".csv"), "png": out.file("_perplexity.png"),
           "predictions": {m.name: out.predictions(m) for m in models}}
  write_csv(files["csv"], ["model", "segment", "loss", "perplexity", "tokens"],
            [[name, c["segment"], c["loss"], c["perplexity"], c["tokens"]]
             for name, rep in reports.items() for c in rep["by_segment"]])
  plots.loss_per_segment(reports, files["png"])
  report["files"] = files
  write_json(out.json, report)
  _say(ev_ppl.format_perplexity(reports))
  return report


def default_map_prompt(seed: int = 0) -> str:
  sample = data_babilong.make_sample("qa1", "0k", 0, seed)
  return data_babilong.format_prompt(sample, "qa1", "compact")


def run_memory_map(args, models: list[Model], out: Outputs) -> dict:
  text = args.prompt or default_map_prompt(args.seed)
  from lm2_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  for m in models:
    if not m.cfg.model.num_memory_layers:
      raise EvaluationError(f"memory-map: model {m.name} has no memory bank to read "
                            f"(model.memory.kind={m.cfg.model.memory.kind}; the maps need "
                            "kind lm2)")
  out.claim()
  entries = []
  for m in models:
    engine = _engine(m, args)
    ids = engine.encode(text)
    maps = ev_memory.read_maps(engine, ids, m.tokenizer.pad_id)
    labels = ev_memory.token_labels(m.tokenizer, ids)
    suffix = "" if len(models) == 1 else "_" + m.name.replace(os.sep, "_")
    png, npz = out.file(f"_heatmap{suffix}.png"), out.file(f"_maps{suffix}.npz")
    plots.memory_heatmaps(maps["before"], maps["after"], labels, png)
    buf = io.BytesIO()
    np.savez_compressed(buf, before=maps["before"], after=maps["after"], tokens=np.asarray(ids))
    write_atomic(npz, buf.getvalue())
    entries.append({**m.meta(), "tokens": labels, "summary": maps["summary"], "png": png,
                    "npz": npz})
    _say(f"{m.name}: memory read maps of {len(ids)} tokens x {m.cfg.model.memory.num_slots} "
         f"slots in {m.cfg.model.num_memory_layers} layers")
    for s in maps["summary"]:
      _say(f"  layer {s['layer']}: read entropy {s['entropy_before']:.3f} -> "
           f"{s['entropy_after']:.3f} nats, most-read slot {s['top_slot_before']} -> "
           f"{s['top_slot_after']}, change {s['change']:.3f}")
  report = {"task": "memory-map", "prompt": text, "tokens": entries[0]["tokens"],
            "models": entries,
            "files": {"json": out.json, "png": [e["png"] for e in entries],
                      "npz": [e["npz"] for e in entries]}}
  write_json(out.json, report)
  return report


RUNNERS = {"babilong": run_babilong, "mmlu": run_mmlu, "perplexity": run_perplexity,
           "memory-map": run_memory_map}


def _check_common(args):
  if args.task not in TASKS:
    raise EvaluationError(f"--task {args.task!r}: unknown task; expected one of "
                          f"{', '.join(TASKS)}")
  if args.batch_size < 1:
    raise EvaluationError(f"--batch-size must be >= 1, got {args.batch_size}")
  if args.limit is not None and args.limit < 1:
    raise EvaluationError(f"--limit must be >= 1, got {args.limit}")
  if args.task == "babilong":
    # Task names and lengths are checked before any checkpoint is read.
    if args.tasks:
      ev_babilong.parse_tasks(args.tasks)
    if args.lengths:
      for name in ev_babilong.parse_lengths(args.lengths):
        if data_babilong.parse_length(name) > MAX_LENGTH and not args.allow_long:
          raise EvaluationError(f"--lengths {name}: longer than the {MAX_LENGTH:,}-token "
                                "maximum; pass --allow-long to evaluate it anyway")
    if args.num_samples < 1:
      raise EvaluationError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.max_new_tokens < 1:
      raise EvaluationError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
  if args.task == "mmlu" and args.mmlu_dir and not os.path.isdir(args.mmlu_dir):
    raise EvaluationError(f"--mmlu-dir {args.mmlu_dir}: MMLU folder not found")


def run(args) -> dict:
  """Check everything, load the models, run the task, write the outputs; returns the report."""
  _check_common(args)
  out = Outputs(args.output)
  models = load_models(args)
  try:
    report = RUNNERS[args.task](args, models, out)
  finally:
    out.lock.release()
  files = report.get("files", {})
  _say(f"results: {out.json}")
  for key, value in files.items():
    if key != "json":
      shown = ", ".join(value.values()) if isinstance(value, dict) else (
          ", ".join(value) if isinstance(value, list) else value)
      _say(f"{key}: {shown}")
  return report


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    run(args)
  except ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted: run the same command again to resume from the predictions written "
          "so far", file=sys.stderr)
    return 130
  return 0
