"""Hugging Face Llama <-> our model: config.json fields and the tensor-name table.

No files here: which HF tensor fills which parameter, and how config.json and our Config
translate. HF weights are torch `Linear` weights, [out, in]; ours are [in..., out...]:

    model.embed_tokens.weight            [V, D]       core/embedding            [V, D]
    model.layers.i.self_attn.q_proj      [H*K, D]     attn/q                    [D, H, K]
    model.layers.i.self_attn.o_proj      [D, H*K]     attn/o                    [H, K, D]
    model.layers.i.mlp.down_proj         [D, F]       mlp/down                  [F, D]
    lm_head.weight (untied only)         [V, D]       core/lm_head              [D, V]

Layer i goes to `memory_blocks[i]` for the first `num_memory_layers` layers and to
`blocks[i - num_memory_layers]` after. Both sides rotate (i, i + K/2) pairs ("rotate
half"), so the query and key weights need no permutation. docs/huggingface.md has the
full table and the memory tensors' names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from lm2_jax.config import (Config, ConfigError, MemoryConfig, ModelConfig,
                            RopeScalingConfig, from_dict, replace, to_dict, validate)

# Memory tensors of an exported LM2 are named MEMORY_PREFIX + "{layer}." + the names in
# _memory_rows; the config.json entry MEMORY_ENTRY describes the memory.
MEMORY_PREFIX = "lm2.memory.layers."
MEMORY_ENTRY = "lm2_memory"
# An exported RMT's learned initial memory tokens [N, D] (model.memory.kind=rmt).
RMT_MEMORY = "lm2.memory.rmt_tokens"


class ConvertError(ValueError):
  """A folder, tensor or checkpoint that cannot be converted; names the file and tensor."""


# --------------------------------------------------------------------------------------
# The tensor table: one row per HF tensor
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorRow:
  """One HF tensor and where it lives in our parameter tree.

  `n_in` is None when both sides share a layout; otherwise ours is [in..., out...] with
  n_in input dimensions and HF is the torch Linear weight [prod(out), prod(in)].
  """

  hf_name: str
  path: tuple[str, ...]       # keys under params
  layer: int | None           # index along the stacked layers axis; None: whole leaf
  n_in: int | None


def _llama_rows(i: int) -> list[tuple[str, tuple[str, ...], int | None]]:
  pre = f"model.layers.{i}."
  return [
      (pre + "input_layernorm.weight", ("attn_norm", "scale"), None),
      (pre + "self_attn.q_proj.weight", ("attn", "q"), 1),
      (pre + "self_attn.k_proj.weight", ("attn", "k"), 1),
      (pre + "self_attn.v_proj.weight", ("attn", "v"), 1),
      (pre + "self_attn.o_proj.weight", ("attn", "o"), 2),
      (pre + "post_attention_layernorm.weight", ("mlp_norm", "scale"), None),
      (pre + "mlp.gate_proj.weight", ("mlp", "gate"), 1),
      (pre + "mlp.up_proj.weight", ("mlp", "up"), 1),
      (pre + "mlp.down_proj.weight", ("mlp", "down"), 1),
  ]


def _memory_rows(i: int, mem: MemoryConfig) -> list[tuple[str, tuple[str, ...], int | None]]:
  pre = f"{MEMORY_PREFIX}{i}."
  rows = []
  for side, module in (("read", "memory_read"), ("write", "memory_write")):
    for proj in ("q", "k", "v"):
      rows.append((f"{pre}{side}.{proj}_proj.weight", (module, proj), 1))
  rows += [
      (pre + "read.out_gate.weight", ("memory_read", "out_gate_kernel"), 1),
      (pre + "read.out_gate.bias", ("memory_read", "out_gate_bias"), None),
      (pre + "write.norm.weight", ("memory_write", "norm", "scale"), None),
      (pre + "write.input_gate.weight", ("memory_write", "input_gate_kernel"), 1),
      (pre + "write.input_gate.bias", ("memory_write", "input_gate_bias"), None),
  ]
  if mem.update == "lstm":
    rows += [(pre + "write.forget_gate.weight", ("memory_write", "forget_gate_kernel"), 1),
             (pre + "write.forget_gate.bias", ("memory_write", "forget_gate_bias"), None)]
  if mem.read_norm:
    rows.append((pre + "read.norm.weight", ("memory_read", "norm", "scale"), None))
  if mem.slot_keys:
    rows += [(pre + "read.slot_keys", ("memory_read", "slot_keys"), None),
             (pre + "write.slot_queries", ("memory_write", "slot_queries"), None)]
  if mem.write_sink:
    rows.append((pre + "write.sink", ("memory_write", "sink"), None))
  return rows


def tensor_table(m: ModelConfig, with_memory: bool) -> list[TensorRow]:
  """Every HF tensor of the model, in Hugging Face's order (memory after each layer's)."""
  rows = [TensorRow("model.embed_tokens.weight", ("core", "embedding"), None, None)]
  n_mem = m.num_memory_layers
  for i in range(m.num_layers):
    stack, j = ("memory_blocks", i) if i < n_mem else ("blocks", i - n_mem)
    layer_rows = _llama_rows(i) + (_memory_rows(i, m.memory) if with_memory and i < n_mem else [])
    rows += [TensorRow(hf_name, ("core", stack) + sub, j, n_in) for hf_name, sub, n_in in layer_rows]
    if with_memory and i < n_mem and m.memory.init == "learned":
      rows.append(TensorRow(f"{MEMORY_PREFIX}{i}.initial_memory", ("core", "memory_init"), i,
                          None))
  if with_memory and m.memory.kind == "rmt":
    rows.append(TensorRow(RMT_MEMORY, ("core", "memory_init"), None, None))
  rows.append(TensorRow("model.norm.weight", ("core", "final_norm", "scale"), None, None))
  if not m.tie_embeddings:
    rows.append(TensorRow("lm_head.weight", ("core", "lm_head"), None, 1))
  return rows


def hf_shape(ours: tuple[int, ...], n_in: int | None) -> tuple[int, ...]:
  if n_in is None:
    return tuple(ours)
  return (math.prod(ours[n_in:]), math.prod(ours[:n_in]))


def to_hf(ours: np.ndarray, n_in: int | None) -> np.ndarray:
  if n_in is None:
    return ours
  return ours.reshape(math.prod(ours.shape[:n_in]), -1).T


def flat_leaves(tree) -> list[tuple[tuple[str, ...], Any]]:
  return [(tuple(k.key for k in p), leaf)
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


# --------------------------------------------------------------------------------------
# config.json <-> Config
# --------------------------------------------------------------------------------------


def _rope_from_hf(hf: dict, where: str) -> tuple[float, RopeScalingConfig | None]:
  """rope_theta and the llama3 scaling, from the transformers 5 `rope_parameters` entry or
  the older top-level `rope_theta` + `rope_scaling` (what Meta's own config.json has)."""
  key = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
  params = hf.get(key) or {}
  if not isinstance(params, dict):
    raise ConvertError(f"{where}: {key} must be an object, got {params!r}")
  theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
  kind = params.get("rope_type", params.get("type", "default"))
  if kind == "default":
    return theta, None
  if kind != "llama3":
    raise ConvertError(f"{where}: {key}.rope_type {kind!r} is not supported (only the "
                       f"plain rotary embedding and 'llama3' scaling are)")
  try:
    scaling = RopeScalingConfig(
        factor=float(params["factor"]), low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]))
  except KeyError as e:
    raise ConvertError(f"{where}: {key} of rope_type 'llama3' lacks {e.args[0]!r}") from None
  return theta, scaling


