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

from lm2_jax import checkpoint, sharding
from lm2_jax.config import Config
from lm2_jax.data import kinds as data_kinds
from lm2_jax.summary import count_params, describe_memory
from lm2_jax.train import distributed, preflight
from lm2_jax.train.curriculum import Curriculum
from lm2_jax.train.evaluation import Evaluator
from lm2_jax.train.inputs import TrainInput, eval_batches
from lm2_jax.train.hooks import Hooks
from lm2_jax.train.metrics import EVAL_FILE, METRICS_FILE, TENSORBOARD_DIR, MetricsLogger, \
    MetricsWindow, NonFiniteMetric, human_seconds, peak_flops_per_device
from lm2_jax.train.optim import make_optimizer
from lm2_jax.train.preemption import StopSignal
from lm2_jax.train.state import TrainState, abstract_state, create_state, fresh_memory, \
    state_shardings
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


def _describe(cfg: Config, mesh, peak_note: str) -> list[str]:
  m, t = cfg.model, cfg.train
  counts = count_params(cfg)
  shape = " ".join(f"{a}={mesh.shape[a]}" for a in sharding.MESH_AXES)
  return [
      f"model: {m.num_layers} layers, width {m.width}, memory {describe_memory(m)}, segments "
      f"of {m.segment_len}"
      + (f" (training cuts batches into {'/'.join(map(str, t.curriculum.segment_lens))})"
         if t.curriculum.segment_lens else "") + "; "
      f"{counts['total_params']:,} parameters ({counts['memory_params']:,} in the memory)",
      f"mesh: {shape} over {mesh.size} {mesh.devices.flat[0].platform} device(s) in "
      f"{jax.process_count()} process(es); batch {t.batch_size} x up to {t.seq_len} tokens"
      + (f" in {t.microbatches} micro-batches" if t.microbatches > 1 else ""),
      f"data: {data_kinds.of(cfg.data).describe(cfg.data)}, tokenizer {cfg.data.tokenizer}",
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
  evaluates = t.eval_samples > 0 and data_kinds.of(cfg.data).evaluates(cfg.data)
  preflight.check_batch(cfg, mesh, evaluates)
  preflight.check_lengths(cfg, tokenizer, evaluates)
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


def _cut_into(cfg: Config, segment_len: int) -> Config:
  """`cfg` with the model's segments `segment_len` tokens long (the parameters are the same)."""
  if segment_len == cfg.model.segment_len:
    return cfg
  return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, segment_len=segment_len))


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
  target_memory = (None if abstract.memory is None else
                   sharding.with_shardings(abstract.memory, shardings.memory))
  restored = checkpoint.restore_train_state(
      mngr, workdir, sharding.with_shardings(abstract.params, shardings.params),
      sharding.with_shardings(abstract.opt_state, shardings.opt_state), inputs, primary=primary,
      start_over=start_over, target_memory=target_memory)
  tokens_seen = 0
  memory = None if abstract.memory is None else jax.jit(
      lambda: fresh_memory(cfg), out_shardings=shardings.memory)()
  if restored is None and t.init_from:
    _, params, from_step = checkpoint.load_params(t.init_from, cfg, shardings.params)
    state = TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
                       params=params,
                       opt_state=jax.jit(tx.init, out_shardings=shardings.opt_state)(params),
                       memory=memory)
    step, resumed = 0, (f"new run from the parameters of {t.init_from} (step {from_step}) "
                        "with a fresh optimizer")
  elif restored is None:
    state = create_state(cfg, tx, shardings)
    step, resumed = 0, "new run"
  else:
    step, params, opt_state, meta, data_restored, saved_memory = restored
    resumed = f"resumed from {checkpoint.checkpoint_dir(workdir)}/{step}"
    if opt_state is None:
      opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
      resumed = (f"starting from the parameters of {checkpoint.checkpoint_dir(workdir)}/"
                 f"{step} with a fresh optimizer")
    if memory is not None and saved_memory is None:  # saved by another setting
      resumed += "; every row's carried memory restarts from the initial memory"
    state = TrainState(step=jax.device_put(jnp.asarray(step, jnp.int32), shardings.step),
                       params=params, opt_state=opt_state,
                       memory=memory if saved_memory is None else saved_memory)
    tokens_seen = int(meta.get("tokens", 0))
    if not data_restored or inputs.step != step:
      inputs = TrainInput(cfg, tokenizer, shard_index=shard_index, shard_count=shard_count,
                          step=step, reseed=step)

  logger = MetricsLogger(workdir, t.steps, enabled=primary, stream=stream)
  peak, peak_note = peak_flops_per_device(t.peak_flops)
  logger.print(f"training in {workdir}: {resumed}, step {step} of {t.steps}")
  for line in _describe(cfg, mesh, peak_note):
    logger.print("  " + line)
  saved = step if restored is not None else None
  result = RunResult(step=step, workdir=workdir, checkpoint=_checkpoint_path(workdir, saved),
                     last_metrics=None, last_eval=None)
  if step >= t.steps:
    logger.print(f"nothing to do: the work directory is already at step {step} "
                 f"(train.steps={t.steps}; raise it to train further)")
    logger.close()
    _farewell(logger, result, t.steps, finished=False)
    return result

  # 3. Steps; after each, the hooks that are due, once the metrics of every step before
  # them are fetched (so that no checkpoint holds a step whose loss was not finite).
  # One compiled step per segment length the curriculum cuts batches into (usually one).
  curriculum = Curriculum(cfg)
  train_steps = {n: train_step_cache(_cut_into(cfg, n), tx, mesh, shardings)
                 for n in curriculum.lengths}
  cut_note = len(train_steps) > 1
  for n, train_step in train_steps.items():
    train_step.on_compile = lambda args, s, n=n: logger.print(
        f"  compiled the train step for {args[1]['tokens'].shape[1] - 1} tokens"
        + (f" in segments of {n}" if cut_note else "") + f" in {s:.1f} s")
  evaluator = None
  if evaluates:
    evaluator = Evaluator(cfg, mesh, shardings.params,
                          eval_batches(cfg, tokenizer, shard_index=shard_index,
                                       shard_count=shard_count))
    evaluator.step.on_compile = lambda args, s: logger.print(
        f"  compiled the eval step for {args[1]['tokens'].shape[1] - 1} tokens in {s:.1f} s")
  window = MetricsWindow(cfg.model, t.batch_size, peak, mesh.size,
                         lambda: sum(c.compile_seconds for c in train_steps.values()),
                         tokens_seen)
  saves = _Saves(mngr, workdir, inputs, window, saved)
  hooks = Hooks()
  hooks.add("save", saves, every=t.checkpoint_every, on_stop=True)
  if evaluator is not None:
    def evaluate(at: int, trained: TrainState) -> None:
      result.last_eval = evaluator(trained.params)
      logger.evaluation(at, result.last_eval)
    hooks.add("evaluate", evaluate, every=t.eval_every)

  def log_window() -> None:
    try:
      record = window.close()
    except NonFiniteMetric as e:
      good = mngr.latest_step()
      raise TrainingError(f"step {e.step}: the {e.key} is {e.value}; training stopped, "
                          f"{_good_checkpoint(workdir, good)}") from None
    if record is not None:
      logger.train(record, eta_seconds=window.eta_seconds(record["step"], t.steps))
      result.last_metrics = record

  try:
    with StopSignal() as stop:
      while step < t.steps:
        local = next(inputs)
        state, metrics = train_steps[curriculum.cut(step)](
            state, sharding.global_batch(mesh, local, t.batch_size))
        step += 1
        saves.poll()
        window.add(step, local["tokens"].shape[1] - 1, metrics)
        stopping = stop.should_stop(step)
        due = hooks.due(step, end=step == t.steps, stopping=stopping)
        if step % t.log_every == 0 or due:
          log_window()
        for hook in due:
          hook(step, state)
        if due:
          window.restart()   # saving and evaluation are not training time
        if stopping:
          result.stopped_by = stop.name
          break
    saves.poll(block=True)
  except OSError as e:   # the logs (metrics.jsonl, TensorBoard) on a full or failing disk
    raise TrainingError(f"step {step}: writing to {workdir} failed ({e.strerror or e}; "
                        f"{checkpoint.free_space(workdir) / 2**20:,.1f} MB free there); "
                        f"training stopped, {_good_checkpoint(workdir, saves.confirmed)}"
                        ) from None
  finally:
    try:
      logger.close()
    except OSError:
      pass  # a full disk: the error above says so
  result.step = step
  result.checkpoint = _checkpoint_path(workdir, saves.last)
  result.seconds = time.perf_counter() - started
  _farewell(logger, result, t.steps)
  return result


