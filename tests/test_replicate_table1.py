"""scripts/replicate_table1.py --staged and the staged recipe it trains (binding_ablation)."""

import dataclasses
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import binding_ablation  # pylint: disable=wrong-import-position,import-error
import replicate_table1  # pylint: disable=wrong-import-position,import-error
from retention_ablation import MEASURED_INIT, steps_of  # pylint: disable=wrong-import-position,import-error

from lm2_jax.config import load_config  # pylint: disable=wrong-import-position
from lm2_jax.summary import count_params  # pylint: disable=wrong-import-position

STAGED = binding_ablation.STAGED
LENGTHS = ["0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k"]


def _config(name, root):
  return load_config(os.path.join(ROOT, binding_ablation.CONFIG),
                     [MEASURED_INIT, *binding_ablation.overrides_of(name, root)])


@pytest.mark.parametrize("kind", ["rmt", "vanilla"])
def test_a_baseline_stage_is_its_lm2_counterpart_but_for_the_model(tmp_path, kind):
  root = str(tmp_path)
  previous = None
  for stage in STAGED[kind]:
    ours, lm2 = _config(stage, root), _config(stage.replace(f"_{kind}_", "_lm2_"), root)
    assert ours.data == lm2.data, stage
    # The same schedule and budget; only the parent differs: this model's previous stage.
    assert dataclasses.replace(ours.train, init_from=lm2.train.init_from) == lm2.train, stage
    assert ours.train.init_from == (os.path.join(root, previous) if previous else "")
    assert ours.model.segment_len == lm2.model.segment_len == 16
    if kind == "rmt":
      assert ours.model.memory.kind == "rmt"
      lm2_params = count_params(lm2)["total_params"]
      assert abs(count_params(ours)["total_params"] - lm2_params) < 0.01 * lm2_params
    else:
      assert (ours.model.memory.kind, ours.model.attention_scope) == ("none", "full")
    previous = stage
  # LM2 and RMT end carrying their memory through episodes; the vanilla model, which has
  # none to carry, ends with the same 800 steps at the same length.
  last = _config(STAGED[kind][-1], root)
  assert last.train.memory_carry_steps == (40 if kind == "rmt" else 0)
  assert steps_of(binding_ablation.VARIANTS[STAGED[kind][-1]]) == 800


def test_the_five_task_lineage_is_lm2s_on_qa1_to_qa5_with_its_own_tokenizer(tmp_path):
  root, previous = str(tmp_path), None
  five = ("qa1", "qa2", "qa3", "qa4", "qa5")
  for stage, lm2_stage in zip(STAGED["lm2_qa1to5"], STAGED["lm2"]):
    ours, lm2 = _config(stage, root), _config(lm2_stage, root)
    assert ours.data.tasks == ours.data.recall_tasks == five
    assert ours.data.tokenizer == os.path.join(root, "bpe512_qa1to5", "tokenizer.json")
    assert ours.train.init_from == (os.path.join(root, previous) if previous else "")
    assert ours.model == lm2.model
    # Stage 1 holds twice the tokens per sequence (half the rows) so longer stories fit.
    if previous is None:
      assert (ours.train.seq_len, ours.train.batch_size) == (256, 16)
      assert (lm2.train.seq_len, lm2.train.batch_size) == (128, 32)
    else:
      assert (ours.train.seq_len, ours.train.steps) == (lm2.train.seq_len, lm2.train.steps)
    previous = stage
  calls = []
  binding_ablation.train_variant(STAGED["lm2_qa1to5"][0], root, 0,
                                 run=lambda cmd, **_: calls.append(cmd))
  assert calls[0][calls[0].index("--tasks") + 1] == "qa1,qa2,qa3,qa4,qa5"
  assert calls[0][calls[0].index("--output") + 1] == ours.data.tokenizer



