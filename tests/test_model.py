"""The model's promises: causality, memory carrying information, streaming, zero_init."""

import functools

import flax.linen as nn
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


def _row(state, b):
  """Row b of every field of a DecodeState (positions are [B], the rest [layers, B, ...])."""
  return [np.asarray(state.pos_B[b])] + [np.asarray(a[:, b]) for a in jax.tree.leaves(state)[1:]]


def _prefill_by_segments(cfg, model, variables, tokens, max_len):
  """Logits of `tokens` consumed segment by segment through the scanned prefill."""
  state = init_state(cfg, tokens.shape[0], max_len)
  prefill = jitted(model, "prefill")
  parts = []
  for s in range(0, tokens.shape[1], SEG):
    logits, state = prefill(variables, tokens[:, s:s + SEG], state)
    parts.append(np.asarray(logits))
  return np.concatenate(parts, 1)


@pytest.mark.parametrize("scope, recurrence, impl", [
    ("segment", "chain", "einsum"), ("full", "chain", "einsum"),
    ("segment", "per_layer", "einsum"), ("full", "per_layer", "einsum"),
    # jax.nn.dot_product_attention in the segment's self-attention and the memory's read
    # and write (a partial last segment: the write's valid-prefix lengths).
    ("segment", "chain", "xla")])
def test_streaming_equals_one_shot(scope, recurrence, impl):
  # Three memory layers: with one, the chain and the per-layer recurrence are the same
  # computation and this test could not tell them apart.
  over = {"model.memory.init": "learned", "model.memory.layers": 3, "model.num_layers": 4,
          "model.attention_impl": impl}
  cfg, model = make(scope, **{"model.memory.write_recurrence": recurrence, **over})
  t = SEG * 3 + 5  # the last segment is partial
  tokens = random_tokens(cfg, 2, t)
  variables = init(model, 0, tokens)
  one_shot = np.asarray(jitted(model)(variables, tokens))
  other = "per_layer" if recurrence == "chain" else "chain"
  _, other_model = make(scope, **{"model.memory.write_recurrence": other, **over})
  other_shot = np.asarray(jitted(other_model)(variables, tokens))
  np.testing.assert_array_equal(other_shot[:, :SEG], one_shot[:, :SEG])  # same first read
  assert np.abs(other_shot[:, SEG:] - one_shot[:, SEG:]).max() > 1e-3
  max_len = SEG * 4
  np.testing.assert_allclose(_prefill_by_segments(cfg, model, variables, tokens, max_len),
                             one_shot, rtol=1e-5, atol=1e-5)
  # Token by token through `step`, crossing every segment boundary.
  state = init_state(cfg, 2, max_len)
  step = jitted(model, "step")
  parts = []
  for i in range(t):
    logits, state = step(variables, tokens[:, i:i + 1], state)
    parts.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(parts, 1), one_shot, rtol=1e-5, atol=1e-5)
  assert int(state.pos_B[0]) == t


def test_vanilla_full_scope_with_a_fused_kernel_trains_as_one_causal_chunk():
  """Without a memory and with jax.nn.dot_product_attention, full scope's one-shot forward
  is the whole sequence as one chunk attending within itself: causal, no cache to scatter
  into, and the logits of streaming through the caches segment by segment."""
  cfg, model = make("full", memory=False, **{"model.attention_impl": "xla"})
  t = SEG * 3 + 5
  tokens = random_tokens(cfg, 2, t)
  variables = init(model, 0, tokens)
  one_shot = np.asarray(jitted(model)(variables, tokens))
  j = SEG * 2 + 3
  changed = np.asarray(jitted(model)(variables, tokens.at[:, j].set(
      (tokens[:, j] + 1) % cfg.vocab_size)))
  np.testing.assert_array_equal(changed[:, :j], one_shot[:, :j])
  assert np.abs(changed[:, j:] - one_shot[:, j:]).max() > 1e-3
  jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, tokens))(variables))
  assert "scatter" not in jaxpr
  np.testing.assert_allclose(_prefill_by_segments(cfg, model, variables, tokens, SEG * 4),
                             one_shot, rtol=1e-5, atol=1e-5)


def test_one_shot_forward_in_segment_scope_keeps_no_cache():
  """Training's forward attends within each whole segment: no key/value cache, no segment
  buffer, so nothing is scattered (nor, in the backward, gathered) per layer."""
  cfg, model = make("segment")
  tokens = random_tokens(cfg, 2, SEG * 2 + 3)
  variables = jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)
  jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, tokens))(variables))
  assert "scatter" not in jaxpr
  prefill = str(jax.make_jaxpr(lambda v: model.apply(v, tokens, init_state(cfg, 2),
                                                      method="prefill"))(variables))
  assert "scatter" in prefill  # the streaming path does keep its caches


