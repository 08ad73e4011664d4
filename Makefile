PY ?= python3
export PYTHONUNBUFFERED := 1

.PHONY: help install demo test lint

help:
	@echo "make demo     install, then compile the Fashion-MNIST demo and benchmark it"
	@echo "make test     install, then run the test suite"
	@echo "make lint     ruff + mypy"

install:
	PY=$(PY) bash scripts/install.sh

demo: install
	$(PY) -m eeopt.demo --out build/demo

test: install
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check eeopt passes kernels tests scripts benchmarks
	$(PY) -m mypy eeopt passes kernels