def test_the_packed_five_task_lineage_differs_only_in_packing_stage_one(tmp_path):
  root, previous = str(tmp_path), None
  for stage, unpacked in zip(STAGED["lm2_qa1to5_packed"], STAGED["lm2_qa1to5"]):
    ours, theirs = _config(stage, root), _config(unpacked, root)
    assert ours.data == dataclasses.replace(theirs.data, pack_stories=previous is None)
    assert ours.train.init_from == (os.path.join(root, previous) if previous else "")
    assert dataclasses.replace(ours.train, init_from=theirs.train.init_from) == theirs.train
    assert ours.model == theirs.model
    previous = stage


@pytest.mark.parametrize("task", ["qa1", "qa2", "qa3", "qa4", "qa5"])
def test_a_per_task_arm_is_the_more_arm_on_its_own_task_alone(tmp_path, task):
  last = STAGED["lm2_qa1to5_packed"][-1]
  ours, control = _config(f"{last}_{task}", str(tmp_path)), _config(f"{last}_more", str(tmp_path))
  assert ours.data.tasks == ours.data.recall_tasks == (task,)
  assert control.data.tasks == control.data.recall_tasks == ("qa1", "qa2", "qa3", "qa4", "qa5")
  assert ours.data == dataclasses.replace(control.data, tasks=(task,), recall_tasks=(task,))
  # The same weights to start from and the same 800 steps; the model is untouched.
  assert ours.train == control.train
  assert ours.train.init_from == os.path.join(str(tmp_path), last)
  assert ours.model == control.model


def test_the_longer_stage_one_continues_the_packed_stage_one_the_same_way(tmp_path):
  first = STAGED["lm2_qa1to5_packed"][0]
  ours, parent = _config(f"{first}_longer", str(tmp_path)), _config(first, str(tmp_path))
  assert ours.data == parent.data and ours.model == parent.model
  assert ours.train.init_from == os.path.join(str(tmp_path), first)
  assert (ours.train.steps, ours.train.learning_rate) == (3000, 1.0e-3)
  assert dataclasses.replace(ours.train, init_from="", steps=parent.train.steps,
                             learning_rate=parent.train.learning_rate) == parent.train


def test_the_size_pilot_differs_from_stage_one_only_in_steps_and_width(tmp_path):
  first = STAGED["lm2_qa1to5_packed"][0]
  parent = _config(first, str(tmp_path))
  short, wide = (_config(f"{first}_{arm}", str(tmp_path)) for arm in ("short", "wide_short"))
  assert short.train == wide.train == dataclasses.replace(parent.train, steps=1000)
  assert short.data == wide.data == parent.data and short.model == parent.model
  assert (wide.model.width, wide.model.mlp_width) == (128, 512)
  assert wide.model.initializer_std == pytest.approx(128 ** -0.5, rel=1e-3)
  assert dataclasses.replace(wide.model, width=64, mlp_width=256,
                             initializer_std=parent.model.initializer_std) == parent.model


def test_train_variant_makes_the_tokenizer_first_and_trains_a_stage_once(tmp_path):
  calls = []
  name = STAGED["rmt"][1]
  workdir = binding_ablation.train_variant(name, str(tmp_path), 3,
                                           run=lambda cmd, **_: calls.append(cmd))
  assert workdir == os.path.join(tmp_path, name)
  assert [c[1:3] for c in calls] == [["-m", "lm2_jax.data.tokenizer_training"],
                                     ["train.py", "--config"]]
  assert "train.seed=3" in calls[1]
  assert f"train.init_from={tmp_path}/{STAGED['rmt'][0]}" in calls[1]
  # A rerun reuses what is there: the tokenizer and the stage's last checkpoint.
  os.makedirs(tmp_path / "bpe512")
  (tmp_path / "bpe512" / "tokenizer.json").write_text("{}")
  os.makedirs(tmp_path / name / "checkpoints" / str(steps_of(binding_ablation.VARIANTS[name])))
  calls.clear()
  binding_ablation.train_variant(name, str(tmp_path), 3, run=lambda cmd, **_: calls.append(cmd))
  assert not calls



