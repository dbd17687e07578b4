"""`run(cfg, workdir)`: the training job, from checks to the last checkpoint.

Order matters for the promises in docs/training.md:
  1. checks that need no compilation (config, work directory, data, tokenizer, mesh,
     batch split; an existing checkpoint the config's shapes contradict) - nothing is
     written before they pass;
  2. the resolved config is written, the newest readable checkpoint restored (or a fresh
     state created in place on the mesh);
  3. steps run; metrics are fetched from the devices only every log_every steps (and
     before every checkpoint, so that a checkpoint never holds the result of a step whose
     loss was not finite);
  4. on SIGTERM/SIGINT the current step is checkpointed and the run returns; at the end
     the final step is checkpointed and evaluated.
A run killed at any point and started again continues with the same batches and the same
losses: the data position is part of each checkpoint and the curriculum is a function of
the step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lm2_jax import checkpoint, sharding
from lm2_jax.config import Config
from lm2_jax.model.flops import flops_per_token
from lm2_jax.summary import count_params, describe_memory
from lm2_jax.train import distributed, preflight
from lm2_jax.train.evaluation import Evaluator
from lm2_jax.train.inputs import TrainInput, eval_batches
from lm2_jax.train.metrics import EVAL_FILE, METRICS_FILE, TENSORBOARD_DIR, MetricsLogger, \
    human_seconds, peak_flops_per_device
from lm2_jax.train.optim import make_optimizer
from lm2_jax.train.preemption import StopSignal
from lm2_jax.train.state import TrainState, abstract_state, create_state, state_shardings, \
    with_shardings
from lm2_jax.train.step import train_step_cache

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
  """The run had to stop (e.g. a non-finite loss); the message names the step."""


@dataclasses.dataclass
class RunResult:
  """What a finished (or preempted) run reports."""

  step: int                          # steps completed
  workdir: str
  checkpoint: str | None             # the newest checkpoint's directory
  last_metrics: dict[str, Any] | None
  last_eval: dict[str, float] | None
  stopped_by: str | None = None      # the signal that stopped the run, if any
  seconds: float = 0.0               # wall time of this invocation


class _Window:
  """Steps since the last metrics fetch: their device metrics, lengths and timing."""

  def __init__(self):
    self.reset(time.perf_counter(), 0.0)

  def reset(self, now: float, compile_seconds: float):
    self.start, self.compile_at_start = now, compile_seconds
    self.pending: list[tuple[int, int, Any]] = []   # (step, seq_len, device metrics)


def _describe(cfg: Config, mesh, peak_note: str) -> list[str]:
  m, t = cfg.model, cfg.train
  counts = count_params(cfg)
  shape = " ".join(f"{a}={mesh.shape[a]}" for a in sharding.MESH_AXES)
  return [
      f"model: {m.num_layers} layers, width {m.width}, memory {describe_memory(m)}, segments "
      f"of {m.segment_len}; "
      f"{counts['total_params']:,} parameters ({counts['memory_params']:,} in the memory)",
      f"mesh: {shape} over {mesh.size} {mesh.devices.flat[0].platform} device(s) in "
      f"{jax.process_count()} process(es); batch {t.batch_size} x up to {t.seq_len} tokens"
      + (f" in {t.microbatches} micro-batches" if t.microbatches > 1 else ""),
      f"data: {cfg.data.kind}" + (f" {','.join(cfg.data.tasks)}" if cfg.data.kind == "babilong"
                                  else "") + f", tokenizer {cfg.data.tokenizer}",
      f"MFU peak: {peak_note}",
  ]


def run(cfg: Config, workdir: str, *, devices=None, stream=None,
        start_over: bool = False) -> RunResult:
  """Train `cfg` in `workdir`, resuming from its newest checkpoint if it has one.

  `devices` (default: every device of every process) is for tests that train on a
  subset; `stream` receives the console output (default stdout). Raises ConfigError,
  CheckpointError or DataError for bad input (before compiling anything) and
  TrainingError when training cannot go on. A work directory whose checkpoints all fail
  to restore is refused unless `start_over` (train.py --start-over).
  """
  t = cfg.train
  started = time.perf_counter()
  workdir = os.path.abspath(workdir)
  distributed.initialize(cfg.mesh)
  primary = distributed.is_primary()

  # 1. Checks, before anything is written or compiled; then the work directory is ours.
  cfg = preflight.resolve_tokenizer(cfg, workdir)
  tokenizer = preflight.check_data(cfg)
  mesh = sharding.make_mesh(cfg.mesh, devices)
  evaluates = t.eval_samples > 0 and (cfg.data.kind == "babilong"
                                      or bool(cfg.data.eval_paths))
  preflight.check_batch(cfg, mesh, evaluates)
  preflight.check_init_from(cfg)
  preflight.check_workdir(workdir)
  lock = preflight.claim_workdir(cfg, workdir, primary)
  try:
    with checkpoint.quiet_orbax_errors():
      mngr = checkpoint.make_manager(workdir, max_to_keep=t.keep,
                                     keep_period=t.keep_period or None,
                                     async_save=t.async_checkpoint)
      try:
        return _run(cfg, workdir, mesh, mngr, tokenizer, evaluates, primary, stream, started,
                    start_over)
      finally:
        try:
          mngr.close()
        except Exception:  # pylint: disable=broad-except
          pass  # a failed save: _run has reported it (or a more urgent error is on its way)
  finally:
    lock.release()


def _check_existing(cfg: Config, workdir: str, mngr) -> None:
  """Refuse a config that contradicts the newest checkpoint whose metadata is readable."""
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      saved = mngr.item_metadata(step)["params"]
    except Exception:  # unreadable: the restore will skip it with a warning
      continue
    if saved is not None:
      checkpoint.check_compatible(workdir, cfg, saved, step)
      return


def _run(cfg: Config, workdir: str, mesh, mngr, tokenizer, evaluates: bool, primary: bool,
         stream, started: float, start_over: bool) -> RunResult:
  t = cfg.train
  if primary:
    checkpoint.set_aside_incomplete(workdir)
  mngr.reload()
  _check_existing(cfg, workdir, mngr)

  # 2. Config, state, inputs.
  if primary:
    checkpoint.write_config(workdir, cfg)
  tx = make_optimizer(t)
  shardings = state_shardings(cfg, tx, mesh)
  abstract = abstract_state(cfg, tx)
  shard_index, shard_count = sharding.process_rows(mesh, t.batch_size)
  inputs = TrainInput(cfg, tokenizer, shard_index=shard_index, shard_count=shard_count)
  restored = checkpoint.restore_train_state(
      mngr, workdir, with_shardings(abstract.params, shardings.params),
      with_shardings(abstract.opt_state, shardings.opt_state), inputs, primary=primary,
      start_over=start_over)
  tokens_seen = 0
  if restored is None and t.init_from:
    _, params, from_step = checkpoint.load_params(t.init_from, cfg, shardings.params)
    state = TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
                       params=params,
                       opt_state=jax.jit(tx.init, out_shardings=shardings.opt_state)(params))
    step, resumed = 0, (f"new run from the parameters of {t.init_from} (step {from_step}) "
                        "with a fresh optimizer")
  elif restored is None:
    state = create_state(cfg, tx, shardings)
    step, resumed = 0, "new run"
  else:
    step, params, opt_state, meta, data_restored = restored
    resumed = f"resumed from {checkpoint.checkpoint_dir(workdir)}/{step}"
    if opt_state is None:
      opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
      resumed = (f"starting from the parameters of {checkpoint.checkpoint_dir(workdir)}/"
                 f"{step} with a fresh optimizer")
    state = TrainState(step=jax.device_put(jnp.asarray(step, jnp.int32), shardings.step),
                       params=params, opt_state=opt_state)
    tokens_seen = int(meta.get("tokens", 0))
    if not data_restored or inputs.step != step:
      inputs = TrainInput(cfg, tokenizer, shard_index=shard_index, shard_count=shard_count,
                          step=step, reseed=step)

  logger = MetricsLogger(workdir, t.steps, enabled=primary, stream=stream)
  peak, peak_note = peak_flops_per_device(t.peak_flops)
  logger.print(f"training in {workdir}: {resumed}, step {step} of {t.steps}")
  for line in _describe(cfg, mesh, peak_note):
    logger.print("  " + line)
  last_saved = step if restored is not None else None
  result = RunResult(step=step, workdir=workdir, checkpoint=None, last_metrics=None,
                     last_eval=None)
  if restored is not None:
    result.checkpoint = os.path.join(checkpoint.checkpoint_dir(workdir), str(step))
  if step >= t.steps:
    logger.print(f"nothing to do: the work directory is already at step {step} "
                 f"(train.steps={t.steps}; raise it to train further)")
    logger.close()
    _farewell(logger, result, t.steps, finished=False)
    return result

  # 3. Steps.
  train_step = train_step_cache(cfg, tx, mesh, shardings)
  train_step.on_compile = lambda args, s: logger.print(
      f"  compiled the train step for {args[1]['tokens'].shape[1] - 1} tokens in {s:.1f} s")
  evaluator = None
  if evaluates:
    evaluator = Evaluator(cfg, mesh, shardings.params,
                          eval_batches(cfg, tokenizer, shard_index=shard_index,
                                       shard_count=shard_count))
    evaluator.step.on_compile = lambda args, s: logger.print(
        f"  compiled the eval step for {args[1]['tokens'].shape[1] - 1} tokens in {s:.1f} s")
  devices_total = mesh.size
  window = _Window()
  eta_rate: list[float] = []

  def flush() -> dict[str, Any] | None:
    """Fetch the pending steps' metrics, stop on a non-finite loss, log the last one."""
    nonlocal tokens_seen
    if not window.pending:
      return None
    fetched = jax.device_get([m for _, _, m in window.pending])
    now = time.perf_counter()
    for (s, _, _), m in zip(window.pending, fetched):
      for key in ("loss", "grad_norm"):
        if not np.isfinite(m[key]):
          good = mngr.latest_step()
          where = (f"the last good checkpoint is {checkpoint.checkpoint_dir(workdir)}/{good}"
                   if good is not None else "no checkpoint was saved")
          name = "loss" if key == "loss" else "gradient norm"
          raise TrainingError(f"step {s}: the {name} is {m[key]}; training stopped, {where}")
    elapsed = max(now - window.start - (train_step.compile_seconds - window.compile_at_start),
                  1e-9)
    tokens = sum(t.batch_size * seq for _, seq, _ in window.pending)
    flops = sum(t.batch_size * seq * flops_per_token(cfg.model, seq)["train"]
                for _, seq, _ in window.pending)
    tokens_seen += tokens
    n = len(window.pending)
    last_step, last_seq, _ = window.pending[-1]
    last = {k: float(v) for k, v in fetched[-1].items()}
    record = {"step": last_step, "loss": last.pop("loss"), "lr": last.pop("lr"),
              "grad_norm": last.pop("grad_norm"), "tokens_per_sec": tokens / elapsed,
              "step_time": elapsed / n,
              "mfu": flops / elapsed / (peak * devices_total) if peak else None,
              **last, "seq_len": last_seq, "segments": last_seq // cfg.model.segment_len,
              "tokens": tokens_seen, "time": time.time()}
    eta_rate.append(elapsed / n)
    recent = eta_rate[-5:]
    logger.train(record, eta_seconds=(t.steps - last_step) * sum(recent) / len(recent))
    window.reset(time.perf_counter(), train_step.compile_seconds)
    result.last_metrics = record
    return record

  saved_ok = [last_saved]       # the newest step known to be on disk
  in_flight: list[int] = []     # a step whose (asynchronous) save is not confirmed yet

  def check_saves(block: bool = False) -> None:
    """A save that failed in the background stops the run at the next step, in one line."""
    if not in_flight or (not block and mngr.is_saving_in_progress()):
      return
    at = in_flight.pop()
    try:
      mngr.wait_until_finished()   # returns at once when done; raises the save's error
    except Exception as e:  # pylint: disable=broad-except
      raise TrainingError(checkpoint.save_failed(workdir, at, e, saved_ok[0])) from None
    saved_ok[0] = at

  def save(at: int) -> None:
    nonlocal last_saved
    if last_saved == at:
      return
    check_saves(block=True)   # Orbax waits for the previous save anyway
    try:
      checkpoint.save_train_state(mngr, at, state.params, state.opt_state, inputs,
                                  {"tokens": tokens_seen, "time": time.time()})
    except Exception as e:  # pylint: disable=broad-except
      raise TrainingError(checkpoint.save_failed(workdir, at, e, saved_ok[0])) from None
    in_flight.append(at)
    last_saved = at
    result.checkpoint = os.path.join(checkpoint.checkpoint_dir(workdir), str(at))

  def evaluate(at: int) -> None:
    if evaluator:
      result.last_eval = evaluator(state.params)
      logger.evaluation(at, result.last_eval)

  batch_rows = t.batch_size
  try:
    with StopSignal() as stop:
      while step < t.steps:
        local = next(inputs)
        seq = local["tokens"].shape[1] - 1
        state, metrics = train_step(state, sharding.global_batch(mesh, local, batch_rows))
        step += 1
        check_saves()
        window.pending.append((step, seq, metrics))
        stopping = stop.should_stop(step)
        saving = step % t.checkpoint_every == 0 or step == t.steps or stopping
        evaluating = evaluator is not None and (
            (t.eval_every and step % t.eval_every == 0) or step == t.steps)
        if step % t.log_every == 0 or saving or evaluating:
          flush()
        if saving:
          save(step)
        if evaluating:
          evaluate(step)
        if saving or evaluating:
          window.reset(time.perf_counter(), train_step.compile_seconds)
        if stopping:
          result.stopped_by = stop.name
          break
    check_saves(block=True)
  except OSError as e:   # the logs (metrics.jsonl, TensorBoard) on a full or failing disk
    good = (f"the last good checkpoint is {checkpoint.checkpoint_dir(workdir)}/{saved_ok[0]}"
            if saved_ok[0] is not None else "no checkpoint was saved")
    raise TrainingError(f"step {step}: writing to {workdir} failed ({e.strerror or e}; "
                        f"{checkpoint.free_space(workdir) / 2**20:,.1f} MB free there); "
                        f"training stopped, {good}") from None
  finally:
    try:
      logger.close()
    except OSError:
      pass  # a full disk: the error above says so
  result.step = step
  result.seconds = time.perf_counter() - started
  _farewell(logger, result, t.steps)
  return result


def _farewell(logger: MetricsLogger, result: RunResult, total: int,
              finished: bool = True) -> None:
  w = result.workdir
  if result.stopped_by:
    logger.print(f"stopped by {result.stopped_by} at step {result.step} of {total}; "
                 "checkpoint saved; run the same command again to resume")
  elif finished:
    logger.print(f"done: step {result.step} of {total} in {human_seconds(result.seconds)}")
  logger.print(f"checkpoint:  {result.checkpoint}")
  logger.print(f"metrics:     {os.path.join(w, METRICS_FILE)}")
  logger.print(f"evaluation:  {os.path.join(w, EVAL_FILE)}")
  logger.print(f"tensorboard: tensorboard --logdir {os.path.join(w, TENSORBOARD_DIR)}")
