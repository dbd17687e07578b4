"""Every parameter names all of its axes, and every name has a rule in the one table."""

import jax
import pytest
from flax.core import meta

from lm2_jax.config import load_config
from lm2_jax.model import abstract_variables
from lm2_jax.sharding import LOGICAL_NAMES


@pytest.mark.parametrize("over", [[], ["model.tie_embeddings=false", "model.memory.init=learned",
                                       "model.memory.layers=1", "model.num_layers=3"],
                                  ["model.memory.kind=none"], ["model.memory.kind=rmt"]])
def test_every_parameter_axis_has_a_logical_name_with_a_rule(over):
  cfg = load_config(None, over).model
  boxed = abstract_variables(cfg)["params"]
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, meta.Partitioned))[0]
  assert leaves
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    assert isinstance(leaf, meta.Partitioned), f"{name} has no logical axis names"
    assert len(leaf.names) == len(leaf.value.shape), name
    for axis in leaf.names:
      assert axis in LOGICAL_NAMES, f"{name}: logical axis {axis!r} has no sharding rule"
