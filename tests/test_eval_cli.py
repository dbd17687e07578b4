"""`eval.py` end to end on tiny checkpoints: outputs of every task, several models in one
table, resuming, and bad input (one line on stderr, exit code 2, nothing written)."""

import csv
import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm2_jax import checkpoint
from lm2_jax.config import load_config
from lm2_jax.model import abstract_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from eval import main  # noqa: E402  (the script: it parses the command line)
TINY = ["model.segment_len=16", "model.width=32", "model.num_layers=2", "model.num_heads=2",
        "model.num_kv_heads=1", "model.mlp_width=64", "model.memory.num_slots=4",
        "model.memory.num_heads=2", "train.seq_len=64"]


def _save(path, overrides, seed=0):
  cfg = load_config(None, TINY + overrides)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.1, s.shape).astype(np.float32)),
                        nn.unbox(abstract_variables(cfg.model)["params"]))
  checkpoint.save_params(str(path), cfg, params, step=3)
  return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  root = tmp_path_factory.mktemp("ckpt")
  # Two checkpoints of one config (as two training steps would be): one compilation serves both.
  return {"lm2": _save(root / "lm2", []), "other": _save(root / "other", [], seed=1)}


def _run(capsys, *argv):
  code = main([str(a) for a in argv] + ["--no-progress"])
  out, err = capsys.readouterr()
  return code, out, err


