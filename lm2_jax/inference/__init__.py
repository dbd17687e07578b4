"""Inference: batched generation and scoring on the model's streaming state (see engine.py)."""

from lm2_jax.inference.engine import (Engine, Generation, InferenceError, MemoryEstimate,
                                      device_memory_limit, estimate_memory)
from lm2_jax.inference.sampling import SamplingParams, sample_logits

__all__ = ["Engine", "Generation", "InferenceError", "MemoryEstimate", "SamplingParams",
           "device_memory_limit", "estimate_memory", "sample_logits"]