def _architecture_from_hf(hf: dict, where: str) -> dict:
  """The ModelConfig fields a Llama config.json determines."""
  model_type = hf.get("model_type")
  if model_type != "llama":
    raise ConvertError(f"{where}: model_type {model_type!r} is not a Llama (expected "
                       f"'llama'); only LlamaForCausalLM checkpoints convert")
  for key, want in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
    if hf.get(key, want) != want:
      raise ConvertError(f"{where}: {key}={hf[key]!r} is not supported (our Llama has "
                         f"{key}={want!r})")
  for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "vocab_size"):
    if not isinstance(hf.get(key), int):
      raise ConvertError(f"{where}: {key} missing or not an integer (got {hf.get(key)!r})")
  theta, scaling = _rope_from_hf(hf, where)
  heads = hf["num_attention_heads"]
  return {
      "vocab_size": hf["vocab_size"],
      "width": hf["hidden_size"],
      "num_layers": hf["num_hidden_layers"],
      "num_heads": heads,
      "num_kv_heads": hf.get("num_key_value_heads") or heads,
      "head_dim": hf.get("head_dim") or hf["hidden_size"] // heads,
      "mlp_width": hf["intermediate_size"],
      "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
      "rope_theta": theta,
      "rope_scaling": scaling,
      "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
  }


