"""scripts/memory_decode.py: the labels it reads from a sample and the linear probe it fits."""

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import memory_decode  # pylint: disable=wrong-import-position,import-error

from lm2_jax.data import babilong as bl  # pylint: disable=wrong-import-position
from lm2_jax.data.tokenizers import ByteTokenizer  # pylint: disable=wrong-import-position


def test_actor_rooms_reads_the_moves_among_background_and_keeps_each_actors_last():
  text = ("The cat sat on the mat. Mary went to the kitchen. It rained on the garden all "
          "day. John moved to the office. Mary travelled to the hallway. The end")
  assert memory_decode.actor_rooms(text) == {"Mary": "hallway", "John": "office"}
  assert memory_decode.recency_answer(text, memory_decode.babi.ROOMS) == "hallway"
  # On an inserted-gap sample the asked actor's room is the sample's answer.
  for i in range(20):
    sample = bl.make_sample("qa1", "0k", i, 0, ByteTokenizer(), split="gap", gap=256)
    actor = sample["question"].removeprefix("Where is ").rstrip("?")
    assert memory_decode.actor_rooms(sample["input"])[actor] == sample["target"]


def test_line_rooms_orders_the_two_relations_whichever_way_they_are_said():
  text = ("The garden is south of the kitchen. A fox ran east of the mill. "
          "The hallway is south of the garden.")
  assert memory_decode.line_rooms(text) == {"first": "kitchen", "middle": "garden",
                                            "last": "hallway"}
  text = "The office is east of the hallway. The office is west of the bathroom."
  assert memory_decode.line_rooms(text) == {"first": "hallway", "middle": "office",
                                            "last": "bathroom"}
  assert memory_decode.line_rooms("The office is east of the hallway.") == {}


def test_last_give_takes_the_latest_give_and_skips_other_actions():
  text = ("Fred gave the milk to Bill. Bill got the apple there. Jeff handed the football "
          "to Mary. Mary discarded the football. The sun set.")
  assert memory_decode.last_give(text) == {"giver": "Jeff", "object": "football",
                                           "receiver": "Mary"}
  assert memory_decode.last_give("Fred got the apple there.") == {}
  # The recency answer names the last actor the facts name, not the background's words.
  assert memory_decode.recency_answer(text, memory_decode.babi.QA5_ACTORS) == "Mary"


def test_every_qa1_qa4_qa5_gap_sample_has_its_answer_as_the_asked_label():
  for task in ("qa1", "qa4", "qa5"):
    read, classes, asked_key = memory_decode.TASKS[task]
    for i in range(30):
      sample = bl.make_sample(task, "0k", i, 0, ByteTokenizer(), split="gap", gap=256)
      labels = read(sample["input"])
      key = asked_key(sample, labels)
      assert labels[key] == sample["target"] and labels[key] in classes[key], (task, i)


def test_the_probe_decodes_a_linear_code_and_not_noise():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 6, 400)
  code = rng.normal(size=(6, 300))
  signal = code[labels] + 0.5 * rng.normal(size=(400, 300))
  predicted, _ = memory_decode.ridge_probe(signal[:280], labels[:280], signal[280:], 6)
  assert (predicted == labels[280:]).mean() > 0.95
  noise = rng.normal(size=(400, 300))
  predicted, _ = memory_decode.ridge_probe(noise[:280], labels[:280], noise[280:], 6)
  assert (predicted == labels[280:]).mean() < 0.35   # chance is 1/6


def _spelled_out(samples, task, rng):
  """A memory that spells out every label of each sample: a perfect probe's input."""
  read, classes, _ = memory_decode.TASKS[task]
  keys = list(classes)
  memory = np.zeros((len(samples), 6 * len(keys)))
  for i, s in enumerate(samples):
    for key, word in read(s["input"]).items():
      memory[i, 6 * keys.index(key) + classes[key].index(word)] = 1.0
  return memory + 0.01 * rng.normal(size=memory.shape)


