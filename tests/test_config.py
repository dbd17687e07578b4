"""Config loading: YAML with base includes, dotted overrides, errors that name the key."""

import pytest

from lm2_jax.config import ConfigError, dump_config, load_config


def write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_base_include_and_overrides(tmp_path):
  write(tmp_path, "base.yaml", "model:\n  width: 128\n  num_heads: 8\n  memory:\n    num_slots: 4\n")
  child = write(tmp_path, "child.yaml", "base: base.yaml\nmodel:\n  memory:\n    num_slots: 8\n")
  cfg = load_config(child, ["model.memory.num_slots=64", "model.attention_scope=full",
                            "model.rope_theta=1e4"])
  assert cfg.model.width == 128 and cfg.model.num_heads == 8
  assert cfg.model.memory.num_slots == 64
  assert cfg.model.attention_scope == "full"
  assert cfg.model.rope_theta == 10000.0


def test_resolved_config_round_trips(tmp_path):
  cfg = load_config("configs/lm2_1.7b.yaml", ["train.batch_size=4"])
  path = str(tmp_path / "resolved.yaml")
  dump_config(cfg, path)
  assert load_config(path) == cfg


@pytest.mark.parametrize("override, message", [
    (["model.memory.num_slot=8"], r"model\.memory\.num_slot: unknown key; did you mean "
                                  r"'model\.memory\.num_slots'"),
    (["modle.width=8"], r"modle: unknown key; did you mean 'model'"),
    (["model.width=wide"], r"model\.width: got 'wide', expected an integer"),
    (["model.memory.enabled=3"], r"model\.memory\.enabled: got 3, expected true or false"),
    (["model.attention_scope=global"], r"model\.attention_scope: got 'global', expected one of"),
    (["model.num_heads=5"], r"model\.num_heads: 5 heads do not divide model\.width=64"),
    (["model.num_kv_heads=3"], r"model\.num_kv_heads: 3 key/value heads do not divide"),
    (["train.seq_len=100"], r"train\.seq_len: must be a positive multiple of "
                            r"model\.segment_len=32, got 100"),
    (["model.memory.layers=9"], r"model\.memory\.layers: must be -1 \(all\) or in 1\.\.2"),
    (["model.memory.num_heads=3"], r"model\.memory\.num_heads: 3 heads do not divide"),
    (["model.width"], r"expected key=value"),
])
def test_errors_name_the_key(override, message):
  with pytest.raises(ConfigError, match=message):
    load_config(None, override)


def test_file_errors_name_the_file(tmp_path):
  with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
    load_config(str(tmp_path / "nope.yaml"))
  bad = write(tmp_path, "bad.yaml", "model: [1, 2\n")
  with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
    load_config(bad)
  loop = write(tmp_path, "loop.yaml", "base: loop.yaml\n")
  with pytest.raises(ConfigError, match="cycle"):
    load_config(loop)
