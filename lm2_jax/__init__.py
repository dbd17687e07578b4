"""lm2-jax: LM2 (Large Memory Models, Kang et al. 2025) in JAX/Flax."""

__version__ = "0.1.0"
