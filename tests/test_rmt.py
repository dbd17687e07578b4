"""The RMT baseline's promises (lm2_jax/model/rmt.py): causality, memory carrying information
across segments, gradients through the recurrence, streaming equal to one shot, and that it
trains and generates through the same train step and inference engine as LM2."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm2_jax.config import load_config
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.inference import Engine, SamplingParams
from lm2_jax.model import RMT, RMTState, abstract_variables, build_model, init_state
from lm2_jax.train import loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEG = 8
N = 4


def tiny(**over):
  """A small RMT with random parameters of a scale at which the memory tokens visibly
  change the logits (at initialisation's 0.02 they barely do)."""
  args = [f"model.segment_len={SEG}", "model.memory.kind=rmt", f"model.memory.num_slots={N}",
          "model.width=32", "model.num_layers=2", "model.num_heads=2", "model.num_kv_heads=1",
          "model.mlp_width=64", "train.seq_len=32"]
  cfg = load_config(None, args + [f"{k}={v}" for k, v in over.items()]).model
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape).astype(np.float32)),
                        nn.unbox(abstract_variables(cfg)["params"]))
  return cfg, params


def tokens_of(cfg, b, t, seed=1):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, cfg.vocab_size)


def jitted(model, method="__call__"):
  return jax.jit(lambda p, *a: model.apply({"params": p}, *a, method=method))


def test_build_model_dispatches_and_the_only_extra_parameters_are_the_memory_tokens():
  cfg, params = tiny()
  assert isinstance(build_model(cfg), RMT) and isinstance(init_state(cfg, 2), RMTState)
  core = params["core"]
  assert core["memory_init"].shape == (N, cfg.width)
  assert set(core) == {"embedding", "blocks", "final_norm", "memory_init"}
  vanilla = load_config(None, [f"model.segment_len={SEG}", "model.memory.kind=none",
                               "model.width=32", "model.num_layers=2", "model.num_heads=2",
                               "model.num_kv_heads=1", "model.mlp_width=64"]).model
  same = nn.unbox(abstract_variables(vanilla)["params"])["core"]
  assert (jax.tree.map(lambda a: a.shape, {k: v for k, v in core.items() if k != "memory_init"})
          == jax.tree.map(lambda a: a.shape, same))


@pytest.mark.parametrize("j", [SEG * 2 + 3, SEG * 2, SEG * 2 - 1])  # inside, at, before a boundary
def test_causal_bit_exact(j):
  cfg, params = tiny()
  tokens = tokens_of(cfg, 2, SEG * 4)
  fwd = jitted(build_model(cfg))
  logits = np.asarray(fwd(params, tokens))
  changed = tokens.at[:, j].set((tokens[:, j] + 1) % cfg.vocab_size)
  logits2 = np.asarray(fwd(params, changed))
  np.testing.assert_array_equal(logits[:, :j], logits2[:, :j])
  assert not np.array_equal(logits[:, j:], logits2[:, j:])


def test_memory_carries_information_across_segments():
  """Attention stays within a segment: only the memory tokens can carry token 2 of segment
  0 into segment 2 (through segment 1's write)."""
  cfg, params = tiny()
  tokens = tokens_of(cfg, 2, SEG * 3)
  fwd = jitted(build_model(cfg))
  changed = tokens.at[:, 2].set((tokens[:, 2] + 1) % cfg.vocab_size)
  seg2 = slice(2 * SEG, 3 * SEG)
  a, b = np.asarray(fwd(params, tokens)[:, seg2]), np.asarray(fwd(params, changed)[:, seg2])
  assert np.abs(a - b).max() > 1e-3


def _memory_init_grads(cfg, params, tokens, truncate_every):
  """The gradients reaching the learned initial memory from the loss on each segment."""
  model = build_model(cfg)
  segments = tokens.shape[1] // SEG
  one_hot = jnp.eye(segments).repeat(SEG, axis=1)[:, None, :]  # [segment, 1, T]

  def grad(weights):
    def f(init):
      p = {**params, "core": {**params["core"], "memory_init": init}}
      logits = model.apply({"params": p}, tokens[:, :-1], truncate_every=truncate_every)
      weights_BxT = jnp.broadcast_to(weights, logits.shape[:2])
      return loss.loss_terms(logits, tokens[:, 1:], weights_BxT).ce
    return jax.grad(f)(params["core"]["memory_init"])

  return [float(np.abs(g).max()) for g in jax.jit(jax.vmap(grad))(one_hot)]


def test_gradients_flow_through_the_recurrence_into_the_initial_memory():
  cfg, params = tiny()
  tokens = tokens_of(cfg, 2, SEG * 3 + 1)
  # Segment 2 reaches the initial memory only through two writes and two reads.
  assert _memory_init_grads(cfg, params, tokens, 0)[2] > 0
  # Truncated BPTT every 2 segments cuts into segment 2 only, never before segment 0
  # (whose memory is the learned start), and leaves segment 1 reaching segment 0.
  seg0, seg1, seg2 = _memory_init_grads(cfg, params, tokens, 2)
  assert seg0 > 0 and seg1 > 0 and seg2 == 0