@pytest.mark.parametrize("scope", ["segment", "full"])
def test_ragged_prefill_leaves_each_row_as_if_alone_and_later_chunks_agree(scope):
  """A row that ends mid-segment idles through the longer rows' later segments; its state
  must be untouched by them, and the chunk that later completes its segment (writing the
  memory from the buffered inputs) must agree with the row run alone."""
  cfg, model = make(scope)
  tokens = random_tokens(cfg, 2, SEG * 3)
  more = random_tokens(cfg, 2, 6, seed=2)
  variables = init(model, 0, tokens)
  prefill, step = jitted(model, "prefill"), jitted(model, "step")
  max_len = SEG * 5
  short = SEG + 3
  logits, state = prefill(variables, tokens, init_state(cfg, 2, max_len),
                          jnp.array([SEG * 3, short]))
  logits_alone, alone = prefill(variables, tokens[1:, :short], init_state(cfg, 1, max_len))
  np.testing.assert_array_equal(np.asarray(state.pos_B), [SEG * 3, short])
  np.testing.assert_allclose(logits[1, :short], logits_alone[0], rtol=1e-5, atol=1e-5)
  for a, b in zip(_row(state, 1), _row(alone, 0)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # Five tokens complete the short row's segment (a memory write), then one more token.
  for chunk in (more[:, :5], more[:, 5:]):
    a, state = step(variables, chunk, state)
    b, alone = step(variables, chunk[1:], alone)
    np.testing.assert_allclose(a[1], b[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(state.memory_MxBxNxD[:, 1], alone.memory_MxBxNxD[:, 0],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scope", ["segment", "full"])
def test_chunks_that_cross_segment_boundaries_are_split(scope):
  """`step` takes chunks of any length from any position (longer than a segment too) and
  `prefill` starts from a row in the middle of a segment: both write the memory at every
  boundary they cross, as the one-shot forward does."""
  cfg, model = make(scope)
  t = SEG * 5 + 3
  tokens = random_tokens(cfg, 2, t)
  variables = init(model, 0, tokens)
  one_shot = np.asarray(jitted(model)(variables, tokens))
  _, whole = jitted(model, "prefill")(variables, tokens, init_state(cfg, 2, SEG * 6))
  state = init_state(cfg, 2, SEG * 6)
  step, prefill = jitted(model, "step"), jitted(model, "prefill")
  parts = []
  for a, b in ((0, 3), (3, 10), (10, 10 + SEG + 5)):  # within, across one, across two
    logits, state = step(variables, tokens[:, a:b], state)
    parts.append(np.asarray(logits))
  logits, state = prefill(variables, tokens[:, 10 + SEG + 5:], state)  # from mid-segment
  parts.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(parts, 1), one_shot, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(state.pos_B), [t, t])
  np.testing.assert_allclose(state.memory_MxBxNxD, whole.memory_MxBxNxD, rtol=1e-5, atol=1e-5)
  # Rows at different offsets in one call: each is split where its own segment ends.
  state = init_state(cfg, 2, SEG * 6)
  _, state = prefill(variables, tokens[:, :SEG + 2], state, jnp.array([SEG + 2, 5]))
  logits, state = step(variables, tokens[:, SEG + 2:SEG * 2 + 2], state)
  _, alone = prefill(variables, tokens[1:, :5], init_state(cfg, 1, SEG * 6))
  alone_logits, alone = step(variables, tokens[1:, SEG + 2:SEG * 2 + 2], alone)
  np.testing.assert_allclose(logits[0], one_shot[0, SEG + 2:SEG * 2 + 2], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits[1], alone_logits[0], rtol=1e-5, atol=1e-5)
  for a, b in zip(_row(state, 1), _row(alone, 0)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_truncated_backprop_cuts_at_multiples_of_truncate_every_only():
  """truncate_every=k stops the gradient through the memory at segment boundaries k, 2k, ...
  but not at the start: the learned initial memory is trained."""
  cfg, model = make("segment", **{"model.memory.init": "learned",
                                  "model.tie_embeddings": "false"})
  # Segments 0-1 use token ids below 128, segments 2-3 the others: with untied embeddings
  # the embedding rows below 128 get a gradient from a loss on segments 2-3 only through
  # the memory carried across boundaries 1 and 2.
  early = jax.random.randint(jax.random.key(1), (2, 2 * SEG), 0, 128)
  late = jax.random.randint(jax.random.key(2), (2, 2 * SEG), 128, cfg.vocab_size)
  tokens = jnp.concatenate([early, late], axis=1)
  params = nn.unbox(init(model, 0, tokens)["params"])

  @functools.partial(jax.jit, static_argnums=(1, 2))
  def grads(p, truncate_every, first_segment):
    def loss(p):
      logits = model.apply({"params": p}, tokens[:, :-1], truncate_every=truncate_every)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
      return ce[:, first_segment * SEG:].sum()
    g = jax.grad(loss)(p)["core"]
    return jnp.abs(g["memory_init"]).max(), jnp.abs(g["embedding"][:128]).max()

  init_0, early_0 = grads(params, 0, 2)
  init_2, early_2 = grads(params, 2, 2)   # cut at boundary 2 only
  init_3, early_3 = grads(params, 3, 2)   # cut at boundary 3: segment 2 still reaches back
  assert float(init_0) > 0 and float(early_0) > 0
  assert float(init_2) == 0 and float(early_2) == 0
  assert float(init_3) > 0 and float(early_3) > 0
  # A loss from segment 1 on reaches the initial memory across boundary 1, which k=2 keeps.
  assert float(grads(params, 2, 1)[0]) > 0


def test_a_carried_memory_continues_the_sequence_it_came_from():
  """Training's memory carry (train.memory_carry_steps): a sequence started from the memory
  another left computes what the two as one sequence compute (segment scope, whole
  segments); a row marked fresh starts from the initial memory instead."""
  cfg, model = make("segment", **{"model.memory.init": "learned", "model.memory.layers": 2,
                                  "model.num_layers": 3})
  first, second = random_tokens(cfg, 2, 2 * SEG, seed=1), random_tokens(cfg, 2, 2 * SEG, seed=2)
  variables = init(model, 0, first)
  fwd = jax.jit(lambda v, x, m, f: model.apply(v, x, memory_MxBxNxD=m, fresh_B=f))
  whole = np.asarray(jitted(model)(variables, jnp.concatenate([first, second], axis=1)))
  junk = jnp.full((2, 2, cfg.memory.num_slots, cfg.width), 7.0)
  logits, memory = fwd(variables, first, junk, jnp.array([True, True]))
  np.testing.assert_allclose(np.asarray(logits), whole[:, :2 * SEG], rtol=1e-6, atol=1e-6)
  logits, _ = fwd(variables, second, memory, jnp.array([False, True]))
  np.testing.assert_allclose(np.asarray(logits[0]), whole[0, 2 * SEG:], rtol=1e-5, atol=1e-5)
  alone = np.asarray(jitted(model)(variables, second))
  np.testing.assert_allclose(np.asarray(logits[1]), alone[1], rtol=1e-6, atol=1e-6)
  assert np.abs(alone[0] - whole[0, 2 * SEG:]).max() > 1e-3   # the memory mattered
  with pytest.raises(ValueError, match=r"memory.kind=lm2 \(with memory layers\) or rmt"):
    _, vanilla = make("segment", memory=False)
    vanilla.apply(init(vanilla, 0, first), first, memory_MxBxNxD=junk)


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
def _values_and_grads(over=()):
  cfg, model = make("segment", **dict(over))
  tokens = random_tokens(cfg, 2, SEG * 2)
  variables = init(make("segment")[1], 0, tokens)
  loss = lambda v: model.apply(v, tokens).sum()
  return jax.jit(jax.value_and_grad(loss))(variables)


@pytest.mark.parametrize("over", [
    (("model.remat_policy", "full"),), (("model.remat_policy", "save_qkv_mlp"),),
    # The layer scan unrolled (no loop left) is the same computation.
    (("model.scan_unroll", 2),),
    # jax.nn.dot_product_attention for a segment attending within itself (the kernel
    # family of model.attention_impl=cudnn, which needs a GPU) computes the same attention.
    (("model.attention_impl", "xla"),)])
def test_remat_and_unrolled_scan_compute_the_same_values_and_gradients(over):
  ref_value, ref_grads = _values_and_grads()
  value, grads = _values_and_grads(over)
  # The value sums thousands of logits of either sign: float32 reassociation, no more
  # (3.2e-5 seen for `full` on an Intel Xeon).
  np.testing.assert_allclose(value, ref_value, rtol=1e-6, atol=1e-4)
  for a, b in zip(jax.tree.leaves(ref_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_keeps_a_float32_memory_over_many_segments():
  """bfloat16 activations, float32 memory: the recurrence over segments must not drift."""
  cfg, model = make("segment")
  segments = 12
  tokens = random_tokens(cfg, 2, SEG * segments)
  variables = init(model, 0, tokens)
  bf16_cfg, bf16 = make("segment", **{"model.compute_dtype": "bfloat16"})
  prefill = lambda m, c: jitted(m, "prefill")(variables, tokens, init_state(c, 2))
  a, state = prefill(model, cfg)
  b, bf16_state = prefill(bf16, bf16_cfg)
  assert b.dtype == jnp.float32
  assert bf16_state.memory_MxBxNxD.dtype == jnp.float32
  assert bf16_state.u_MxBxSxD.dtype == jnp.bfloat16
  per_segment = np.abs(np.asarray(a - b)).reshape(2, segments, SEG, -1).max(axis=(0, 2, 3))
  scale = float(np.abs(np.asarray(a)).max())
  # bfloat16 rounding of logits of this size, and no growth from segment to segment.
  assert per_segment.max() < 0.03 * scale, (per_segment, scale)
  assert per_segment[-4:].mean() < 2 * per_segment[:4].mean(), per_segment
  memory, bf16_memory = np.asarray(state.memory_MxBxNxD), np.asarray(bf16_state.memory_MxBxNxD)
  assert np.abs(memory - bf16_memory).max() < 0.02 * np.abs(memory).max()
