"""Data: bAbI/BABILong generation and scoring, MMLU, tokenizers and Grain pipelines.

See docs/data.md. Modules are imported directly (``from lm2_jax.data import babilong``); this
package imports nothing heavy on its own.
"""
