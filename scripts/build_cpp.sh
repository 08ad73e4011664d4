#!/usr/bin/env bash
# Builds the C++ runtime (cpp/) into build/cpp (Release), runs its tests with ctest, installs it
# into build/cpp-install and builds + runs cpp/examples against that install via
# find_package(eeopt). Run scripts/install_cpp.sh first (or `make cpp`).
#
#   ONNXRUNTIME_ROOT=DIR  use an ONNX Runtime release (DIR/include, DIR/lib) instead of the
#                         installed onnxruntime wheel + the headers in build/ort-headers
#   JOBS=N                parallel build jobs (default: all cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
JOBS="${JOBS:-$(nproc)}"

if [ -z "${ONNXRUNTIME_ROOT:-}" ]; then
  # build/ort: the wheel's libonnxruntime.so.1.x behind the names a linker and loader look for.
  [ -f build/ort-headers/onnxruntime_cxx_api.h ] || {
    echo "build_cpp: build/ort-headers is missing; run scripts/install_cpp.sh" >&2; exit 1; }
  ort_lib="$("$PY" -c 'import glob, os, onnxruntime as o
libs = sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so.1*")))
print(libs[-1] if libs else "")')"
  [ -n "$ort_lib" ] || {
    echo "build_cpp: no libonnxruntime.so.1* in the onnxruntime wheel; pip install onnxruntime" >&2
    exit 1; }
  mkdir -p build/ort/lib
  ln -sfn ../ort-headers build/ort/include
  ln -sf "$ort_lib" build/ort/lib/libonnxruntime.so.1
  ln -sf libonnxruntime.so.1 build/ort/lib/libonnxruntime.so
  ONNXRUNTIME_ROOT="$PWD/build/ort"
fi

cmake -S cpp -B build/cpp -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DONNXRUNTIME_ROOT="$ONNXRUNTIME_ROOT" -DPython3_EXECUTABLE="$(command -v "$PY")"
cmake --build build/cpp -j "$JOBS"
(cd build/cpp && ctest --output-on-failure -j "$JOBS")

rm -rf build/cpp-install
cmake --install build/cpp --prefix build/cpp-install >/dev/null
cmake -S cpp/examples -B build/cpp-example -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PWD/build/cpp-install"
cmake --build build/cpp-example -j "$JOBS"
build/cpp-example/classify build/cpp/tests/test_program build/cpp/tests/test_input.npy | tail -3
echo "build_cpp: ok: build/cpp/eeopt_run, library + package in build/cpp-install"
