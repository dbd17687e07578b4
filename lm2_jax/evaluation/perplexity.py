"""Loss and perplexity per segment index: does the memory make later segments easier?

A sequence of T + 1 tokens gives T predictions; prediction t (of token t + 1) is made while
the model is in segment t // segment_len, after that many memory writes. Averaging the loss
per segment index over many sequences shows what the memory buys as the context grows (with
attention_scope=segment, only the memory reaches across segments).

The model enters as `nll(tokens [B, T+1]) -> [B, T]` (`Engine.token_nll`). Text comes from
the built-in generator (`generate`) or from any source `lm2_jax.data.pretrain.make_lm_dataset`
reads: text files or folders, token shards, `tfds:NAME`.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable

import numpy as np

from lm2_jax.data.errors import DataError
from lm2_jax.data.haystack import GeneratedHaystack
from lm2_jax.evaluation.report import EvaluationError, PredictionLog, format_table

NllFn = Callable[[np.ndarray], np.ndarray]
PREDICTION_COLUMNS = ("sequence", "checksum", "nll_sums", "tokens")


def generated_sequences(tokenizer, seq_len: int, num: int, seed: int = 0) -> np.ndarray:
  """`num` rows of [BOS] + seq_len tokens of generated narrative text, int32 [num, seq_len+1].

  Row i depends on (seed, i) only."""
  haystack = GeneratedHaystack()
  rows = np.zeros((num, seq_len + 1), np.int32)
  for i in range(num):
    stream = haystack.sentences(random.Random(seed * 1_000_003 + i))
    ids: list[int] = []
    while len(ids) < seq_len:
      ids += tokenizer.encode(" ".join(next(stream) for _ in range(32)) + " ")
    rows[i] = [tokenizer.bos_id] + ids[:seq_len]
  return rows


def file_sequences(source, tokenizer, seq_len: int, num: int, **kwargs) -> np.ndarray:
  """The first `num` sequences of seq_len + 1 tokens of a data source, in file order."""
  from lm2_jax.data.pretrain import make_lm_dataset  # pylint: disable=g-import-not-at-top
  try:
    ds = make_lm_dataset(source, tokenizer, seq_len + 1, 1, shuffle=False, num_epochs=1,
                         **kwargs)
    rows = []
    for batch in ds:
      rows.append(np.asarray(batch["tokens"][0], np.int32))
      if len(rows) == num:
        break
  except DataError as e:
    raise EvaluationError(str(e)) from None
  if not rows:
    raise EvaluationError(f"--data {source}: too little text for one sequence of {seq_len + 1} "
                          "tokens")
  return np.stack(rows)


def _checksum(row: np.ndarray) -> str:
  return f"{zlib.crc32(np.ascontiguousarray(row, np.int32).tobytes()):08x}"


def evaluate_perplexity(nll: NllFn, sequences: np.ndarray, segment_len: int, *,
                        predictions_path: str | None = None, batch_size: int = 8,
                        progress: Callable[[int], None] | None = None) -> dict:
  """{"seq_len", "segment_len", "sequences", "overall", "by_segment": [...]}.

  With `predictions_path`, per-sequence sums already logged are reused (checked by checksum).
  """
  n, t = sequences.shape[0], sequences.shape[1] - 1
  num_segments = -(-t // segment_len)
  seg_of = np.arange(t) // segment_len
  log = PredictionLog(predictions_path, PREDICTION_COLUMNS) if predictions_path else None
  sums = np.zeros((n, num_segments), np.float64)
  counts = np.bincount(seg_of, minlength=num_segments)
  done = (log.rows() if log else [])[:n]  # a run with fewer sequences reuses the first ones
  for i, r in enumerate(done):
    if int(r["sequence"]) != i or r["checksum"] != _checksum(sequences[i]):
      raise EvaluationError(f"{predictions_path}: the losses there belong to other sequences; "
                            "move the file away or choose another --output")
    sums[i] = [float(x) for x in r["nll_sums"].split()]
  if progress is not None and done:
    progress(len(done))
  for start in range(len(done), n, batch_size):
    rows = sequences[start:start + batch_size]
    losses = np.asarray(nll(rows), np.float64)
    if losses.shape != (len(rows), t):
      raise EvaluationError(f"the model returned losses of shape {losses.shape}; expected "
                            f"{(len(rows), t)}")
    batch_sums = np.stack([np.bincount(seg_of, weights=l, minlength=num_segments)
                           for l in losses])
    sums[start:start + len(rows)] = batch_sums
    if log is not None:
      log.append([[start + j, _checksum(rows[j]), " ".join(repr(float(x)) for x in s),
                   " ".join(str(int(c)) for c in counts)] for j, s in enumerate(batch_sums)])
    if progress is not None:
      progress(len(rows))
  return report(sums, counts, segment_len)


def report(sums_NxS: np.ndarray, counts_S: np.ndarray, segment_len: int) -> dict:
  n = sums_NxS.shape[0]
  tokens = counts_S * n
  by_segment = []
  for s in range(sums_NxS.shape[1]):
    loss = float(sums_NxS[:, s].sum() / tokens[s])
    by_segment.append({"segment": s, "loss": loss, "perplexity": math.exp(loss),
                       "tokens": int(tokens[s])})
  loss = float(sums_NxS.sum() / tokens.sum())
  return {"seq_len": int(counts_S.sum()), "segment_len": segment_len, "sequences": n,
          "overall": {"loss": loss, "perplexity": math.exp(loss), "tokens": int(tokens.sum())},
          "by_segment": by_segment}


def format_perplexity(models: dict[str, dict]) -> str:
  """Loss and perplexity per segment index, a column pair per model."""
  names = list(models)
  first = models[names[0]]
  header = ["segment", "tokens"] + [f"{h} {n}" if len(names) > 1 else h
                                    for n in names for h in ("loss", "ppl")]
  rows = []
  for s, cell in enumerate(first["by_segment"]):
    row: list = [s, cell["tokens"]]
    for name in names:
      c = models[name]["by_segment"][s]
      row += [f"{c['loss']:.4f}", f"{c['perplexity']:.3f}"]
    rows.append(row)
  row = ["all", first["overall"]["tokens"]]
  for name in names:
    o = models[name]["overall"]
    row += [f"{o['loss']:.4f}", f"{o['perplexity']:.3f}"]
  rows.append(row)
  return format_table(header, rows, f"Loss per segment index ({first['sequences']} sequences of "
                      f"{first['seq_len']} predictions, segments of {first['segment_len']})")


CSV_COLUMNS = ("model", "segment", "loss", "perplexity", "tokens")


def csv_rows(models: dict[str, dict]) -> list[list]:
  """The results table, flat: one row per model and segment index (CSV_COLUMNS)."""
  return [[name, c["segment"], c["loss"], c["perplexity"], c["tokens"]]
          for name, rep in models.items() for c in rep["by_segment"]]
