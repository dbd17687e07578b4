"""The generation engine's promises: decoding equals the full forward (across segment
boundaries, where the memory is written), batching changes nothing, one compilation per
shape bucket, bounded state for segment attention, a memory plan before full attention."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm2_jax.config import load_config
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.inference import (Engine, InferenceError, SamplingParams, estimate_memory,
                               sample_logits)
from lm2_jax.inference.sampling import row_keys
from lm2_jax.model import abstract_variables, build_model, init_state

SEG = 8


def tiny(scope="segment", **over):
  """A small LM2 with segments of 8 tokens and random parameters of a scale at which every
  path (attention, memory read and write, gates) changes the logits."""
  args = [f"model.segment_len={SEG}", f"model.attention_scope={scope}", "model.width=32",
          "model.num_layers=2", "model.num_heads=2", "model.num_kv_heads=1",
          "model.mlp_width=64", "model.memory.num_slots=4", "model.memory.num_heads=2",
          "train.seq_len=32"]
  cfg = load_config(None, args + [f"{k}={v}" for k, v in over.items()]).model
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape).astype(np.float32)),
                        nn.unbox(abstract_variables(cfg)["params"]))
  return cfg, params


def full_forward(cfg, params, ids):
  forward = jax.jit(build_model(cfg).apply)
  return np.asarray(forward({"params": params}, jnp.asarray([ids])))[0]


def prompt_ids(n, seed):
  return [256] + list(np.random.default_rng(seed).integers(32, 127, n - 1))


@pytest.mark.parametrize("scope", ["segment", "full"])
def test_decoding_equals_full_forward_across_a_segment_boundary(scope):
  cfg, params = tiny(scope)
  engine = Engine(cfg, params, ByteTokenizer(), batch_size=2, chunk_len=2 * SEG)
  ids = prompt_ids(13, 0)  # the prompt ends inside segment 1; decoding crosses into 2 and 3
  (gen,) = engine.generate([ids], SamplingParams(max_new_tokens=14, stop_at_eos=False),
                           keep_logits=True)
  assert len(gen.token_ids) == 14 and gen.stop_reason == "length"
  full = full_forward(cfg, params, ids + gen.token_ids)
  # The logits each token was chosen from are the full forward's at the position before it.
  np.testing.assert_allclose(gen.logits, full[len(ids) - 1:len(ids) + 13], atol=2e-5)
  assert gen.token_ids == [int(t) for t in full[len(ids) - 1:len(ids) + 13].argmax(-1)]


def test_batched_generation_equals_one_by_one():
  cfg, params = tiny()
  engine = Engine(cfg, params, ByteTokenizer(), batch_size=4, chunk_len=2 * SEG)
  # Lengths inside a segment, exactly on a boundary, and over several chunks.
  prompts = [prompt_ids(n, i) for i, n in enumerate((3, 16, 21, 37))]
  greedy = SamplingParams(max_new_tokens=10, stop_at_eos=False)
  together = engine.generate(prompts, greedy, keep_logits=True)
  for p, batched in zip(prompts, together):
    (alone,) = engine.generate([p], greedy, keep_logits=True)
    assert alone.token_ids == batched.token_ids
    np.testing.assert_allclose(alone.logits, batched.logits, atol=2e-5)
  # Sampling keys follow a prompt's index in the request, not its batch companions.
  sampled = SamplingParams(max_new_tokens=10, stop_at_eos=False, temperature=1.0, top_k=50,
                           top_p=0.9, seed=7)
  together = engine.generate(prompts, sampled)
  for i, p in enumerate(prompts):
    others = engine.generate([[256]] * i + [p] + [[256, 65]] * (3 - i), sampled)
    assert others[i].token_ids == together[i].token_ids


def test_one_compilation_per_shape_bucket():
  cfg, params = tiny()
  engine = Engine(cfg, params, ByteTokenizer(), batch_size=4, chunk_len=2 * SEG)
  sampling = SamplingParams(max_new_tokens=3)
  before = engine.compilations
  engine.generate([prompt_ids(n, n) for n in (5, 19, 30, 41)], sampling)
  first = engine.compilations
  # At most the whole-segment chunks, the tail segment and the decode step (fewer when an
  # earlier test in this process compiled the same shapes).
  assert first.get("prefill", 0) - before.get("prefill", 0) <= 2
  assert first.get("decode", 0) - before.get("decode", 0) <= 1
  engine.generate([prompt_ids(n, n) for n in (7, 12, 64, 3)], sampling)
  engine.generate([prompt_ids(n, n) for n in (50, 2, 33)], sampling)  # 3 rows: bucket 4
  assert engine.compilations == first
  # A second engine of the same config (another checkpoint) reuses the compilations.
  Engine(cfg, params, ByteTokenizer(), batch_size=4, chunk_len=2 * SEG).generate(
      [prompt_ids(9, 1)] * 4, sampling)
  assert engine.compilations == first


class _Letters(ByteTokenizer):
  """Every id decodes to a letter: texts are predictable whatever a random model emits."""

  def __init__(self, eos=257):
    self._eos = eos

  @property
  def eos_id(self):
    return self._eos

  def decode(self, ids):
    return "".join(chr(97 + int(i) % 26) for i in ids)


def test_stop_strings_eos_and_max_new_tokens():
  cfg, params = tiny()
  ids = prompt_ids(11, 3)
  engine = Engine(cfg, params, _Letters(), batch_size=1)
  (free,) = engine.generate([ids], SamplingParams(max_new_tokens=8, stop_at_eos=False))
  assert free.stop_reason == "length" and len(free.token_ids) == 8
  stop = free.text[3:5]
  (cut,) = engine.generate([ids], SamplingParams(max_new_tokens=8, stop=(stop, "#!"),
                                                  stop_at_eos=False))
  assert cut.stop_reason == "stop" and cut.text == free.text[:free.text.find(stop)]
  # The third token as the end-of-sequence token: generation ends before it.
  eos_engine = Engine(cfg, params, _Letters(eos=free.token_ids[2]), batch_size=1)
  (ended,) = eos_engine.generate([ids], SamplingParams(max_new_tokens=8))
  first_eos = free.token_ids.index(free.token_ids[2])
  assert ended.stop_reason == "eos" and ended.token_ids == free.token_ids[:first_eos]


def test_sampling_rules():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(3, 50)) * 3, jnp.float32)
  greedy = np.asarray(logits.argmax(-1))
  keys = row_keys(0, jnp.arange(3), 0)
  pick = lambda t, k, p, keys=keys: np.asarray(
      sample_logits(logits, keys, jnp.float32(t), jnp.int32(k), jnp.float32(p)))
  np.testing.assert_array_equal(pick(0.0, 0, 1.0), greedy)
  np.testing.assert_array_equal(pick(1.0, 1, 1.0), greedy)     # top-1
  np.testing.assert_array_equal(pick(1.0, 0, 1e-6), greedy)    # a tiny nucleus
  top3 = np.argsort(-np.asarray(logits), -1)[:, :3]
  draws = np.stack([pick(2.0, 3, 1.0, row_keys(s, jnp.arange(3), 0)) for s in range(200)])
  for row in range(3):
    assert set(draws[:, row]) <= set(top3[row]) and len(set(draws[:, row])) > 1
  np.testing.assert_array_equal(pick(1.0, 0, 1.0), pick(1.0, 0, 1.0))  # same keys, same draw
  with pytest.raises(ValueError, match="top_p"):
    SamplingParams(top_p=0.0)


def test_segment_state_is_bounded_and_full_attention_is_planned():
  cfg, params = tiny()
  engine = Engine(cfg, params, ByteTokenizer(), batch_size=1, chunk_len=64 * SEG)
  state, _ = engine.prefill([prompt_ids(5000, 4)])
  fresh = init_state(cfg, 1)
  assert jax.tree.map(lambda a: a.shape, state) == jax.tree.map(lambda a: a.shape, fresh)
  assert int(state.pos_B[0]) == 5000
  # The estimate is flat in the length for segment attention and grows for full attention.
  seg_est = [estimate_memory(cfg, 1000, 1, n, 64).total for n in (1_000, 1_000_000)]
  assert seg_est[0] == seg_est[1]
  full_cfg, _ = tiny("full")
  est = [estimate_memory(full_cfg, 1000, 1, n, 64) for n in (1_000, 1_000_000)]
  assert est[1].cache == 1000 * est[0].cache
  # The engine says what a full-attention request needs before it starts, and refuses it
  # when the device cannot hold it.
  lines = []
  small = Engine(full_cfg, params, ByteTokenizer(), batch_size=1, report=lines.append,
                 memory_limit=10_000)
  with pytest.raises(InferenceError, match=r"attention_scope=full: the key/value cache"):
    small.generate(["hello"], SamplingParams(max_new_tokens=2))
  assert lines and "attention_scope=full" in lines[0]