@pytest.mark.parametrize("extra, eval_seed", [([], "3"), (["--eval-seed", "1"], "1")])
def test_a_second_training_seed_can_be_scored_on_the_first_seeds_samples(
    tmp_path, monkeypatch, extra, eval_seed):
  trained, commands = [], []
  monkeypatch.setattr(binding_ablation, "train_variant",
                      lambda name, root, seed: trained.append(seed) or os.path.join(root, name))
  monkeypatch.setattr(binding_ablation.subprocess, "run",
                      lambda cmd, **_: commands.append(cmd) or
                      dataclasses.make_dataclass("Done", [("returncode", int)])(0))
  name = STAGED["lm2"][0]
  assert binding_ablation.main(["--variants", name, "--seed", "3", "--workdir",
                                str(tmp_path), *extra]) == 0
  assert trained == [3]  # the training seed is --seed either way
  evaluate = next(c for c in commands if c[1] == "eval.py")
  assert evaluate[evaluate.index("--seed") + 1] == eval_seed

def test_max_length_caps_one_model():
  caps = replicate_table1._max_lengths(["vanilla=16k"], ["lm2", "vanilla"], LENGTHS)  # pylint: disable=protected-access
  assert caps == {"lm2": ",".join(LENGTHS), "vanilla": "0k,1k,2k,4k,8k,16k"}


@pytest.mark.parametrize("argv, expected", [
    (["--staged", "--tasks", "qa2"], "--staged trains qa1"),
    (["--staged", "train.steps=5"], "--staged trains qa1"),
    (["--max-length", "gpt=16k"], "--max-length 'gpt=16k'"),
    (["--max-length", "vanilla"], "--max-length 'vanilla'"),
    (["--max-length", "vanilla=lots"], "--lengths"),
    (["--models", "lm2,gpt"], "--models 'lm2,gpt'"),
])
def test_bad_arguments_exit_2_before_any_work(tmp_path, capsys, argv, expected):
  workdir = tmp_path / "t1"
  assert replicate_table1.main([*argv, "--workdir", str(workdir)]) == 2
  assert expected in capsys.readouterr().err
  assert not workdir.exists()


def test_staged_trains_each_models_stages_then_evaluates_capped_models_apart(
    tmp_path, monkeypatch):
  """The staged protocol end to end with the commands recorded instead of run."""
  commands = []

  def fake_run(cmd, log):
    del log
    commands.append(cmd)
    if cmd[1] == "eval.py":
      names = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--name"]
      lengths = cmd[cmd.index("--lengths") + 1].split(",")
      cell = {"accuracy": 0.5, "accuracy_word": 0.5, "n": 2, "ci95": [0.1, 0.9],
              "ci95_word": [0.1, 0.9]}
      report = {"models": [{"name": n, "results": {"qa1": {x: cell for x in lengths}}}
                           for n in names]}
      with open(cmd[cmd.index("--output") + 1], "w", encoding="utf-8") as f:
        json.dump(report, f)
    return 0.0

  monkeypatch.setattr(replicate_table1, "_run", fake_run)
  workdir = tmp_path / "t1"
  assert replicate_table1.main(["--staged", "--models", "lm2,vanilla", "--max-length",
                                "vanilla=4k", "--workdir", str(workdir),
                                "--num-samples", "2"]) == 0
  trained = [c[c.index("--workdir") + 1] for c in commands if c[1] == "train.py"]
  assert trained == [str(workdir / s) for s in STAGED["lm2"] + STAGED["vanilla"]]
  evals = [c for c in commands if c[1] == "eval.py"]
  assert [c[c.index("--lengths") + 1] for c in evals] == [",".join(LENGTHS), "0k,1k,2k,4k"]
  assert evals[0][evals[0].index("--checkpoint") + 1] == str(workdir / STAGED["lm2"][-1])
  with open(workdir / "results.json", encoding="utf-8") as f:
    results = json.load(f)
  assert list(results["results"]["lm2"]["qa1"]) == LENGTHS
  assert list(results["results"]["vanilla"]["qa1"]) == ["0k", "1k", "2k", "4k"]
  assert results["protocol"] == "staged"
