"""Every command-line mistake: one line on stderr naming what is wrong, exit code 2, nothing
written. A new mistake is one row of CASES.

Rows run through the entry points' `main(argv)` in this process (train.py, eval.py,
`python -m lm2_jax.convert`, `python -m lm2_jax.data.babilong`); a few rows at the end run
the real scripts in a subprocess, to check that nothing else (a warning, a traceback at
exit) reaches stderr.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402  pylint: disable=wrong-import-position
from eval import main as eval_main  # noqa: E402
from lm2_jax.convert.__main__ import main as convert_main  # noqa: E402
from lm2_jax.data.babilong import main as babilong_main  # noqa: E402

ENTRY = {"train": train.main, "eval": eval_main, "convert": convert_main,
         "babilong": babilong_main}
TINY_TRAIN = ["model.num_layers=1", "model.width=16", "model.mlp_width=32", "model.num_heads=2",
              "model.num_kv_heads=1", "model.segment_len=16", "model.memory.num_slots=2",
              "model.memory.num_heads=2", "train.seq_len=32", "train.batch_size=8"]


def _files(d):
  """Inputs a row refers to as {name}: made in the test's folder `d`."""
  (d / "garbage.jsonl").write_bytes(bytes(range(256)) * 8 + b"\n" + bytes(range(255, -1, -1)))
  (d / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20)
  (d / "syntax.yaml").write_text("model:\n  width: [1, 2\n train: x\n")
  (d / "base_list.yaml").write_text("base: [tiny.yaml]\n")
  (d / "base_folder.yaml").write_text("base: .\n")
  (d / "a_file").write_text("not a folder\n")
  (d / "folder").mkdir()
  return {"d": str(d), "nowhere": str(d / "nowhere"), "file": str(d / "a_file"),
          "garbage": str(d / "garbage.jsonl"), "folder": str(d / "folder")}


