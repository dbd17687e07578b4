"""scripts/memory_probe.py: the fact pairs behind the footprint differ in the supporting room."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))

import memory_probe  # pylint: disable=wrong-import-position,import-error

from lm2_jax.data import babi  # pylint: disable=wrong-import-position
from lm2_jax.data.tokenizers import ByteTokenizer  # pylint: disable=wrong-import-position


def test_fact_pairs_change_only_the_supporting_facts_room():
  tok = ByteTokenizer()
  a, b, lengths = memory_probe.fact_pairs(tok, 8, seed=3)
  assert a.shape == b.shape and a.shape[0] == 8 and a.shape[1] == lengths.max()
  for row_a, row_b, n in zip(a, b, lengths):
    text_a, text_b = tok.decode(row_a[:n]), tok.decode(row_b[:n])
    assert np.all(row_a[n:] == tok.pad_id) and np.all(row_b[n:] == tok.pad_id)
    changed = [(x, y) for x, y in zip(text_a.split(". "), text_b.split(". ")) if x != y]
    assert len(changed) == 1   # one sentence, its room replaced by another room
    (x, y), = changed
    room_a = [r for r in babi.ROOMS if r in x]
    room_b = [r for r in babi.ROOMS if r in y]
    assert x.replace(room_a[0], room_b[0]) == y and room_a != room_b


def test_a_keep_shift_moves_only_the_keeping_gate_and_makes_every_write_keep_more():
  import jax  # pylint: disable=import-outside-toplevel
  from lm2_jax.config import load_config  # pylint: disable=import-outside-toplevel
  from lm2_jax.model import build_model  # pylint: disable=import-outside-toplevel
  from lm2_jax.model.trace import memory_trace  # pylint: disable=import-outside-toplevel
  tokens = np.asarray(jax.random.randint(jax.random.key(0), (1, 8 * 6), 0, 256))
  for update, gate in (("convex", "input_gate_bias"), ("lstm", "forget_gate_bias")):
    cfg = load_config("configs/babilong_tiny.yaml", ["model.segment_len=8",
                                                      f"model.memory.update={update}"]).model
    model = build_model(cfg)
    params = jax.jit(model.init)(jax.random.key(1), tokens[:, :8])["params"]
    shifted = memory_probe.shift_keep_logits(params, update, 2.0)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    moved = [jax.tree_util.keystr(p) for (p, a), b in zip(flat, jax.tree.leaves(shifted))
             if not np.array_equal(a, b)]
    assert moved and all(f"['{gate}']" in m for m in moved), (update, moved)
    before = memory_trace(model, {"params": params}, tokens)["kept"]
    after = memory_trace(model, {"params": shifted}, tokens)["kept"]
    assert np.all(after > before + 0.01), update
