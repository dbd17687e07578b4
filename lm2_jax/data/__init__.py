"""Data: bAbI/BABILong generation and scoring, MMLU, tokenizers and Grain pipelines."""
