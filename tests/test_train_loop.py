"""`lm2_jax.train.run`: it learns, it resumes on another mesh, and it refuses bad input early."""

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from lm2_jax import checkpoint
from lm2_jax.config import ConfigError, load_config
from lm2_jax.train import TrainingError, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = ["model.num_layers=2", "model.width=32", "model.mlp_width=64", "model.num_heads=2",
         "model.num_kv_heads=1", "model.segment_len=16", "model.memory.num_slots=4",
         "model.memory.num_heads=2", "train.seq_len=32", "train.batch_size=8",
         "train.learning_rate=3e-3", "train.warmup_steps=0", "train.log_every=1",
         "train.async_checkpoint=false"]


def toy_text(path, docs=64):
  """A learnable stream: short sentences over a vocabulary of a dozen words."""
  rng = random.Random(0)
  words = "the cat sat on a mat and then it ran to the red door".split()
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(docs):
      f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(30))}) + "\n")
  return str(path)


def text_config(tmp_path, *over):
  data = toy_text(tmp_path / "toy.jsonl")
  return load_config(None, SMALL + ["data.kind=text", f"data.paths=[{data}]", *over])


def losses(workdir):
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      out[record["step"]] = record["loss"]   # a resumed run's records come last
  return out


@pytest.mark.slow
def test_loss_falls_and_an_8_device_checkpoint_resumes_on_1_device(tmp_path, capsys):
  cfg = text_config(tmp_path, "train.steps=8", "train.checkpoint_every=4",
                    "train.lr_schedule=constant")
  eight = tmp_path / "eight"
  result = run(cfg, str(eight))
  assert result.step == 8 and result.checkpoint.endswith("checkpoints/8")
  first = losses(eight)
  assert sorted(first) == list(range(1, 9))
  assert first[8] < 0.8 * first[1], first            # it learns the toy stream
  assert "mesh: data=8 fsdp=1 tensor=1 over 8 cpu device(s)" in capsys.readouterr().out

  # Continue from the 8-device checkpoint of step 4 on one device: steps 5-8 repeat.
  one = tmp_path / "one"
  os.makedirs(one / "checkpoints")
  shutil.copytree(eight / "checkpoints" / "4", one / "checkpoints" / "4")
  cfg1 = load_config(None, [*SMALL, "data.kind=text", f"data.paths=[{tmp_path}/toy.jsonl]",
                            "train.steps=8", "train.checkpoint_every=4",
                            "train.lr_schedule=constant", "mesh.data=1"])
  result = run(cfg1, str(one), devices=jax.devices()[:1])
  assert "resumed from" in capsys.readouterr().out
  second = losses(one)
  assert sorted(second) == [5, 6, 7, 8]
  # One device sums in another order than eight: equal to float32 rounding.
  np.testing.assert_allclose([second[s] for s in range(5, 9)],
                             [first[s] for s in range(5, 9)], rtol=2e-5)


def _init_params(cfg):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from lm2_jax.model import build_model  # pylint: disable=g-import-not-at-top
  return nn.unbox(build_model(cfg.model).init(
      jax.random.key(0), np.zeros((1, cfg.model.segment_len), np.int32))["params"])


@pytest.mark.slow
def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path,
                                                                              capsys):
  cfg = text_config(tmp_path, "train.steps=6", "train.checkpoint_every=1",
                    "train.learning_rate=1e30", "train.grad_clip=0.0", "train.weight_decay=0.0",
                    "mesh.data=1")
  # Start from a parameters-only checkpoint (what the Hugging Face import writes).
  checkpoint.save_params(str(tmp_path / "wd"), cfg, _init_params(cfg), step=0)
  with pytest.raises(TrainingError, match=r"step 2: the loss is nan; training stopped, the "
                                          r"last good checkpoint is .*checkpoints/1$"):
    run(cfg, str(tmp_path / "wd"), devices=jax.devices()[:1])
  assert "starting from the parameters of" in capsys.readouterr().out
  assert sorted(os.listdir(tmp_path / "wd" / "checkpoints")) == ["0", "1"]


