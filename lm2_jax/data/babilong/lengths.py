"""Nominal BABILong lengths and the input budget they leave.

"16k" means 16,000 tokens and "1M" 1,000,000, as in the published benchmark's generation
script (``message_lengths = [0, 1000, 2000, 4000, ...]``). The published data keeps 300 tokens
free for the prompt, so a "4k" sample has at most 4,000 - 300 = 3,700 input tokens, counted
with the tokenizer the samples are made for. "0k" is the facts alone, joined by spaces.
"""

from __future__ import annotations

import re

import numpy as np

LENGTHS = ("0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k")
PROMPT_RESERVE = 300  # tokens the published data leaves free for the prompt


def parse_length(length: str | int) -> int:
  """Nominal length in tokens: ``"16k"`` -> 16000, ``"1M"`` -> 1000000, ``"0k"`` -> 0."""
  if isinstance(length, (int, np.integer)):
    if length < 0:
      raise ValueError(f"length must be >= 0, got {length}")
    return int(length)
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", str(length))
  if not m:
    raise ValueError(f"bad length {length!r}: expected a token count such as 0k, 4k, 128k, 1M "
                     "or 2500")
  scale = {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()]
  return int(round(float(m.group(1)) * scale))


def length_name(tokens: int) -> str:
  """The published name of a length: 16000 -> "16k", 1000000 -> "1M", 0 -> "0k"."""
  if tokens == 0:
    return "0k"
  if tokens % 1_000_000 == 0:
    return f"{tokens // 1_000_000}M"
  if tokens % 1000 == 0:
    return f"{tokens // 1000}k"
  return str(tokens)


def input_budget(length: str | int, reserve_tokens: int = PROMPT_RESERVE) -> int | None:
  """Most input tokens a sample of this nominal length may have; None for 0k (facts only)."""
  nominal = parse_length(length)
  if nominal == 0:
    return None
  if nominal <= reserve_tokens:
    raise ValueError(f"length {length!r} leaves no room for input after reserving "
                     f"{reserve_tokens} tokens for the prompt")
  return nominal - reserve_tokens