def test_decode_scores_only_the_held_out_samples():
  rng = np.random.default_rng(1)
  samples = [bl.make_sample("qa1", "0k", i, 0, ByteTokenizer()) for i in range(120)]
  result = memory_decode.decode(_spelled_out(samples, "qa1", rng), samples, 0.75)
  assert result["test_from"] == 90 and result["asked"]["n"] == 30
  assert result["asked"]["accuracy"] == 1.0 and result["every"]["n"] >= 30
  assert len(result["asked_right"]) == 30
  assert 0 < result["recency"]["accuracy"] < 1 and result["recency"]["n"] == 30
  assert result["majority"]["n"] == 30 and result["majority"]["accuracy"] < 1


def test_decode_reads_qa4_and_qa5_and_noise_decodes_near_the_majority_class():
  rng = np.random.default_rng(2)
  for task in ("qa4", "qa5"):
    samples = [bl.make_sample(task, "0k", i, 0, ByteTokenizer(), split="gap", gap=64)
               for i in range(160)]
    result = memory_decode.decode(_spelled_out(samples, task, rng), samples, 0.75, task)
    assert result["task"] == task and result["asked"]["n"] == 40
    assert result["asked"]["accuracy"] == 1.0 and result["every"]["n"] == 120
    noise = rng.normal(size=(160, 64))
    result = memory_decode.decode(noise, samples, 0.75, task)
    assert result["asked"]["accuracy"] < 0.6, (task, result["asked"])


def test_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys):
  out = tmp_path / "decode.json"
  assert memory_decode.main(["--checkpoint", str(tmp_path / "nowhere"),
                             "--output", str(out)]) == 2
  assert "nowhere" in capsys.readouterr().err
  assert memory_decode.main(["--checkpoint", str(tmp_path), "--train-fraction", "1.5",
                             "--output", str(out)]) == 2
  assert "--train-fraction" in capsys.readouterr().err
  assert memory_decode.main(["--checkpoint", str(tmp_path), "--gaps", "16", "--recentre",
                             "--output", str(out)]) == 2
  assert "--gaps '16' gives 1" in capsys.readouterr().err
  assert not out.exists()


def test_against_the_model_pairs_the_probe_with_the_answers_and_skips_unasked_samples():
  probe = [True, True, False, None, True, False]
  model = [True, False, False, True, False, True]
  c = memory_decode.against_the_model(probe, model)
  assert (c["both"], c["probe_only"], c["model_only"], c["neither"]) == (1, 2, 1, 1)
  assert c["model"]["n"] == 5 and c["model"]["accuracy"] == 0.4
  assert 0 < c["p"] <= 1


