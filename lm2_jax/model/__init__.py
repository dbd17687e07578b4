"""The LM2 model: a Llama-3 decoder with a gated memory bank in each block; the RMT baseline
(model.memory.kind=rmt) on the same backbone."""

from lm2_jax.model.rmt import RMT, RMTState
from lm2_jax.model.transformer import (LM2, DecodeState, abstract_variables, build_model,
                                       init_state, is_memory_param)

__all__ = ["LM2", "RMT", "DecodeState", "RMTState", "abstract_variables", "build_model",
           "init_state", "is_memory_param"]
