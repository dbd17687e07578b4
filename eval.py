"""Evaluate LM2 checkpoints: BABILong, MMLU, perplexity per segment, memory read maps.

    python eval.py --checkpoint runs/demo --task babilong --tasks qa1,qa2 \
        --lengths 0k,1k,4k,16k --num-samples 20 --output runs/demo/eval/babilong.json

docs/evaluation.md describes every task, option and output file.
"""

import sys

from lm2_jax.evaluation.runner import main

if __name__ == "__main__":
  sys.exit(main())
