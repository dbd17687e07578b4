"""The engine and eval.py on a device mesh (8 CPU devices, tests/conftest.py): the answers are
the one-device answers, the parameters and the decode state are split as the sharding table
says, and checkpoints are restored straight onto their shards."""

import json
import os
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from lm2_jax import checkpoint, sharding
from lm2_jax.config import MeshConfig, load_config
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.inference import Engine, SamplingParams

from test_inference import SEG, prompt_ids, tiny

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from eval import main  # noqa: E402  (the script: it parses the command line)

MESH = {"data": 2, "fsdp": 2, "tensor": 2}


def mesh():
  return sharding.make_mesh(MeshConfig(**MESH))


def split(x) -> bool:
  """Whether an array is actually divided among devices (not a full copy on each)."""
  return not x.sharding.is_fully_replicated


@pytest.mark.parametrize("scope", ["segment", "full"])
def test_an_8_device_mesh_gives_the_one_device_answers(scope):
  cfg, params = tiny(scope, **{"model.num_kv_heads": 2})
  one = Engine(cfg, params, ByteTokenizer(), batch_size=4, chunk_len=2 * SEG)
  eight = Engine(cfg, params, ByteTokenizer(), batch_size=4, chunk_len=2 * SEG, mesh=mesh())
  assert eight.mesh.size == 8
  # Parameters as the table places them in training; some are really split.
  placed = jax.tree.leaves(eight.variables["params"])
  for x, want in zip(placed, jax.tree.leaves(sharding.param_shardings(cfg, eight.mesh))):
    assert x.sharding == want
  assert any(split(x) for x in placed)
  # The state: rows over data x fsdp, key/value heads over tensor.
  prompts = [prompt_ids(n, i) for i, n in enumerate((3, 16, 21, 37))]
  state, _ = eight.prefill(prompts)
  rows = ("data", "fsdp")
  assert state.k_cache_LxBxKxGxH.sharding.spec == PartitionSpec(None, rows, None, "tensor")
  assert state.memory_MxBxNxD.sharding.spec == PartitionSpec(None, rows)
  assert state.pos_B.sharding.spec == PartitionSpec(rows)
  # Generation (prefill, memory writes while decoding), scoring and streamed losses.
  greedy = SamplingParams(max_new_tokens=10, stop_at_eos=False)
  for a, b in zip(one.generate(prompts, greedy, keep_logits=True),
                  eight.generate(prompts, greedy, keep_logits=True)):
    assert a.token_ids == b.token_ids
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(one.next_token_logprobs(prompts), eight.next_token_logprobs(prompts),
                             rtol=1e-5, atol=1e-5)
  rows_BxT = np.random.default_rng(1).integers(0, cfg.vocab_size, (3, 5 * SEG + 2))
  np.testing.assert_allclose(one.token_nll(rows_BxT), eight.token_nll(rows_BxT),
                             rtol=1e-5, atol=1e-5)
  # Every call after the first of each shape reuses its compilation on the mesh too.
  before = eight.compilations
  eight.generate(prompts[::-1], greedy)
  assert eight.compilations == before


def test_eval_on_a_mesh_restores_onto_the_shards_and_reports_the_same(tmp_path, capsys):
  cfg_model, params = tiny(**{"model.num_kv_heads": 2})
  cfg = load_config(None, [f"model.segment_len={SEG}", "model.width=32", "model.num_layers=2",
                           "model.num_heads=2", "model.num_kv_heads=2", "model.mlp_width=64",
                           "model.memory.num_slots=4", "model.memory.num_heads=2",
                           "train.seq_len=32"])
  assert cfg.model == cfg_model
  workdir = str(tmp_path / "run")
  checkpoint.save_params(workdir, cfg, params, step=3)
  overrides = [f"mesh.{k}={v}" for k, v in MESH.items()]
  shardings = sharding.param_shardings(cfg.model, mesh())
  _, restored, _ = checkpoint.load_params(workdir, cfg, shardings)
  for x, want in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings)):
    assert x.sharding == want

  reports = []
  for extra in ([], overrides):
    out = tmp_path / f"ppl{len(extra)}.json"
    code = main(["--checkpoint", workdir, "--task", "perplexity", "--seq-len", str(4 * SEG),
                 "--num-sequences", "3", "--batch-size", "4", "--output", str(out),
                 "--no-progress", *extra])
    assert code == 0, capsys.readouterr().err
    reports.append(json.loads(out.read_text()))
  one, eight = (r["models"][0] if "models" in r else r for r in reports)
  for a, b in zip(one["by_segment"], eight["by_segment"]):
    assert a["tokens"] == b["tokens"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
  # A mesh the devices cannot fill is one line naming the keys, exit code 2.
  capsys.readouterr()
  code = main(["--checkpoint", workdir, "--task", "perplexity", "--output",
               str(tmp_path / "bad.json"), "--no-progress", "mesh.data=4", "mesh.fsdp=1",
               "mesh.tensor=1"])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1, err
  assert err.startswith("error: mesh: mesh.data=4 x mesh.fsdp=1 x mesh.tensor=1 needs 4 "
                        "devices, but 8 are available")
