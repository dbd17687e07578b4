"""Training: `run(cfg, workdir)` trains a config in a work directory (docs/training.md).

Modules, one concern each: `loop` (the job), `preflight` (checks before anything runs),
`state` (the sharded train state), `step` (jitted train/eval steps), `optim` (AdamW and
its schedule), `loss` (masked cross-entropy, z-loss), `inputs` (per-host Grain batches),
`curriculum` (segments per batch), `evaluation` (the periodic hook), `metrics` (logs,
MFU), `preemption` (SIGTERM/SIGINT), `distributed` (multi-host start-up).
"""

from lm2_jax.train.loop import RunResult, TrainingError, run

__all__ = ["RunResult", "TrainingError", "run"]
