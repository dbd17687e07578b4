"""Benchmark 3: context scaling of inference on a BABILong sample.

The `Engine` (the code eval.py runs) consumes a qa1 sample of each length and answers it
(greedy, a few tokens). Time per prompt token and the peak host memory of each call, for
attention_scope=segment (a fixed-size state: flat) and full (the cache grows with the input,
and so does the attention per token). Parameters are random: speed does not depend on them.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from lm2_jax.config import load_config
from lm2_jax.data.babilong import format_prompt, make_sample
from lm2_jax.data.tokenizers import load_tokenizer
from lm2_jax.inference.engine import Engine
from lm2_jax.inference.sampling import SamplingParams
from lm2_jax.model import build_model

from bench import timing

_ANSWER = SamplingParams(max_new_tokens=4, stop_at_eos=False)


def _prompt_ids(length: str, tokenizer) -> list[int]:
  sample = make_sample("qa1", length, 0, tokenizer=tokenizer)
  return [tokenizer.bos_id] + tokenizer.encode(format_prompt(sample, "qa1", "compact"))


def run(config: str, lengths: Sequence[str], full_lengths: Sequence[str],
        repeats: int) -> list[dict]:
  tokenizer = load_tokenizer("byte")
  prompts = {n: _prompt_ids(n, tokenizer) for n in dict.fromkeys([*lengths, *full_lengths])}
  records = []
  for scope, names in (("segment", lengths), ("full", full_lengths)):
    cfg = load_config(config, [f"model.attention_scope={scope}"]).model
    model = build_model(cfg)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jax.numpy.zeros(
        (1, cfg.segment_len), jax.numpy.int32))["params"])
    engine = Engine(cfg, params, tokenizer, batch_size=1, memory_limit=None)
    peaks: dict[str, int] = {}

    def call(n, engine=engine, peaks=peaks):
      def go():
        timing.peak_rss_reset()
        out = engine.generate([prompts[n]], _ANSWER)
        peak = timing.peak_rss_bytes()
        if peak is not None:
          peaks[n] = max(peaks.get(n, 0), peak)
        return out[0].token_ids
      return go

    fns = {n: call(n) for n in names}
    for n in names:  # compile every shape this length needs (segment: the chunk buckets)
      warm = prompts[n] if scope == "full" else prompts[n][:4096 + cfg.segment_len + 7]
      engine.generate([warm], _ANSWER)
    times = timing.alternate(fns, repeats, warmup=0)
    for n in names:
      tokens = len(prompts[n])
      med = timing.stats(times[n])
      records.append({"benchmark": "context", "config": config, "attention_scope": scope,
                      "length": n, "prompt_tokens": tokens, **med,
                      "seconds_per_token": med["median_s"] / tokens,
                      "peak_host_bytes": peaks.get(n)})
    ref = "4k" if "4k" in names else names[0]
    per_token = {k: [t / len(prompts[k]) for t in v] for k, v in times.items()}
    for rec in records[-len(names):]:
      rec["reference_length"] = ref
      rec["per_token_ratio_to_reference"] = timing.ratio(per_token, rec["length"], ref)
  return records


def per_token_ratio(records: list[dict], length: str, scope: str = "segment") -> float | None:
  """Seconds per token at `length` / at the reference length (4k), measured alternately."""
  for r in records:
    if (r.get("attention_scope"), r.get("length"), r.get("reference_length")) == (scope, length,
                                                                                "4k"):
      return r["per_token_ratio_to_reference"]
  return None
