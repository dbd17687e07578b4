"""The data-kind registry: every kind the config accepts has one entry that knows all of it."""

import itertools
import json
import typing

import numpy as np
import pytest

from lm2_jax import config
from lm2_jax.config import ConfigError, load_config
from lm2_jax.data import kinds
from lm2_jax.data.errors import DataError
from lm2_jax.data.tokenizers import ByteTokenizer

WHERE = {"batch_size": 2, "seed": 3, "shard_index": 0, "shard_count": 1}


def test_every_kind_the_config_accepts_has_one_entry():
  accepted = typing.get_args(typing.get_type_hints(config.DataConfig)["kind"])
  assert set(accepted) == set(kinds.KINDS)
  assert set(typing.get_args(kinds.KindName)) == set(kinds.KINDS)
  for name, kind in kinds.KINDS.items():
    assert kind.name == name
    assert isinstance(kind, kinds.DataKind)


@pytest.mark.parametrize("make", [
    lambda: load_config(None, ["data.kind=csv"]),
    lambda: config.validate(config.replace(config.Config(), **{"data.kind": "csv"})),
])
def test_an_unknown_kind_is_refused_naming_the_key_and_the_kinds(make):
  with pytest.raises(ConfigError, match=r"^data\.kind: got 'csv', expected one of "
                                        r"\['babilong', 'text', 'tokens', 'tfds'\]$"):
    make()
  with pytest.raises(DataError, match=r"^data\.kind: got 'csv', expected one of \["):
    kinds.of(config.DataConfig(kind="csv"))


@pytest.mark.parametrize("override, message", [
    (["data.kind=text"], r"data\.paths: data\.kind=text needs at least one file or folder"),
    (["data.kind=tokens"], r"data\.paths: data\.kind=tokens needs at least one file or folder"),
    (["data.kind=tfds"], r"data\.tfds_name: data\.kind=tfds needs a dataset name or folder"),
    (["data.tasks=[]"], r"data\.tasks: data\.kind=babilong needs at least one task"),
    (["data.tasks=[qa1,qa11]"], r"data\.tasks\[1\]: got 'qa11', expected one of qa1\.\.qa10"),
    (["data.lengths=[1k,xyz]"], r"data\.lengths\[1\]: bad length 'xyz'"),
])
def test_each_kind_refuses_the_config_it_cannot_use(override, message):
  with pytest.raises(ConfigError, match="^" + message):
    load_config(None, override)


def test_a_kind_ignores_the_fields_of_the_others():
  assert load_config(None, ["data.kind=text", "data.paths=[a.txt]", "data.tasks=[qa99]",
                            "data.lengths=[xyz]"]).data.kind == "text"
  assert load_config(None, ["data.kind=babilong", "data.paths=[]"]).data.kind == "babilong"
  assert load_config(None, ["data.kind=tfds", "data.tfds_name=lm1b"]).data.kind == "tfds"


@pytest.mark.parametrize("override, answers, evaluates, tasks, described", [
    (["data.kind=babilong", "data.tasks=[qa1,qa3]"], True, True, ("qa1", "qa3"),
     "babilong qa1,qa3"),
    (["data.kind=text", "data.paths=[a.txt]"], False, False, (), "text"),
    (["data.kind=text", "data.paths=[a.txt]", "data.eval_paths=[b.txt]"], False, True, (),
     "text"),
    (["data.kind=tokens", "data.paths=[a.bin]", "data.eval_paths=[b.bin]"], False, True, (),
     "tokens"),
    (["data.kind=tfds", "data.tfds_name=lm1b"], False, False, (), "tfds"),
])
def test_what_the_training_and_the_evaluations_learn_from_a_kind(override, answers, evaluates,
                                                                 tasks, described):
  d = load_config(None, override).data
  kind = kinds.of(d)
  assert kind.has_answers is answers
  assert kind.evaluates(d) is evaluates
  assert kind.tasks(d) == tasks
  assert kind.describe(d) == described


