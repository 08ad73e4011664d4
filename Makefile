PY ?= python3
export PYTHONUNBUFFERED := 1

.PHONY: help install cpp demo demo-text test lint layers gpu-check

help:
	@echo "make demo     install, then compile the Fashion-MNIST demo and benchmark it"
	@echo "make demo-text  install, then MiniLM with early exits on tweets vs DeeBERT/PABEE"
	@echo "make test     install, build the C++ runtime, check the layers, then run the test suite"
	@echo "make cpp      build the C++ runtime (build/cpp) and run its unit tests"
	@echo "make lint     ruff + mypy + the layer contracts (lint-imports)"
	@echo "make gpu-check  on a CUDA machine: gpu tests + GPU benchmark -> benchmarks/results/gpu-<date>"

install:
	PY=$(PY) bash scripts/install.sh

demo: install
	$(PY) -m eeopt.demo --out build/demo

demo-text: install
	$(PY) benchmarks/text_tweets.py --quick --out build/demo-text

cpp:
	bash scripts/install_cpp.sh
	PY=$(PY) bash scripts/build_cpp.sh

# the import-linter contracts in pyproject.toml, on the installed layout (passes/ and kernels/
# as eeopt.passes and eeopt.kernels)
layers:
	PY=$(PY) bash scripts/lint_imports.sh

test: install cpp layers
	EEOPT_REQUIRE_JS=1 $(PY) -m pytest -q

lint: layers
	$(PY) -m ruff check eeopt passes kernels tests scripts benchmarks
	$(PY) -m mypy eeopt passes kernels
	$(PY) scripts/import_graph.py

# needs a CUDA build of torch and eeopt installed; deliberately does not run `make install`
gpu-check:
	$(PY) benchmarks/gpu_check.py
