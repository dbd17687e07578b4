"""Multi-host start-up: `jax.distributed.initialize()` when the run spans several processes.

On a TPU pod slice or a GPU cluster every host runs the same command; JAX connects them
through a coordinator (process 0) and then sees every device of every host. The
coordinator address, process count and process id come from the config when given, else
from the environment as JAX detects it (SLURM, Open MPI, Kubernetes, Cloud TPU).
"""

from __future__ import annotations

import logging
import os

import jax

from lm2_jax.config import MeshConfig

log = logging.getLogger(__name__)


def _environment_has_several_processes() -> bool:
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return True
  if "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
    return True
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return True
  # Multi-host TPU slices on GKE list their workers; on plain TPU VMs set
  # mesh.distributed=always (JAX then asks the metadata server).
  return "," in env.get("TPU_WORKER_HOSTNAMES", "") or bool(
      env.get("MEGASCALE_COORDINATOR_ADDRESS"))


def wants_distributed(cfg: MeshConfig) -> bool:
  if cfg.distributed == "never":
    return False
  if cfg.distributed == "always":
    return True
  return bool(cfg.coordinator_address) or cfg.num_processes > 1 or (
      _environment_has_several_processes())


def initialize(cfg: MeshConfig) -> None:
  """Connect to the other processes if the config or the environment asks for it.

  Must run before anything touches a JAX device. Idempotent.
  """
  if jax.distributed.is_initialized() or not wants_distributed(cfg):
    return
  kwargs = {}
  if cfg.coordinator_address:
    kwargs["coordinator_address"] = cfg.coordinator_address
  if cfg.num_processes:
    kwargs["num_processes"] = cfg.num_processes
  if cfg.process_id >= 0:
    kwargs["process_id"] = cfg.process_id
  jax.distributed.initialize(**kwargs)
  log.info("process %d of %d, %d local of %d devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())


def is_primary() -> bool:
  """The one process that writes logs and the work directory's files."""
  return jax.process_index() == 0
