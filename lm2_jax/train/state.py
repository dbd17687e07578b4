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


def _init_fn(cfg: Config, tx: optax.GradientTransformation):
  model = build_model(cfg.model)
  tokens = jnp.zeros((1, cfg.model.segment_len), jnp.int32)

  def init(rng):
    params = nn.unbox(model.init(rng, tokens)["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

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
  return TrainState(step=sharding.replicated(mesh), params=params, opt_state=opt)


def create_state(cfg: Config, tx: optax.GradientTransformation,
                 shardings: TrainState) -> TrainState:
  """A fresh state from train.seed, each shard created on its device."""
  init = jax.jit(_init_fn(cfg, tx), out_shardings=shardings)
  return init(jax.random.key(cfg.train.seed))