def config_from_hf(hf: dict, where: str, base: Config | None = None,
                   memory: MemoryConfig | None = None,
                   compute_dtype: str = "float32") -> tuple[Config, bool]:
  """Our Config for a Llama config.json, and whether the folder's memory tensors are used.

  The architecture comes from config.json; everything else (training, remat, segment
  length) from `base`. The memory: `memory` when given (fresh), else the folder's own
  `lm2_memory` entry (an exported LM2, read back exactly), else base's (fresh), else none.
  A fresh LM2 memory is built with zero_init, and self-attention is `full`, so the imported
  model computes exactly the Llama until it is trained. A fresh RMT gets
  attention_scope=segment, the only scope it runs with (its memory tokens change the
  logits from the start).
  """
  defaults = base is None
  base = base or replace(Config(), **{"model.memory": MemoryConfig(kind="none")})
  arch = _architecture_from_hf(hf, where)
  changes: dict[str, Any] = {f"model.{k}": v for k, v in arch.items()}
  changes["model.compute_dtype"] = compute_dtype
  entry = hf.get(MEMORY_ENTRY)
  from_folder = memory is None and entry is not None
  if from_folder:
    if not isinstance(entry, dict) or not isinstance(entry.get("memory"), dict):
      raise ConvertError(f"{where}: {MEMORY_ENTRY} must be an object with a 'memory' object")
    # Typed and checked by the config module, against this architecture.
    model = {k: to_dict(v) for k, v in arch.items()}
    model.update({k: entry[k] for k in ("memory", "segment_len", "attention_scope")
                  if k in entry})
    seg = model.get("segment_len")
    try:
      saved = from_dict({"model": model,
                         "train": {"seq_len": seg} if isinstance(seg, int) and seg > 0 else {}})
    except ConfigError as e:
      raise ConvertError(f"{where}: {MEMORY_ENTRY}: {e}") from None
    changes.update({"model.memory": saved.model.memory,
                    "model.segment_len": saved.model.segment_len,
                    "model.attention_scope": saved.model.attention_scope})
  else:
    memory = memory if memory is not None else base.model.memory
    if memory.kind == "lm2":
      memory = dataclasses.replace(memory, zero_init=True)
    changes.update({"model.memory": memory,
                    "model.attention_scope": "segment" if memory.kind == "rmt" else "full"})
  if defaults:  # no settings given: train on a whole number of the folder's segments
    seg = changes.get("model.segment_len", base.model.segment_len)
    changes["train.seq_len"] = -(-base.train.seq_len // seg) * seg
  try:
    cfg = validate(replace(base, **changes))
  except ConfigError as e:
    raise ConvertError(f"{where}: with these values: {e}") from None
  return cfg, from_folder


def config_to_hf(cfg: Config, dtype: str = "float32", extra: dict | None = None) -> dict:
  """A config.json that transformers reads as LlamaForCausalLM.

  The rotary settings are written in the classic layout (top-level rope_theta plus
  rope_scaling) that Meta's checkpoints use and every tool reads. max_position_embeddings
  is informational for llama3 rope: the longer of train.seq_len and the original context.
  """
  m = cfg.model
  scaling = None
  max_pos = cfg.train.seq_len
  if m.rope_scaling is not None:
    scaling = {"rope_type": "llama3", **to_dict(m.rope_scaling)}
    max_pos = max(max_pos, m.rope_scaling.original_max_position_embeddings)
  out = {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "vocab_size": m.vocab_size,
      "hidden_size": m.width,
      "num_hidden_layers": m.num_layers,
      "num_attention_heads": m.num_heads,
      "num_key_value_heads": m.num_kv_heads,
      "head_dim": m.resolved_head_dim,
      "intermediate_size": m.mlp_width,
      "hidden_act": "silu",
      "rms_norm_eps": m.norm_eps,
      "initializer_range": m.resolved_initializer_std,
      "rope_theta": m.rope_theta,
      "rope_scaling": scaling,
      "max_position_embeddings": max_pos,
      "tie_word_embeddings": m.tie_embeddings,
      "attention_bias": False,
      "mlp_bias": False,
      "torch_dtype": dtype,
      "dtype": dtype,
  }
  if m.memory.kind != "none":
    out[MEMORY_ENTRY] = {"memory": to_dict(m.memory), "segment_len": m.segment_len,
                         "attention_scope": m.attention_scope}
  out.update(extra or {})
  return out


__all__ = ["ConvertError", "MEMORY_ENTRY", "MEMORY_PREFIX", "RMT_MEMORY", "TensorRow",
           "config_from_hf", "config_to_hf", "flat_leaves", "hf_shape", "tensor_table",
           "to_hf"]
