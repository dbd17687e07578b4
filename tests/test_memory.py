"""The memory formulations of lm2_jax/model/memory.py: what each option promises.

The retention options (update=convex, read_norm, slot_keys, write_sink) must keep the
model's contracts (causality, streaming equals one-shot, zero_init) and add their own: a
memory that stays bounded over a thousand segments, and a slot that finds nothing keeps
its content exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm2_jax.config import load_config
from lm2_jax.model import build_model, init_state
from lm2_jax.model.memory import MemoryRead, MemoryWrite, _fold_read, identity_memory

SEG = 8
RETENTION = ["model.memory.update=convex", "model.memory.read_norm=true",
             "model.memory.slot_keys=true", "model.memory.write_sink=true",
             "model.memory.write_recurrence=per_layer"]


def make(*over):
  cfg = load_config(None, [f"model.segment_len={SEG}", "model.num_layers=3", *over]).model
  return cfg, build_model(cfg)


def tokens_of(cfg, b, t, seed=1):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, cfg.vocab_size)


CENTRED = [[], ["model.memory.read_centre=true"], ["model.memory.write_centre=true"]]


@pytest.mark.parametrize("over", CENTRED)
def test_retention_options_keep_causality_and_streaming(over):
  cfg, model = make(*RETENTION, "model.memory.init=learned", *over)
  t = SEG * 3 + 5
  tokens = tokens_of(cfg, 2, t)
  variables = jax.jit(model.init)(jax.random.key(0), tokens)
  fwd = jax.jit(model.apply)
  logits = np.asarray(fwd(variables, tokens))
  j = SEG * 2 + 1
  changed = tokens.at[:, j].set((tokens[:, j] + 1) % cfg.vocab_size)
  np.testing.assert_array_equal(logits[:, :j], np.asarray(fwd(variables, changed))[:, :j])
  early = tokens.at[:, 1].set((tokens[:, 1] + 1) % cfg.vocab_size)
  assert np.abs(np.asarray(fwd(variables, early))[:, 2 * SEG:] - logits[:, 2 * SEG:]).max() > 1e-6
  step = jax.jit(lambda v, x, s: model.apply(v, x, s, method="step"))
  state = init_state(cfg, 2)
  streamed = []
  for i in range(t):
    out, state = step(variables, tokens[:, i:i + 1], state)
    streamed.append(np.asarray(out))
  np.testing.assert_allclose(np.concatenate(streamed, 1), logits, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("over", CENTRED)
def test_zero_init_still_gives_the_vanilla_model(over):
  cfg, model = make(*RETENTION, "model.memory.zero_init=true", *over)
  _, vanilla = make("model.memory.enabled=false")
  tokens = tokens_of(cfg, 2, SEG * 3)
  mp = dict(jax.jit(model.init)(jax.random.key(1), tokens)["params"]["core"])
  v_vars = jax.jit(vanilla.init)(jax.random.key(0), tokens)
  vp = v_vars["params"]["core"]
  mp["embedding"], mp["final_norm"] = vp["embedding"], vp["final_norm"]
  mp["memory_blocks"] = {**mp["memory_blocks"],
                         **{k: vp["blocks"][k] for k in ("attn", "attn_norm", "mlp", "mlp_norm")}}
  np.testing.assert_array_equal(np.asarray(jax.jit(vanilla.apply)(v_vars, tokens)),
                                np.asarray(jax.jit(model.apply)({"params": {"core": mp}}, tokens)))


@pytest.mark.parametrize("update, bounded", [("convex", True), ("lstm", False)])
def test_memory_rms_over_a_thousand_segments(update, bounded):
  """Write gates held wide open: the convex update stays within its bound, the paper's
  update (forget bias 6, as a model trained to retain would have) runs away."""
  cfg, model = make(f"model.memory.update={update}", "model.memory.input_bias=4",
                    "model.memory.forget_bias=6", "model.num_layers=1",
                    "model.memory.num_slots=4")
  tokens = tokens_of(cfg, 1, SEG * 1000, seed=3)
  variables = jax.jit(model.init)(jax.random.key(0), tokens[:, :SEG])
  prefill = jax.jit(lambda v, x, s: model.apply(v, x, s, method="prefill"))
  _, state = prefill(variables, tokens, init_state(cfg, 1))
  peak = float(jnp.abs(state.memory_MxBxNxD).max())
  if bounded:
    assert peak <= 1.0
  else:
    assert peak > 5.0  # ten times the bound of the convex update


def test_a_slot_that_finds_nothing_keeps_its_content():
  cfg = load_config(None, [f"model.segment_len={SEG}", *RETENTION]).model
  write = MemoryWrite(cfg, jnp.float32)
  prev = jax.random.normal(jax.random.key(0), (2, cfg.memory.num_slots, cfg.width))
  u = jax.random.normal(jax.random.key(1), (2, SEG, cfg.width))
  valid = jnp.ones((2, SEG), bool)
  params = write.init(jax.random.key(2), prev, u, valid)
  new = write.apply(params, prev, u, valid)
  assert np.abs(np.asarray(new - prev)).max() > 1e-3  # at the start half the mass finds tokens
  # A sink that wins every head's attention: nothing is found, nothing is written.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.full_like(x, 1e4) if "sink" in jax.tree_util.keystr(p) else x, params)
  np.testing.assert_array_equal(np.asarray(write.apply(params, prev, u, valid)),
                                np.asarray(prev))


@pytest.mark.parametrize("update", ["convex", "lstm"])
def test_chrono_gates_keep_a_memory_for_their_time_scales(update):
  """gate_timescale=T: untrained, the share of a difference between two memories that
  survives k writes of the same input decays over every time scale up to T, where the
  constant biases forget it within a few writes."""
  def surviving(*over, writes=(4, 32, 128)):
    # Small kernels: the write then hardly depends on the memory itself, and what survives
    # is set by the gate biases alone (at 1/sqrt(width) the LSTM write's own feedback
    # keeps 0.4 of the difference after 32 writes).
    cfg = load_config(None, [f"model.segment_len={SEG}", f"model.memory.update={update}",
                             "model.initializer_std=0.02", *over]).model
    write = MemoryWrite(cfg, jnp.float32)
    a, b = (jnp.tanh(jax.random.normal(jax.random.key(k), (1, cfg.memory.num_slots,
                                                            cfg.width))) for k in (0, 1))
    u = jax.random.normal(jax.random.key(2), (1, SEG, cfg.width))
    valid = jnp.ones((1, SEG), bool)
    params = write.init(jax.random.key(3), a, u, valid)
    step = jax.jit(lambda m: write.apply(params, m, u, valid))
    out, gap = [], float(jnp.abs(a - b).mean())
    for k in range(1, max(writes) + 1):
      a, b = step(a), step(b)
      if k in writes:
        out.append(float(jnp.abs(a - b).mean()) / gap)
    return out, params["params"]

  constant, _ = surviving()
  chrono, params = surviving("model.memory.gate_timescale=512")
  assert constant[1] < 1e-3                        # 32 writes: gone
  assert chrono[0] > 0.5 and chrono[1] > 0.3 and chrono[2] > 0.15, chrono
  assert chrono[0] > chrono[1] > chrono[2]         # still a decay, over many time scales
  bias = np.asarray(params["forget_gate_bias" if update == "lstm" else "input_gate_bias"].value)
  kept = 1 / (1 + np.exp(-bias if update == "lstm" else bias))   # g_f, or 1 - z
  tau = 1 / (1 - kept)
  assert tau.min() >= 2 - 1e-4 and tau.max() <= 512 * (1 + 1e-4)
  assert np.sum(tau < 8) >= 8 and np.sum(tau > 128) >= 8   # both ends of the range


@pytest.mark.parametrize("over", [[], ["model.memory.read_norm=true",
                                       "model.memory.slot_keys=true"],
                                  ["model.memory.read_centre=true"]])
def test_a_token_reads_the_same_alone_as_in_its_segment(over):
  """Decoding reads with the slot projections folded into the token's side (fewer FLOPs
  for a few tokens); a token must read what it reads within a whole segment."""
  cfg = load_config(None, ["model.memory.num_slots=16", *over]).model
  c, n, d = 16, cfg.memory.num_slots, cfg.width
  assert _fold_read(1, n, d, cfg.memory.num_heads)
  assert not _fold_read(c, n, d, cfg.memory.num_heads)
  u = jax.random.normal(jax.random.key(0), (2, c, d))
  memory = jax.random.normal(jax.random.key(1), (2, n, d))
  read = MemoryRead(cfg, jnp.float32)
  params = read.init(jax.random.key(2), u, memory)
  # Random gates and projections (zero_init's value projection would read nothing).
  params = jax.tree.map(lambda p: jax.random.normal(jax.random.key(3), p.shape) * 0.1, params)
  whole = np.asarray(read.apply(params, u, memory))
  alone = np.concatenate([np.asarray(read.apply(params, u[:, i:i + 1], memory))
                          for i in range(c)], axis=1)
  assert np.abs(whole).max() > 1e-2
  np.testing.assert_allclose(alone, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("centre", [True, False])
def test_a_centred_read_ignores_an_offset_every_slot_shares(centre):
  """Background moves each unit of the memory alike in every slot (docs/results.md); read
  centred over the slots, such a move changes nothing the tokens read, and a move that
  differs between slots still does."""
  cfg = load_config(None, ["model.memory.read_norm=true", "model.memory.slot_keys=true",
                           f"model.memory.read_centre={str(centre).lower()}"]).model
  n, d = cfg.memory.num_slots, cfg.width
  u = jax.random.normal(jax.random.key(0), (2, 8, d))
  memory = jax.random.normal(jax.random.key(1), (2, n, d))
  read = MemoryRead(cfg, jnp.float32)
  params = read.init(jax.random.key(2), u, memory)
  params = jax.tree.map(lambda p: jax.random.normal(jax.random.key(3), p.shape) * 0.3, params)
  base = np.asarray(read.apply(params, u, memory))
  shared = np.asarray(read.apply(params, u, memory + 3.0 * jax.random.normal(
      jax.random.key(4), (2, 1, d))))
  per_slot = np.asarray(read.apply(params, u, memory + 3.0 * jax.random.normal(
      jax.random.key(5), (2, n, d))))
  assert np.abs(per_slot - base).max() > 1e-2
  if centre:
    np.testing.assert_allclose(shared, base, rtol=1e-5, atol=1e-5)
  else:
    assert np.abs(shared - base).max() > 1e-2


@pytest.mark.parametrize("update", ["convex", "lstm"])
def test_a_centred_write_keeps_each_units_mean_over_the_slots(update):
  """write_centre: whatever a thousand segments write, every unit's mean over the slots
  stays that of the initial memory, and the memory still changes (and, convex, stays
  bounded)."""
  cfg, model = make(f"model.memory.update={update}", "model.memory.write_centre=true",
                    "model.memory.input_bias=4", "model.num_layers=1",
                    "model.memory.num_slots=4", "model.memory.write_recurrence=per_layer")
  tokens = tokens_of(cfg, 1, SEG * 1000, seed=3)
  variables = jax.jit(model.init)(jax.random.key(0), tokens[:, :SEG])
  prefill = jax.jit(lambda v, x, s: model.apply(v, x, s, method="prefill"))
  _, state = prefill(variables, tokens, init_state(cfg, 1))
  before = identity_memory(cfg.memory.num_slots, cfg.width)[None, None]  # memory.init
  after = np.asarray(state.memory_MxBxNxD)
  assert np.abs(after - before).max() > 0.1
  np.testing.assert_allclose(after.mean(2), before.mean(2), atol=1e-4)
  if update == "convex":
    assert np.abs(after).max() <= 2.0
