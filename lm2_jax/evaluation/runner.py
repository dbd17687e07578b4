"""Runs one evaluation (an `EvalConfig`, which eval.py parses) over one or more checkpoints.

Every input is checked before anything is written or compiled (config, checkpoints, task
options, data folders); a bad one raises an error naming it. Each task turns its checked
inputs into a `TaskPlan`: what to run on each model and how the results become tables. The
runner does what every task shares, once: the resume guard on each model's predictions, the
progress bar, the CSV, the plots and the JSON. Outputs sit next to the JSON (stem = its path
without .json): `<stem>.csv`, `<stem>_*.png` and `<stem>_predictions/<model>/` (per-sample
predictions, the journal an interrupted run resumes from when the same command is rerun).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from lm2_jax import checkpoint as ckpt
from lm2_jax import sharding
from lm2_jax.cli import human
from lm2_jax.config import Config, ConfigError, load_config
from lm2_jax.data import babilong as data_babilong
from lm2_jax.data import kinds as data_kinds
from lm2_jax.data.errors import DataError
from lm2_jax.data.haystack import load_haystack
from lm2_jax.data.tokenizers import check_vocab, load_tokenizer
from lm2_jax.evaluation import babilong as ev_babilong
from lm2_jax.evaluation import memory_map as ev_memory
from lm2_jax.evaluation import mmlu as ev_mmlu
from lm2_jax.evaluation import perplexity as ev_ppl
from lm2_jax.evaluation.config import EvalConfig, validate
from lm2_jax.evaluation.report import EvaluationError, write_atomic, write_csv, write_json
from lm2_jax.inference import Engine, InferenceError, SamplingParams
from lm2_jax.lock import LockedError, RunLock

ERRORS = (ConfigError, ckpt.CheckpointError, DataError, EvaluationError, InferenceError)
DEFAULT_BABILONG_TASKS = ("qa1", "qa2", "qa3", "qa4", "qa5")


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


def load_models(ecfg: EvalConfig) -> list[Model]:
  """Configs, parameters and tokenizers of every --checkpoint (mismatches refused by name).

  One device, unless mesh.* settings are given: then the config's mesh over every device,
  as train.py builds it (a work directory's training mesh is not reused on its own, since
  evaluation often runs on other machines).
  """
  paths, configs, names = ecfg.checkpoints, ecfg.configs, ecfg.names
  if len(configs) not in (0, 1, len(paths)):
    raise EvaluationError(f"--config given {len(configs)} times for {len(paths)} "
                          "checkpoints; give it once for all or once per checkpoint")
  if names and len(names) != len(paths):
    raise EvaluationError(f"--name given {len(names)} times for {len(paths)} checkpoints")
  models, used = [], set()
  for i, path in enumerate(paths):
    workdir, step = ckpt.resolve(path)
    if configs:
      cfg = load_config(configs[i if len(configs) > 1 else 0], ecfg.overrides)
    else:
      cfg = ckpt.load_workdir_config(workdir, ecfg.overrides)
    tokenizer = _tokenizer(ecfg.tokenizer, workdir, cfg)
    mesh = sharding.make_mesh(cfg.mesh) if ecfg.uses_mesh else None
    shardings = None if mesh is None else sharding.param_shardings(cfg.model, mesh)
    cfg, params, step = ckpt.load_params(path, cfg, shardings)  # straight onto the shards
    name = names[i] if names else os.path.basename(workdir) + (
        f"@{step}" if os.path.abspath(path) != workdir else "")
    base, k = name, 2
    while name in used:
      name, k = f"{base}-{k}", k + 1
    used.add(name)
    models.append(Model(name, os.path.abspath(path), int(step), cfg, params, tokenizer, mesh))
  return models


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


def _settings_guard(folder: str, settings: dict, model: Model, ecfg: EvalConfig):
  """Refuse to resume predictions made with other settings; record the settings otherwise."""
  settings = {**settings, "checkpoint": model.checkpoint, "step": model.step,
              "overrides": list(ecfg.overrides), "tokenizer": repr(model.tokenizer)}
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


def _engine(model: Model, batch_size: int) -> Engine:
  def report(line: str):
    print(f"[{model.name}] memory: {line}", file=sys.stderr, flush=True)

  return Engine(model.cfg.model, model.params, model.tokenizer, batch_size=batch_size,
                report=report, mesh=model.mesh)


def _say(line: str):
  print(line, flush=True)


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


def _check_memory(models: list[Model], lengths: list[str], num: int, ecfg: EvalConfig) -> None:
  """Refuse, before generating anything, a request that cannot fit in the host's memory."""
  available = _available_memory()
  if available is None or ecfg.allow_long:
    return
  longest = max(data_babilong.parse_length(x) for x in lengths)
  need = max(babilong_memory_bytes(m.cfg, longest, num, ecfg.batch_size) for m in models)
  if need > available:
    raise EvaluationError(
        f"--lengths {data_babilong.length_name(longest)} x --num-samples {num}: about "
        f"{human(need, binary=True)} needed, {human(available, binary=True)} available on "
        "this host; lower them, or pass --allow-long to try anyway")