def test_babilong_two_models_one_table_and_resume(ckpts, tmp_path, capsys):
  out_json = tmp_path / "res" / "babilong.json"
  argv = ["--checkpoint", ckpts["lm2"], "--checkpoint", ckpts["other"], "--task", "babilong",
          "--tasks", "qa1", "--lengths", "0k,500", "--num-samples", "2", "--batch-size", "2",
          "--max-new-tokens", "3", "--output", out_json]
  code, out, err = _run(capsys, *argv)
  assert code == 0, err
  rep = json.loads(out_json.read_text())
  assert rep["task"] == "babilong"
  cell = rep["results"]["qa1"]["500"]
  assert set(cell) >= {"accuracy", "accuracy_word", "n", "ci95"} and cell["n"] == 2
  assert [m["name"] for m in rep["models"]] == ["lm2", "other"]
  assert rep["models"][0]["step"] == 3
  lines = out.splitlines()
  assert any(line.split()[:2] == ["qa1", "lm2"] for line in lines)
  assert any(line.split()[:2] == ["qa1", "other"] for line in lines)
  for key in ("csv", "accuracy_png", "radar_png"):
    assert os.path.getsize(rep["files"][key]) > 0 and rep["files"][key] in out
  pred = os.path.join(rep["files"]["predictions"]["lm2"], "qa1_500.csv")
  with open(pred, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["target", "output", "question"] and len(rows) == 3
  assert "attention_scope=segment: constant in the input length" in err
  # Run again: every prediction is reused, the results are the same.
  stamp = os.path.getmtime(pred)
  code, _, err = _run(capsys, *argv)
  assert code == 0, err
  assert json.loads(out_json.read_text())["models"] == rep["models"]
  assert os.path.getmtime(pred) == stamp
  # Other settings on the same predictions are refused, not mixed.
  code, _, err = _run(capsys, *argv, "--prompt", "full")
  assert code == 2 and "other settings (prompt)" in err


def test_perplexity_and_memory_map(ckpts, tmp_path, capsys):
  code, out, err = _run(capsys, "--checkpoint", ckpts["lm2"], "--task", "perplexity",
                        "--seq-len", "48", "--num-sequences", "2", "--output",
                        tmp_path / "ppl.json")
  assert code == 0, err
  rep = json.loads((tmp_path / "ppl.json").read_text())
  assert [c["segment"] for c in rep["by_segment"]] == [0, 1, 2]
  assert os.path.getsize(rep["files"]["png"]) > 0 and "Loss per segment index" in out
  code, out, err = _run(capsys, "--checkpoint", ckpts["lm2"], "--task", "memory-map",
                        "--prompt", "Mary went to the kitchen. Where is Mary?", "--output",
                        tmp_path / "map.json")
  assert code == 0, err
  rep = json.loads((tmp_path / "map.json").read_text())
  assert len(rep["tokens"]) == 41 and len(rep["models"][0]["summary"]) == 2
  assert os.path.getsize(rep["files"]["png"][0]) > 0
  maps = np.load(rep["files"]["npz"][0])
  assert maps["before"].shape == (2, 41, 4)


def _mmlu(root, splits=("dev", "test")):
  rows = [("Two plus two is", "3", "4", "5", "6", "B"), ("Ten minus one is", "9", "8", "7",
                                                          "6", "A")]
  for split in splits:
    (root / "data" / split).mkdir(parents=True)
    for subject in ("elementary_mathematics", "world_religions"):
      with open(root / "data" / split / f"{subject}_{split}.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
  return root


def test_mmlu(ckpts, tmp_path, capsys):
  code, out, err = _run(capsys, "--checkpoint", ckpts["lm2"], "--task", "mmlu", "--mmlu-dir",
                        _mmlu(tmp_path / "mmlu"), "--shots", "1", "--output", tmp_path / "m.json")
  assert code == 0, err
  rep = json.loads((tmp_path / "m.json").read_text())
  assert rep["task"] == "mmlu" and rep["overall"]["n"] == 4
  assert rep["by_category"]["STEM"]["n"] == 2 and rep["by_category"]["Humanities"]["n"] == 2
  assert rep["by_difficulty"]["High School"]["n"] == 2
  assert "MMLU accuracy" in out


def _empty_babilong(tmp_path, text):
  (tmp_path / "bl" / "qa1").mkdir(parents=True)
  (tmp_path / "bl" / "qa1" / "0k.json").write_text(text)
  return ["--task", "babilong", "--tasks", "qa1", "--lengths", "0k", "--data", tmp_path / "bl"]


@pytest.mark.parametrize("case,message", [
    ("mismatch", "does not match the config: .*mlp"),
    ("unknown-task", "--task 'nope': unknown task"),
    ("unknown-babilong-task", "unknown task 'qa99'"),
    ("bad-length", "--lengths: bad length '4x'"),
    ("mmlu-without-test", "no MMLU 'test' data"),
    ("empty-babilong-list", "holds no samples"),
    ("empty-babilong-file", "not valid JSON"),
    ("missing-checkpoint", "no such checkpoint"),
])
def test_bad_input_is_one_line_and_exit_2(ckpts, tmp_path, capsys, case, message):
  ck = ckpts["lm2"]
  args = {
      "mismatch": lambda: ["--config", os.path.join(ck, "config.yaml"), "--task", "babilong",
                           "model.mlp_width=48"],
      "unknown-task": lambda: ["--task", "nope"],
      "unknown-babilong-task": lambda: ["--task", "babilong", "--tasks", "qa1,qa99"],
      "bad-length": lambda: ["--task", "babilong", "--lengths", "0k,4x"],
      "mmlu-without-test": lambda: ["--task", "mmlu", "--mmlu-dir",
                                    _mmlu(tmp_path / "mmlu", splits=("dev",))],
      "empty-babilong-list": lambda: _empty_babilong(tmp_path, "[]"),
      "empty-babilong-file": lambda: _empty_babilong(tmp_path, ""),
      "missing-checkpoint": lambda: ["--task", "babilong"],
  }[case]()
  if case == "missing-checkpoint":
    ck = tmp_path / "nowhere"
  output = tmp_path / "out" / "r.json"
  code, out, err = _run(capsys, "--checkpoint", ck, *args, "--output", output)
  assert code == 2
  assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
  assert re.search(message, err), err
  assert not (tmp_path / "out").exists()  # nothing written, not even a folder


def test_the_script_exits_2_with_one_line(tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--checkpoint",
                         str(tmp_path), "--task", "babilong", "--lengths", "1q", "--output",
                         str(tmp_path / "r.json")], capture_output=True, text=True, cwd=ROOT,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip() == ("error: --lengths: bad length '1q': expected a token count such "
                                 "as 0k, 4k, 128k, 1M or 2500")
  assert not os.listdir(tmp_path)


def test_command_line_mistakes_are_one_line_too(capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(["--task", "babilong"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err == ("error: the following arguments are required: --checkpoint, --output "
                 "(see python eval.py --help)\n")
