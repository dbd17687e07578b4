"""`python tests/train_helper.py <train.py arguments>`: train.py, able to pause mid-run.

The kill/resume tests need the process to be between two given steps when they signal it;
real steps take milliseconds, so with LM2_TEST_PAUSE_AT=N the helper, after logging step N,
creates the file $LM2_TEST_MARKER and waits (at most a minute) until $LM2_TEST_MARKER.go
exists. Nothing else differs from `python train.py`.
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _pause_after(step: int, marker: str) -> None:
  from lm2_jax.train import metrics  # pylint: disable=g-import-not-at-top

  log_train = metrics.MetricsLogger.train

  def train(self, record, eta_seconds):
    log_train(self, record, eta_seconds)
    if record["step"] == step:
      with open(marker, "w", encoding="utf-8"):
        pass
      deadline = time.time() + 60
      while time.time() < deadline and not os.path.exists(marker + ".go"):
        time.sleep(0.02)

  metrics.MetricsLogger.train = train


if __name__ == "__main__":
  if os.environ.get("LM2_TEST_PAUSE_AT"):
    _pause_after(int(os.environ["LM2_TEST_PAUSE_AT"]), os.environ["LM2_TEST_MARKER"])
  import train  # pylint: disable=g-import-not-at-top
  sys.exit(train.main(sys.argv[1:]))
