"""Curriculum draws and per-host input streams: deterministic, sharded, exactly resumable."""

import json

import numpy as np
import pytest

from lm2_jax.config import load_config
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.train.curriculum import Curriculum
from lm2_jax.train.inputs import TrainInput, eval_batches, score_all_tokens

BABILONG = ["model.segment_len=64", "train.seq_len=256", "train.batch_size=4",
            "data.kind=babilong", "data.tasks=[qa1]"]


def test_curriculum_grows_and_draws_the_same_counts_for_the_same_seed():
  cfg = load_config(None, BABILONG + ["train.curriculum.max_segments=[2,3,4]",
                                      "train.curriculum.stage_steps=10",
                                      "train.curriculum.min_segments=2"])
  cur = Curriculum(cfg)
  assert [cur.ceiling(s) for s in (0, 9, 10, 25, 1000)] == [2, 2, 3, 4, 4]
  draws = [cur.segments(s) for s in range(200)]
  assert set(draws[:10]) == {2}
  assert set(draws[20:]) == {2, 3, 4}
  assert draws == [Curriculum(cfg).segments(s) for s in range(200)]
  assert cur.all_segments() == (2, 3, 4)
  other = Curriculum(load_config(None, BABILONG + ["train.seed=1",
                                                   "train.curriculum.max_segments=[4]"]))
  assert [other.segments(s) for s in range(50)] != [Curriculum(cfg).segments(s + 30)
                                                   for s in range(50)]


def test_bucketed_curriculum_draws_only_the_bucket_multiples_between_floor_and_ceiling():
  cfg = load_config(None, ["model.segment_len=16", "train.seq_len=2048", "data.kind=babilong",
                           "train.curriculum.max_segments=[30,64,128]",
                           "train.curriculum.stage_steps=50", "train.curriculum.min_segments=12",
                           "train.curriculum.bucket=16"])
  cur = Curriculum(cfg)
  assert set(cur.segments(s) for s in range(50)) == {12, 16, 30}
  assert set(cur.segments(s) for s in range(100, 400)) == {12, 16, 32, 48, 64, 80, 96, 112, 128}
  assert cur.all_segments() == (12, 16, 30, 32, 48, 64, 80, 96, 112, 128)
  with pytest.raises(Exception, match="train.curriculum.bucket"):
    load_config(None, ["train.curriculum.bucket=0"])


def test_segment_lens_draw_a_cut_per_step_reproducibly_and_must_divide_every_draw():
  over = ["model.segment_len=16", "train.seq_len=128", "data.kind=babilong",
          "train.curriculum.max_segments=[4,8]", "train.curriculum.min_segments=4",
          "train.curriculum.bucket=4"]
  cfg = load_config(None, over + ["train.curriculum.segment_lens=[16,32,64]"])
  cuts = [Curriculum(cfg).cut(s) for s in range(300)]
  assert cuts == [Curriculum(cfg).cut(s) for s in range(300)]
  assert set(cuts) == {16, 32, 64}
  assert all(80 < cuts.count(n) < 120 for n in (16, 32, 64))
  # the count draw is not disturbed by the cut's
  plain = Curriculum(load_config(None, over))
  assert [plain.segments(s) for s in range(300)] == [Curriculum(cfg).segments(s)
                                                     for s in range(300)]
  assert {plain.cut(s) for s in range(50)} == {16}
  # 64 tokens of 128 divide 4 and 8 segments of 16, 128 does not divide 4 segments
  with pytest.raises(Exception, match=r"train\.curriculum\.segment_lens\[1\]: must be a "
                                      r"multiple of model\.segment_len=16 that divides every "
                                      r"sequence length the curriculum draws \(64, 128\), got 128"):
    load_config(None, over + ["train.curriculum.segment_lens=[16,128]"])
  with pytest.raises(Exception, match=r"segment_lens\[0\]: .* got 24"):
    load_config(None, over + ["train.curriculum.segment_lens=[24]"])


def test_without_curriculum_every_batch_spans_seq_len():
  cur = Curriculum(load_config(None, BABILONG))
  assert {cur.seq_len(s) for s in range(20)} == {256}