# --- tasks: each checks its inputs and returns a plan; the runner does the rest -----------------
Results = dict[str, Any]  # a task's results, by model name


@dataclasses.dataclass
class TaskPlan:
  """One task, its inputs checked: how to run it on a model and how to report the results.

  `evaluate(model, engine, predictions_folder, progress)` returns one model's results;
  `describe` turns them into that model's entry of the report (the first model's entry also
  stands at the top, unless `head` says what does). Without a `resume_key` (the settings
  the predictions were made with; a resume must match them) the task keeps no predictions;
  without `total` (work items per model) it shows no progress bar.
  """

  evaluate: Callable[[Model, Engine, str | None, Callable[[int], None]], Any]
  text: Callable[[Results], str]                       # the table printed at the end
  resume_key: dict | None = None
  total: Callable[[Model], int] | None = None
  settings: dict | None = None                         # the report's record of the settings
  describe: Callable[[Any], dict] = lambda r: r
  head: Callable[[dict], dict] | None = None
  csv: tuple[tuple[str, ...], Callable[[Results], list]] | None = None  # columns, rows
  plots: dict[str, tuple[str, Callable[[Results, str], None]]] = dataclasses.field(
      default_factory=dict)                            # files key: (suffix, draw(results, path))
  files: Callable[[dict[str, dict]], dict] | None = None  # more files, from the entries


def _execute(plan: TaskPlan, ecfg: EvalConfig, models: list[Model], out: Outputs) -> dict:
  """Run a plan on every model, then write the CSV, the plots and the JSON; the report."""
  out.claim()
  results = {}
  for m in models:
    engine = _engine(m, ecfg.batch_size)
    folder = None
    if plan.resume_key is not None:
      folder = out.predictions(m)
      _settings_guard(folder, plan.resume_key, m, ecfg)
    bar = _Progress(plan.total(m) if plan.total else 0, m.name,
                    ecfg.progress and plan.total is not None)
    try:
      results[m.name] = plan.evaluate(m, engine, folder, bar)
    finally:
      bar.close()
  entries = {name: plan.describe(r) for name, r in results.items()}
  first = entries[models[0].name]
  report = {"task": ecfg.task, **(plan.head(first) if plan.head else first),
            "models": [{**m.meta(), **entries[m.name]} for m in models]}
  if plan.settings is not None:
    report["settings"] = plan.settings
  files = {"json": out.json}
  if plan.csv is not None:
    files["csv"] = out.file(".csv")
    write_csv(files["csv"], plan.csv[0], plan.csv[1](results))
  for key, (suffix, draw) in plan.plots.items():
    files[key] = out.file(suffix)
    draw(results, files[key])
  if plan.files is not None:
    files.update(plan.files(entries))
  if plan.resume_key is not None:
    files["predictions"] = {m.name: out.predictions(m) for m in models}
  report["files"] = files
  write_json(out.json, report)
  _say(plan.text(results))
  return report


