"""Checkpoint conversion to and from other ecosystems (Hugging Face Llama, docs/huggingface.md)."""

from lm2_jax.convert.hf import (MEMORY_ENTRY, MEMORY_PREFIX, ConvertError, export_hf,
                                import_hf, load_hf_llama, write_hf_llama)

__all__ = ["MEMORY_ENTRY", "MEMORY_PREFIX", "ConvertError", "export_hf", "import_hf",
           "load_hf_llama", "write_hf_llama"]