def test_checks_name_the_key_and_read_held_out_files_in_the_kinds_format(tmp_path):
  shard = tmp_path / "s.npy"
  np.save(shard, np.arange(100, dtype=np.uint16))
  (tmp_path / "a.txt").write_text("hello")
  d = load_config(None, ["data.kind=tokens", f"data.paths=[{shard}]",
                         f"data.eval_paths=[{shard},{tmp_path}/held.npy]"]).data
  with pytest.raises(DataError, match=r"^data\.eval_paths\[1\]: .*held\.npy: file not found"):
    kinds.of(d).check(d)
  (tmp_path / "bad.jsonl").write_bytes(b"\xff\xfe\n")
  d = load_config(None, ["data.kind=text", f"data.paths=[{tmp_path}/a.txt]",
                         f"data.eval_paths=[{tmp_path}/bad.jsonl]"]).data
  with pytest.raises(DataError, match=r"^data\.eval_paths\[0\]: .*bad\.jsonl, line 1: not UTF-8"):
    kinds.of(d).check(d)
  d = load_config(None, [f"data.haystack={tmp_path}/none"]).data
  with pytest.raises(DataError, match=r"^data\.haystack: .*none: background text folder"):
    kinds.of(d).check(d)


def test_document_kinds_read_the_held_out_files_once_in_order(tmp_path):
  held = tmp_path / "held.jsonl"
  held.write_text("".join(json.dumps({"text": f"held out {i:02d} " * 3}) + "\n"
                          for i in range(12)))
  cfg = load_config(None, ["data.kind=text", f"data.paths=[{held}]",
                           f"data.eval_paths=[{held}]"])
  kind = kinds.of(cfg.data)
  tok = ByteTokenizer()
  once, again = ([b["tokens"] for b in itertools.islice(
      kind.eval_stream(cfg, tok, seq_len=33, **{**WHERE, "seed": seed}), 20)] for seed in (3, 7))
  assert 0 < len(once) < 20
  np.testing.assert_array_equal(np.concatenate(once), np.concatenate(again))
  assert tok.decode(once[0][0]).startswith("held out 00")
  train = iter(kind.train_stream(cfg, tok, seq_len=33, **WHERE))
  assert len([next(train) for _ in range(3 * len(once))]) == 3 * len(once)


def test_babilong_draws_its_held_out_set_like_its_training_stream():
  cfg = load_config(None, ["model.segment_len=64", "train.seq_len=256"])
  kind, tok = kinds.of(cfg.data), ByteTokenizer()
  held = next(iter(kind.eval_stream(cfg, tok, seq_len=129, **WHERE)))
  train = next(iter(kind.train_stream(cfg, tok, seq_len=129, **WHERE)))
  np.testing.assert_array_equal(held["tokens"], train["tokens"])
  assert held["tokens"].shape == (2, 129) and held["loss_mask"].sum() > 0


@pytest.mark.parametrize("options", [["data.interleaved_questions=true"],
                                     ["data.recall_questions=3"],
                                     ["data.recall_questions=3", "data.tasks=[qa4]",
                                      "data.recall_tasks=[qa4]"]])
def test_babilong_held_out_set_asks_one_question_even_when_training_asks_more(options):
  """data.interleaved_questions (a story's earlier answers) and data.recall_questions (its
  other questions after the answer, for the tasks of data.recall_tasks) score more answers
  in training only: the training evaluation measures the question at the end, as eval.py
  does."""
  cfg = load_config(None, ["model.segment_len=64", "train.seq_len=512", *options])
  kind, tok = kinds.of(cfg.data), ByteTokenizer()
  where = {**WHERE, "batch_size": 16}

  def answers(batch):   # scored spans per row
    edges = np.diff(np.concatenate([np.zeros((16, 1)), batch["loss_mask"]], axis=1))
    return (edges == 1).sum(axis=1)

  held = answers(next(iter(kind.eval_stream(cfg, tok, seq_len=513, **where))))
  train = answers(next(iter(kind.train_stream(cfg, tok, seq_len=513, **where))))
  assert (held == 1).all() and train.max() > 1
