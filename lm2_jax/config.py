"""One typed configuration for everything: dataclasses, loaded from YAML, validated early.

A YAML file may name a `base:` file (relative to itself) whose values it overrides; the
command line overrides both with dotted `key=value` pairs (`model.memory.num_slots=64`),
whose values are parsed as YAML scalars. Unknown keys, wrong types and inconsistent values
raise `ConfigError` naming the key, before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from typing import Any, Literal, Sequence

import yaml

from lm2_jax.data import kinds as data_kinds
from lm2_jax.data.babi import RECALL_TASKS
from lm2_jax.data.errors import DataError


class ConfigError(ValueError):
  """A configuration that cannot be used; the message names the key and what was expected."""


# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RopeScalingConfig:
  """Llama-3 frequency scaling of the rotary embedding (`rope_type: llama3` in HF configs)."""

  factor: float = 32.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
  """The memory: LM2's gated bank, RMT's memory tokens, or none (docs/architecture.md).

  `kind` replaces the former `enabled` flag; a config that still says `enabled:` (every
  config.yaml saved before) loads as `enabled: true` -> kind lm2 and `enabled: false` ->
  kind none (`upgrade_memory_section`).
  """

  # "lm2": the gated memory bank in the blocks; "rmt": the Recurrent Memory Transformer
  # baseline (num_slots memory tokens read before and written after each segment); "none":
  # the plain Llama decoder.
  kind: Literal["lm2", "rmt", "none"] = "lm2"
  # LM2: slots of the memory bank; RMT: memory tokens (read and write each).
  num_slots: int = 16
  # The fields below apply to kind lm2 only.
  # Heads of the memory read and write cross-attentions; width / num_heads per head.
  num_heads: int = 4
  # Memory in the first `layers` decoder blocks; -1 means all of them (paper's Fig. 5 ablates this).
  layers: int = -1
  # "identity": the first N rows of the identity, fixed; "learned": the same start, trainable.
  init: Literal["identity", "learned"] = "identity"
  # Forget-gate bias at initialisation; sigmoid(1) ~ 0.73 keeps most of the memory at first.
  forget_bias: float = 1.0
  # Input-gate and output-gate biases at initialisation.
  input_bias: float = 0.0
  output_bias: float = 0.0
  # Under zero_init the memory read's value projection starts at zero, so a memory-on model
  # with vanilla weights computes exactly the vanilla model (used when starting from Llama).
  zero_init: bool = False
  # "chain": the write of layer l starts from the memory written by layer l-1 for this
  # segment (paper Fig. 2); "per_layer": from this layer's own previous memory (cheaper
  # ablation, all writes independent across depth).
  write_recurrence: Literal["chain", "per_layer"] = "chain"
  # How a write blends old and new (docs/architecture.md, "Retention"). "lstm": the paper's
  # Eq. 6, M = g_in * tanh(C) + g_f * P, with g_f from the old memory alone; nothing bounds
  # it and the forget gate cannot tell a segment with a fact from background. "convex":
  # M = (1 - z) * P + z * tanh(C) with one write gate z = sigmoid(C Gin + b_in) driven by
  # what the segment offers (input_bias sets how little background writes); |M| stays
  # within max(|M_0|, 1) over any number of segments.
  update: Literal["lstm", "convex"] = "lstm"
  # RMSNorm of the memory before the read's keys and values: the read sees the same scale
  # whatever the memory's norm has become.
  read_norm: bool = False
  # Each width unit of the memory centred over the slots of its layer before the read (and
  # before read_norm): an offset that every slot of a unit takes on alike, as background
  # drives the memory, moves nothing the read sees.
  read_centre: bool = False
  # Each write's change to the memory centred over the slots of its layer: every unit's
  # mean over the slots stays where the initial memory put it, so background cannot move
  # the memory by an offset that all slots share (the resting point of that part is fixed).
  # Experimental: from trained weights its gradient through 256 segments explodes
  # (docs/results.md).
  write_centre: bool = False
  # A learned embedding per slot, added to the memory where slots are addressed (the read's
  # keys, the write's queries), so slots stay distinguishable after similar writes.
  slot_keys: bool = False
  # The write's attention may also attend to a learned "nothing here" key whose value is
  # zero. With update=convex the write gate is scaled by the attention mass a slot put on
  # real tokens, so a slot that finds nothing in a segment keeps its content exactly.
  write_sink: bool = False
  # Chrono initialisation of the gate that decides what is kept (Tallec & Ollivier, 2018):
  # with T > 2, width unit d of an untrained memory keeps its content for about tau_d
  # segments, tau_d log-uniform in [2, T] (convex: input-gate bias -log(tau_d - 1); lstm: forget-gate bias log(tau_d - 1))
  # instead of the constant input_bias / forget_bias, so the gradient reaches writes that
  # many segments back from the start. 0: the constant biases.
  gate_timescale: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A Llama-3 decoder with the LM2 memory."""

  vocab_size: int = 259
  width: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  # Per-head width; 0 means width // num_heads.
  head_dim: int = 0
  mlp_width: int = 256
  norm_eps: float = 1e-5
  rope_theta: float = 500000.0
  rope_scaling: RopeScalingConfig | None = None
  tie_embeddings: bool = True
  # Tokens per memory segment: the memory is read before and written after each segment.
  segment_len: int = 32
  # "segment": self-attention within a segment only (memory carries the rest; linear in T).
  # "full": ordinary causal self-attention over the whole sequence.
  attention_scope: Literal["segment", "full"] = "segment"
  # The attention kernel of a segment attending within itself (attention_scope=segment, the
  # one-shot forward) and of the memory's read and write (without memory.write_sink):
  # "einsum" scores every key and masks (any device, any dtype); "xla" and "cudnn" call
  # jax.nn.dot_product_attention with that implementation, and "cudnn" is the fused
  # flash-attention kernel of NVIDIA GPUs (bfloat16/float16; it skips the masked half).
  # Self-attention through a cache (attention_scope=full, prefill, decoding) uses "einsum".
  attention_impl: Literal["einsum", "xla", "cudnn"] = "einsum"
  # Parameters are float32; activations and matmuls run in this dtype.
  compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
  # Rematerialisation of each decoder block under the layer scan.
  remat_policy: Literal["none", "full", "save_dots", "save_qkv_mlp"] = "none"
  # Layers per iteration of the layer scan (1 = a loop over layers; num_layers = no loop).
  # Unrolling spares the loop's stacked residuals, parameter slices and gradient
  # accumulators (docs/performance.md) at the price of compile time linear in the depth.
  scan_unroll: int = 1
  # Standard deviation of every weight at initialisation; 0 = 1/sqrt(width), which gives
  # attention logits of order one at any width (0.022 at Llama's 2048, 0.125 at width 64).
  # A fixed 0.02 at width 64 makes every logit about 0.03: attention starts uniform and
  # small models sit on a plateau where they answer by recency (docs/results.md).
  initializer_std: float = 0.0
  memory: MemoryConfig = dataclasses.field(default_factory=MemoryConfig)

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.width // self.num_heads

  @property
  def resolved_initializer_std(self) -> float:
    return self.initializer_std or self.width ** -0.5

  @property
  def num_memory_layers(self) -> int:
    """Decoder blocks with an LM2 memory bank (0 for kinds rmt and none)."""
    if self.memory.kind != "lm2":
      return 0
    return self.num_layers if self.memory.layers == -1 else self.memory.layers

  @property
  def carried_memory_layers(self) -> int:
    """M of the memory [M, B, N, D] one sequence can hand to the next (the model's
    `memory_MxBxNxD`): the LM2 memory layers, 1 for the RMT's memory tokens, 0 without."""
    return 1 if self.memory.kind == "rmt" else self.num_memory_layers


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
  """How many segments a training batch spans (docs/training.md, "Curriculum").

  Recurrent-memory models trained on one fixed length do not extrapolate, and starting with
  many segments learns slowly; so each batch draws its number of segments uniformly from
  min_segments up to a maximum that grows stage by stage (1, 2, 4, 8, ... as the
  recurrent-memory literature trains BABILong).
  """

  # The maximum number of segments of each stage, e.g. [1, 2, 4]; empty: no curriculum,
  # every batch spans train.seq_len tokens.
  max_segments: tuple[int, ...] = ()
  # Steps of each stage; the last stage lasts until the end of training.
  stage_steps: int = 1000
  # Fewest segments a batch may draw.
  min_segments: int = 1
  # Draw only min_segments, the ceiling and the multiples of `bucket` between them: each
  # distinct count compiles its own train step (~15 s for a small model on a CPU), so a
  # ceiling of 128 segments with bucket 1 would compile up to 113 of them.
  bucket: int = 1
  # Cut each batch into segments of one of these lengths (drawn uniformly per step) instead
  # of model.segment_len; the batch keeps its tokens, only where the attention window ends
  # and the memory steps in moves. Empty: always model.segment_len. Each length must be a
  # multiple of model.segment_len that divides every sequence the curriculum may draw. (On
  # qa1 from scratch, windows that see whole stories in some batches did not make the
  # memory bind: docs/results.md, "Cutting each batch at a drawn length".)
  segment_lens: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation and the training loop."""

  seed: int = 0
  # Tokens per training sequence (the model's input; the data supplies one more token for
  # the shifted targets); a multiple of model.segment_len. The curriculum's ceiling.
  seq_len: int = 128
  # Global batch, over all hosts and devices.
  batch_size: int = 8
  steps: int = 100
  # AdamW with a warm-up then `lr_schedule` decay to final_lr_fraction * learning_rate.
  learning_rate: float = 3e-4
  lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
  warmup_steps: int = 0
  final_lr_fraction: float = 0.1
  adam_b1: float = 0.9
  adam_b2: float = 0.95
  adam_eps: float = 1e-8
  # Decoupled weight decay; never applied to norms, biases or the learned initial memory.
  weight_decay: float = 0.1
  # Clip the global gradient norm to this value; 0 turns clipping off.
  grad_clip: float = 1.0
  # Gradient accumulation: the batch is split into this many micro-batches per step.
  microbatches: int = 1
  # Weight of the z-loss (mean squared log-partition), which keeps logits from drifting.
  z_loss: float = 0.0
  # "answer": score the targets the data marks (BABILong answers; every token of plain
  # text); "all": every non-padding token.
  loss_mask: Literal["answer", "all"] = "answer"
  # Stop the gradient through the memory every k segments (truncated BPTT); 0: never.
  truncate_every: int = 0
  # k > 0: each row of the batch starts its sequence from the memory its previous sequence
  # left (no gradient flows back into it) and from the initial memory only every k steps,
  # the rows staggered; so training reads and writes memories that have run over up to k
  # sequences, as evaluation at 128K does. The carried memory is part of the checkpoint.
  # LM2 memories and the RMT's memory tokens. 0: every sequence starts from the initial memory.
  memory_carry_steps: int = 0
  # A new run starts from the parameters of this work directory's newest checkpoint (or of
  # one step's folder), with a fresh optimizer at step 0: the next stage of a curriculum
  # from the previous stage's weights. A work directory that has checkpoints resumes and
  # ignores it. Empty: a fresh initialisation.
  init_from: str = ""
  curriculum: CurriculumConfig = dataclasses.field(default_factory=CurriculumConfig)
  # Checkpoints: every checkpoint_every steps and at the end, asynchronously; keep the last
  # `keep` and, with keep_period > 0, every keep_period-th step for good.
  checkpoint_every: int = 1000
  keep: int = 3
  keep_period: int = 0
  async_checkpoint: bool = True
  log_every: int = 10
  # Evaluation hook every eval_every steps (0: only at the end): validation loss and, for
  # BABILong, answer accuracy on eval_samples held-out samples (0: no evaluation) at each
  # of eval_segments segment counts (empty: the training maximum).
  eval_every: int = 0
  eval_samples: int = 64
  eval_batch_size: int = 16
  eval_segments: tuple[int, ...] = ()
  # With the evaluation, the LM2 memory's statistics per segment index (RMS, kept per write,
  # slot similarity, read entropy; lm2_jax/model/trace.py) on one held-out batch at the
  # longest eval length (LM2 memories only; ignored for the others). It collects every
  # read's attention: keep it for small models.
  eval_memory_trace: bool = False
  # Peak FLOP/s of one device for the MFU; 0: a table of accelerators, or on the CPU the
  # measured rate of a float32 matmul shared by the local devices.
  peak_flops: float = 0.0


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh (data, fsdp, tensor) and multi-host start-up (docs/training.md)."""

  # Axis sizes; at most one may be -1, inferred from the number of devices.
  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  # jax.distributed.initialize(): "auto" calls it when the environment describes several
  # processes (a coordinator address, SLURM, Open MPI, a multi-host TPU slice).
  distributed: Literal["auto", "always", "never"] = "auto"
  # Empty / 0 / -1: taken from the environment as JAX detects it.
  coordinator_address: str = ""
  num_processes: int = 0
  process_id: int = -1


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where training batches come from (docs/data.md describes the formats)."""

  # Where batches come from: a name in lm2_jax/data/kinds.py's KINDS (docs/training.md).
  kind: data_kinds.KindName = "babilong"
  # Files or folders (text, tokens); held-out files for the validation loss.
  paths: tuple[str, ...] = ()
  eval_paths: tuple[str, ...] = ()
  # TFDS: a registered name or a prepared dataset's folder, its data_dir, split and feature.
  tfds_name: str = ""
  tfds_data_dir: str = ""
  split: str = "train"
  text_key: str = "text"
  token_dtype: Literal["uint16", "uint32"] = "uint16"
  # "byte", a tokenizer.json (or its folder), or a SentencePiece .model.
  tokenizer: str = "byte"
  # BABILong: tasks, sample lengths (capped at each batch's length; empty: fill the whole
  # sequence; 0k: the facts alone) and the background text ("default", a folder, pg19:DIR).
  tasks: tuple[str, ...] = ("qa1",)
  lengths: tuple[str | int, ...] = ()
  haystack: str = "default"
  # BABILong training samples: with random_offset each sample ends a random 0..segment_len-1
  # tokens early, so questions and answers fall anywhere in a segment (as in evaluation);
  # max_gap_segments > 0 puts a log-uniform 0..max_gap_segments * segment_len tokens of
  # background between the last fact and the question.
  random_offset: bool = False
  max_gap_segments: int = 0
  # Up to this many stories per training sequence, one after the other, each closed by its
  # question and scored answer; the memory runs across them (1: one story per sequence).
  questions_per_sequence: int = 1
  # The fraction of training samples whose answer is not a word of the fact just before the
  # question (qa1: the asked actor is not the one who moved last), so that answering from
  # the last fact alone fails on them (docs/results.md, "What caps qa1"). 0: as drawn.
  hard_questions: float = 0.0
  # BABILong training samples keep their story's earlier questions where bAbI asks them,
  # each followed by its answer, which is scored too: 2.6 answers per 512-byte qa1 record
  # instead of one (fewer in short records, where only short stories fit), about every
  # actor at every point of the story (docs/results.md, "What caps qa1"). Evaluation
  # still asks one question at the end.
  interleaved_questions: bool = False
  # After the answer of each training story of a task in recall_tasks, ask up to this many
  # other questions its facts answer, each answered and scored (for qa1: where its other
  # actors are at its end): "the last room mentioned" answers at most one of them, and with
  # short segments their facts reach them only through the memory (docs/results.md,
  # "Asking every actor"). 0: off. Evaluation asks one question.
  recall_questions: int = 0
  # The tasks whose stories get recall questions (some of qa1-qa5, the tasks that have
  # them); at least one must be among data.tasks. The others' stories get none.
  recall_tasks: tuple[str, ...] = ("qa1",)
  # BABILong 0k training records (data.lengths 0k: the facts alone) hold stories back to
  # back while they fit instead of one story and padding: 2.6 times the qa1 stories per
  # step in 256-token rows (docs/data.md, "Packed 0k records"). The held-out stream
  # and evaluation keep one story per sample.
  pack_stories: bool = False
  # BABILong with train.memory_carry_steps = k: this many rows of each batch (its last ones)
  # hold episodes instead of records: the row's k carried sequences, from one memory
  # restart to the next, are one long sample (1..episode_stories stories, facts spread
  # over all of it) fed one sequence per step, so its questions ask about facts up to k
  # sequences back, as at 64K-128K in evaluation (docs/training.md, "Episodes"). 0: off.
  episode_rows: int = 0
  episode_stories: int = 1
  shuffle: bool = True
  # Reader threads per host (0: read in the training thread).
  num_threads: int = 0


@dataclasses.dataclass(frozen=True)
class Config:
  """The whole configuration; the resolved copy is saved next to every run."""

  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)


# --------------------------------------------------------------------------------------
# Validation of values that types alone cannot check
# --------------------------------------------------------------------------------------


def validate(cfg: Config) -> Config:
  """Check cross-field consistency; raises ConfigError naming the key."""
  m = cfg.model

  def need(ok: bool, key: str, msg: str):
    if not ok:
      raise ConfigError(f"{key}: {msg}")

  for key in ("vocab_size", "width", "num_layers", "num_heads", "num_kv_heads", "mlp_width",
              "segment_len"):
    need(getattr(m, key) > 0, f"model.{key}", f"must be positive, got {getattr(m, key)}")
  need(m.head_dim >= 0, "model.head_dim", f"must be >= 0 (0 = width // num_heads), got {m.head_dim}")
  need(m.initializer_std >= 0, "model.initializer_std",
       f"must be >= 0 (0 = 1/sqrt(width)), got {m.initializer_std}")
  if not m.head_dim:
    need(m.width % m.num_heads == 0, "model.num_heads",
         f"{m.num_heads} heads do not divide model.width={m.width}")
  need(m.num_heads % m.num_kv_heads == 0, "model.num_kv_heads",
       f"{m.num_kv_heads} key/value heads do not divide model.num_heads={m.num_heads}")
  need(m.resolved_head_dim % 2 == 0, "model.head_dim",
       f"rotary embedding needs an even head width, got {m.resolved_head_dim}")
  if m.attention_impl == "cudnn":
    need(m.compute_dtype in ("bfloat16", "float16"), "model.attention_impl",
         f"cudnn needs model.compute_dtype bfloat16 or float16, got {m.compute_dtype!r}")
  need(m.norm_eps > 0, "model.norm_eps", f"must be positive, got {m.norm_eps}")
  need(1 <= m.scan_unroll <= m.num_layers, "model.scan_unroll",
       f"must be between 1 and model.num_layers={m.num_layers}, got {m.scan_unroll}")
  need(m.rope_theta > 0, "model.rope_theta", f"must be positive, got {m.rope_theta}")
  if m.rope_scaling is not None:
    rs = m.rope_scaling
    need(rs.factor >= 1, "model.rope_scaling.factor", f"must be >= 1, got {rs.factor}")
    need(rs.high_freq_factor > rs.low_freq_factor, "model.rope_scaling.high_freq_factor",
         f"must exceed low_freq_factor ({rs.high_freq_factor} <= {rs.low_freq_factor})")
  mem = m.memory
  if mem.kind != "none":
    need(mem.num_slots > 0, "model.memory.num_slots", f"must be positive, got {mem.num_slots}")
  if mem.kind == "rmt":
    need(m.attention_scope == "segment", "model.attention_scope",
         "model.memory.kind=rmt recurs over segments through its memory tokens and needs "
         f"attention_scope=segment, got {m.attention_scope!r}")
  if mem.kind == "lm2":
    need(mem.num_heads > 0 and m.width % mem.num_heads == 0, "model.memory.num_heads",
         f"{mem.num_heads} heads do not divide model.width={m.width}")
    need(mem.layers == -1 or 1 <= mem.layers <= m.num_layers, "model.memory.layers",
         f"must be -1 (all) or in 1..{m.num_layers}, got {mem.layers}")
    need(mem.gate_timescale == 0 or mem.gate_timescale > 2, "model.memory.gate_timescale",
         f"must be 0 (off) or > 2 segments, got {mem.gate_timescale}")
  t = cfg.train
  need(t.seq_len > 0 and t.seq_len % m.segment_len == 0, "train.seq_len",
       f"must be a positive multiple of model.segment_len={m.segment_len}, got {t.seq_len}")
  need(t.batch_size > 0, "train.batch_size", f"must be positive, got {t.batch_size}")
  need(t.steps >= 0, "train.steps", f"must be >= 0, got {t.steps}")
  _validate_train(t, m, need)
  _validate_mesh(cfg.mesh, t, need)
  _validate_data(cfg.data, need)
  _validate_episodes(cfg.data, t, need)
  return cfg


def _validate_train(t: TrainConfig, m: ModelConfig, need):
  need(t.seed >= 0, "train.seed", f"must be >= 0, got {t.seed}")
  need(t.learning_rate > 0, "train.learning_rate", f"must be positive, got {t.learning_rate}")
  need(t.warmup_steps >= 0, "train.warmup_steps", f"must be >= 0, got {t.warmup_steps}")
  need(0 <= t.final_lr_fraction <= 1, "train.final_lr_fraction",
       f"must be in [0, 1], got {t.final_lr_fraction}")
  for key in ("adam_b1", "adam_b2"):
    need(0 <= getattr(t, key) < 1, f"train.{key}", f"must be in [0, 1), got {getattr(t, key)}")
  need(t.adam_eps > 0, "train.adam_eps", f"must be positive, got {t.adam_eps}")
  for key in ("weight_decay", "grad_clip", "z_loss", "peak_flops"):
    need(getattr(t, key) >= 0, f"train.{key}", f"must be >= 0, got {getattr(t, key)}")
  need(t.microbatches >= 1, "train.microbatches", f"must be >= 1, got {t.microbatches}")
  need(t.batch_size % t.microbatches == 0, "train.microbatches",
       f"{t.microbatches} micro-batches do not divide train.batch_size={t.batch_size}")
  need(t.truncate_every >= 0, "train.truncate_every", f"must be >= 0, got {t.truncate_every}")
  need(t.memory_carry_steps >= 0, "train.memory_carry_steps",
       f"must be >= 0, got {t.memory_carry_steps}")
  need(not t.memory_carry_steps or m.carried_memory_layers > 0,
       "train.memory_carry_steps", "carries a memory: it needs model.memory.kind=lm2 "
       f"with memory layers, or rmt, got kind {m.memory.kind!r}")
  for key in ("checkpoint_every", "keep", "log_every", "eval_batch_size"):
    need(getattr(t, key) >= 1, f"train.{key}", f"must be >= 1, got {getattr(t, key)}")
  for key in ("keep_period", "eval_every", "eval_samples"):
    need(getattr(t, key) >= 0, f"train.{key}", f"must be >= 0, got {getattr(t, key)}")
  most = t.seq_len // m.segment_len
  c = t.curriculum
  need(c.stage_steps >= 1, "train.curriculum.stage_steps", f"must be >= 1, got {c.stage_steps}")
  for i, n in enumerate(c.max_segments):
    need(1 <= n <= most, f"train.curriculum.max_segments[{i}]",
         f"must be in 1..{most} (train.seq_len={t.seq_len} / model.segment_len="
         f"{m.segment_len}), got {n}")
    need(i == 0 or n >= c.max_segments[i - 1], f"train.curriculum.max_segments[{i}]",
         f"stages must not shrink, got {list(c.max_segments)}")
  need(c.bucket >= 1, "train.curriculum.bucket", f"must be >= 1, got {c.bucket}")
  first = c.max_segments[0] if c.max_segments else most
  need(1 <= c.min_segments <= first, "train.curriculum.min_segments",
       f"must be in 1..{first} (the first stage's maximum), got {c.min_segments}")
  for i, n in enumerate(t.eval_segments):
    need(n >= 1, f"train.eval_segments[{i}]", f"must be >= 1, got {n}")
  if c.segment_lens:
    from lm2_jax.train.curriculum import drawable_counts  # pylint: disable=g-import-not-at-top
    lengths = sorted(n * m.segment_len for n in drawable_counts(c, most))
  for i, n in enumerate(c.segment_lens):
    need(n >= 1 and n % m.segment_len == 0 and all(k % n == 0 for k in lengths),
         f"train.curriculum.segment_lens[{i}]",
         f"must be a multiple of model.segment_len={m.segment_len} that divides every "
         f"sequence length the curriculum draws ({', '.join(map(str, lengths))}), got {n}")


def _validate_mesh(mesh: MeshConfig, t: TrainConfig, need):
  sizes = {k: getattr(mesh, k) for k in ("data", "fsdp", "tensor")}
  for k, v in sizes.items():
    need(v == -1 or v >= 1, f"mesh.{k}", f"must be >= 1 or -1 (inferred), got {v}")
  inferred = [k for k, v in sizes.items() if v == -1]
  need(len(inferred) <= 1, f"mesh.{inferred[-1] if inferred else 'data'}",
       f"only one axis may be -1 (inferred), got {', '.join('mesh.' + k for k in inferred)}")
  if not inferred:
    check_batch_split(t, {"data": sizes["data"], "fsdp": sizes["fsdp"]})
  need(mesh.num_processes >= 0, "mesh.num_processes",
       f"must be >= 0 (0: from the environment), got {mesh.num_processes}")


def check_batch_split(t: TrainConfig, row_axes: dict[str, int],
                      evaluates: bool = False) -> None:
  """Every micro-batch (and evaluation batch) splits evenly over the mesh axes of its rows.

  `row_axes`: those axes and their sizes (data and fsdp, lm2_jax/sharding.py). Called by
  validation when the config fixes the mesh, and by the preflight once the devices have
  fixed an inferred (-1) axis. Raises ConfigError naming the key.
  """
  dp = math.prod(row_axes.values())
  axes = " x ".join(f"mesh.{a}={n}" for a, n in row_axes.items())
  micro = t.batch_size // t.microbatches
  if micro % dp:
    raise ConfigError(f"train.batch_size: {t.batch_size} (in {t.microbatches} micro-batches "
                      f"of {micro}) is not divisible by the data-parallel size {dp} ({axes})")
  if evaluates and t.eval_batch_size % dp:
    raise ConfigError(f"train.eval_batch_size: {t.eval_batch_size} is not divisible by the "
                      f"data-parallel size {dp} ({axes})")


def _validate_episodes(d: DataConfig, t: TrainConfig, need):
  need(0 <= d.episode_rows <= t.batch_size, "data.episode_rows",
       f"must be in [0, train.batch_size={t.batch_size}], got {d.episode_rows}")
  need(d.episode_stories >= 1, "data.episode_stories", f"must be >= 1, got {d.episode_stories}")
  need(not d.episode_rows or t.memory_carry_steps > 0, "data.episode_rows",
       "an episode spans the sequences a row's memory is carried over: it needs "
       "train.memory_carry_steps > 0")
  need(not d.episode_rows or d.kind == "babilong", "data.episode_rows",
       f"episodes are BABILong samples: it needs data.kind=babilong, got {d.kind!r}")


def _validate_data(d: DataConfig, need):
  try:
    kind = data_kinds.of(d)
  except DataError as e:
    raise ConfigError(str(e)) from None
  kind.validate(d, need)
  need(d.num_threads >= 0, "data.num_threads", f"must be >= 0, got {d.num_threads}")
  need(d.max_gap_segments >= 0, "data.max_gap_segments",
       f"must be >= 0, got {d.max_gap_segments}")
  need(d.questions_per_sequence >= 1, "data.questions_per_sequence",
       f"must be >= 1, got {d.questions_per_sequence}")
  need(0.0 <= d.hard_questions <= 1.0, "data.hard_questions",
       f"must be a fraction in [0, 1], got {d.hard_questions}")
  need(d.recall_questions >= 0, "data.recall_questions",
       f"must be >= 0, got {d.recall_questions}")
  need(not d.pack_stories or d.kind == "babilong", "data.pack_stories",
       f"packs BABILong's 0k training records: it needs data.kind=babilong, got {d.kind!r}")
  bad = [t for t in d.recall_tasks if t not in RECALL_TASKS]
  need(not bad, "data.recall_tasks",
       f"{bad} have no recall questions; expected some of {list(RECALL_TASKS)}")
  if d.recall_questions:
    need(d.kind == "babilong" and set(d.recall_tasks) & set(d.tasks), "data.recall_questions",
         "asks about the stories of data.recall_tasks, which needs data.kind babilong with one "
         f"of {list(d.recall_tasks)} in data.tasks; got data.kind={d.kind}, "
         f"data.tasks={list(d.tasks)}")


# --------------------------------------------------------------------------------------
# Loading: YAML + base + dotted overrides -> typed dataclasses
# --------------------------------------------------------------------------------------


def _merge(base: dict, over: dict) -> dict:
  out = dict(base)
  for k, v in over.items():
    if isinstance(v, dict) and isinstance(out.get(k), dict):
      out[k] = _merge(out[k], v)
    else:
      out[k] = v
  return out


def _memory_section(data: dict) -> dict | None:
  model = data.get("model")
  memory = model.get("memory") if isinstance(model, dict) else None
  return memory if isinstance(memory, dict) else None


def _drop_replaced_memory_key(data: dict, stated: set[str]):
  """`model.memory.kind` and its former name `enabled` say one thing: when a later source
  (a config over its `base:`, the command line over the file) states one of them, the other
  one from the earlier source goes (`model.memory.enabled=false` on a config that says
  `kind: lm2`, `model.memory.kind=rmt` on a saved config.yaml that says `enabled: true`)."""
  memory = _memory_section(data)
  for key, other in (("kind", "enabled"), ("enabled", "kind")):
    if memory is not None and key in stated and other not in stated:
      memory.pop(other, None)


def _yaml_problem(e: yaml.YAMLError) -> str:
  """A YAML error in one line: what is wrong and where (PyYAML's own text spans lines)."""
  mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
  what = getattr(e, "problem", None) or getattr(e, "context", None) or str(e)
  where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
  return " ".join(f"{what}{where}".split())


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> dict:
  path = os.path.abspath(path)
  if path in seen:
    raise ConfigError(f"{path}: `base:` includes form a cycle: {' -> '.join(seen + (path,))}")
  try:
    with open(path, encoding="utf-8") as f:
      data = yaml.safe_load(f)
  except FileNotFoundError:
    raise ConfigError(f"{path}: config file not found") from None
  except IsADirectoryError:
    raise ConfigError(f"{path}: is a folder, expected a YAML config file") from None
  except OSError as e:
    raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
  except UnicodeDecodeError as e:
    raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8), expected a "
                      "YAML config file") from None
  except yaml.YAMLError as e:
    raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
  if data is None:
    data = {}
  if not isinstance(data, dict):
    raise ConfigError(f"{path}: expected a mapping of sections at the top level, got "
                      f"{type(data).__name__}")
  base = data.pop("base", None)
  if base is not None:
    if not isinstance(base, str) or not base:
      raise ConfigError(f"{path}: `base:` got {base!r}, expected the file name of another "
                        "YAML config")
    base_path = os.path.join(os.path.dirname(path), base)
    base_data = _read_yaml(base_path, seen + (path,))
    _drop_replaced_memory_key(base_data, set(_memory_section(data) or ()))
    data = _merge(base_data, data)
  return data


