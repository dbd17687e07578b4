"""Checkpoint conversion to and from other ecosystems (Hugging Face Llama, docs/huggingface.md).

`mapping` translates config.json and tensor names (no files); `hf_io` reads and writes the
folders and work directories.
"""

from lm2_jax.convert.hf_io import export_hf, import_hf, load_hf_llama, write_hf_llama
from lm2_jax.convert.mapping import MEMORY_ENTRY, MEMORY_PREFIX, ConvertError

__all__ = ["MEMORY_ENTRY", "MEMORY_PREFIX", "ConvertError", "export_hf", "import_hf",
           "load_hf_llama", "write_hf_llama"]