@pytest.mark.slow
def test_decodes_a_trained_checkpoint_and_pairs_it_with_the_models_answers(
    tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(ROOT)
  import train  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "run"
  assert train.main(["--config", "configs/babilong_tiny.yaml", "--workdir", str(workdir),
                     "train.steps=2", "train.batch_size=8", "train.eval_samples=8",
                     "train.eval_batch_size=8", "train.eval_segments=[4]",
                     "train.eval_memory_trace=false", "train.async_checkpoint=false"]) == 0
  out = tmp_path / "decode.json"
  assert memory_decode.main(["--checkpoint", str(workdir), "--task", "qa5", "--gaps", "0,2",
                             "--num-samples", "40", "--train-fraction", "0.5", "--answers",
                             "--transfer", "--recentre",
                             "--max-new-tokens", "4", "--output", str(out)]) == 0
  result = json.loads(out.read_text())
  assert result["task"] == "qa5" and set(result["gaps"]) == {"+0", "+2"}
  for cell in result["gaps"].values():
    assert cell["asked"]["n"] == 20 and cell["against_model"]["model"]["n"] == 20
    assert len(cell["against_model"]["outputs"]) == 20
    c = cell["against_model"]
    assert c["both"] + c["probe_only"] == round(cell["asked"]["accuracy"] * 20)
  transfer = result["gaps"]["+2"]["transfer"]
  assert transfer["from"] == "+0" and transfer["asked"]["n"] == 20
  assert "transfer" not in result["gaps"]["+0"]
  # Read as it is, the memory gives the model's own answers: the intervention's path (read
  # to a boundary, swap the memory, go on one-shot) is the engine's streaming, exactly.
  recentred = result["gaps"]["+2"]["recentred"]["moves"]
  assert set(recentred) == set(memory_decode.MOVES)
  assert 0 <= result["gaps"]["+2"]["recentred"]["shared_drift"] <= 1
  assert recentred["as_is"]["outputs"] == result["gaps"]["+2"]["against_model"]["outputs"]
  assert recentred["mean"]["n"] == 20 and 0 <= recentred["mean"]["p"] <= 1
  assert "the model answers" in capsys.readouterr().out


def test_a_probe_carried_to_a_shifted_code_reads_it_only_with_the_new_statistics():
  rng = np.random.default_rng(3)
  samples = [bl.make_sample("qa5", "0k", i, 0, ByteTokenizer(), split="gap", gap=64)
             for i in range(160)]
  near = _spelled_out(samples, "qa5", rng)
  far = 0.2 * near + 5.0 + 0.002 * rng.normal(size=near.shape)  # weaker, offset: same code
  carried = memory_decode.decode(far, samples, 0.75, "qa5", fit_memory_BxF=near)
  renormed = memory_decode.decode(far, samples, 0.75, "qa5", fit_memory_BxF=near,
                                  own_stats=True)
  assert renormed["asked"]["accuracy"] == 1.0
  assert carried["asked"]["accuracy"] < 0.6


def test_the_slot_mean_move_shifts_each_slot_evenly_onto_the_near_slot_means():
  rng = np.random.default_rng(4)
  width, shape = 4, (1, 3, 4)
  near = rng.normal(size=(50, 3 * width))
  stats = memory_decode.unit_stats(near)
  far = rng.normal(size=(6, 3 * width)) + 7.0
  moved = memory_decode.MOVES["slot_mean"](far, stats, None, shape)
  # Within a slot the units keep their differences; the slot's mean is the near one.
  np.testing.assert_allclose(np.diff(moved.reshape(6, 3, width), axis=-1),
                             np.diff(far.reshape(6, 3, width), axis=-1), atol=1e-9)
  np.testing.assert_allclose(moved.reshape(6, 3, width).mean(-1),
                             np.broadcast_to(near.mean(0).reshape(3, width).mean(-1), (6, 3)),
                             atol=1e-9)
  back = memory_decode.MOVES["mean_and_scale"](far, stats, memory_decode.unit_stats(far), shape)
  np.testing.assert_allclose(back.mean(0), stats[0], atol=1e-9)


def test_the_unit_mean_move_shifts_each_unit_evenly_over_the_slots_of_its_layer():
  rng = np.random.default_rng(5)
  shape = (2, 3, 4)  # layers, slots, units
  near = rng.normal(size=(50, 24))
  stats = memory_decode.unit_stats(near)
  far = rng.normal(size=(6, 24)) + rng.normal(size=(1, 2, 1, 4)).repeat(3, 2).reshape(1, 24)
  moved = memory_decode.MOVES["unit_mean"](far, stats, None, shape).reshape(6, *shape)
  # Across the slots each unit keeps its differences; its mean over them is the near one.
  np.testing.assert_allclose(np.diff(moved, axis=2), np.diff(far.reshape(6, *shape), axis=2),
                             atol=1e-9)
  np.testing.assert_allclose(moved.mean(2), np.broadcast_to(
      near.mean(0).reshape(shape).mean(1), (6, 2, 4)), atol=1e-9)
  # A drift that every slot shares is all shared; one that sums to zero over them is none.
  common = np.tile(rng.normal(size=(2, 1, 4)), (1, 3, 1)).reshape(1, 24)
  assert memory_decode.shared_drift(near, near + common, shape) == pytest.approx(1.0)
  opposed = rng.normal(size=(2, 3, 4))
  opposed = (opposed - opposed.mean(1, keepdims=True)).reshape(1, 24)
  assert memory_decode.shared_drift(near, near + opposed, shape) == pytest.approx(0.0, abs=1e-12)
