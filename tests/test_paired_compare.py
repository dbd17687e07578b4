"""scripts/paired_compare.py: paired accuracy and the exact McNemar test on two prediction folders."""

import csv
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))

import paired_compare  # pylint: disable=wrong-import-position,import-error


def _write(folder, name, rows):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, name), "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["target", "output", "question"])
    w.writerows(rows)


def test_mcnemar_matches_the_binomial_tail():
  # 20 against 5 discordant: 2 * P(X <= 5), X ~ Binomial(25, 1/2) = 2 * 68406 / 2**25
  assert paired_compare.mcnemar_p(20, 5) == pytest.approx(2 * 68406 / 2**25)
  assert paired_compare.mcnemar_p(5, 20) == paired_compare.mcnemar_p(20, 5)
  assert paired_compare.mcnemar_p(3, 3) == 1.0 and paired_compare.mcnemar_p(0, 0) == 1.0


def test_counts_the_samples_each_model_alone_got_right(tmp_path, capsys):
  q = "Where is Mary?"
  _write(tmp_path / "a", "qa1_1k.csv", [["kitchen", "kitchen", q]] * 6 + [["garden", "office", q]] * 2)
  _write(tmp_path / "b", "qa1_1k.csv", [["kitchen", "hallway", q]] * 6 + [["garden", "garden", q]] * 2)
  [r] = paired_compare.compare(str(tmp_path / "a"), str(tmp_path / "b"))
  assert (r["n"], r["a"], r["b"], r["only_a"], r["only_b"]) == (8, 6, 2, 6, 2)
  assert paired_compare.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
  assert "| qa1_1k | 8 | 75.0" in capsys.readouterr().out
  # Folders holding other samples are refused rather than paired.
  _write(tmp_path / "c", "qa1_1k.csv", [["office", "office", q]] * 8)
  with pytest.raises(SystemExit, match="row 2 holds different samples"):
    paired_compare.compare(str(tmp_path / "a"), str(tmp_path / "c"))
  assert paired_compare.main([str(tmp_path / "a"), str(tmp_path / "nowhere")]) == 2


def test_tasks_that_share_a_length_are_pooled_into_one_test(tmp_path, capsys):
  q = "Where is Mary?"
  for task, (only_a, only_b) in {"qa1": (5, 1), "qa2": (4, 0)}.items():
    _write(tmp_path / "a", f"{task}_+1024.csv", [["kitchen", "kitchen", q]] * only_a
           + [["kitchen", "office", q]] * only_b + [["garden", "garden", q]] * 3)
    _write(tmp_path / "b", f"{task}_+1024.csv", [["kitchen", "office", q]] * only_a
           + [["kitchen", "kitchen", q]] * only_b + [["garden", "garden", q]] * 3)
  _write(tmp_path / "a", "qa1_0k.csv", [["garden", "garden", q]])
  _write(tmp_path / "b", "qa1_0k.csv", [["garden", "garden", q]])
  records = paired_compare.compare(str(tmp_path / "a"), str(tmp_path / "b"))
  [total] = paired_compare.pooled(records)   # 0k has one task: nothing to pool
  assert total["file"] == "all_+1024"
  assert (total["n"], total["a"], total["b"], total["only_a"], total["only_b"]) == (16, 15, 7, 9, 1)
  assert total["p"] == paired_compare.mcnemar_p(9, 1)
  assert paired_compare.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
  assert "| all_+1024 | 16 | 93.8" in capsys.readouterr().out


def test_one_model_per_task_is_scored_as_one_from_several_folders(tmp_path, capsys):
  q = "Where is Mary?"
  for task in ("qa1", "qa2"):
    _write(tmp_path / f"a_{task}", f"{task}_0k.csv", [["kitchen", "kitchen", q]] * 3)
    _write(tmp_path / "b", f"{task}_0k.csv", [["kitchen", "office", q]] * 3)
  merged = f"{tmp_path / 'a_qa1'},{tmp_path / 'a_qa2'}"
  records = paired_compare.compare(merged, str(tmp_path / "b"))
  assert [(r["file"], r["only_a"]) for r in records] == [("qa1_0k", 3), ("qa2_0k", 3)]
  assert paired_compare.main([merged, str(tmp_path / "b")]) == 0
  assert "| all_0k | 6 | 100.0" in capsys.readouterr().out
  # A file that two of the folders hold is ambiguous: refused, exit 2, naming both.
  _write(tmp_path / "a_qa2", "qa1_0k.csv", [["kitchen", "kitchen", q]] * 3)
  assert paired_compare.main([merged, str(tmp_path / "b")]) == 2
  err = capsys.readouterr().err
  assert "qa1_0k.csv is in both" in err and "a_qa2" in err
