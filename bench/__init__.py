"""The benchmark suite (`python bench/run.py`); not tests, never timed in CI."""