def _parse_override(item: str) -> tuple[list[str], Any]:
  if "=" not in item:
    raise ConfigError(f"override {item!r}: expected key=value, e.g. model.memory.num_slots=64")
  key, raw = item.split("=", 1)
  key = key.strip()
  if not key:
    raise ConfigError(f"override {item!r}: empty key")
  try:
    value = yaml.safe_load(raw) if raw.strip() else ""
  except yaml.YAMLError:
    value = raw
  return key.split("."), value


def _set_dotted(tree: dict, parts: list[str], value: Any):
  node = tree
  for p in parts[:-1]:
    if not isinstance(node.get(p), dict):
      node[p] = {}
    node = node[p]
  node[parts[-1]] = value


def _type_name(tp) -> str:
  return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
  """Convert a YAML value to the annotated type, or raise ConfigError naming key."""
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(tp)
    if value is None and type(None) in args:
      return None
    errors = []
    for a in args:
      if a is type(None):
        continue
      try:
        return _coerce(value, a, key)
      except ConfigError as e:
        errors.append(str(e))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: got {value!r}, expected "
                      + " or ".join(_type_name(a) for a in args))
  if origin is Literal:
    choices = typing.get_args(tp)
    if value not in choices:
      raise ConfigError(f"{key}: got {value!r}, expected one of {list(choices)}")
    return value
  if origin in (list, tuple, Sequence):
    (inner,) = typing.get_args(tp)[:1] or (Any,)
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{key}: got {value!r}, expected a list")
    return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
  if dataclasses.is_dataclass(tp):
    if not isinstance(value, dict):
      raise ConfigError(f"{key}: got {value!r}, expected a mapping of {tp.__name__} fields")
    return _build(tp, value, key)
  if tp is Any:
    return value
  if tp is bool:
    if not isinstance(value, bool):
      raise ConfigError(f"{key}: got {value!r}, expected true or false")
    return value
  if tp is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(f"{key}: got {value!r}, expected an integer")
    return value
  if tp is float:
    if isinstance(value, str):  # YAML 1.1 reads "1e4" (no dot) as a string
      try:
        return float(value)
      except ValueError:
        pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"{key}: got {value!r}, expected a number")
    return float(value)
  if tp is str:
    if not isinstance(value, str):
      raise ConfigError(f"{key}: got {value!r}, expected a string")
    return value
  raise ConfigError(f"{key}: unsupported field type {tp}")


