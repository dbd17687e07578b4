# The README's two commands: `make demo` (the main job on the embedded default) and
# `make test`. Both create .venv from requirements.txt when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded default: a tiny LM2 learns BABILong qa1 from scratch (about
# ten minutes on a 2-core CPU), then train.py prints where the checkpoint and the logs are;
# eval.py then scores it from 0k up to 16k tokens (training sequences hold at most 512)
# and draws its memory maps. Running it again resumes (or, when finished, just prints the
# results). DEMO_WORKDIR=... moves it.
DEMO_WORKDIR ?= runs/babilong_tiny

demo: $(STAMP)
	$(PY) -m lm2_jax.summary --config configs/babilong_tiny.yaml
	$(PY) train.py --config configs/babilong_tiny.yaml --workdir $(DEMO_WORKDIR)
	$(PY) eval.py --checkpoint $(DEMO_WORKDIR) --task babilong --tasks qa1 --lengths 0k,1k,2k,4k,8k,16k --num-samples 50 --output $(DEMO_WORKDIR)/eval/babilong.json
	$(PY) eval.py --checkpoint $(DEMO_WORKDIR) --task memory-map --output $(DEMO_WORKDIR)/eval/memory_map.json

# All tests, slow end-to-end ones included; two workers for the two cores.
test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" tests

clean:
	rm -rf $(VENV) .pytest_cache
