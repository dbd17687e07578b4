"""Logical axis names -> mesh axes: the single table that places parameters and activations.

Every parameter is created with logical axis names (see `lm2_jax/model/layers.py`); the
mesh has axes `data` (pure data parallel), `fsdp` (data parallel with parameters and
optimizer state sharded) and `tensor` (tensor/model parallel). Changing the parallelism
of the whole model means changing this table, not the model.
"""

from __future__ import annotations

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
    ("memory_heads", "tensor"),
    ("memory_width", "tensor"),
    ("memory_slots", None),
    ("layers", None),
    ("norm", None),
)

LOGICAL_NAMES = frozenset(name for name, _ in LOGICAL_RULES)
