"""The settings of one `eval.py` run, typed and checked before any checkpoint is read.

`eval.py` parses its command line into an `EvalConfig`; `validate` refuses a bad value in
one line naming its flag (the caller prints it and exits with 2), as `config.validate`
does for the training config. Settings that depend on the models (default tasks, lengths
and sequence length) are resolved by the runner once the models are loaded.
"""

from __future__ import annotations

import dataclasses
import os

from lm2_jax.data import babilong as data_babilong
from lm2_jax.evaluation import babilong as ev_babilong
from lm2_jax.evaluation.report import EvaluationError

TASKS = ("babilong", "mmlu", "perplexity", "memory-map")
# The longest BABILong length accepted without --allow-long: the longest of the published
# suite that a single host evaluates in hours, not days.
MAX_LENGTH = 1_000_000
BABILONG_PROMPTS = ("compact", "full")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """One evaluation: which checkpoints, which task, where the results go, and how."""

  checkpoints: tuple[str, ...]
  task: str
  output: str                                  # the results JSON; other files sit next to it
  configs: tuple[str, ...] = ()                # none, one for all, or one per checkpoint
  names: tuple[str, ...] = ()                  # none or one per checkpoint
  overrides: tuple[str, ...] = ()              # dotted key=value, for every model
  tokenizer: str | None = None                 # None: the work directory's, else the config's
  batch_size: int = 8
  limit: int | None = None
  seed: int = 0
  progress: bool = True
  # babilong (tasks/lengths: empty for the defaults the models' configs imply)
  tasks: tuple[str, ...] = ()
  lengths: tuple[str, ...] = ()
  num_samples: int = 100
  allow_long: bool = False
  data: str = "generate"                       # babilong and perplexity
  haystack: str = "default"
  prompt: str | None = None                    # babilong: compact | full; memory-map: text
  max_new_tokens: int = 16
  # mmlu
  mmlu_dir: str | None = None
  shots: int = 5
  max_prompt_tokens: int | None = None
  # perplexity (seq_len None: 8 segments)
  seq_len: int | None = None
  num_sequences: int = 16

  @property
  def uses_mesh(self) -> bool:
    """Whether mesh.* settings were given: then every device, as train.py uses them."""
    return any(o.split("=", 1)[0].startswith("mesh.") for o in self.overrides)


def _at_least(value: int | None, least: int, flag: str):
  if value is not None and value < least:
    raise EvaluationError(f"{flag} must be >= {least}, got {value}")


def validate(cfg: EvalConfig) -> EvalConfig:
  """The config with BABILong tasks and lengths in canonical form; raises EvaluationError
  naming the flag of the first bad value."""
  if cfg.task not in TASKS:
    raise EvaluationError(f"--task {cfg.task!r}: unknown task; expected one of "
                          f"{', '.join(TASKS)}")
  _at_least(cfg.batch_size, 1, "--batch-size")
  _at_least(cfg.limit, 1, "--limit")
  if cfg.task == "babilong":
    tasks = tuple(ev_babilong.parse_tasks(cfg.tasks)) if cfg.tasks else ()
    lengths = tuple(ev_babilong.parse_lengths(cfg.lengths)) if cfg.lengths else ()
    for name in lengths:
      if data_babilong.parse_length(name) > MAX_LENGTH and not cfg.allow_long:
        raise EvaluationError(f"--lengths {name}: longer than the {MAX_LENGTH:,}-token "
                              "maximum; pass --allow-long to evaluate it anyway")
    _at_least(cfg.num_samples, 1, "--num-samples")
    _at_least(cfg.max_new_tokens, 1, "--max-new-tokens")
    if cfg.prompt is not None and cfg.prompt not in BABILONG_PROMPTS:
      raise EvaluationError(f"--prompt {cfg.prompt!r}: expected compact or full for babilong")
    cfg = dataclasses.replace(cfg, tasks=tasks, lengths=lengths)
  if cfg.task == "mmlu":
    if not cfg.mmlu_dir:
      raise EvaluationError("--task mmlu needs --mmlu-dir DIR (the original CSV or the "
                            "parquet layout)")
    if not os.path.isdir(cfg.mmlu_dir):
      raise EvaluationError(f"--mmlu-dir {cfg.mmlu_dir}: MMLU folder not found")
  if cfg.task == "perplexity":
    _at_least(cfg.seq_len, 1, "--seq-len")
    _at_least(cfg.num_sequences, 1, "--num-sequences")
  return cfg