def test_input_state_resumes_exactly_and_is_json():
  cfg = load_config(None, BABILONG + ["train.curriculum.max_segments=[2,4]",
                                      "train.curriculum.stage_steps=3",
                                      "train.curriculum.min_segments=2"])
  tok = ByteTokenizer()
  first = TrainInput(cfg, tok)
  seen = [next(first) for _ in range(5)]
  assert {b["tokens"].shape[1] for b in seen} <= {129, 193, 257}
  state = json.loads(json.dumps(first.get_state()))
  expected = [next(first) for _ in range(4)]
  second = TrainInput(cfg, tok)
  second.set_state(state)
  assert second.step == 5
  for a, b in zip(expected, [next(second) for _ in range(4)]):
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    np.testing.assert_array_equal(a["loss_mask"], b["loss_mask"])


def test_hosts_read_disjoint_records_that_together_make_the_single_host_batch():
  cfg = load_config(None, BABILONG)
  tok = ByteTokenizer()
  whole = next(TrainInput(cfg, tok))["tokens"]
  halves = [next(TrainInput(cfg, tok, shard_index=i, shard_count=2))["tokens"]
            for i in range(2)]
  assert halves[0].shape == (2, 257)
  rows = {r.tobytes() for r in whole}
  assert {r.tobytes() for h in halves for r in h} == rows


def test_answer_mask_and_all_tokens_mask():
  cfg = load_config(None, BABILONG)
  batch = next(TrainInput(cfg, ByteTokenizer()))
  tok = ByteTokenizer()
  for row, mask in zip(batch["tokens"], batch["loss_mask"]):
    assert tok.decode(row[mask > 0]).strip() in {"bathroom", "bedroom", "garden", "hallway",
                                                 "kitchen", "office"}
    assert row[mask > 0][-1] == tok.eos_id
  every = score_all_tokens(batch, tok.pad_id)["loss_mask"]
  np.testing.assert_array_equal(every, (batch["tokens"] != tok.pad_id).astype(np.float32))
  all_cfg = load_config(None, BABILONG + ["train.loss_mask=all"])
  np.testing.assert_array_equal(next(TrainInput(all_cfg, tok))["loss_mask"], every)


def test_eval_set_is_fixed_and_not_drawn_from_the_training_stream():
  cfg = load_config(None, BABILONG + ["train.eval_samples=6", "train.eval_batch_size=4",
                                      "train.eval_segments=[2,4]"])
  tok = ByteTokenizer()
  held = eval_batches(cfg, tok)
  assert sorted(held) == [2, 4]
  assert [b["tokens"].shape for b in held[2]] == [(4, 129), (4, 129)]
  again = eval_batches(cfg, tok)
  np.testing.assert_array_equal(held[4][1]["tokens"], again[4][1]["tokens"])
  train = TrainInput(cfg, tok)
  train_rows = {r.tobytes() for _ in range(20) for r in next(train)["tokens"]}
  assert not train_rows & {r.tobytes() for b in held[4] for r in b["tokens"]}


def test_text_sources_validate_paths_before_anything_runs(tmp_path):
  from lm2_jax.config import ConfigError
  from lm2_jax.train import preflight
  cfg = load_config(None, ["data.kind=text", f"data.paths=[{tmp_path}/missing.txt]"])
  with pytest.raises(ConfigError, match=r"data\.paths\[0\]: .*missing\.txt: file not found"):
    preflight.check_data(cfg)


def test_a_tokenizer_in_the_work_directory_replaces_the_default_bytes(tmp_path):
  from lm2_jax.train import preflight
  cfg = load_config(None, BABILONG)
  assert preflight.resolve_tokenizer(cfg, str(tmp_path)) is cfg
  (tmp_path / "tokenizer.json").write_text("{}")
  resolved = preflight.resolve_tokenizer(cfg, str(tmp_path))
  assert resolved.data.tokenizer == str(tmp_path / "tokenizer.json")
  named = load_config(None, BABILONG + ["data.tokenizer=other/tokenizer.json"])
  assert preflight.resolve_tokenizer(named, str(tmp_path)) is named
