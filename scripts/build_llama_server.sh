#!/usr/bin/env bash
# Build llama.cpp's native `llama-server` (parallel slots + continuous batching) once, from the
# llama.cpp source vendored in the llama-cpp-python sdist (no llama.cpp package on Debian 12, and no
# GitHub access needed). Used by benchmarks/http_throughput.py. Safe to rerun: skips when built.
#   out: ${IOA_HOME:-~/.cache/ioa}/llama-server/llama-server
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${LLAMA_VERSION:-0.3.36}
CACHE=${IOA_HOME:-$HOME/.cache/ioa}
DEST="$CACHE/llama-server"
JOBS=${JOBS:-2}
PY=${PYTHON:-.venv/bin/python}

if [ -x "$DEST/llama-server" ]; then
  echo "already built: $DEST/llama-server"
  exit 0
fi
mkdir -p "$DEST/src"
if ! ls "$DEST"/src/llama_cpp_python-"$VERSION".tar.gz >/dev/null 2>&1; then
  "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DEST/src"
fi
if [ ! -d "$DEST/src/llama_cpp_python-$VERSION" ]; then
  tar -xzf "$DEST/src/llama_cpp_python-$VERSION.tar.gz" -C "$DEST/src"
fi
SRC="$DEST/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
# Portable (no -march=native), static, CPU-only, no curl (models are local files).
cmake -S "$SRC" -B "$DEST/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
nice -n 10 cmake --build "$DEST/build" --target llama-server -j "$JOBS"
cp "$DEST/build/bin/llama-server" "$DEST/llama-server.partial"
mv "$DEST/llama-server.partial" "$DEST/llama-server"  # atomic: a half-copied binary never looks built
echo "built: $DEST/llama-server"