# --- bad input: one line naming the key, before anything is compiled or written -----------


def _bad(tmp_path, *over):
  return text_config(tmp_path, "train.steps=2", *over)


@pytest.mark.parametrize("over, message", [
    (["data.paths=[/nonexistent/corpus.jsonl]"],
     r"^data\.paths\[0\]: /nonexistent/corpus\.jsonl: file not found$"),
    (["model.vocab_size=200"],
     r"^data\.tokenizer=byte and model\.vocab_size=200 do not fit: model vocab_size=200 is "
     r"smaller than the tokenizer's 259"),
    (["mesh.data=2", "mesh.fsdp=2"], r"^mesh: mesh\.data=2 x mesh\.fsdp=2 x mesh\.tensor=1 "
                                     r"needs 4 devices, but 8 are available$"),
    (["mesh.data=-1", "mesh.tensor=3"], r"^mesh: .* cannot be completed to 8 devices"),
    (["train.batch_size=12"], r"^train\.batch_size: 12 \(in 1 micro-batches of 12\) is not "
                              r"divisible by the data-parallel size 8 \(mesh\.data=8 x "
                              r"mesh\.fsdp=1\)$"),
    (["train.batch_size=16", "train.microbatches=4"], r"^train\.batch_size: 16 \(in 4 "
                                                      r"micro-batches of 4\) is not divisible"),
])
def test_bad_input_stops_with_one_line_before_writing(tmp_path, over, message):
  wd = tmp_path / "wd"
  with pytest.raises(ConfigError, match=message):
    run(_bad(tmp_path, *over), str(wd))
  assert not os.path.exists(wd) or os.listdir(wd) == []


def test_an_unwritable_workdir_is_named(tmp_path):
  (tmp_path / "a_file").write_text("")
  with pytest.raises(ConfigError, match=r"^--workdir .*a_file/wd: cannot write there"):
    run(_bad(tmp_path), str(tmp_path / "a_file" / "wd"))


def test_a_shape_changing_config_is_refused_and_nothing_is_overwritten(tmp_path):
  cfg = _bad(tmp_path)
  wd = tmp_path / "wd"
  checkpoint.save_params(str(wd), cfg, _init_params(cfg), step=5)
  before = {p: os.path.getmtime(os.path.join(d, p)) for d, _, files in os.walk(wd)
            for p in files}
  config_text = (wd / "config.yaml").read_text()
  wider = _bad(tmp_path, "model.mlp_width=96", "model.num_layers=3")
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"checkpoints/5: the config changes the model's shapes against this "
                           r"checkpoint: model\.mlp_width: checkpoint 64, config 96; "
                           r"model\.num_layers: checkpoint 2, config 3"):
    run(wider, str(wd))
  assert (wd / "config.yaml").read_text() == config_text
  after = {p: os.path.getmtime(os.path.join(d, p)) for d, _, files in os.walk(wd)
           for p in files}
  assert after == before


def test_the_command_line_prints_one_line_and_exits_2(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), "--config",
       os.path.join(ROOT, "configs", "babilong_tiny.yaml"), "--workdir", str(tmp_path / "wd"),
       "data.kind=text", "data.paths=[/nonexistent.jsonl]"],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip() == "error: data.paths[0]: /nonexistent.jsonl: file not found"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), "--config",
       os.path.join(ROOT, "configs", "babilong_tiny.yaml"), "train.stesp=3"],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip() == ("error: train.stesp: unknown key; did you mean "
                                 "'train.steps'?")


