"""Hugging Face interop (lm2_jax/convert/hf.py): parity with transformers, round trips, bad input.

The parity tests build tiny random LlamaForCausalLM models with transformers (PyTorch) and
need the extras of requirements-dev.txt; without torch they are skipped with that message.
Everything else writes its Llama folders with numpy alone (tests/hf_llama_fixture.py).
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from hf_llama_fixture import write_random_llama
from lm2_jax.checkpoint import load_params
from lm2_jax.config import Config, MemoryConfig, load_config, replace
from lm2_jax.convert import ConvertError, export_hf, import_hf, load_hf_llama
from lm2_jax.convert.__main__ import main as cli
from lm2_jax.convert.hf_io import write_hf_llama
from lm2_jax.convert.mapping import config_from_hf
from lm2_jax.model import build_model
from lm2_jax.sharding import MESH_AXES, param_shardings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_TORCH = "parity tests need torch and transformers: pip install -r requirements-dev.txt"
TOKENS = np.random.default_rng(0).integers(0, 101, size=(2, 24)).astype(np.int32)

# name -> (LlamaConfig kwargs, save dtype, max_shard_size)
VARIANTS = {
    "gqa_tied": (dict(num_hidden_layers=2, num_key_value_heads=2, tie_word_embeddings=True),
                 "float32", None),
    "untied_llama3": (dict(num_hidden_layers=3, num_key_value_heads=1, tie_word_embeddings=False,
                           rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                            "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 32}),
                      "float32", None),
    "bf16_sharded_headdim": (dict(num_hidden_layers=2, num_key_value_heads=2, head_dim=24,
                                  tie_word_embeddings=True), "bfloat16", "40KB"),
}


def _logits_fn(cfg):
  model = build_model(cfg.model)
  return jax.jit(lambda params, tokens: model.apply({"params": params}, tokens))


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
  """Lazily built {variant: (folder, float32 reference logits on TOKENS)}."""
  torch = pytest.importorskip("torch", reason=NO_TORCH, exc_type=ImportError)
  transformers = pytest.importorskip("transformers", reason=NO_TORCH, exc_type=ImportError)
  built = {}

  def get(name):
    if name not in built:
      kwargs, dtype, shard = VARIANTS[name]
      config = transformers.LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=96,
                                        num_attention_heads=4, rms_norm_eps=1e-5,
                                        rope_theta=10000.0, **kwargs)
      torch.manual_seed(0)
      model = transformers.LlamaForCausalLM(config).eval()
      with torch.no_grad():  # every weight random, norms around 1, so each one matters
        for pname, p in model.named_parameters():
          p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in pname else 0.08 * torch.randn_like(p))
      folder = str(tmp_path_factory.mktemp(name))
      model.to(getattr(torch, dtype)).save_pretrained(
          folder, **({"max_shard_size": shard} if shard else {}))
      # The reference: the saved weights, upcast, in float32 with eager attention.
      ref = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                          attn_implementation="eager")
      with torch.no_grad():
        logits = ref(torch.from_numpy(TOKENS).long()).logits.numpy()
      built[name] = (folder, logits)
    return built[name]

  return get


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_transformers(hf_models, name):
  folder, want = hf_models(name)
  if VARIANTS[name][2]:
    assert os.path.exists(os.path.join(folder, "model.safetensors.index.json"))
  cfg, params = load_hf_llama(folder)
  assert cfg.model.attention_scope == "full" and cfg.model.memory.kind == "none"
  got = np.asarray(_logits_fn(cfg)(params, TOKENS))
  assert np.abs(got - want).max() < 1e-4


def test_zero_init_lm2_computes_the_llama(hf_models):
  folder, want = hf_models("untied_llama3")
  base = replace(Config(), **{"model.segment_len": 8, "train.seq_len": 24})
  memory = MemoryConfig(kind="lm2", num_slots=8, num_heads=4, layers=2)
  cfg, params = load_hf_llama(folder, memory, base=base)
  assert cfg.model.memory.zero_init and cfg.model.num_memory_layers == 2
  mem = params["core"]["memory_blocks"]
  assert mem["attn"]["q"].shape[0] == 2 and params["core"]["blocks"]["attn"]["q"].shape[0] == 1
  np.testing.assert_array_equal(mem["memory_read"]["v"], 0)
  # 24 tokens = 3 segments: the memory is written twice and read, and changes nothing.
  got = np.asarray(_logits_fn(cfg)(params, TOKENS))
  assert np.abs(got - want).max() < 1e-4


def test_export_loads_in_transformers_with_the_same_logits(hf_models, tmp_path):
  torch = pytest.importorskip("torch", reason=NO_TORCH, exc_type=ImportError)
  transformers = pytest.importorskip("transformers", reason=NO_TORCH, exc_type=ImportError)
  folder, want = hf_models("untied_llama3")
  base = replace(Config(), **{"model.segment_len": 8, "train.seq_len": 24,
                              "model.memory": MemoryConfig(num_slots=8, layers=2)})
  import_hf(folder, str(tmp_path / "work"), base=base)
  export_hf(str(tmp_path / "work"), str(tmp_path / "out"))
  config = json.load(open(tmp_path / "out" / "config.json"))
  assert config["lm2_memory"]["memory"]["num_slots"] == 8
  # A plain Llama to transformers: the memory tensors are reported as unexpected, skipped.
  model = transformers.LlamaForCausalLM.from_pretrained(
      str(tmp_path / "out"), dtype=torch.float32, attn_implementation="eager")
  with torch.no_grad():
    got = model(torch.from_numpy(TOKENS).long()).logits.numpy()
  assert np.abs(got - want).max() < 1e-5


# --------------------------------------------------------------------------------------
# Without torch: dtypes, round trips, sharding, bad input, the CLI
# --------------------------------------------------------------------------------------


def _safetensors(folder):
  out = {}
  for f in sorted(os.listdir(folder)):
    if f.endswith(".safetensors"):
      out.update(safetensors.numpy.load_file(os.path.join(folder, f)))
  return out


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_weights_are_upcast_exactly(tmp_path, dtype):
  write_random_llama(str(tmp_path), dtype=dtype, tie=False)
  hf = _safetensors(tmp_path)
  assert hf["lm_head.weight"].dtype == np.dtype(getattr(ml_dtypes, dtype, dtype))
  _, params = load_hf_llama(str(tmp_path))
  core = params["core"]
  np.testing.assert_array_equal(core["lm_head"], hf["lm_head.weight"].astype(np.float32).T)
  q1 = hf["model.layers.1.self_attn.q_proj.weight"].astype(np.float32)  # [H*K, D]
  np.testing.assert_array_equal(core["blocks"]["attn"]["q"][1], q1.T.reshape(32, 4, 8))
  np.testing.assert_array_equal(core["blocks"]["mlp"]["down"][0],
                                hf["model.layers.0.mlp.down_proj.weight"].astype(np.float32).T)


FORMULATIONS = {
    "paper": ["model.memory.update=lstm", "model.memory.read_norm=false",
              "model.memory.slot_keys=false", "model.memory.write_sink=false"],
    "retention": ["model.memory.update=convex", "model.memory.read_norm=true",
                  "model.memory.slot_keys=true", "model.memory.write_sink=true"],
}


@pytest.mark.parametrize("formulation", list(FORMULATIONS))
def test_round_trip_of_an_lm2_is_exact_through_the_cli(tmp_path, formulation):
  write_random_llama(str(tmp_path / "hf"), layers=3, tie=False,
                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 32})
  with open(tmp_path / "hf" / "tokenizer.json", "w") as f:
    f.write("{}")
  assert cli(["import-hf", "--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "a"),
              "--config", os.path.join(REPO, "configs", "tiny.yaml"), "model.memory.layers=2",
              "model.memory.init=learned", "model.memory.num_slots=8",
              *FORMULATIONS[formulation]]) == 0
  assert os.path.exists(tmp_path / "a" / "tokenizer.json")
  cfg_a, params_a, _ = load_params(str(tmp_path / "a"))
  assert cfg_a.model.num_memory_layers == 2 and cfg_a.model.rope_scaling.factor == 8.0
  # Train-like change so that the memory is not at its initial value.
  params_a = jax.tree.map(lambda x: x + 0.01 * jnp.sin(jnp.arange(x.size).reshape(x.shape)),
                          params_a)
  from lm2_jax.checkpoint import save_params
  save_params(str(tmp_path / "a"), cfg_a, params_a, step=5)
  assert cli(["export-hf", "--checkpoint", str(tmp_path / "a" / "checkpoints" / "5"),
              "--out", str(tmp_path / "b"), "--max-shard-size", "30KB"]) == 0
  files = os.listdir(tmp_path / "b")
  assert "model.safetensors.index.json" in files and "tokenizer.json" in files
  assert any(n.startswith("lm2.memory.layers.1.") for n in _safetensors(tmp_path / "b"))
  assert cli(["import-hf", "--hf-dir", str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
  cfg_c, params_c, _ = load_params(str(tmp_path / "c"))
  assert _architecture(cfg_c.model) == _architecture(cfg_a.model)
  flat_a = jax.tree_util.tree_flatten_with_path(params_a)[0]
  flat_c = jax.tree_util.tree_flatten_with_path(params_c)[0]
  assert [p for p, _ in flat_a] == [p for p, _ in flat_c]
  for (path, a), (_, c) in zip(flat_a, flat_c):
    np.testing.assert_array_equal(a, c, err_msg=jax.tree_util.keystr(path))


def _architecture(model_cfg):
  """The model config without remat: a training choice (tiny.yaml's `full`) that the Hugging
  Face folder does not carry, so the re-import takes the default."""
  return dataclasses.replace(model_cfg, remat_policy="none")


def test_an_rmt_imports_with_fresh_memory_tokens_and_round_trips_exactly(tmp_path):
  write_random_llama(str(tmp_path / "hf"), layers=2)
  assert cli(["import-hf", "--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "a"),
              "--config", os.path.join(REPO, "configs", "tiny.yaml"), "model.memory.kind=rmt",
              "model.memory.num_slots=4"]) == 0
  cfg_a, params_a, _ = load_params(str(tmp_path / "a"))
  # RMT runs with segment attention only; its memory tokens are its only fresh parameters.
  assert cfg_a.model.memory.kind == "rmt" and cfg_a.model.attention_scope == "segment"
  assert params_a["core"]["memory_init"].shape == (4, 32)
  params_a = jax.tree.map(lambda x: x + 0.01 * jnp.cos(jnp.arange(x.size).reshape(x.shape)),
                          params_a)
  from lm2_jax.checkpoint import save_params
  save_params(str(tmp_path / "a"), cfg_a, params_a, step=5)
  assert cli(["export-hf", "--checkpoint", str(tmp_path / "a"), "--out",
              str(tmp_path / "b")]) == 0
  assert "lm2.memory.rmt_tokens" in _safetensors(tmp_path / "b")
  assert cli(["import-hf", "--hf-dir", str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
  cfg_c, params_c, _ = load_params(str(tmp_path / "c"))
  assert _architecture(cfg_c.model) == _architecture(cfg_a.model)
  for a, c in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_c)):
    np.testing.assert_array_equal(a, c)


def test_export_in_bfloat16_rounds_each_tensor(tmp_path):
  write_random_llama(str(tmp_path / "hf"))
  cfg, params = load_hf_llama(str(tmp_path / "hf"))
  os.makedirs(tmp_path / "out")
  write_hf_llama(cfg, params, str(tmp_path / "out"), dtype="bfloat16")
  out = _safetensors(tmp_path / "out")
  assert json.load(open(tmp_path / "out" / "config.json"))["torch_dtype"] == "bfloat16"
  w = out["model.layers.1.mlp.up_proj.weight"]
  assert w.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(
      w, np.asarray(params["core"]["blocks"]["mlp"]["up"][1]).T.astype(ml_dtypes.bfloat16))


def test_import_onto_a_mesh_places_each_tensor_on_its_shards(tmp_path):
  write_random_llama(str(tmp_path), width=32, heads=4, kv_heads=2, mlp=48, vocab=96)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), MESH_AXES)
  base = replace(Config(), **{"model.memory": MemoryConfig(num_slots=4, num_heads=2)})
  cfg, sharded = load_hf_llama(str(tmp_path), base=base, mesh=mesh)
  _, plain = load_hf_llama(str(tmp_path), base=base)
  want = param_shardings(cfg.model, mesh)
  assert want["core"]["embedding"].spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  for s, p, w in zip(jax.tree.leaves(sharded), jax.tree.leaves(plain), jax.tree.leaves(want)):
    assert s.sharding == w
    np.testing.assert_array_equal(s, p)


def _corrupt(folder, name, value, beside="model.norm.weight"):
  """Put `value` as tensor `name` (None: drop it) in the file holding it, or `beside`."""
  for f in os.listdir(folder):
    if f.endswith(".safetensors"):
      tensors = safetensors.numpy.load_file(os.path.join(folder, f))
      if name in tensors or beside in tensors:
        if value is None:
          del tensors[name]
        else:
          tensors[name] = value
        safetensors.numpy.save_file(tensors, os.path.join(folder, f))
        return f
  raise AssertionError(f"{folder} has neither {name} nor {beside}")


BAD_INPUTS = {
    "other model_type": (
        lambda d: write_random_llama(d, extra_config={"model_type": "mistral"}),
        r"config\.json: model_type 'mistral' is not a Llama"),
    "missing shard": (
        lambda d: (write_random_llama(d, shard_bytes=8000),
                   os.remove(os.path.join(d, "model-00002-of-00011.safetensors"))),
        r"model-00002-of-00011\.safetensors: missing shard, listed in "
        r"model\.safetensors\.index\.json for \d+ tensors \(e\.g\. model\.layers\.0\."),
    "unexpected shape": (
        lambda d: (write_random_llama(d),
                   _corrupt(d, "model.layers.1.self_attn.k_proj.weight",
                            np.zeros((8, 32), np.float32))),
        r"model\.safetensors: tensor model\.layers\.1\.self_attn\.k_proj\.weight has shape "
        r"\[8, 32\], config\.json implies \[16, 32\]"),
    "integer dtype": (
        lambda d: (write_random_llama(d),
                   _corrupt(d, "model.layers.0.mlp.up_proj.weight", np.zeros((48, 32), np.int8))),
        r"model\.safetensors: tensor model\.layers\.0\.mlp\.up_proj\.weight has dtype I8"),
    "missing tensor": (
        lambda d: (write_random_llama(d), _corrupt(d, "model.norm.weight", None)),
        r"model\.safetensors: no tensor model\.norm\.weight"),
    "stray tensor": (
        lambda d: (write_random_llama(d),
                   _corrupt(d, "model.layers.0.self_attn.q_proj.bias", np.zeros(32, np.float32))),
        r"model\.safetensors: tensor model\.layers\.0\.self_attn\.q_proj\.bias has no place"),
    "other rope": (
        lambda d: write_random_llama(d, rope_scaling={"rope_type": "yarn", "factor": 4.0}),
        r"config\.json: rope_scaling\.rope_type 'yarn' is not supported"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_and_tensor(tmp_path, case):
  make, pattern = BAD_INPUTS[case]
  make(str(tmp_path / "hf"))
  with pytest.raises(ConvertError, match=pattern):
    load_hf_llama(str(tmp_path / "hf"))


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
  BAD_INPUTS["unexpected shape"][0](str(tmp_path / "hf"))
  assert cli(["import-hf", "--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "w")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: ") and "k_proj.weight" in err
  assert not os.path.exists(tmp_path / "w")  # nothing half-written
  assert cli(["export-hf", "--checkpoint", str(tmp_path / "nope"), "--out",
              str(tmp_path / "o")]) == 2
  assert capsys.readouterr().err.count("\n") == 1
  # An existing non-empty output is never overwritten; checked as a real process.
  write_random_llama(str(tmp_path / "good"))
  proc = subprocess.run([sys.executable, "-m", "lm2_jax.convert", "import-hf", "--hf-dir",
                         str(tmp_path / "good"), "--out", str(tmp_path / "hf")],
                        capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
  assert "already exists" in proc.stderr


# Llama-3.2-1B's config.json as published (transformers 4.45 layout).
LLAMA_3_2_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "use_cache": True, "vocab_size": 128256,
}


def test_llama_3_2_1b_config_gives_the_shipped_configs():
  for name in ("llama3.2_1b.yaml", "lm2_1.7b.yaml"):
    shipped = load_config(os.path.join(REPO, "configs", name))
    cfg, from_folder = config_from_hf(LLAMA_3_2_1B, "config.json", base=shipped,
                                      compute_dtype=shipped.model.compute_dtype)
    assert not from_folder
    want = shipped.model
    if want.memory.kind == "lm2":
      want = replace(want, **{"memory.zero_init": True})
    assert cfg.model == want and cfg.train == shipped.train, name