def _checkpoint_path(workdir: str, step: int | None) -> str | None:
  return None if step is None else os.path.join(checkpoint.checkpoint_dir(workdir), str(step))


def _good_checkpoint(workdir: str, step: int | None) -> str:
  return (f"the last good checkpoint is {_checkpoint_path(workdir, step)}"
          if step is not None else "no checkpoint was saved")


class _Saves:
  """The save hook: hands a step's state to Orbax, which may write it in the background.

  A save is confirmed before the next one starts (Orbax would wait anyway) and polled after
  every step, so a save that failed in the background stops the run at the next step in
  one line naming the newest checkpoint known to be on disk.
  """

  def __init__(self, mngr, workdir: str, inputs: TrainInput, window: MetricsWindow,
               saved: int | None):
    self.mngr, self.workdir, self.inputs, self.window = mngr, workdir, inputs, window
    self.last = saved          # the newest step handed to Orbax
    self.confirmed = saved     # the newest step known to be on disk
    self._in_flight: int | None = None

  def poll(self, block: bool = False) -> None:
    if self._in_flight is None or (not block and self.mngr.is_saving_in_progress()):
      return
    at, self._in_flight = self._in_flight, None
    try:
      self.mngr.wait_until_finished()   # returns at once when done; raises the save's error
    except Exception as e:  # pylint: disable=broad-except
      raise TrainingError(checkpoint.save_failed(self.workdir, at, e, self.confirmed)) from None
    self.confirmed = at

  def __call__(self, step: int, state: TrainState) -> None:
    if self.last == step:
      return
    self.poll(block=True)
    try:
      checkpoint.save_train_state(self.mngr, step, state.params, state.opt_state, self.inputs,
                                  {"tokens": self.window.tokens, "time": time.time()},
                                  memory=state.memory)
    except Exception as e:  # pylint: disable=broad-except
      raise TrainingError(checkpoint.save_failed(self.workdir, step, e, self.confirmed)) from None
    self._in_flight = step
    self.last = step


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
