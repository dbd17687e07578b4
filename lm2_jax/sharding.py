"""Logical axis names -> mesh axes: the single table that places parameters and activations.

Every parameter is created with logical axis names (see `lm2_jax/model/layers.py`); the
mesh has axes `data` (pure data parallel), `fsdp` (data parallel with parameters and
optimizer state sharded) and `tensor` (tensor/model parallel). Changing the parallelism
of the whole model means changing this table, not the model.

Below the table: the mesh built from the config (`make_mesh`, one -1 axis inferred), the
parameters' NamedShardings derived from their logical names (`logical_shardings`,
`param_shardings`), and the
batch's (`batch_sharding`, `global_batch` for multi-host input).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from flax.core import meta
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lm2_jax.config import ConfigError, MeshConfig, ModelConfig
from lm2_jax.model import abstract_variables

MESH_AXES = ("data", "fsdp", "tensor")

# (logical name, mesh axis or axes or None). The first rule whose mesh axes are still free
# in a given array wins, as in flax.linen.logical_to_mesh_axes.
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_vocab", "tensor"),
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    # The memory's heads and gate widths are not split over `tensor` (its matrices are
    # still split over `fsdp` through "embed"): with all three mesh axes larger than one,
    # XLA's partitioner computes wrong values for the memory sharded that way (jax 0.10.2,
    # both Shardy and GSPMD; docs/training.md, "Sharding"), and tests/test_train_mesh.py
    # checks every mesh against one device.
    ("memory_heads", None),
    ("memory_width", None),
    ("memory_slots", None),
    ("layers", None),
    ("norm", None),
)

LOGICAL_NAMES = frozenset(name for name, _ in LOGICAL_RULES)


# --------------------------------------------------------------------------------------
# Meshes and shardings built from the table
# --------------------------------------------------------------------------------------

# Training batches: rows over every data-parallel axis, as the activations are.
BATCH_AXES = ("activation_batch", "activation_length")


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, ...]:
  """The (data, fsdp, tensor) sizes for num_devices, with one -1 axis inferred.

  Raises ConfigError naming the mesh keys when the sizes cannot fill the devices.
  """
  sizes = [getattr(cfg, axis) for axis in MESH_AXES]
  known = math.prod(s for s in sizes if s != -1)
  desc = " x ".join(f"mesh.{a}={s}" for a, s in zip(MESH_AXES, sizes))
  if -1 in sizes:
    if num_devices % known:
      raise ConfigError(f"mesh: {desc} cannot be completed to {num_devices} devices "
                        f"({num_devices} is not a multiple of {known})")
    sizes[sizes.index(-1)] = num_devices // known
  elif known != num_devices:
    raise ConfigError(f"mesh: {desc} needs {known} devices, but {num_devices} are available")
  return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices: Sequence[Any] | None = None) -> Mesh:
  """A mesh over `devices` (default: all, over every host) with Auto axes.

  Auto (not Explicit) axes, so that the model's `with_sharding_constraint`s apply; on
  accelerators the devices are ordered for the interconnect by mesh_utils.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(cfg, len(devices))
  if devices[0].platform == "cpu":
    grid = np.array(devices).reshape(shape)
  else:
    from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def _fit(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Drop the mesh axes of any dimension they do not divide (that dimension is replicated).

  Uneven shards are refused by jit; a 259-token vocabulary over 2 tensor devices is
  simply kept whole instead.
  """
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    size = math.prod(mesh.shape[a] for a in names)
    out.append(axes if dim % size == 0 else None)
  return PartitionSpec(*out)


def logical_sharding(names: Sequence[str | None], shape: Sequence[int],
                     mesh: Mesh) -> NamedSharding:
  """The NamedSharding of one array from its logical axis names, fitted to its shape."""
  return NamedSharding(mesh, _fit(nn.logical_to_mesh_axes(names, LOGICAL_RULES), shape, mesh))


def logical_shardings(boxed_tree: Any, mesh: Mesh) -> Any:
  """NamedShardings for a tree of LogicallyPartitioned leaves (e.g. abstract_variables).

  Returns the unboxed tree structure, with each leaf's logical names mapped through
  LOGICAL_RULES and fitted to its shape.
  """

  def one(leaf):
    if isinstance(leaf, meta.Partitioned):
      return logical_sharding(leaf.names, leaf.value.shape, mesh)
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree.map(one, boxed_tree, is_leaf=lambda x: isinstance(x, meta.Partitioned))


def param_shardings(cfg: ModelConfig, mesh: Mesh) -> Any:
  """NamedShardings of the model's (unboxed) parameters on `mesh`, by the table above."""
  return logical_shardings(abstract_variables(cfg)["params"], mesh)


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """Abstract arrays carrying their target shardings (what Orbax restores onto)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def batch_spec() -> PartitionSpec:
  """PartitionSpec of a [batch, length] array of tokens."""
  return nn.logical_to_mesh_axes(BATCH_AXES, LOGICAL_RULES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, batch_spec())


def batch_row_axes() -> tuple[str, ...]:
  """The mesh axes a batch's rows are split over."""
  axes = batch_spec()[0]
  return () if axes is None else (axes if isinstance(axes, tuple) else (axes,))


def data_parallel_size(mesh: Mesh) -> int:
  """How many ways a batch is split: the product of the mesh axes its rows are sharded on."""
  return math.prod(mesh.shape[a] for a in batch_row_axes())


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def process_rows(mesh: Mesh, global_batch: int) -> tuple[int, int]:
  """(shard_index, shard_count): which slice of a global batch this process must load.

  The rows held by this process's devices form one contiguous block of
  global_batch / shard_count rows; processes that hold the same block (tensor parallel
  across hosts) load the same data.
  """
  index_map = batch_sharding(mesh).devices_indices_map((global_batch, 1))
  starts, stops = set(), set()
  for device, (rows, _) in index_map.items():
    if device.process_index == jax.process_index():
      starts.add(rows.start or 0)
      stops.add(global_batch if rows.stop is None else rows.stop)
  start, stop = min(starts), max(stops)
  size = stop - start
  if global_batch % size or start % size:
    raise ConfigError(f"mesh: this process's devices hold rows {start}..{stop - 1} of the "
                      f"batch of {global_batch}, not one of equal contiguous slices")
  return start // size, global_batch // size


def global_batch(mesh: Mesh, local: dict[str, np.ndarray], global_rows: int) -> dict[str, jax.Array]:
  """Assemble this process's rows of a batch into global arrays sharded over the mesh."""
  spec = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(spec, v, (global_rows,) + v.shape[1:])
          for k, v in local.items()}