def _babilong(ecfg: EvalConfig, models: list[Model], out: Outputs) -> TaskPlan:
  cfg0 = models[0].cfg
  trained = list(data_kinds.of(cfg0.data).tasks(cfg0.data))
  tasks = ev_babilong.parse_tasks(ecfg.tasks or trained or DEFAULT_BABILONG_TASKS)
  lengths = ev_babilong.parse_lengths(ecfg.lengths or
                                      ev_babilong.default_lengths(cfg0.train.seq_len))
  prompt = ecfg.prompt or "compact"
  num = min(ecfg.num_samples, ecfg.limit) if ecfg.limit else ecfg.num_samples
  try:
    haystack = load_haystack(ecfg.haystack)
  except (DataError, ValueError) as e:
    raise EvaluationError(f"--haystack {ecfg.haystack}: {e}") from None
  sources = {m.name: ev_babilong.SampleSource(ecfg.data, num, seed=ecfg.seed,
                                             tokenizer=m.tokenizer, haystack=haystack)
             for m in models}
  next(iter(sources.values())).check(tasks, lengths)
  _check_memory(models, lengths, num, ecfg)
  data = ecfg.data if ecfg.data == "generate" else os.path.abspath(ecfg.data)
  sampling = SamplingParams(max_new_tokens=ecfg.max_new_tokens, stop=(".", "\n"))

  def evaluate(m, engine, folder, progress):
    def generate(prompts):
      return [g.text for g in engine.generate(prompts, sampling)]

    return ev_babilong.evaluate_babilong(
        generate, tasks, lengths, sources[m.name], prompt=prompt, predictions_dir=folder,
        batch_size=ecfg.batch_size, progress=progress)

  from lm2_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  return TaskPlan(
      evaluate=evaluate, text=ev_babilong.format_table1,
      resume_key={"task": "babilong", "prompt": prompt, "data": data, "seed": ecfg.seed,
                  "haystack": ecfg.haystack, "max_new_tokens": ecfg.max_new_tokens},
      total=lambda m: len(tasks) * len(lengths) * num,
      settings={"tasks": tasks, "lengths": lengths, "num_samples": num, "prompt": prompt,
                "data": data, "seed": ecfg.seed,
                "capability_groups": {g: list(t) for g, t in ev_babilong.CAPABILITIES.items()}},
      describe=lambda r: {"results": r, "summary": ev_babilong.summarize(r)},
      csv=(ev_babilong.CSV_COLUMNS, ev_babilong.csv_rows),
      plots={"accuracy_png": ("_accuracy.png", plots.accuracy_vs_length),
             "radar_png": ("_radar.png", plots.capability_radar)})


def _mmlu(ecfg: EvalConfig, models: list[Model], out: Outputs) -> TaskPlan:
  test, dev = ev_mmlu.load_questions(ecfg.mmlu_dir, ecfg.shots, ecfg.limit)
  for m in models:
    ev_mmlu.letter_ids(m.tokenizer)
  mmlu_dir = os.path.abspath(ecfg.mmlu_dir)
  most = ecfg.max_prompt_tokens

  def evaluate(m, engine, folder, progress):
    fits = (lambda text: True) if not most else (
        lambda text: len(m.tokenizer.encode(text)) + 2 <= most)
    return ev_mmlu.evaluate_mmlu(
        ev_mmlu.engine_scorer(engine, m.tokenizer), test, dev, shots=ecfg.shots, fits=fits,
        predictions_path=ev_mmlu.predictions_file(folder), batch_size=ecfg.batch_size,
        progress=progress)

  return TaskPlan(
      evaluate=evaluate, text=ev_mmlu.format_table2,
      resume_key={"task": "mmlu", "mmlu_dir": mmlu_dir, "shots": ecfg.shots,
                  "limit": ecfg.limit, "max_prompt_tokens": most},
      total=lambda m: len(test),
      settings={"mmlu_dir": mmlu_dir, "shots": ecfg.shots, "limit_per_subject": ecfg.limit},
      csv=(ev_mmlu.CSV_COLUMNS, ev_mmlu.csv_rows))


