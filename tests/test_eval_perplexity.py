"""Perplexity per segment index: the streamed losses equal the one-shot forward's, grouped by
the segment each prediction is made in; resumable; generated text is deterministic."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm2_jax.config import load_config
from lm2_jax.data.tokenizers import ByteTokenizer
from lm2_jax.evaluation import perplexity as ev
from lm2_jax.evaluation.report import EvaluationError
from lm2_jax.inference import Engine
from lm2_jax.model import abstract_variables, build_model

SEG = 8


def test_loss_per_segment_index_matches_the_full_forward(tmp_path):
  cfg = load_config(None, [f"model.segment_len={SEG}", "model.width=32", "model.num_layers=1",
                           "model.num_heads=2", "model.num_kv_heads=1", "model.mlp_width=64",
                           "model.memory.num_slots=4", "model.memory.num_heads=2",
                           "train.seq_len=32"]).model
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape).astype(np.float32)),
                        nn.unbox(abstract_variables(cfg)["params"]))
  tok = ByteTokenizer()
  seqs = ev.generated_sequences(tok, 4 * SEG + 3, 3, seed=5)  # the last segment is partial
  np.testing.assert_array_equal(seqs, ev.generated_sequences(tok, 4 * SEG + 3, 3, seed=5))
  assert seqs.shape == (3, 4 * SEG + 4) and (seqs[:, 0] == tok.bos_id).all()
  engine = Engine(cfg, params, tok, batch_size=2, chunk_len=2 * SEG)
  path = str(tmp_path / "ppl.csv")
  rep = ev.evaluate_perplexity(engine.token_nll, seqs, SEG, predictions_path=path,
                               batch_size=2)

  logits = jax.jit(build_model(cfg).apply)({"params": params}, jnp.asarray(seqs[:, :-1]))
  logp = np.asarray(jax.nn.log_softmax(logits, -1))
  nll = -np.take_along_axis(logp, seqs[:, 1:, None], -1)[..., 0]
  assert [c["tokens"] for c in rep["by_segment"]] == [3 * SEG] * 4 + [3 * 3]
  for s, c in enumerate(rep["by_segment"]):
    want = nll[:, s * SEG:(s + 1) * SEG].mean()
    assert c["segment"] == s and c["loss"] == pytest.approx(want, rel=1e-5)
    assert c["perplexity"] == pytest.approx(math.exp(c["loss"]))
  assert rep["overall"]["loss"] == pytest.approx(nll.mean(), rel=1e-5)
  assert rep["overall"]["tokens"] == nll.size and rep["seq_len"] == 4 * SEG + 3

  # Resumed from the log without asking the model again.
  def no_model(rows):
    raise AssertionError("the logged losses should have been reused")

  assert ev.evaluate_perplexity(no_model, seqs, SEG, predictions_path=path) == rep
  with pytest.raises(EvaluationError, match="other sequences"):
    ev.evaluate_perplexity(no_model, seqs[::-1], SEG, predictions_path=path)
  table = ev.format_perplexity({"lm2": rep, "base": rep}).splitlines()
  assert table[1].split() == ["segment", "tokens", "loss", "lm2", "ppl", "lm2", "loss", "base",
                              "ppl", "base"]
  assert table[-1].split()[:2] == ["all", str(nll.size)]


def test_sequences_from_text_files(tmp_path):
  (tmp_path / "a.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
  seqs = ev.file_sequences(str(tmp_path / "a.txt"), ByteTokenizer(), 64, 5)
  assert seqs.shape[1] == 65 and 1 <= seqs.shape[0] <= 5
  with pytest.raises(EvaluationError, match="too little text"):
    ev.file_sequences(str(tmp_path / "a.txt"), ByteTokenizer(), 100_000, 1)
