"""The LM2 model: a Llama-3 decoder with a gated memory bank in each block."""

from lm2_jax.model.transformer import (LM2, DecodeState, abstract_variables, build_model,
                                       init_state, is_memory_param)

__all__ = ["LM2", "DecodeState", "abstract_variables", "build_model", "init_state",
           "is_memory_param"]