def _perplexity(ecfg: EvalConfig, models: list[Model], out: Outputs) -> TaskPlan:
  seq_len = ecfg.seq_len or 8 * models[0].cfg.model.segment_len
  num = min(ecfg.num_sequences, ecfg.limit) if ecfg.limit else ecfg.num_sequences
  sequences = {}
  for m in models:
    if ecfg.data == "generate":
      sequences[m.name] = ev_ppl.generated_sequences(m.tokenizer, seq_len, num, ecfg.seed)
    else:
      sequences[m.name] = ev_ppl.file_sequences(ecfg.data, m.tokenizer, seq_len, num,
                                                text_key=m.cfg.data.text_key)
  data = ecfg.data if ecfg.data == "generate" else os.path.abspath(ecfg.data)

  def evaluate(m, engine, folder, progress):
    return ev_ppl.evaluate_perplexity(
        engine.token_nll, sequences[m.name], m.cfg.model.segment_len,
        predictions_path=os.path.join(folder, "perplexity.csv"),
        batch_size=ecfg.batch_size, progress=progress)

  from lm2_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  return TaskPlan(
      evaluate=evaluate, text=ev_ppl.format_perplexity,
      resume_key={"task": "perplexity", "data": data, "seq_len": seq_len, "seed": ecfg.seed},
      total=lambda m: len(sequences[m.name]),
      settings={"data": ecfg.data, "seq_len": seq_len, "seed": ecfg.seed},
      csv=(ev_ppl.CSV_COLUMNS, ev_ppl.csv_rows),
      plots={"png": ("_perplexity.png", plots.loss_per_segment)})


def default_map_prompt(seed: int = 0) -> str:
  sample = data_babilong.make_sample("qa1", "0k", 0, seed)
  return data_babilong.format_prompt(sample, "qa1", "compact")


def _memory_map(ecfg: EvalConfig, models: list[Model], out: Outputs) -> TaskPlan:
  text = ecfg.prompt or default_map_prompt(ecfg.seed)
  for m in models:
    if not m.cfg.model.num_memory_layers:
      raise EvaluationError(f"memory-map: model {m.name} has no memory bank to read "
                            f"(model.memory.kind={m.cfg.model.memory.kind}; the maps need "
                            "kind lm2)")
  from lm2_jax.evaluation import plots  # pylint: disable=g-import-not-at-top

  def evaluate(m, engine, folder, progress):
    ids = engine.encode(text)
    maps = ev_memory.read_maps(engine, ids, m.tokenizer.pad_id)
    labels = ev_memory.token_labels(m.tokenizer, ids)
    suffix = "" if len(models) == 1 else "_" + m.name.replace(os.sep, "_")
    png, npz = out.file(f"_heatmap{suffix}.png"), out.file(f"_maps{suffix}.npz")
    plots.memory_heatmaps(maps["before"], maps["after"], labels, png)
    buf = io.BytesIO()
    np.savez_compressed(buf, before=maps["before"], after=maps["after"], tokens=np.asarray(ids))
    write_atomic(npz, buf.getvalue())
    return {"tokens": labels, "summary": maps["summary"], "png": png, "npz": npz}

  def maps_text(results: Results) -> str:
    lines = []
    for m in models:
      r = results[m.name]
      lines.append(f"{m.name}: memory read maps of {len(r['tokens'])} tokens x "
                   f"{m.cfg.model.memory.num_slots} slots in {m.cfg.model.num_memory_layers} "
                   f"layers")
      lines += [f"  layer {s['layer']}: read entropy {s['entropy_before']:.3f} -> "
                f"{s['entropy_after']:.3f} nats, most-read slot {s['top_slot_before']} -> "
                f"{s['top_slot_after']}, change {s['change']:.3f}" for s in r["summary"]]
    return "\n".join(lines)

  return TaskPlan(
      evaluate=evaluate, text=maps_text,
      head=lambda first: {"prompt": text, "tokens": first["tokens"]},
      files=lambda entries: {"png": [e["png"] for e in entries.values()],
                             "npz": [e["npz"] for e in entries.values()]})


PLANS = {"babilong": _babilong, "mmlu": _mmlu, "perplexity": _perplexity,
         "memory-map": _memory_map}


def run(ecfg: EvalConfig) -> dict:
  """Check everything, load the models, run the task, write the outputs; returns the report."""
  ecfg = validate(ecfg)
  out = Outputs(ecfg.output)
  models = load_models(ecfg)
  try:
    report = _execute(PLANS[ecfg.task](ecfg, models, out), ecfg, models, out)
  finally:
    out.lock.release()
  _say(f"results: {out.json}")
  for key, value in report["files"].items():
    if key != "json":
      shown = ", ".join(value.values()) if isinstance(value, dict) else (
          ", ".join(value) if isinstance(value, list) else value)
      _say(f"{key}: {shown}")
  return report