def upgrade_memory_section(data: dict, key: str) -> dict:
  """The memory section with the former `enabled` flag turned into `kind`.

  `enabled: true` means kind lm2 (or rmt, when `kind` says so) and `enabled: false` kind
  none; a `kind` that contradicts `enabled` is an error naming both keys.
  """
  if "enabled" not in data:
    return data
  data = dict(data)
  enabled = _coerce(data.pop("enabled"), bool, f"{key}.enabled")
  kind = data.get("kind")
  if kind is None:
    data["kind"] = "lm2" if enabled else "none"
  elif enabled != (kind != "none"):
    raise ConfigError(f"{key}.enabled: {str(enabled).lower()} contradicts {key}.kind={kind!r} "
                      f"(enabled is the former name: true means kind lm2 or rmt, false means "
                      f"kind none); drop {key}.enabled")
  return data


def _build(cls, data: dict, prefix: str):
  if cls is MemoryConfig:
    data = upgrade_memory_section(data, prefix)
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  kwargs = {}
  for k, v in data.items():
    key = f"{prefix}.{k}" if prefix else str(k)
    if k not in fields:
      close = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.5)
      hint = f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close else (
          f"; valid keys: {', '.join(sorted(fields))}")
      raise ConfigError(f"{key}: unknown key{hint}")
    kwargs[k] = _coerce(v, hints[k], key)
  return cls(**kwargs)


