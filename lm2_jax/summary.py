"""`python -m lm2_jax.summary --config PATH [key=value ...] [--json]`.

Parameter counts come from jax.eval_shape (nothing is allocated, so the 1.7B config is
summarised in a second); FLOPs come from the analytic formula in lm2_jax/model/flops.py.
For model.memory.kind=rmt the memory parameters are the learned initial memory tokens;
`matched_rmt` gives the RMT whose parameter count matches an LM2 config's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import jax

from lm2_jax.cli import human
from lm2_jax.config import Config, ConfigError, ModelConfig, load_config, replace, validate
from lm2_jax.model import abstract_variables, is_memory_param
from lm2_jax.model.flops import flops_per_token


def count_params(cfg: Config) -> dict[str, int]:
  """{"total_params", "memory_params"}: memory counts every parameter of the memory bank."""
  params = abstract_variables(cfg.model)["params"]
  total = memory = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    size = math.prod(leaf.shape)
    total += size
    if is_memory_param(path):
      memory += size
  return {"total_params": total, "memory_params": memory}


def describe_memory(m: ModelConfig) -> str:
  """The memory in a few words, for the one-line descriptions of a model."""
  if m.memory.kind == "lm2":
    return f"{m.memory.num_slots} slots in {m.num_memory_layers} layers"
  if m.memory.kind == "rmt":
    return f"RMT, {m.memory.num_slots} memory tokens"
  return "off"


def matched_rmt(cfg: Config) -> Config:
  """The RMT on `cfg`'s backbone whose MLP is widened so that its parameter count matches
  the LM2's: the RMT adds only N x D memory tokens, the LM2 about 9 D^2 per memory layer.
  Self-attention is per segment, the only scope the RMT runs with.

  The MLP width is the one free size that changes neither the attention nor the width the
  memory tokens live in; the counts then differ by less than one MLP column per layer
  (3 D L parameters). docs/architecture.md gives the counts of the shipped configs.
  """
  target = count_params(cfg)["total_params"]
  rmt = replace(cfg, **{"model.memory.kind": "rmt", "model.attention_scope": "segment"})
  m = rmt.model
  extra = round((target - count_params(rmt)["total_params"]) / (3 * m.width * m.num_layers))
  return validate(replace(rmt, **{"model.mlp_width": max(1, m.mlp_width + extra)}))


def summarize(cfg: Config) -> dict:
  flops = flops_per_token(cfg.model, cfg.train.seq_len)
  return {**count_params(cfg), "flops_per_token": flops["train"],
          "forward_flops_per_token": flops["forward"], "seq_len": cfg.train.seq_len}


def format_table(cfg: Config, s: dict) -> str:
  m = cfg.model
  rows = [
      ("parameters, total", f"{s['total_params']:,}", human(s["total_params"], 3)),
      ("parameters, memory", f"{s['memory_params']:,}", human(s["memory_params"], 3)),
      ("parameters, base", f"{s['total_params'] - s['memory_params']:,}",
       human(s["total_params"] - s["memory_params"], 3)),
      ("FLOPs/token, train", f"{s['flops_per_token']:,.0f}", human(s["flops_per_token"], 3)),
      ("FLOPs/token, forward", f"{s['forward_flops_per_token']:,.0f}",
       human(s["forward_flops_per_token"], 3)),
  ]
  name = {"lm2": "LM2", "rmt": "RMT", "none": "Llama"}[m.memory.kind]
  head = (f"{name}: {m.num_layers} layers, width {m.width}, {m.num_heads} heads "
          f"({m.num_kv_heads} kv), MLP {m.mlp_width}, vocab {m.vocab_size}; memory "
          + describe_memory(m) + f"; segments of {m.segment_len}, attention {m.attention_scope}, "
          f"FLOPs at seq_len {s['seq_len']}")
  w = max(len(r[0]) for r in rows)
  v = max(len(r[1]) for r in rows)
  return "\n".join([head] + [f"  {a:<{w}}  {b:>{v}}  ({c})" for a, b, c in rows])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", help="YAML config (defaults when omitted)")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
  args = parser.parse_args(argv)
  try:
    cfg = load_config(args.config, args.overrides)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  s = summarize(cfg)
  print(json.dumps(s) if args.json else format_table(cfg, s))
  return 0


if __name__ == "__main__":
  sys.exit(main())
