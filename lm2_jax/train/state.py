"""The train state, its shardings, and its creation directly in place on the mesh.

The state is never materialised whole on one host: its shapes come from jax.eval_shape,
its shardings from the logical axis names of the parameters (lm2_jax/sharding.py), and a
jitted initialiser with those output shardings writes each shard on its own device.
Random initial values do not depend on the mesh (JAX's partitionable threefry), so every
mesh starts from the same parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from lm2_jax import sharding
from lm2_jax.config import Config
from lm2_jax.model import build_model


@flax.struct.dataclass
class TrainState:
  step: jax.Array       # int32 scalar: optimizer updates applied so far
  params: Any           # float32 master weights (unboxed)
  opt_state: Any
  # train.memory_carry_steps > 0: what each row carries into the next step,
  # {"memory_BxMxNxD": float32, the memory its last sequence left;
  #  "valid_B": bool, False until the row has one (it then starts from the initial memory)};
  # None otherwise.
  memory: Any = None


# Logical axes of TrainState.memory's arrays: rows as the batch's.
MEMORY_AXES = {"memory_BxMxNxD": ("activation_batch", "layers", "memory_slots",
                                  "activation_embed"),
               "valid_B": ("activation_batch",)}


def carried_memory_shapes(cfg: Config) -> dict[str, tuple[int, ...]] | None:
  """The shapes of TrainState.memory, or None when training does not carry the memory."""
  if not cfg.train.memory_carry_steps:
    return None
  m, b = cfg.model, cfg.train.batch_size
  return {"memory_BxMxNxD": (b, m.carried_memory_layers, m.memory.num_slots, m.width),
          "valid_B": (b,)}


def carry_phase(step, row, rows: int, carry: int):
  """Where global row `row` of `rows` stands in its carry cycle at `step`: (cycle, position).

  Row b restarts from the initial memory at the steps where position == 0 (and at the first
  step it runs, holding none yet): every `carry` steps, the rows staggered by b * carry //
  rows so that every batch mixes memories of every age. Works on ints and on jax arrays;
  the train step and the episode rows of the input (train/inputs.py) both follow it.
  """
  shifted = step + row * carry // rows
  return shifted // carry, shifted % carry


def fresh_memory(cfg: Config):
  """TrainState.memory with no row holding a memory yet (or None: no carrying)."""
  shapes = carried_memory_shapes(cfg)
  if shapes is None:
    return None
  return {"memory_BxMxNxD": jnp.zeros(shapes["memory_BxMxNxD"], jnp.float32),
          "valid_B": jnp.zeros(shapes["valid_B"], bool)}


def _init_fn(cfg: Config, tx: optax.GradientTransformation):
  model = build_model(cfg.model)
  tokens = jnp.zeros((1, cfg.model.segment_len), jnp.int32)

  def init(rng):
    params = nn.unbox(model.init(rng, tokens)["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      memory=fresh_memory(cfg))

  return init


def abstract_state(cfg: Config, tx: optax.GradientTransformation) -> TrainState:
  """ShapeDtypeStructs of the whole state (nothing allocated)."""
  return jax.eval_shape(_init_fn(cfg, tx), jax.random.key(0))


def state_shardings(cfg: Config, tx: optax.GradientTransformation, mesh: Mesh) -> TrainState:
  """NamedShardings of the state: optimizer moments are placed like their parameters."""
  params = sharding.param_shardings(cfg.model, mesh)
  abstract = abstract_state(cfg, tx)
  opt = optax.tree_map_params(tx, lambda _, s: s, abstract.opt_state, params,
                              transform_non_params=lambda _: sharding.replicated(mesh))
  memory = None
  shapes = carried_memory_shapes(cfg)
  if shapes is not None:
    memory = {k: sharding.logical_sharding(MEMORY_AXES[k], shape, mesh)
              for k, shape in shapes.items()}
  return TrainState(step=sharding.replicated(mesh), params=params, opt_state=opt, memory=memory)


def create_state(cfg: Config, tx: optax.GradientTransformation,
                 shardings: TrainState) -> TrainState:
  """A fresh state from train.seed, each shard created on its device."""
  init = jax.jit(_init_fn(cfg, tx), out_shardings=shardings)
  return init(jax.random.key(cfg.train.seed))