def test_init_from_starts_a_new_run_from_another_runs_parameters(tmp_path, capsys):
  """The next curriculum stage starts from the previous stage's weights, at step 0 with a
  fresh optimizer; a missing or ill-fitting source is refused before anything is written."""
  cfg = _bad(tmp_path)
  stage1 = str(tmp_path / "stage1")
  params = jax.tree.map(lambda p: p + 0.5, _init_params(cfg))   # unlike any initialisation
  checkpoint.save_params(stage1, cfg, params, step=7)
  wd = tmp_path / "stage2"
  result = run(_bad(tmp_path, "train.steps=1", "train.learning_rate=1e-9",
                    "train.weight_decay=0.0", f"train.init_from={stage1}"), str(wd))
  assert result.step == 1
  assert f"new run from the parameters of {stage1} (step 7)" in capsys.readouterr().out
  _, trained, step = checkpoint.load_params(str(wd))
  assert step == 1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), trained, params)

  with pytest.raises(ConfigError, match=r"^train\.init_from: .*nowhere: no such checkpoint"):
    run(_bad(tmp_path, f"train.init_from={tmp_path / 'nowhere'}"), str(tmp_path / "wd2"))
  assert not os.path.exists(tmp_path / "wd2")
  with pytest.raises(checkpoint.CheckpointError, match=r"model\.mlp_width: checkpoint 64, "
                                                       r"config 96"):
    run(_bad(tmp_path, "model.mlp_width=96", f"train.init_from={stage1}"),
        str(tmp_path / "wd3"))
  assert not os.path.exists(tmp_path / "wd3") or os.listdir(tmp_path / "wd3") == []


def test_a_carried_memory_is_checkpointed_and_resumes_exactly(tmp_path, capsys):
  """train.memory_carry_steps: a run stopped at a checkpoint and resumed computes the
  uninterrupted run's losses, the memory its rows carry included."""
  over = ("train.memory_carry_steps=2", "train.checkpoint_every=2", "train.lr_schedule=constant")
  whole = tmp_path / "whole"
  run(text_config(tmp_path, "train.steps=4", *over), str(whole))
  split = tmp_path / "split"
  run(text_config(tmp_path, "train.steps=2", *over), str(split))
  assert os.path.isdir(split / "checkpoints" / "2" / "memory")
  run(text_config(tmp_path, "train.steps=4", *over), str(split))
  assert "resumed from" in capsys.readouterr().out
  assert losses(split) == losses(whole)
  # Without the carried memory step 3 computes something else.
  shutil.rmtree(split / "checkpoints" / "4")
  shutil.rmtree(split / "checkpoints" / "2" / "memory")
  os.remove(split / "metrics.jsonl")
  run(text_config(tmp_path, "train.steps=4", *over), str(split))
  assert "carried memory restarts" in capsys.readouterr().out
  assert losses(split)[3] != losses(whole)[3]


@pytest.mark.slow
def test_segment_lens_cut_each_batch_where_the_draw_says(tmp_path, capsys):
  """train.curriculum.segment_lens: the batch of a step is cut into segments of the drawn
  length, and only its cut differs. The first step's loss is the initial model's loss on the
  same batch in segments of 32 (not of model.segment_len=16), and the run's saved config keeps
  segments of 16 for evaluation and inference."""
  from lm2_jax.data.tokenizers import ByteTokenizer  # pylint: disable=g-import-not-at-top
  from lm2_jax.model import build_model  # pylint: disable=g-import-not-at-top
  from lm2_jax.train.inputs import TrainInput  # pylint: disable=g-import-not-at-top
  from lm2_jax.train.loss import loss_terms, split_batch  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  cfg = text_config(tmp_path, "train.steps=1", "train.curriculum.segment_lens=[32]")
  wd = str(tmp_path / "wd")
  run(cfg, wd)
  assert "training cuts batches into 32" in capsys.readouterr().out
  batch = next(TrainInput(cfg, ByteTokenizer()))
  inputs, targets, weights = split_batch(batch["tokens"], batch["loss_mask"])

  def first_loss(segment_len):
    model = build_model(dataclasses.replace(cfg.model, segment_len=segment_len))
    params = nn.unbox(model.init(jax.random.key(cfg.train.seed),
                                 np.zeros((1, segment_len), np.int32))["params"])
    terms = loss_terms(model.apply({"params": params}, inputs), targets, weights)
    return float(terms.ce / terms.weight)

  cut, uncut = first_loss(32), first_loss(16)
  assert abs(cut - uncut) > 1e-4   # the cut matters for this batch
  np.testing.assert_allclose(losses(wd)[1], cut, rtol=1e-5)
  assert checkpoint.load_workdir_config(wd).model.segment_len == 16