# (entry point, arguments, regular expression the one line must match)
CASES = {
    # train.py: config files
    "train-binary-config": ("train", "--config {d}/binary.yaml",
                            r"binary\.yaml: not a text file"),
    "train-config-is-a-folder": ("train", "--config {folder}", r"folder: is a folder"),
    "train-yaml-syntax": ("train", "--config {d}/syntax.yaml",
                          r"not valid YAML: .* at line 3, column \d+$"),
    "train-base-is-a-list": ("train", "--config {d}/base_list.yaml", r"`base:` got \['tiny"),
    "train-base-is-a-folder": ("train", "--config {d}/base_folder.yaml", r"is a folder"),
    "train-missing-config": ("train", "--config {nowhere}.yaml", r"config file not found"),
    "train-unknown-key": ("train", "--config configs/tiny.yaml model.widht=3",
                          r"model\.widht: unknown key; did you mean 'model\.width'"),
    "train-unknown-option": ("train", "--config configs/tiny.yaml --stpes 3",
                             r"unrecognized arguments: --stpes"),
    # train.py: data
    "train-binary-jsonl": ("train", "--config configs/tiny.yaml --workdir {d}/w data.kind=text "
                           "data.paths=[{garbage}] " + " ".join(TINY_TRAIN),
                           r"data\.paths\[0\]: .*garbage\.jsonl, line 1: not UTF-8 text"),
    "train-missing-data": ("train", "--config configs/tiny.yaml --workdir {d}/w data.kind=text "
                           "data.paths=[{nowhere}.jsonl]", r"nowhere\.jsonl: file not found"),
    "train-binary-eval-jsonl": ("train", "--config configs/tiny.yaml --workdir {d}/w "
                                "data.kind=babilong data.eval_paths=[{garbage}] "
                                + " ".join(TINY_TRAIN), r"data\.eval_paths\[0\]: .*not UTF-8"),
    "train-unknown-tfds": ("train", "--config configs/tiny.yaml --workdir {d}/w data.kind=tfds "
                           "data.tfds_name=lm1c data.tfds_data_dir={d} " + " ".join(TINY_TRAIN),
                           r"tfds:lm1c split 'train' .*: no such dataset; nearest names: lm1b, \w+, \w+$"),
    "train-segments-too-short-for-a-story": (
        "train", "--config configs/babilong_tiny.yaml --workdir {d}/w model.segment_len=128 "
        "train.curriculum.max_segments=[2,4] train.curriculum.min_segments=1",
        r"train\.curriculum\.min_segments=1: a sequence of 1 x 128 tokens .*qa1: no story fits "
        r"a record of 129 tokens cut by up to 63 for the random offset"),
    "train-workdir-is-a-file": ("train", "--config configs/tiny.yaml --workdir {file}/w "
                                + " ".join(TINY_TRAIN) + " train.seq_len=128",
                                r"--workdir .*: cannot write there"),
    # eval.py
    "eval-output-not-writable": ("eval", "--checkpoint {nowhere} --task babilong --output "
                                 "{file}/sub/r.json", r"--output .*: cannot write there "
                                 r"\(.*a_file is not a folder\)"),
    "eval-length-above-maximum": ("eval", "--checkpoint {nowhere} --task babilong --lengths "
                                  "0k,999999999M --output {d}/o/r.json",
                                  r"--lengths 999999999M: longer than the 1,000,000-token "
                                  r"maximum; pass --allow-long"),
    "eval-negative-samples": ("eval", "--checkpoint {nowhere} --task babilong --num-samples -1 "
                              "--output {d}/o/r.json", r"--num-samples must be >= 1, got -1"),
    "eval-perplexity-binary-jsonl": ("eval", "--checkpoint {ckpt} --task perplexity --data "
                                     "{garbage} --output {d}/o/p.json",
                                     r"garbage\.jsonl, line 1: not UTF-8 text"),
    "eval-memory-above-the-host": ("eval", "--checkpoint {ckpt} --task babilong --lengths 1M "
                                   "--num-samples 100000 --output {d}/o/b.json",
                                   r"--lengths 1M x --num-samples 100000: about [\d.]+ [KMGT]iB "
                                   r"needed, [\d.]+ [KMGT]iB available on this host"),
    "eval-output-not-json": ("eval", "--checkpoint {nowhere} --task babilong --output {d}/o/r",
                             r"expected a \.json path"),
    "eval-missing-option": ("eval", "--task babilong", r"required: --checkpoint, --output"),
    # python -m lm2_jax.convert
    "convert-import-out-not-writable": ("convert", "import-hf --hf-dir {nowhere} --out "
                                        "{file}/w", r"--out .*: cannot write there"),
    "convert-export-out-not-writable": ("convert", "export-hf --checkpoint {nowhere} --out "
                                        "{file}/hf", r"--out .*: cannot write there"),
    "convert-export-out-exists": ("convert", "export-hf --checkpoint {nowhere} --out {d}",
                                  r"already exists and is not empty"),
    "convert-no-command": ("convert", "", r"required: command"),
    # python -m lm2_jax.data.babilong
    "babilong-negative-samples": ("babilong", "--output-dir {d}/b --num-samples -1",
                                  r"--num-samples must be >= 1, got -1"),
    "babilong-output-is-a-file": ("babilong", "--output-dir {file} --num-samples 1",
                                  r"--output-dir .*a_file is a file, expected a folder"),
    "babilong-output-under-a-file": ("babilong", "--output-dir {file}/b --num-samples 1",
                                     r"a_file is a file, expected a folder"),
    "babilong-bad-length": ("babilong", "--output-dir {d}/b --lengths 4x",
                            r"bad length '4x'"),
    "babilong-unknown-task": ("babilong", "--output-dir {d}/b --tasks qa99",
                              r"qa99"),
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """A tiny parameters-only work directory, for the rows that get past loading a model."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from lm2_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lm2_jax.config import load_config  # pylint: disable=g-import-not-at-top
  cfg = load_config(None, TINY_TRAIN)
  path = str(tmp_path_factory.mktemp("ckpt") / "m")
  checkpoint.save_params(path, cfg, jax.tree.map(jnp.zeros_like,
                                                 checkpoint.abstract_params(cfg)), step=1)
  return path


def _argv(template: str, names: dict) -> list[str]:
  return [part.format(**names) for part in template.split()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mistake_is_one_line_and_exit_code_2(case, tmp_path, capsys, monkeypatch, request):
  entry, template, pattern = CASES[case]
  names = _files(tmp_path)
  if "{ckpt}" in template:
    names["ckpt"] = request.getfixturevalue("ckpt")
  before = sorted(os.listdir(tmp_path))
  monkeypatch.chdir(ROOT)
  try:
    code = ENTRY[entry](_argv(template, names))
  except SystemExit as e:   # argparse
    code = e.code
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.strip()]
  assert code == 2, err
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert re.search(pattern, lines[0]), lines[0]
  assert sorted(os.listdir(tmp_path)) == before   # nothing written, not even a folder


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("entry,template", [
    ("eval", "--checkpoint {nowhere} --task babilong --output {ro}/r.json"),
    ("babilong", "--output-dir {ro}/b --num-samples 1"),
    ("convert", "export-hf --checkpoint {nowhere} --out {ro}/hf"),
])
def test_a_read_only_folder_is_refused_in_one_line(entry, template, tmp_path, capsys):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  try:
    try:
      code = ENTRY[entry](_argv(template, {"ro": str(ro), "nowhere": str(tmp_path / "x")}))
    except SystemExit as e:
      code = e.code
  finally:
    ro.chmod(0o755)
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and "not writable" in err, err


# The real scripts: stderr holds the one line and nothing else.
SCRIPTS = [
    ([sys.executable, "train.py", "--config", "{d}/binary.yaml"], r"not a text file"),
    ([sys.executable, "-m", "lm2_jax.data.babilong", "--output-dir", "{d}/b", "--num-samples",
      "-1"], r"--num-samples must be >= 1"),
    ([sys.executable, "-m", "lm2_jax.convert", "export-hf", "--checkpoint", "{nowhere}",
      "--out", "{file}/hf"], r"cannot write there"),
    ([sys.executable, "scripts/binding_probe.py", "{nowhere}"],
     r"no such checkpoint or work directory"),
]


@pytest.mark.parametrize("command,pattern", SCRIPTS, ids=["train", "babilong", "convert",
                                                          "binding_probe"])
def test_the_scripts_print_one_line_and_exit_2(command, pattern, tmp_path):
  names = _files(tmp_path)
  proc = subprocess.run([c.format(**names) for c in command], capture_output=True, text=True,
                        cwd=ROOT, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT})
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and re.search(pattern, lines[0]), proc.stderr


def test_a_journal_cut_inside_a_character_loses_only_that_row(tmp_path):
  from lm2_jax.evaluation.report import PredictionLog  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "qa1_0k.csv")
  log = PredictionLog(path, ["target", "output"])
  log.append([["kitchen", "küche"], ["garden", "jardín"]])
  data = open(path, "rb").read()
  cut = data.index("í".encode()) + 1       # inside the two bytes of í
  with open(path, "wb") as f:
    f.write(data[:cut])
  again = PredictionLog(path, ["target", "output"])
  assert again.rows() == [{"target": "kitchen", "output": "küche"}]
  assert open(path, encoding="utf-8").read() == "target,output\nkitchen,küche\n"


def test_metadata_of_the_wrong_type_is_one_line(tmp_path):
  from lm2_jax import checkpoint  # pylint: disable=g-import-not-at-top
  with pytest.raises(checkpoint.CheckpointError, match=r"'tokens' is 'abc', expected a "
                     r"non-negative integer"):
    checkpoint._check_meta({"step": 3, "tokens": "abc"}, 3, str(tmp_path))  # pylint: disable=protected-access
  assert checkpoint._check_meta({"step": 3, "tokens": 7}, 3, "x")["tokens"] == 7  # pylint: disable=protected-access
