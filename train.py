"""Train LM2: `python train.py --config configs/X.yaml [--workdir DIR] [key=value ...]`.

Everything happens in `lm2_jax.train.run`; this file parses the command line. Rerunning
the same command in the same work directory resumes from its newest checkpoint. Bad input
prints one line and exits with status 2; a run that had to stop (a non-finite loss)
exits with 1.
"""

import logging
import os
import sys


def main(argv=None) -> int:
  from lm2_jax.cli import OneLineParser  # pylint: disable=g-import-not-at-top
  parser = OneLineParser(prog="python train.py", description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", required=True, help="YAML config, e.g. configs/babilong_tiny.yaml")
  parser.add_argument("--workdir", help="where checkpoints and logs go "
                      "(default: runs/<config name>)")
  parser.add_argument("--start-over", action="store_true",
                      help="train from step 0 even though the work directory's checkpoints "
                      "cannot be restored (they stay in checkpoints-skipped/)")
  parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. "
                      "train.steps=100 mesh.data=8")
  args = parser.parse_intermixed_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

  # The config is read before JAX is imported: a mistake in it is reported in a moment.
  from lm2_jax.config import ConfigError, load_config  # pylint: disable=g-import-not-at-top
  try:
    cfg = load_config(args.config, args.overrides)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from lm2_jax.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
  from lm2_jax.data.errors import DataError  # pylint: disable=g-import-not-at-top
  from lm2_jax.train import TrainingError, run  # pylint: disable=g-import-not-at-top

  workdir = args.workdir or os.path.join(
      "runs", os.path.splitext(os.path.basename(args.config))[0])
  try:
    run(cfg, workdir, start_over=args.start_over)
  except (ConfigError, CheckpointError, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except TrainingError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
