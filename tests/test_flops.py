"""The analytic FLOP count (lm2_jax/model/flops.py) on a case small enough to count by hand."""

import dataclasses

import pytest

from lm2_jax.config import load_config
from lm2_jax.model.flops import flops_per_token

# Width 8, 2 query heads and 1 kv head of width 4, MLP 16, vocabulary 10, 2 layers of which
# the first has the memory (3 slots), segments of 4; a sequence of 6 tokens is one whole
# segment and a partial one of 2 tokens (padded to 4 by the one-shot forward).
_SHAPE = ["model.width=8", "model.num_heads=2", "model.num_kv_heads=1", "model.mlp_width=16",
          "model.vocab_size=10", "model.num_layers=2", "model.memory.layers=1",
          "model.memory.num_slots=3", "model.memory.num_heads=2", "model.segment_len=4",
          "train.seq_len=8", "model.remat_policy=none"]


def _cfg(*extra):
  return load_config("configs/tiny.yaml", _SHAPE + list(extra)).model


# Per sequence, counted by hand (a multiply-add is 2 FLOPs), for 6 useful or 8 computed tokens:
#   q, k, v projections   2 layers x tokens x 2*8*(2*4 + 2*1*4) = 512 per token
#   output projection     2 layers x tokens x 2*(2*4)*8         = 256 per token
#   MLP                   2 layers x tokens x 6*8*16            = 1536 per token
#   head                  tokens x 2*8*10                       = 160 per token
#   attention core        2 layers x 4*2*4 = 64 per (query, key) pair
#   memory read           per token 2*64 (q) + 2*64 (gate) + 4*3*8 (attention over 3 slots)
#                         = 352, per segment (2 segments) 4*3*64 (slot keys, values) = 768
#   memory write          once, for the whole segment: 4*3*4*8 (3 slots attend to 4 tokens)
#                         + 4*4*64 (token keys, values) + 6*3*64 (slot queries, two gates)
_DENSE_PER_TOKEN = 512 + 256 + 1536 + 160
_READ_PER_TOKEN, _READ_PER_SEGMENT = 352, 768
_WRITE = 384 + 1024 + 1152


def test_useful_flops_count_causal_pairs():
  # segment scope: 4*5/2 pairs in the whole segment, 2*3/2 in the partial one = 13
  forward = 6 * _DENSE_PER_TOKEN + 64 * 13 + 6 * _READ_PER_TOKEN + 2 * _READ_PER_SEGMENT + _WRITE
  assert forward == 21824
  got = flops_per_token(_cfg(), 6)
  assert got["forward"] == pytest.approx(forward / 6)
  assert got["train"] == pytest.approx(3 * forward / 6)
  assert got["memory_forward"] == pytest.approx(
      (6 * _READ_PER_TOKEN + 2 * _READ_PER_SEGMENT + _WRITE) / 6)
  # full scope: query p sees p + 1 keys, 6*7/2 = 21 pairs
  full = flops_per_token(_cfg("model.attention_scope=full"), 6)
  assert full["forward"] == pytest.approx((forward + 64 * (21 - 13)) / 6)


def test_executed_flops_count_every_cache_slot_and_the_padding():
  # segment scope: 8 padded queries x 4 slots each; full scope: 8 queries x the 8-slot buffer
  executed = 8 * _DENSE_PER_TOKEN + 64 * 8 * 4 + 8 * _READ_PER_TOKEN + 2 * _READ_PER_SEGMENT + _WRITE
  assert executed == 28672
  got = flops_per_token(_cfg(), 6)
  assert got["forward_executed"] == pytest.approx(executed / 6)
  assert got["train_executed"] == pytest.approx(3 * executed / 6)
  full = flops_per_token(_cfg("model.attention_scope=full"), 6)
  assert full["forward_executed"] == pytest.approx((executed + 64 * 8 * 4) / 6)
  # A flash kernel (cudnn) skips the masked keys: 2 padded segments x 4*5/2 causal pairs.
  flash = flops_per_token(_cfg("model.attention_impl=cudnn", "model.compute_dtype=bfloat16"), 6)
  assert flash["forward_executed"] == pytest.approx((executed - 64 * (8 * 4 - 2 * 10)) / 6)


def test_full_remat_recomputes_the_blocks_but_not_the_head():
  executed = 28672
  head = 8 * 160
  got = flops_per_token(_cfg("model.remat_policy=full"), 6)
  assert got["train_executed"] == pytest.approx((3 * executed + executed - head) / 6)
  assert got["train"] == flops_per_token(_cfg(), 6)["train"]  # remat is not useful work


def test_full_attention_executes_about_twice_the_causal_scores_at_length():
  cfg = _cfg("model.attention_scope=full", "model.memory.enabled=false")
  t = 4096
  got = flops_per_token(cfg, t)
  attn_useful = 64 * (t + 1) / 2
  attn_executed = 64 * t
  dense = _DENSE_PER_TOKEN
  assert got["forward"] == pytest.approx(dense + attn_useful)
  assert got["forward_executed"] == pytest.approx(dense + attn_executed)
  assert got["memory_forward"] == 0


def test_short_segments_count_the_folded_read():
  """Segments shorter than memory._fold_read's threshold read with the slot projections
  folded into the tokens' side; the executed count follows the order the model runs."""
  d, n, hm, s = 64, 16, 4, 8  # threshold 16 * 64 / (64 + 3 * 16) = 9.1 tokens
  cfg = load_config(None, [f"model.width={d}", "model.num_layers=1",
                           f"model.memory.num_slots={n}", f"model.memory.num_heads={hm}",
                           f"model.segment_len={s}"]).model
  with_memory = flops_per_token(cfg, s)["forward_executed"]
  without = flops_per_token(dataclasses.replace(
      cfg, memory=dataclasses.replace(cfg.memory, kind="none")), s)["forward_executed"]
  write = 4 * d * d + 4 * n * d + 6 * n * d * d / s
  read = 8 * d * d + 4 * hm * n * d
  assert with_memory - without == pytest.approx(read + write)


def test_vanilla_full_scope_with_a_fused_kernel_counts_one_causal_chunk():
  # No memory, full scope, jax.nn.dot_product_attention: one chunk of the 6 tokens, no
  # padding; every (query, key) pair scored with xla (36), the causal half with cudnn (21).
  vanilla = ["model.memory.kind=none", "model.attention_scope=full"]
  xla = flops_per_token(_cfg(*vanilla, "model.attention_impl=xla"), 6)
  assert xla["forward_executed"] == pytest.approx((6 * _DENSE_PER_TOKEN + 64 * 36) / 6)
  flash = flops_per_token(_cfg(*vanilla, "model.attention_impl=cudnn",
                               "model.compute_dtype=bfloat16"), 6)
  assert flash["forward_executed"] == pytest.approx((6 * _DENSE_PER_TOKEN + 64 * 21) / 6)
  assert flash["forward"] == xla["forward"]  # the useful count does not depend on the kernel
