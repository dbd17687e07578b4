"""Random Hugging Face Llama folders written with numpy and safetensors alone (no torch).

Used by tests/test_convert_hf.py for the tests that need no reference implementation, and
from the command line to make a large checkpoint for measuring the importer's memory:

    python tests/hf_llama_fixture.py OUT_DIR --vocab 32000 --width 1024 --layers 12 \
        --heads 8 --kv-heads 2 --mlp 4096 --untied        # ~254M params, ~1.0 GB float32
"""

from __future__ import annotations

import argparse
import json
import os

import ml_dtypes
import numpy as np
import safetensors.numpy

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def llama_shapes(vocab: int, width: int, layers: int, heads: int, kv_heads: int, mlp: int,
                 head_dim: int | None = None, tie: bool = True) -> dict[str, tuple[int, ...]]:
  """HF tensor name -> shape, in the order transformers writes them."""
  k = head_dim or width // heads
  shapes = {"model.embed_tokens.weight": (vocab, width)}
  for i in range(layers):
    p = f"model.layers.{i}."
    shapes.update({
        p + "input_layernorm.weight": (width,),
        p + "self_attn.q_proj.weight": (heads * k, width),
        p + "self_attn.k_proj.weight": (kv_heads * k, width),
        p + "self_attn.v_proj.weight": (kv_heads * k, width),
        p + "self_attn.o_proj.weight": (width, heads * k),
        p + "post_attention_layernorm.weight": (width,),
        p + "mlp.gate_proj.weight": (mlp, width),
        p + "mlp.up_proj.weight": (mlp, width),
        p + "mlp.down_proj.weight": (width, mlp),
    })
  shapes["model.norm.weight"] = (width,)
  if not tie:
    shapes["lm_head.weight"] = (vocab, width)
  return shapes


def write_random_llama(out: str, *, vocab: int = 97, width: int = 32, layers: int = 2,
                       heads: int = 4, kv_heads: int = 2, mlp: int = 48,
                       head_dim: int | None = None, tie: bool = True,
                       rope_scaling: dict | None = None, dtype: str = "float32",
                       shard_bytes: int | None = None, seed: int = 0,
                       extra_config: dict | None = None) -> dict[str, tuple[int, ...]]:
  """Write config.json (the classic rope_theta + rope_scaling layout) and random weights.

  With `shard_bytes`, tensors are split over several files listed in an index json, as
  save_pretrained does. Norm weights are drawn around 1 so that they matter.
  """
  os.makedirs(out, exist_ok=True)
  shapes = llama_shapes(vocab, width, layers, heads, kv_heads, mlp, head_dim, tie)
  config = {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
      "hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": heads,
      "num_key_value_heads": kv_heads, "intermediate_size": mlp, "hidden_act": "silu",
      "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": rope_scaling,
      "tie_word_embeddings": tie, "max_position_embeddings": 2048, "torch_dtype": dtype,
  }
  if head_dim:
    config["head_dim"] = head_dim
  config.update(extra_config or {})
  with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  rng = np.random.default_rng(seed)
  itemsize = np.dtype(DTYPES[dtype]).itemsize
  groups: list[list[str]] = [[]]
  size = 0
  for name, shape in shapes.items():
    n = int(np.prod(shape)) * itemsize
    if shard_bytes and groups[-1] and size + n > shard_bytes:
      groups.append([])
      size = 0
    groups[-1].append(name)
    size += n
  files = (["model.safetensors"] if len(groups) == 1 else
           [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))])
  weight_map = {}
  for fname, names in zip(files, groups):
    tensors = {}
    for name in names:
      center = 1.0 if name.endswith("norm.weight") else 0.0
      scale = 0.1 if center else 0.08
      tensors[name] = (center + scale * rng.standard_normal(shapes[name], np.float32)
                       ).astype(DTYPES[dtype])
    safetensors.numpy.save_file(tensors, os.path.join(out, fname), metadata={"format": "pt"})
    weight_map.update({n: fname for n in names})
    del tensors
  if len(files) > 1:
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
      json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
  return shapes


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("out")
  for name, default in (("vocab", 32000), ("width", 1024), ("layers", 12), ("heads", 8),
                        ("kv-heads", 2), ("mlp", 4096)):
    p.add_argument(f"--{name}", type=int, default=default)
  p.add_argument("--untied", action="store_true")
  p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
  p.add_argument("--shard-bytes", type=int, default=None)
  a = p.parse_args()
  shapes = write_random_llama(a.out, vocab=a.vocab, width=a.width, layers=a.layers,
                              heads=a.heads, kv_heads=a.kv_heads, mlp=a.mlp,
                              tie=not a.untied, dtype=a.dtype, shard_bytes=a.shard_bytes)
  print(f"{a.out}: {sum(int(np.prod(s)) for s in shapes.values()):,} parameters")


if __name__ == "__main__":
  main()
