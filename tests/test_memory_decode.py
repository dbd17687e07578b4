"""scripts/memory_decode.py: the labels it reads from a sample and the linear probe it fits."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))

import memory_decode  # pylint: disable=wrong-import-position,import-error

from lm2_jax.data import babilong as bl  # pylint: disable=wrong-import-position
from lm2_jax.data.tokenizers import ByteTokenizer  # pylint: disable=wrong-import-position


def test_actor_rooms_reads_the_moves_among_background_and_keeps_each_actors_last():
  text = ("The cat sat on the mat. Mary went to the kitchen. It rained on the garden all "
          "day. John moved to the office. Mary travelled to the hallway. The end")
  assert memory_decode.actor_rooms(text) == {"Mary": "hallway", "John": "office"}
  assert memory_decode.last_room(text) == "hallway"
  # On an inserted-gap sample the asked actor's room is the sample's answer.
  for i in range(20):
    sample = bl.make_sample("qa1", "0k", i, 0, ByteTokenizer(), split="gap", gap=256)
    actor = sample["question"].removeprefix("Where is ").rstrip("?")
    assert memory_decode.actor_rooms(sample["input"])[actor] == sample["target"]


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


def test_decode_scores_only_the_held_out_samples():
  rng = np.random.default_rng(1)
  samples = [bl.make_sample("qa1", "0k", i, 0, ByteTokenizer()) for i in range(120)]
  # A memory that spells out every actor's room: a perfect probe's input.
  memory = np.zeros((120, 24))
  for i, s in enumerate(samples):
    for actor, room in memory_decode.actor_rooms(s["input"]).items():
      memory[i, 6 * memory_decode.babi.ACTORS.index(actor)
             + memory_decode.babi.ROOMS.index(room)] = 1.0
  memory += 0.01 * rng.normal(size=memory.shape)
  result = memory_decode.decode(memory, samples, 0.75)
  assert result["test_from"] == 90 and result["asked_actor"]["n"] == 30
  assert result["asked_actor"]["accuracy"] == 1.0 and result["every_actor"]["n"] >= 30
  assert len(result["asked_right"]) == 30
  assert 0 < result["last_room"]["accuracy"] < 1 and result["last_room"]["n"] == 30


def test_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys):
  out = tmp_path / "decode.json"
  assert memory_decode.main(["--checkpoint", str(tmp_path / "nowhere"),
                             "--output", str(out)]) == 2
  assert "nowhere" in capsys.readouterr().err
  assert memory_decode.main(["--checkpoint", str(tmp_path), "--train-fraction", "1.5",
                             "--output", str(out)]) == 2
  assert "--train-fraction" in capsys.readouterr().err
  assert not out.exists()
