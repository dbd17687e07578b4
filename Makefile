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

demo: $(STAMP)
	$(PY) -m lm2_jax.summary --config configs/tiny.yaml
	$(PY) bench/forward.py --config configs/tiny.yaml --tokens 1024

# All tests, slow end-to-end ones included; two workers for the two cores.
test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" tests

clean:
	rm -rf $(VENV) .pytest_cache
