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
    (["model.scan_unroll=3"], r"model\.scan_unroll: must be between 1 and "
                              r"model\.num_layers=2, got 3"),
    (["model.memory.kind=xl"], r"model\.memory\.kind: got 'xl', expected one of \['lm2', 'rmt', "
                               r"'none'\]"),
    (["model.memory.kind=rmt", "model.attention_scope=full"],
     r"model\.attention_scope: model\.memory\.kind=rmt .* needs attention_scope=segment"),
    (["model.attention_impl=cudnn"], r"model\.attention_impl: cudnn needs model\.compute_dtype "
                                     r"bfloat16 or float16, got 'float32'"),
    (["model.memory.enabled=false", "model.memory.kind=lm2"],
     r"model\.memory\.enabled: false contradicts model\.memory\.kind='lm2'"),
    (["model.memory.kind=none", "train.memory_carry_steps=4"],
     r"train\.memory_carry_steps: carries a memory: it needs model\.memory\.kind=lm2 with "
     r"memory layers, or rmt, got kind 'none'"),
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


def test_memory_kind_and_its_former_name_enabled(tmp_path):
  """Configs saved before `kind` existed say `enabled:`; they load as lm2 or none, a
  command-line `kind` or `enabled` replaces the file's other key, and dumps say `kind`."""
  assert load_config(None).model.memory.kind == "lm2"
  off = write(tmp_path, "off.yaml", "model:\n  memory:\n    enabled: false\n")
  on = write(tmp_path, "on.yaml", "model:\n  memory:\n    enabled: true\n    num_slots: 8\n")
  assert load_config(off).model.memory.kind == "none"
  assert load_config(off).model.num_memory_layers == 0
  assert load_config(on).model.memory.kind == "lm2"
  assert load_config(on).model.num_memory_layers == 2
  assert load_config(off, ["model.memory.kind=rmt"]).model.memory.kind == "rmt"
  assert load_config(on, ["model.memory.enabled=false"]).model.memory.kind == "none"
  tiny = load_config("configs/tiny.yaml", ["model.memory.enabled=false"])
  assert tiny.model.memory.kind == "none"
  child = write(tmp_path, "child.yaml", "base: off.yaml\nmodel:\n  memory:\n    kind: rmt\n")
  assert load_config(child).model.memory.kind == "rmt"
  both = write(tmp_path, "both.yaml", "model:\n  memory:\n    enabled: true\n    kind: rmt\n")
  assert load_config(both).model.memory.kind == "rmt"
  clash = write(tmp_path, "clash.yaml", "model:\n  memory:\n    enabled: true\n    kind: none\n")
  with pytest.raises(ConfigError, match=r"model\.memory\.enabled: true contradicts "
                                        r"model\.memory\.kind='none'"):
    load_config(clash)
  path = str(tmp_path / "resolved.yaml")
  dump_config(load_config(on), path)
  with open(path) as f:
    text = f.read()
  assert "kind: lm2" in text and "enabled" not in text
  assert load_config(path) == load_config(on)


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_hard_questions_must_be_a_fraction(value):
  with pytest.raises(ConfigError, match=rf"^data\.hard_questions: must be a fraction in \[0, 1\], got {value}"):
    load_config(None, [f"data.hard_questions={value}"])


@pytest.mark.parametrize("overrides, expected", [
    (["data.recall_questions=-1"], r"^data\.recall_questions: must be >= 0, got -1"),
    (["data.recall_questions=2", "data.tasks=[qa2,qa3]"],
     r"^data\.recall_questions: .*needs data\.kind babilong with one of \['qa1'\] in "
     r"data\.tasks; got data\.kind=babilong, data\.tasks=\['qa2', 'qa3'\]"),
    (["data.recall_tasks=[qa1,qa7]"],
     r"^data\.recall_tasks: \['qa7'\] have no recall questions; expected some of "
     r"\['qa1', 'qa2', 'qa3', 'qa4', 'qa5'\]"),
])
def test_recall_questions_need_stories_that_have_them(overrides, expected):
  with pytest.raises(ConfigError, match=expected):
    load_config(None, overrides)


@pytest.mark.parametrize("overrides, expected", [
    (["data.pack_stories=true", "data.lengths=[1k,4k]"],
     r"^data\.pack_stories: packs the 0k records .*needs 0k in data\.lengths, got \['1k', '4k'\]"),
    (["data.pack_stories=true", "data.kind=text", "data.paths=[corpus.txt]"],
     r"^data\.pack_stories: packs BABILong's 0k training records: it needs data\.kind=babilong"),
])
def test_packing_needs_babilong_0k_records(overrides, expected):
  with pytest.raises(ConfigError, match=expected):
    load_config(None, overrides)
