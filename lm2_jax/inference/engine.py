"""Generation and scoring on the model's streaming interface (`prefill`, `step`, DecodeState).

Prompts of different lengths run in two phases, so that every row is at a segment boundary
whenever a call covers several segments: first the whole segments of every prompt, in chunks
of `chunk_len` tokens through `prefill` (a row that has run out idles with length 0), then
every row's last, partial segment in one call. Each row then holds its own position and the
memory of its completed segments, exactly as in training; decoding feeds one token per row
through `step`, which writes the memory when a row completes a segment.

With attention_scope=segment the state has a fixed size, so cost per token and device memory
stay flat however long the input; with full attention the cache holds the whole sequence,
and the engine refuses what cannot fit before it starts. Given a `mesh`, parameters and
state are placed by the sharding table (rows over the data-parallel axes, key/value heads
over `tensor`). Fixed shapes (batch padded to a power of two, chunks of `chunk_len`, cache
lengths a power-of-two number of segments) let one compilation serve a bucket of prompts.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from lm2_jax import sharding
from lm2_jax.cli import human
from lm2_jax.config import ModelConfig
from lm2_jax.inference.sampling import SamplingParams, row_keys, sample_logits
from lm2_jax.model import build_model, init_state

log = logging.getLogger(__name__)

Array = jax.Array
Prompt = str | Sequence[int]

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_ROWS = "activation_batch"  # the logical name of a batch's rows in the sharding table
_LOGITS_BUDGET = 1 << 27  # bytes of float32 logits one prefill chunk may produce
_bytes = functools.partial(human, binary=True)


class InferenceError(ValueError):
  """A request the engine cannot serve; the message says what and why in one line."""


@dataclasses.dataclass
class Generation:
  """One prompt's continuation.

  `stop_reason` is "eos", "stop" (a stop string was produced; `text` ends before it) or
  "length" (max_new_tokens reached). `logits` ([n, V] float32, only with keep_logits) are
  the logits each generated token was chosen from.
  """

  text: str
  token_ids: list[int]
  prompt_tokens: int
  stop_reason: str
  logits: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes a request needs on the device, by part (an estimate, not a measurement)."""

  params: int
  cache: int          # key/value caches, input and output copies of one call
  memory_state: int   # the memory bank and the current segment's inputs
  activations: int    # one segment's intermediates plus one chunk's logits
  batch_size: int
  cache_len: int | None  # tokens per row in the cache (None: one segment, attention_scope=segment)

  @property
  def total(self) -> int:
    return self.params + self.cache + self.memory_state + self.activations

  def describe(self) -> str:
    if self.cache_len is None:
      where = (f"attention_scope=segment: constant in the input length, about "
               f"{_bytes(self.total)} for a batch of {self.batch_size}")
    else:
      where = (f"attention_scope=full: the key/value cache for {self.batch_size} x "
               f"{self.cache_len} tokens needs {_bytes(self.cache)}, about "
               f"{_bytes(self.total)} in all")
    return (f"{where} (parameters {_bytes(self.params)}, memory bank "
            f"{_bytes(self.memory_state)}, activations {_bytes(self.activations)})")


