"""The pictures are written (headless PNGs), and the memory read maps they show are what the
model reads: distributions over the slots, one per memory layer and token, and a different
reading once the memory has taken in the prompt."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm2_jax.config import load_config
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.evaluation import memory_map, plots
from lm2_jax.evaluation.report import EvaluationError
from lm2_jax.inference import Engine
from lm2_jax.model import abstract_variables

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == PNG


def _cell(acc):
  return {"accuracy": acc, "accuracy_word": acc, "n": 20, "ci95": [max(0, acc - 0.2),
                                                                  min(1, acc + 0.2)]}


def test_babilong_and_perplexity_pictures(tmp_path):
  lm2 = {t: {x: _cell(a) for x, a in (("0k", 1.0), ("4k", 0.7), ("16k", 0.5))}
         for t in ("qa1", "qa2", "qa9")}
  base = {"qa1": {"0k": _cell(0.9), "4k": _cell(0.3)}}
  plots.accuracy_vs_length({"lm2": lm2, "base": base}, str(tmp_path / "acc.png"))
  plots.capability_radar({"lm2": lm2, "base": base}, str(tmp_path / "radar.png"))
  rep = {"by_segment": [{"segment": s, "loss": 3.0 - 0.1 * s} for s in range(5)]}
  plots.loss_per_segment({"lm2": rep}, str(tmp_path / "ppl.png"))
  for name in ("acc.png", "radar.png", "ppl.png"):
    assert _is_png(tmp_path / name)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["acc.png", "ppl.png", "radar.png"]


def test_memory_read_maps_and_heatmaps(tmp_path):
  seg = 8
  cfg = load_config(None, [f"model.segment_len={seg}", "model.width=32", "model.num_layers=3",
                           "model.memory.layers=2", "model.num_heads=2", "model.num_kv_heads=1",
                           "model.mlp_width=64", "model.memory.num_slots=6",
                           "model.memory.num_heads=2", "train.seq_len=32"]).model
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape).astype(np.float32)),
                        nn.unbox(abstract_variables(cfg)["params"]))
  tok = ByteTokenizer()
  engine = Engine(cfg, params, tok)
  ids = engine.encode("Mary went to the kitchen. Where is Mary?")  # 41 tokens: 6 segments
  maps = memory_map.read_maps(engine, ids, tok.pad_id)
  before, after = maps["before"], maps["after"]
  assert before.shape == after.shape == (2, len(ids), 6)  # memory layers x tokens x slots
  np.testing.assert_allclose(before.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(after.sum(-1), 1.0, atol=1e-5)
  # The memory changes over the prompt, so the second reading differs from the first.
  assert np.abs(after - before).max() > 1e-3
  assert [s["layer"] for s in maps["summary"]] == [0, 1]
  assert all(0 < s["entropy_before"] <= np.log(6) + 1e-6 for s in maps["summary"])
  labels = memory_map.token_labels(tok, ids)
  assert labels[0] == "<bos>" and labels[1] == "M" and len(labels) == len(ids)
  plots.memory_heatmaps(before, after, labels, str(tmp_path / "map.png"))
  assert _is_png(tmp_path / "map.png")

  plain = load_config(None, ["model.memory.kind=none"]).model
  with pytest.raises(EvaluationError, match="no memory"):
    memory_map.read_maps(Engine(plain, {}, tok), ids, tok.pad_id)
