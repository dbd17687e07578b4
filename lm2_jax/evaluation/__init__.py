"""Evaluation: BABILong, MMLU, perplexity per segment, memory maps; tables, JSON/CSV, plots.

The model enters each evaluation as a plain function (prompts -> outputs, prompts -> letter
scores, tokens -> losses), so the scoring is tested with fake models; `runner` wires them to
`lm2_jax.inference.Engine` for the `eval.py` command line (docs/evaluation.md).
"""
