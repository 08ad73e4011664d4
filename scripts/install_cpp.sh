#!/usr/bin/env bash
# Installs what the C++ runtime (cpp/) needs to build; idempotent, safe to rerun.
#   - Debian: cmake, g++, nlohmann-json3-dev, libssl-dev (libcrypto), libgtest-dev, unzip, npm
#   - ONNX Runtime: the shared library comes from the installed `onnxruntime` wheel; its C/C++
#     headers (API 29, MIT) are unpacked from the npm package com.github.asus4.onnxruntime into
#     build/ort-headers/ (never committed). Point cmake at an official release instead with
#     -DONNXRUNTIME_ROOT=DIR (DIR/include, DIR/lib).
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_NPM="com.github.asus4.onnxruntime@0.4.9"
HEADERS=build/ort-headers

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
for tool in cmake g++ unzip npm; do  # tools: any install will do (npm often comes with nodejs)
  command -v "$tool" >/dev/null || need+=("$tool")
done
for pkg in nlohmann-json3-dev libssl-dev libgtest-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "install_cpp: apt-get install ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -f "$HEADERS/onnxruntime_cxx_api.h" ]; then
  echo "install_cpp: fetching ONNX Runtime headers ($ORT_NPM) into $HEADERS"
  mkdir -p build
  tmp="$(mktemp -d build/.ort-npm.XXXXXX)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$ORT_NPM" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/Plugins/Android/onnxruntime.aar
  unzip -q -o "$tmp/package/Plugins/Android/onnxruntime.aar" 'headers/*' -d "$tmp"
  rm -rf "$HEADERS"
  mv "$tmp/headers" "$HEADERS"
fi
echo "install_cpp: ok (headers in $HEADERS)"
