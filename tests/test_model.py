"""The model's promises: causality, memory carrying information, streaming, zero_init."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lm2_jax.config import load_config
from lm2_jax.model import build_model, init_state

SEG = 8


def make(scope="segment", memory=True, **over):
  args = [f"model.segment_len={SEG}", f"model.attention_scope={scope}",
          f"model.memory.kind={'lm2' if memory else 'none'}"]
  args += [f"{k}={v}" for k, v in over.items()]
  cfg = load_config(None, args).model
  return cfg, build_model(cfg)


def jitted(model, method="__call__"):
  return jax.jit(lambda v, *a: model.apply(v, *a, method=method))


def init(model, seed, tokens):
  # Jitted: an eager init runs the scans op by op and takes twice as long.
  return jax.jit(model.init)(jax.random.key(seed), tokens)


def random_tokens(cfg, b, t, seed=1):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, cfg.vocab_size)


@pytest.mark.parametrize("scope", ["segment", "full"])
@pytest.mark.parametrize("j", [SEG * 2 + 3, SEG * 2])  # inside a segment, at a boundary
def test_causal_bit_exact(scope, j):
  cfg, model = make(scope)
  tokens = random_tokens(cfg, 2, SEG * 4)
  variables = init(model, 0, tokens)
  fwd = jitted(model)
  logits = fwd(variables, tokens)
  changed = tokens.at[:, j].set((tokens[:, j] + 1) % cfg.vocab_size)
  logits2 = fwd(variables, changed)
  np.testing.assert_array_equal(np.asarray(logits[:, :j]), np.asarray(logits2[:, :j]))
  assert not np.array_equal(np.asarray(logits[:, j:]), np.asarray(logits2[:, j:]))


@pytest.mark.parametrize("memory", [True, False])
def test_memory_carries_information_across_segments(memory):
  cfg, model = make("segment", memory)
  tokens = random_tokens(cfg, 2, SEG * 3)
  variables = init(model, 0, tokens)
  changed = tokens.at[:, 2].set((tokens[:, 2] + 1) % cfg.vocab_size)
  seg2 = slice(2 * SEG, 3 * SEG)
  fwd = jitted(model)
  a = np.asarray(fwd(variables, tokens)[:, seg2])
  b = np.asarray(fwd(variables, changed)[:, seg2])
  if memory:
    assert np.abs(a - b).max() > 1e-6
  else:
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scope", ["segment", "full"])
@pytest.mark.parametrize("recurrence", ["chain", "per_layer"])
def test_streaming_equals_one_shot(scope, recurrence):
  cfg, model = make(scope, **{"model.memory.write_recurrence": recurrence,
                              "model.memory.init": "learned", "model.memory.layers": 1,
                              "model.num_layers": 3})
  t = SEG * 3 + 5  # the last segment is partial
  tokens = random_tokens(cfg, 2, t)
  variables = init(model, 0, tokens)
  one_shot = np.asarray(model.apply(variables, tokens))
  max_len = SEG * 4
  # Segment by segment through the scanned prefill.
  state = init_state(cfg, 2, max_len)
  prefill = jitted(model, "prefill")
  parts = []
  for s in range(0, t, SEG):
    logits, state = prefill(variables, tokens[:, s:s + SEG], state)
    parts.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(parts, 1), one_shot, rtol=1e-5, atol=1e-5)
  # Token by token through `step`, crossing every segment boundary.
  state = init_state(cfg, 2, max_len)
  step = jitted(model, "step")
  parts = []
  for i in range(t):
    logits, state = step(variables, tokens[:, i:i + 1], state)
    parts.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(parts, 1), one_shot, rtol=1e-5, atol=1e-5)
  assert int(state.pos_B[0]) == t


def test_prefill_with_ragged_rows_matches_each_row():
  cfg, model = make("segment")
  tokens = random_tokens(cfg, 2, SEG * 2)
  variables = init(model, 0, tokens)
  lengths = jnp.array([SEG * 2, SEG + 3])
  prefill = jitted(model, "prefill")
  _, state = prefill(variables, tokens, init_state(cfg, 2), lengths)
  _, alone = prefill(variables, tokens[1:, :SEG + 3], init_state(cfg, 1))
  np.testing.assert_array_equal(np.asarray(state.pos_B), [SEG * 2, SEG + 3])
  np.testing.assert_allclose(state.memory_MxBxNxD[:, 1], alone.memory_MxBxNxD[:, 0], atol=1e-6)
  nxt = tokens[:, :1]
  step = jitted(model, "step")
  a, _ = step(variables, nxt, state)
  b, _ = step(variables, nxt[1:], alone)
  np.testing.assert_allclose(a[1], b[0], atol=1e-5)


@pytest.mark.parametrize("scope", ["segment", "full"])
def test_zero_init_reproduces_vanilla_exactly(scope):
  cfg_v, vanilla = make(scope, memory=False)
  cfg_m, lm2 = make(scope, memory=True, **{"model.memory.zero_init": "true"})
  tokens = random_tokens(cfg_v, 2, SEG * 3 + 2)
  v_vars = init(vanilla, 0, tokens)
  m_vars = init(lm2, 1, tokens)
  # Put the vanilla weights into the memory model (memory blocks are the first layers).
  vp, mp = v_vars["params"]["core"], dict(m_vars["params"]["core"])
  mp["embedding"], mp["final_norm"] = vp["embedding"], vp["final_norm"]
  mem_blocks = dict(mp["memory_blocks"])
  for name in ("attn", "attn_norm", "mlp", "mlp_norm"):
    mem_blocks[name] = vp["blocks"][name]
  mp["memory_blocks"] = mem_blocks
  out_v = jitted(vanilla)(v_vars, tokens)
  out_m = jitted(lm2)({"params": {"core": mp}}, tokens)
  if jax.default_backend() == "cpu":
    np.testing.assert_array_equal(np.asarray(out_v), np.asarray(out_m))
  else:  # GPU XLA may fuse the two graphs' matmuls differently: equal up to rounding.
    np.testing.assert_allclose(np.asarray(out_v), np.asarray(out_m), rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_memory_parameter_and_training_stays_finite():
  cfg, model = make("segment", **{"model.memory.init": "learned"})
  tokens = random_tokens(cfg, 4, SEG * 3)
  params = init(model, 0, tokens)["params"]
  opt = optax.adamw(1e-2)

  def loss_fn(p, tok):
    logits = model.apply({"params": p}, tok)
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tok[:, 1:]).mean()

  @jax.jit
  def step(p, s, tok):
    loss, grads = jax.value_and_grad(loss_fn)(p, tok)
    updates, s = opt.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss, grads

  state = opt.init(params)
  for i in range(5):
    params, state, loss, grads = step(params, state, random_tokens(cfg, 4, SEG * 3, seed=i))
    assert np.isfinite(float(loss))
    if i == 0:
      flat = jax.tree_util.tree_flatten_with_path(grads)[0]
      memory_leaves = [(jax.tree_util.keystr(k), g) for k, g in flat
                       if "memory_read" in jax.tree_util.keystr(k)
                       or "memory_write" in jax.tree_util.keystr(k)
                       or "memory_init" in jax.tree_util.keystr(k)]
      assert len(memory_leaves) == 14  # read 5, write 8, initial memory 1
      for name, g in memory_leaves:
        g = np.asarray(getattr(g, "value", g))
        assert np.abs(g).max() > 0, f"no gradient reaches {name}"
  for leaf in jax.tree.leaves(params):
    assert np.isfinite(np.asarray(getattr(leaf, "value", leaf))).all()


@functools.lru_cache(maxsize=None)
def _values_and_grads(policy):
  cfg, model = make("segment", **{"model.remat_policy": policy})
  tokens = random_tokens(cfg, 2, SEG * 2)
  variables = init(make("segment")[1], 0, tokens)
  loss = lambda v: model.apply(v, tokens).sum()
  return jax.jit(jax.value_and_grad(loss))(variables)


@pytest.mark.parametrize("policy", ["full", "save_qkv_mlp"])
def test_remat_policies_compute_the_same_values_and_gradients(policy):
  ref_value, ref_grads = _values_and_grads("none")
  value, grads = _values_and_grads(policy)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(ref_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_is_close_to_float32():
  cfg, model = make("segment")
  tokens = random_tokens(cfg, 2, SEG * 2)
  variables = init(model, 0, tokens)
  _, bf16 = make("segment", **{"model.compute_dtype": "bfloat16"})
  a = jitted(model)(variables, tokens)
  b = jitted(bf16)(variables, tokens)
  assert b.dtype == jnp.float32
  assert float(jnp.abs(a - b).max()) < 0.05
