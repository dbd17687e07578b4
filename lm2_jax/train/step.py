"""The jitted train and eval steps, with explicit shardings and the old state donated.

One train step = one optimizer update on the global batch. With train.microbatches = A the
batch is scanned in A micro-batches whose gradients are summed before the update; since
the loss terms are sums divided once by the batch's number of target tokens, the update
equals the one of the unsplit batch (up to float rounding).

Each distinct sequence length (the segment curriculum draws several) is lowered and
compiled once, ahead of time, and the executable cached: `StepCache`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec

from lm2_jax import sharding
from lm2_jax.config import Config
from lm2_jax.model import build_model
from lm2_jax.train.loss import LossTerms, objective, split_batch, sum_terms, token_terms
from lm2_jax.train.optim import learning_rate_schedule
from lm2_jax.train.state import TrainState, carry_phase

Batch = dict[str, jax.Array]  # {"tokens": int32[B, T+1], "loss_mask": float32[B, T+1]}


def _zero_terms() -> LossTerms:
  zero = jnp.zeros((), jnp.float32)
  return LossTerms(ce=zero, z=zero, weight=zero, correct=zero)


def make_train_step(cfg: Config, tx: optax.GradientTransformation) -> Callable:
  """(state, batch) -> (state, metrics); pure, to be jitted by `StepCache`."""
  model = build_model(cfg.model)
  t = cfg.train
  schedule = learning_rate_schedule(t)
  rows = sharding.batch_spec()[0]

  carry = t.memory_carry_steps
  episode_rows = cfg.data.episode_rows

  def grads_and_terms(params, inputs, targets, weights, total, memory_BxMxNxD, fresh_B,
                      episode_B):
    def loss(p):
      if memory_BxMxNxD is None:
        logits, memory = model.apply({"params": p}, inputs, truncate_every=t.truncate_every), None
      else:
        logits, memory = model.apply({"params": p}, inputs, truncate_every=t.truncate_every,
                                     memory_MxBxNxD=memory_BxMxNxD.swapaxes(0, 1),
                                     fresh_B=fresh_B)
        memory = jax.lax.stop_gradient(memory).swapaxes(0, 1)
      per_token = token_terms(logits, targets)
      terms = sum_terms(*per_token, weights)
      # The episode rows' share of the sums, for the log (the loss is the batch's).
      episodes = (_zero_terms() if episode_B is None
                  else sum_terms(*per_token, weights * episode_B[:, None]))
      return objective(terms, total, t.z_loss), (terms, episodes, memory)

    return jax.grad(loss, has_aux=True)(params)

  def train_step(state: TrainState, batch: Batch):
    inputs, targets, weights = split_batch(batch["tokens"], batch["loss_mask"])
    total = jnp.maximum(weights.sum(), 1.0)
    carried, fresh_B, episode_B = None, None, None
    if episode_rows:
      b = inputs.shape[0]
      episode_B = (jnp.arange(b) >= b - episode_rows).astype(jnp.float32)
    if carry:
      # Rows restart from the initial memory on a staggered cycle (`carry_phase`), and
      # whenever they hold none yet.
      b = inputs.shape[0]
      _, position_B = carry_phase(state.step, jnp.arange(b, dtype=jnp.int32), b, carry)
      fresh_B = (position_B == 0) | ~state.memory["valid_B"]
      carried = state.memory["memory_BxMxNxD"]
    if t.microbatches == 1:
      grads, (terms, episodes, memory) = grads_and_terms(
          state.params, inputs, targets, weights, total, carried, fresh_B, episode_B)
    else:
      a = t.microbatches

      def micro(x):
        # Rows i*A + k form micro-batch k, so every device keeps contributing its own rows.
        x = x.reshape(x.shape[0] // a, a, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, PartitionSpec(None, rows))

      def unmicro(x):
        return x.swapaxes(0, 1).reshape(-1, *x.shape[2:])

      def body(acc, mb):
        g_acc, terms_acc, episodes_acc = acc
        g, (terms, episodes, memory) = grads_and_terms(state.params, *mb[:3], total, *mb[3:])
        return (jax.tree.map(jnp.add, g_acc, g), terms_acc + terms,
                episodes_acc + episodes), memory

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      split = tuple(None if x is None else micro(x)
                    for x in (inputs, targets, weights, carried, fresh_B, episode_B))
      (grads, terms, episodes), memory = jax.lax.scan(
          body, (zeros, _zero_terms(), _zero_terms()), split)
      memory = None if memory is None else unmicro(memory)
    if memory is not None:
      memory = {"memory_BxMxNxD": memory, "valid_B": jnp.ones_like(fresh_B)}
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": terms.ce / total,
        "z_loss": terms.z / total,
        "accuracy": terms.correct / total,
        "grad_norm": grad_norm,
        "lr": schedule(state.step),
        "target_tokens": terms.weight,
    }
    if episode_rows:
      # Sums, which the log adds up over its window (an episode row has a target only now
      # and then): MetricsWindow turns them into the two groups' loss and accuracy.
      for group, g in (("episodes", episodes), ("records", terms - episodes)):
        metrics.update({f"{group}/ce_sum": g.ce, f"{group}/correct_sum": g.correct,
                        f"{group}/targets": g.weight})
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                      memory=memory), metrics

  return train_step


def make_eval_step(cfg: Config) -> Callable:
  """(params, batch) -> sums over the batch: cross-entropy, targets, rows, rows all right.

  `rows_correct` is the answer accuracy's numerator under teacher forcing: a row counts
  when the argmax prediction of every target token (the whole answer and its EOS) is right.
  """
  model = build_model(cfg.model)

  def eval_step(params, batch: Batch):
    inputs, targets, weights = split_batch(batch["tokens"], batch["loss_mask"])
    logits = model.apply({"params": params}, inputs)
    ce, _, correct = token_terms(logits, targets)
    has_target = weights.sum(-1) > 0
    wrong = jnp.sum((1 - correct.astype(jnp.float32)) * weights, axis=-1)
    return {"ce": jnp.sum(ce * weights), "weight": weights.sum(),
            "rows": has_target.sum().astype(jnp.float32),
            "rows_correct": jnp.logical_and(has_target, wrong == 0).sum().astype(jnp.float32)}

  return eval_step


class StepCache:
  """Jitted step functions compiled once per input shape, ahead of time.

  Tracing happens under the mesh and the logical axis rules, so the model's sharding
  constraints take effect. `compile_seconds` accumulates the time spent compiling, which
  the throughput figures leave out.
  """

  def __init__(self, fn: Callable, mesh: Mesh, in_shardings: Any, out_shardings: Any,
               donate_argnums: tuple[int, ...] = ()):
    self._jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                           donate_argnums=donate_argnums)
    self._mesh = mesh
    self._compiled: dict[Any, Any] = {}
    self.compile_seconds = 0.0
    self.on_compile: Callable[[Any, float], None] | None = None

  @property
  def executables(self) -> list[Any]:
    """The compiled executables so far (for their HLO text and memory analysis)."""
    return list(self._compiled.values())

  def _key(self, args):
    return tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(args))

  def __call__(self, *args):
    key = self._key(args)
    exe = self._compiled.get(key)
    if exe is None:
      # Let queued steps finish first: their compute must not count as compile time.
      jax.block_until_ready(args)
      start = time.perf_counter()
      with jax.set_mesh(self._mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
        exe = self._jitted.lower(*args).compile()
      seconds = time.perf_counter() - start
      self.compile_seconds += seconds
      self._compiled[key] = exe
      if self.on_compile is not None:
        self.on_compile(args, seconds)
    return exe(*args)


def train_step_cache(cfg: Config, tx: optax.GradientTransformation, mesh: Mesh,
                     state_shardings: TrainState) -> StepCache:
  batch = sharding.batch_sharding(mesh)
  return StepCache(make_train_step(cfg, tx), mesh,
                   in_shardings=(state_shardings, {"tokens": batch, "loss_mask": batch}),
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=(0,))


def eval_step_cache(cfg: Config, mesh: Mesh, param_shardings: Any) -> StepCache:
  batch = sharding.batch_sharding(mesh)
  return StepCache(make_eval_step(cfg), mesh,
                   in_shardings=(param_shardings, {"tokens": batch, "loss_mask": batch}),
                   out_shardings=sharding.replicated(mesh))