def estimate_memory(cfg: ModelConfig, num_params: int, batch_size: int,
                    cache_len: int | None, chunk_len: int) -> MemoryEstimate:
  """What one engine call holds at once: parameters, state (twice: in and out), one segment's
  activations and one chunk's logits. `cache_len` is ignored for attention_scope=segment.

  The state's part is measured on the state itself (`jax.eval_shape(init_state)`, no
  allocation): its key/value caches, and everything else it carries (the memory bank, the
  segment's inputs, positions).
  """
  act = _DTYPE_BYTES[cfg.compute_dtype]
  b, seg, d = batch_size, cfg.segment_len, cfg.width
  slots = seg if cfg.attention_scope == "segment" else int(cache_len)
  state = jax.eval_shape(lambda: init_state(cfg, b, slots))
  nbytes = {f.name: math.prod(getattr(state, f.name).shape)
            * getattr(state, f.name).dtype.itemsize for f in dataclasses.fields(state)}
  kv = sum(v for k, v in nbytes.items() if "cache" in k)
  mem = sum(v for k, v in nbytes.items() if "cache" not in k)
  m, n = cfg.num_memory_layers, cfg.memory.num_slots
  if cfg.memory.kind == "rmt":
    slots += 2 * n  # RMT also attends to the read tokens and, while writing, the write tokens
  per_segment = b * seg * (8 * d + 3 * cfg.mlp_width) * act
  per_segment += b * cfg.num_heads * seg * slots * 4  # attention scores
  if m:
    per_segment += b * (n * seg * cfg.memory.num_heads * 4 + 8 * n * d * 4)  # read/write
  logits = 2 * b * chunk_len * cfg.vocab_size * 4
  return MemoryEstimate(params=4 * num_params, cache=2 * kv, memory_state=2 * mem,
                        activations=per_segment + logits, batch_size=b,
                        cache_len=None if cfg.attention_scope == "segment" else int(cache_len))


def _on_mesh(x: Any, names: tuple[str | None, ...], mesh: Mesh) -> NamedSharding:
  """The NamedSharding of one array (or abstract array) with these logical axis names."""
  return sharding.logical_shardings(nn.LogicallyPartitioned(x, names), mesh)


def _row_axes(x: Any) -> tuple[str | None, ...]:
  """Logical names of a per-row array (tokens, lengths, logits): rows split, the rest whole."""
  return (_ROWS,) + (None,) * (len(x.shape) - 1)


def state_shardings(state: Any, mesh: Mesh) -> Any:
  """NamedShardings of a decode state (concrete or abstract) on `mesh`, field by field from
  the state's logical axis names; a field without names is an error, not replicated."""
  axes = state.logical_axes()
  missing = [f.name for f in dataclasses.fields(state) if f.name not in axes]
  if missing:
    raise ValueError(f"{type(state).__name__}.logical_axes() names no axes for {missing}")
  return state.replace(**{k: _on_mesh(getattr(state, k), names, mesh)
                          for k, names in axes.items()})