def test_streaming_equals_one_shot():
  cfg, params = tiny()
  model = build_model(cfg)
  t = SEG * 3 + 5  # the last segment is partial
  tokens = tokens_of(cfg, 2, t)
  one_shot = np.asarray(jitted(model)(params, tokens))
  prefill, step = jitted(model, "prefill"), jitted(model, "step")
  # Segment by segment through the scanned prefill.
  state, parts = init_state(cfg, 2), []
  for s in range(0, t, SEG):
    logits, state = prefill(params, tokens[:, s:s + SEG], state)
    parts.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(parts, 1), one_shot, rtol=1e-5, atol=1e-5)
  # Token by token through `step`, across every boundary.
  state, parts = init_state(cfg, 2), []
  for i in range(t):
    logits, state = step(params, tokens[:, i:i + 1], state)
    parts.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(parts, 1), one_shot, rtol=1e-5, atol=1e-5)
  assert state.pos_B.tolist() == [t, t]


def test_a_carried_memory_continues_the_sequence_it_came_from():
  """train.memory_carry_steps for RMT: a sequence started from the memory tokens another
  left (one memory layer, [1, B, N, D]) computes what the two as one sequence compute; a
  row marked fresh reads the learned initial memory instead."""
  cfg, params = tiny()
  model = build_model(cfg)
  first, second = tokens_of(cfg, 2, 2 * SEG, seed=1), tokens_of(cfg, 2, 2 * SEG, seed=2)
  fwd = jax.jit(lambda p, x, m, f: model.apply({"params": p}, x, memory_MxBxNxD=m, fresh_B=f))
  whole = np.asarray(jitted(model)(params, jnp.concatenate([first, second], axis=1)))
  junk = jnp.full((1, 2, N, cfg.width), 7.0)
  logits, memory = fwd(params, first, junk, jnp.array([True, True]))
  assert memory.shape == (1, 2, N, cfg.width)
  np.testing.assert_allclose(np.asarray(logits), whole[:, :2 * SEG], rtol=1e-5, atol=1e-5)
  logits, _ = fwd(params, second, memory, jnp.array([False, True]))
  np.testing.assert_allclose(np.asarray(logits[0]), whole[0, 2 * SEG:], rtol=1e-5, atol=1e-5)
  alone = np.asarray(jitted(model)(params, second))
  np.testing.assert_allclose(np.asarray(logits[1]), alone[1], rtol=1e-5, atol=1e-5)
  assert np.abs(alone[0] - whole[0, 2 * SEG:]).max() > 1e-3   # the memory mattered


def test_engine_generation_equals_the_full_forward_across_boundaries():
  """Ragged prompts in one batch, prefilled in whole segments and a tail, then decoded
  token by token across segment boundaries (where the memory tokens are written)."""
  cfg, params = tiny()
  engine = Engine(cfg, params, ByteTokenizer(), batch_size=2, chunk_len=2 * SEG)
  prompts = [[256] + list(np.random.default_rng(i).integers(32, 127, n - 1))
             for i, n in enumerate((13, 16))]  # ends inside a segment; exactly on a boundary
  gens = engine.generate(prompts, SamplingParams(max_new_tokens=12, stop_at_eos=False),
                         keep_logits=True)
  fwd = jitted(build_model(cfg))
  for ids, gen in zip(prompts, gens):
    full = np.asarray(fwd(params, jnp.asarray([ids + gen.token_ids])))[0]
    want = full[len(ids) - 1:len(ids) + 11]
    np.testing.assert_allclose(gen.logits, want, atol=2e-5)
    assert gen.token_ids == [int(t) for t in want.argmax(-1)]


@pytest.mark.slow
def test_train_py_and_eval_py_run_end_to_end(tmp_path, monkeypatch, capsys):
  """`python train.py --config configs/babilong_tiny.yaml model.memory.kind=rmt ...` then
  `python eval.py --task babilong` on its checkpoint (in process: the scripts are thin)."""
  monkeypatch.syspath_prepend(ROOT)
  monkeypatch.chdir(ROOT)
  import train  # pylint: disable=g-import-not-at-top
  from eval import main as eval_main  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "rmt"
  assert train.main(["--config", "configs/babilong_tiny.yaml", "--workdir", str(workdir),
                     "model.memory.kind=rmt", "train.steps=2", "train.batch_size=8",
                     "train.eval_samples=8", "train.eval_batch_size=8",
                     "train.eval_segments=[4]", "train.log_every=1",
                     "train.async_checkpoint=false"]) == 0
  out = capsys.readouterr().out
  assert "memory RMT, 16 memory tokens" in out
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
  report = tmp_path / "babilong.json"
  assert eval_main(["--checkpoint", str(workdir), "--task", "babilong", "--tasks", "qa1",
                    "--lengths", "0k,1k", "--num-samples", "2", "--batch-size", "2",
                    "--max-new-tokens", "4", "--output", str(report), "--no-progress"]) == 0, (
                        capsys.readouterr().err)
  cell = json.loads(report.read_text())["results"]["qa1"]["1k"]
  assert cell["n"] == 2 and 0 <= cell["accuracy"] <= 1