def from_dict(data: dict) -> Config:
  """Build and validate a Config from a nested dict (as read from YAML)."""
  return validate(_build(Config, data, ""))


def load_config(path: str | None, overrides: Sequence[str] = ()) -> Config:
  """Load `path` (YAML, with optional `base:`), apply dotted overrides, validate.

  `path=None` starts from the defaults.
  """
  data = _read_yaml(path) if path else {}
  parsed = [_parse_override(item) for item in overrides]
  _drop_replaced_memory_key(data, {parts[2] for parts, _ in parsed
                                   if parts[:2] == ["model", "memory"] and len(parts) == 3})
  for parts, value in parsed:
    _set_dotted(data, parts, value)
  return from_dict(data)


def to_dict(cfg: Any) -> dict:
  """The config as plain YAML-able data (tuples become lists)."""

  def conv(x):
    if dataclasses.is_dataclass(x):
      return {f.name: conv(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, (list, tuple)):
      return [conv(v) for v in x]
    return x

  return conv(cfg)


def dump_config(cfg: Config, path: str):
  """Write the resolved configuration (loadable again with load_config)."""
  with open(path, "w") as f:
    yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def replace(cfg, **changes):
  """dataclasses.replace that accepts dotted keys: replace(cfg, **{"model.width": 8})."""
  nested: dict[str, dict] = {}
  direct = {}
  for k, v in changes.items():
    head, _, rest = k.partition(".")
    if rest:
      nested.setdefault(head, {})[rest] = v
    else:
      direct[head] = v
  for head, sub in nested.items():
    direct[head] = replace(getattr(cfg, head), **sub)
  return dataclasses.replace(cfg, **direct)