def device_memory_limit() -> int | None:
  """Bytes the default device can hold: the accelerator's limit, or the host's RAM on CPU."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # not every backend implements memory_stats
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


def _pow2_at_least(n: int) -> int:
  return 1 << max(0, math.ceil(math.log2(max(n, 1))))


class _Compiled:
  """The jitted prefill, loss and decode functions of one model config (and mesh), and their
  traces."""

  def __init__(self, cfg: ModelConfig, mesh: Mesh | None):
    model = build_model(cfg)
    self.traces: dict[str, int] = {}

    def traced(name: str):  # a Python side effect runs only when JAX traces (compiles)
      self.traces[name] = self.traces.get(name, 0) + 1

    def pin(state, *rows):
      """Fix the shardings of the returned state and per-row arrays: the next call then
      sees the same input shardings (no recompilation, no resharding between calls)."""
      if mesh is None:
        return (state, *rows)
      state = jax.lax.with_sharding_constraint(state, state_shardings(state, mesh))
      rows = [jax.lax.with_sharding_constraint(x, _on_mesh(x, _row_axes(x), mesh))
              for x in rows]
      return (state, *rows)

    def prefill(variables, state, tokens_BxC, lengths_B, pick_B, last_BxV):
      """Consume a chunk; keep the logits at index pick_B[b] of the chunk (where >= 0)."""
      traced("prefill")
      logits, state = model.apply(variables, tokens_BxC, state, lengths_B, method="prefill")
      got = jnp.take_along_axis(logits, jnp.maximum(pick_B, 0)[:, None, None], axis=1)[:, 0]
      return pin(state, jnp.where((pick_B >= 0)[:, None], got, last_BxV))

    def nll(variables, state, inputs_BxC, targets_BxC, lengths_B):
      traced("nll")
      logits, state = model.apply(variables, inputs_BxC, state, lengths_B, method="prefill")
      logp = jax.nn.log_softmax(logits, axis=-1)
      return pin(state, -jnp.take_along_axis(logp, targets_BxC[..., None], axis=-1)[..., 0])

    def decode(variables, state, logits_BxV, done_B, row_ids_B, step, seed, temperature,
               top_k, top_p):
      """Choose each row's next token from its logits and feed it; done rows stand still."""
      traced("decode")
      tokens_B = sample_logits(logits_BxV, row_keys(seed, row_ids_B, step), temperature,
                               top_k, top_p)
      logits, state = model.apply(variables, tokens_B[:, None], state, (~done_B)[:, None],
                                  method="step")
      return pin(state, tokens_B, logits[:, 0])

    def under_mesh(fn):  # traced under the mesh and rules: the model's constraints apply
      if mesh is None:
        return fn

      def call(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
          return fn(*args)

      return call

    # Donation lets XLA update the caches in place; the CPU backend would only warn.
    donate = (1,) if jax.default_backend() != "cpu" else ()
    self.prefill = under_mesh(jax.jit(prefill, donate_argnums=donate))
    self.nll = under_mesh(jax.jit(nll, donate_argnums=donate))
    self.decode = under_mesh(jax.jit(decode, donate_argnums=donate))


@functools.lru_cache(maxsize=None)
def _compiled(cfg: ModelConfig, mesh: Mesh | None) -> _Compiled:
  return _Compiled(cfg, mesh)


class Engine:
  """Generation, next-token scoring and per-token losses for one model and its parameters.

  `params` is the unboxed parameter tree (`checkpoint.load_params(...)[1]`). Strings are
  encoded with `tokenizer` and get a BOS token first (as training does) unless `add_bos` is
  false; prompts given as token ids are used as they are. `report` receives one line per new
  memory plan (default: the module logger).

  With a `mesh`, parameters are placed on it by the sharding table (a no-op for parameters
  restored onto those shardings: `checkpoint.load_params(..., shardings=...)` with
  `sharding.param_shardings(cfg, mesh)`), and so are the states and the batches; the answers
  are the one-device answers. The memory limit is then that of all the mesh's devices.
  """

  def __init__(self, cfg: ModelConfig, params: Any, tokenizer=None, *, batch_size: int = 8,
               chunk_len: int | None = None, add_bos: bool = True,
               report: Callable[[str], None] | None = None, memory_limit: int | None = -1,
               mesh: Mesh | None = None):
    if batch_size < 1:
      raise InferenceError(f"batch_size must be >= 1, got {batch_size}")
    self.cfg = cfg
    self.model = build_model(cfg)
    self.mesh = mesh
    if mesh is not None:
      params = jax.device_put(params, sharding.param_shardings(cfg, mesh))
    self.variables = {"params": params}
    self.tokenizer = tokenizer
    self.batch_size = batch_size
    self.add_bos = add_bos
    self.report = report or log.info
    self.memory_limit = device_memory_limit() if memory_limit == -1 else memory_limit
    if memory_limit == -1 and mesh is not None and self.memory_limit is not None:
      self.memory_limit *= mesh.size
    self.num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    seg = cfg.segment_len
    if chunk_len is None:
      fit = _LOGITS_BUDGET // (4 * batch_size * cfg.vocab_size)
      chunk_len = max(seg, min(4096, fit) // seg * seg)
    if chunk_len < seg or chunk_len % seg:
      raise InferenceError(f"chunk_len={chunk_len} must be a positive multiple of "
                           f"model.segment_len={seg}")
    self.chunk_len = chunk_len
    self._plans: set = set()
    self._fns = _compiled(cfg, mesh)

  def _rows(self, x: np.ndarray) -> jax.Array:
    """A host array whose first axis is the batch, on the device(s): rows over the mesh."""
    if self.mesh is None:
      return jnp.asarray(x)
    return jax.device_put(x, _on_mesh(x, _row_axes(x), self.mesh))

  @property
  def compilations(self) -> dict[str, int]:
    """Traces (= compilations) so far of each jitted function, shared by every engine of
    this model config: engines for several checkpoints of one config compile once."""
    return dict(self._fns.traces)

  # --- planning ------------------------------------------------------------------------------
  def encode(self, prompt: Prompt) -> list[int]:
    if isinstance(prompt, str):
      if self.tokenizer is None:
        raise InferenceError("a text prompt needs a tokenizer; pass token ids or a tokenizer")
      ids = ([self.tokenizer.bos_id] if self.add_bos else []) + self.tokenizer.encode(prompt)
    else:
      ids = [int(i) for i in prompt]
    if not ids:
      raise InferenceError("empty prompt: nothing to condition on (no BOS and no text)")
    bad = [i for i in ids if not 0 <= i < self.cfg.vocab_size]
    if bad:
      raise InferenceError(f"token id {bad[0]} is outside the model's vocabulary "
                           f"(model.vocab_size={self.cfg.vocab_size})")
    return ids

  def batch_bucket(self, n: int) -> int:
    """Rows per compiled call for n prompts: a power of two, at most batch_size."""
    return min(self.batch_size, _pow2_at_least(n))

  def chunk_for(self, tokens: int) -> int:
    """Tokens per prefill call for inputs of up to `tokens` tokens: chunk_len, or for short
    inputs the smallest power-of-two number of segments that holds them (a few shape
    buckets, rather than padding every short prompt to a whole chunk)."""
    seg = self.cfg.segment_len
    return min(self.chunk_len, seg * _pow2_at_least(-(-tokens // seg)))

  def cache_len(self, longest_prompt: int, new_tokens: int) -> int | None:
    """Cache slots per row for attention_scope=full (None for segment): room for the prompt,
    the decoded tokens and the chunks idle rows are fed, rounded up to a bucket."""
    if self.cfg.attention_scope == "segment":
      return None
    seg, c = self.cfg.segment_len, self.chunk_for(longest_prompt)
    whole = longest_prompt // seg * seg
    need = max(-(-longest_prompt // c) * c, whole + seg, longest_prompt + new_tokens + 1)
    return seg * _pow2_at_least(-(-need // seg))

  def plan(self, batch: int, cache_len: int | None) -> MemoryEstimate:
    """The memory estimate for a call; reported once per plan, refused if it cannot fit."""
    est = estimate_memory(self.cfg, self.num_params, batch, cache_len, self.chunk_len)
    key = (batch, cache_len)
    if key not in self._plans:
      self._plans.add(key)
      self.report(est.describe())
    if self.memory_limit is not None and est.total > self.memory_limit:
      raise InferenceError(f"{est.describe()}; the device holds {_bytes(self.memory_limit)}: "
                           "use attention_scope=segment, a smaller batch or shorter inputs")
    return est

  def _fresh_state(self, batch: int, cache_len: int | None):
    """`init_state` built on the host: zeros need no device program (eager jnp.zeros would
    compile one per shape)."""
    shapes = jax.eval_shape(lambda: init_state(self.cfg, batch, cache_len))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    if self.mesh is None:
      return zeros
    return jax.device_put(zeros, state_shardings(shapes, self.mesh))

  # --- prefill -------------------------------------------------------------------------------
  def _prefill(self, rows: list[list[int]], batch: int, cache_len: int | None):
    """(state, next-token logits [batch, V]) after consuming each row's prompt."""
    cfg, seg = self.cfg, self.cfg.segment_len
    lengths = np.zeros((batch,), np.int64)
    lengths[:len(rows)] = [len(r) for r in rows]
    whole = lengths // seg * seg
    c = self.chunk_for(int(whole.max()))
    state = self._fresh_state(batch, cache_len)
    last = self._rows(np.zeros((batch, cfg.vocab_size), np.float32))
    tokens = np.zeros((batch, max(int(whole.max()), 1)), np.int32)
    for b, r in enumerate(rows):
      tokens[b, :whole[b]] = r[:whole[b]]
    for start in range(0, int(whole.max()), c):
      chunk = np.zeros((batch, c), np.int32)
      piece = tokens[:, start:start + c]
      chunk[:, :piece.shape[1]] = piece
      n = np.clip(whole - start, 0, c).astype(np.int32)
      # A row whose prompt is whole segments ends in this chunk: keep its last logits.
      ends = (lengths == whole) & (whole > start) & (whole <= start + c)
      pick = np.where(ends, whole - start - 1, -1).astype(np.int32)
      state, last = self._fns.prefill(self.variables, state, self._rows(chunk),
                                     self._rows(n), self._rows(pick), last)
    tail = lengths - whole
    if tail.any():
      chunk = np.zeros((batch, seg), np.int32)
      for b, r in enumerate(rows):
        chunk[b, :tail[b]] = r[whole[b]:]
      pick = np.where(tail > 0, tail - 1, -1).astype(np.int32)
      state, last = self._fns.prefill(self.variables, state, self._rows(chunk),
                                     self._rows(tail.astype(np.int32)), self._rows(pick),
                                     last)
    return state, last

  def prefill(self, prompts: Sequence[Prompt], new_tokens: int = 0):
    """(DecodeState, next-token logits [bucket, V]) after consuming up to batch_size prompts,
    with room for `new_tokens` more in a full-attention cache. Rows past len(prompts) are
    padding."""
    rows = [self.encode(p) for p in prompts]
    if not 1 <= len(rows) <= self.batch_size:
      raise InferenceError(f"prefill takes 1 to batch_size={self.batch_size} prompts, got "
                           f"{len(rows)}")
    batch = self.batch_bucket(len(rows))
    cache_len = self.cache_len(max(len(r) for r in rows), new_tokens)
    self.plan(batch, cache_len)
    return self._prefill(rows, batch, cache_len)

  def _batches(self, n: int):
    for start in range(0, n, self.batch_size):
      yield list(range(start, min(n, start + self.batch_size)))

  # --- public API ----------------------------------------------------------------------------
  def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams = SamplingParams(),
               *, keep_logits: bool = False,
               progress: Callable[[int], None] | None = None) -> list[Generation]:
    """Continue each prompt; results in the order of `prompts`.

    Prompts are grouped by length into batches (less padding); each row samples from keys
    derived from its index in `prompts`, so results do not depend on the grouping.
    `progress(k)` is called after each batch with the number of prompts it finished.
    """
    encoded = [self.encode(p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    results: list[Generation | None] = [None] * len(encoded)
    for idx in self._batches(len(order)):
      ids = [order[i] for i in idx]
      rows = [encoded[i] for i in ids]
      batch = self.batch_bucket(len(rows))
      cache_len = self.cache_len(max(len(r) for r in rows), sampling.max_new_tokens)
      self.plan(batch, cache_len)
      state, logits = self._prefill(rows, batch, cache_len)
      for i, gen in zip(ids, self._decode(state, logits, rows, ids, batch, sampling,
                                          keep_logits)):
        results[i] = gen
      if progress is not None:
        progress(len(rows))
    return results

  def _decode(self, state, logits, rows, ids, batch, sampling: SamplingParams, keep_logits):
    n = len(rows)
    done = np.zeros((batch,), bool)
    done[n:] = True
    row_ids = np.zeros((batch,), np.int32)
    row_ids[:n] = ids
    out: list[list[int]] = [[] for _ in range(n)]
    kept: list[list[np.ndarray]] = [[] for _ in range(n)]
    texts = [""] * n
    reasons = ["length"] * n
    eos = self.tokenizer.eos_id if self.tokenizer is not None else None
    knobs = (jnp.int32(sampling.seed), jnp.float32(sampling.temperature),
             jnp.int32(sampling.top_k), jnp.float32(sampling.top_p))
    row_ids_dev = self._rows(row_ids)
    for t in range(sampling.max_new_tokens):
      state, tokens, new_logits = self._fns.decode(
          self.variables, state, logits, self._rows(done), row_ids_dev, jnp.int32(t),
          *knobs)
      tokens = np.asarray(tokens)
      host_logits = np.asarray(logits) if keep_logits else None
      for b in range(n):
        if done[b]:
          continue
        tok = int(tokens[b])
        if keep_logits:
          kept[b].append(host_logits[b])
        if sampling.stop_at_eos and tok == eos:
          done[b], reasons[b] = True, "eos"
          continue
        out[b].append(tok)
        if self.tokenizer is not None:
          texts[b] = self.tokenizer.decode(out[b])
          hits = [texts[b].find(s) for s in sampling.stop if s in texts[b]]
          if hits:
            texts[b] = texts[b][:min(hits)]
            done[b], reasons[b] = True, "stop"
      logits = new_logits
      if done.all():
        break
    return [Generation(text=texts[b], token_ids=out[b], prompt_tokens=len(rows[b]),
                       stop_reason=reasons[b],
                       logits=np.stack(kept[b]) if keep_logits and kept[b] else None)
            for b in range(n)]

  def next_token_logprobs(self, prompts: Sequence[Prompt],
                          token_ids: Sequence[int] | None = None,
                          progress: Callable[[int], None] | None = None) -> np.ndarray:
    """log p(next token | prompt) as float32 [len(prompts), len(token_ids) or V]."""
    encoded = [self.encode(p) for p in prompts]
    cols = None if token_ids is None else np.asarray(token_ids, np.int64)
    width = self.cfg.vocab_size if token_ids is None else len(token_ids)
    out = np.zeros((len(encoded), width), np.float32)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for idx in self._batches(len(order)):
      ids = [order[i] for i in idx]
      rows = [encoded[i] for i in ids]
      batch = self.batch_bucket(len(rows))
      cache_len = self.cache_len(max(len(r) for r in rows), 0)
      self.plan(batch, cache_len)
      _, logits = self._prefill(rows, batch, cache_len)
      logits = np.asarray(logits[:len(rows)], np.float64)
      top = logits.max(-1, keepdims=True)
      logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
      out[ids] = logp if cols is None else logp[:, cols]
      if progress is not None:
        progress(len(rows))
    return out

  def token_nll(self, tokens_BxT: np.ndarray) -> np.ndarray:
    """-log p(tokens[:, t+1] | tokens[:, :t+1]) as float32 [B, T-1], chunk by chunk.

    The state is streamed, so a row may be far longer than one call could hold. Rows have
    the same length; the last chunk may end inside a segment (nothing is computed after it).
    """
    tokens = np.asarray(tokens_BxT, np.int32)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
      raise InferenceError(f"token_nll needs [rows, >= 2 tokens], got shape {tokens.shape}")
    n_rows, n = tokens.shape[0], tokens.shape[1] - 1
    out = np.zeros((n_rows, n), np.float32)
    c = self.chunk_for(n)
    for idx in self._batches(n_rows):
      batch = self.batch_bucket(len(idx))
      cache_len = self.cache_len(n, 0)
      self.plan(batch, cache_len)
      state = self._fresh_state(batch, cache_len)
      rows = np.zeros((batch, n + 1), np.int32)
      rows[:len(idx)] = tokens[idx]
      for start in range(0, n, c):
        width = min(c, n - start)
        inputs = np.zeros((batch, c), np.int32)
        targets = np.zeros((batch, c), np.int32)
        inputs[:, :width] = rows[:, start:start + width]
        targets[:, :width] = rows[:, start + 1:start + 1 + width]
        lengths = np.where(np.arange(batch) < len(idx), width, 0).astype(np.int32)
        state, nll = self._fns.nll(self.variables, state, self._rows(inputs),
                                  self._rows(targets), self._rows(lengths))
        out[idx, start:start + width] = np.asarray(nll)[:len(idx), :width]
    return out
