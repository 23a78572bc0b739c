# Set-up and checks. `make install` then `make test` is all a fresh clone needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install lint format test test-all clean bench bench-dispatch bench-finetune

install:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"

# ruff (pyproject.toml: lint rules, lines of at most 120 characters); `make format` rewrites.
lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# pytest exits with 5 when no test is collected: that is not a failure of the suite.
test:
	$(PY) -m pytest -m "not slow" $(ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

test-all:
	$(PY) -m pytest $(ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Evaluation cost per generation, modes side by side (writes benchmarks/results.json).
bench:
	$(PY) benchmarks/bench_evaluation.py $(ARGS)

# evaluator=gpus with CPU workers against local, same generations (writes benchmarks/results_dispatch.json).
bench-dispatch:
	$(PY) benchmarks/bench_dispatch.py $(ARGS)

# The evaluation stage: per-image data path against data on the device, side by side (writes benchmarks/results_finetune.json).
bench-finetune:
	$(PY) benchmarks/bench_finetune.py $(ARGS)
