"""Entry point of ``python -m lm2_jax.data.babilong``."""

import sys

from lm2_jax.data.babilong.cli import main

if __name__ == "__main__":
  sys.exit(main())
