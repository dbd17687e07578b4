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


# Episodes: rows 2 and 3 of 4 hold one long sample per carry cycle of 3 steps, over
# sequences of 2-4 segments of 64 tokens.
EPISODES = BABILONG + ["train.curriculum.max_segments=[4]", "train.curriculum.min_segments=2",
                       "train.memory_carry_steps=3", "data.episode_rows=2",
                       "data.interleaved_questions=true", "data.recall_questions=2"]


def _cycles(steps: int, row: int, rows: int = 4, carry: int = 3) -> dict[int, list[int]]:
  from lm2_jax.train.state import carry_phase  # pylint: disable=g-import-not-at-top
  out: dict[int, list[int]] = {}
  for s in range(steps):
    out.setdefault(carry_phase(s, row, rows, carry)[0], []).append(s)
  return out


def _episode_text(batches, steps, row):
  """The tokens and mask of `row` over `steps`, the one-token overlaps removed."""
  tokens = [batches[s]["tokens"][row] for s in steps]
  masks = [batches[s]["loss_mask"][row] for s in steps]
  for a, b in zip(tokens, tokens[1:]):
    assert a[-1] == b[0]    # a step's last target is the next step's first input
  for a, b in zip(masks, masks[1:]):
    assert a[-1] == b[0]
  return (np.concatenate([t[:-1] for t in tokens] + [tokens[-1][-1:]]),
          np.concatenate([m[:-1] for m in masks] + [masks[-1][-1:]]))


def test_episode_rows_hold_one_long_sample_per_carry_cycle():
  """data.episode_rows: from one memory restart to the next, an episode row reads one
  sample whose stories span the cycle's sequences; the other rows are the usual records."""
  tok = ByteTokenizer()
  cfg = load_config(None, EPISODES)
  inputs = TrainInput(cfg, tok)
  batches = [next(inputs) for _ in range(10)]
  records = TrainInput(load_config(None, [o for o in EPISODES if "episode" not in o]), tok)
  for batch, plain in zip(batches, (next(records) for _ in range(10))):
    np.testing.assert_array_equal(batch["tokens"][:2], plain["tokens"][:2])
    assert not np.array_equal(batch["tokens"][2:], plain["tokens"][2:])
  rooms = {"bathroom", "bedroom", "garden", "hallway", "kitchen", "office"}
  for row in (2, 3):
    cycles = _cycles(10, row)
    assert len(cycles) >= 4
    for cycle, steps in cycles.items():
      tokens, mask = _episode_text(batches, steps, row)
      assert tokens[0] == tok.bos_id and tok.bos_id not in tokens[1:]
      # The scored tokens are the answers (rooms) and the EOS closing each story.
      answers = tok.decode(tokens[(mask > 0) & (tokens != tok.eos_id)]).split()
      stories = int(((mask > 0) & (tokens == tok.eos_id)).sum())
      assert answers and set(answers) <= rooms
      assert stories >= 1 or steps[-1] == 9   # a cycle the ten steps cut short may hold none
      assert tok.decode(tokens).count("Where is") >= len(answers)
  # Resumed from a saved position, the episode rows continue where they were.
  again = TrainInput(cfg, tok)
  state = inputs.get_state()
  more = [next(inputs) for _ in range(3)]
  again.set_state(json.loads(json.dumps(state)))
  for a, b in zip(more, (next(again) for _ in range(3))):
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    np.testing.assert_array_equal(a["loss_mask"], b["loss_mask"])
  # With two hosts, the second holds global rows 2 and 3: the same episodes.
  second = TrainInput(cfg, tok, shard_index=1, shard_count=2)
  for step in range(4):
    np.testing.assert_array_equal(next(second)["tokens"], batches[step]["tokens"][2:])


def test_episode_rows_need_a_carried_memory():
  from lm2_jax.config import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=r"^data\.episode_rows: .*train\.memory_carry_steps > 0"):
    load_config(None, BABILONG + ["data.episode_rows=1"])
  with pytest.raises(ConfigError, match=r"^data\.episode_rows: must be in \[0, "
                                        r"train\.batch_size=4\], got 5"):
    load_config(None, BABILONG + ["train.memory_carry_steps=2", "data.episode_rows=5"])


def test_an_episode_read_step_by_step_with_the_carried_memory_is_read_as_one_piece():
  """What the train step computes on an episode row, its memory carried from step to step
  and restarted where `carry_phase` says, is the model's output on the whole episode."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from lm2_jax.model import build_model  # pylint: disable=g-import-not-at-top
  from lm2_jax.train.state import carry_phase  # pylint: disable=g-import-not-at-top

  cfg = load_config(None, EPISODES + ["model.attention_scope=segment"])
  model = build_model(cfg.model)
  inputs = TrainInput(cfg, ByteTokenizer())
  batches = [next(inputs) for _ in range(7)]
  params = model.init(jax.random.key(0), jnp.asarray(batches[0]["tokens"][:, :64]))
  apply = jax.jit(lambda x, m, f: model.apply(params, x, memory_MxBxNxD=m, fresh_B=f))
  m = cfg.model
  memory = jnp.zeros((m.num_memory_layers, 4, m.memory.num_slots, m.width))
  logits = []
  for step, batch in enumerate(batches):
    fresh = np.array([carry_phase(step, b, 4, 3)[1] == 0 or step == 0 for b in range(4)])
    out, memory = apply(jnp.asarray(batch["tokens"][:, :-1]), memory, jnp.asarray(fresh))
    logits.append(np.asarray(out))
  row = 3
  steps = next(s for s in _cycles(7, row).values() if s[0] > 0 and len(s) == 3)
  tokens, _ = _episode_text(batches, steps, row)
  whole = np.asarray(model.apply(params, jnp.asarray(tokens[None, :-1])))[0]
  stepwise = np.concatenate([logits[s][row] for s in steps])
  np.testing.assert_allclose(stepwise, whole, rtol=1e-4, atol=1e-4)
