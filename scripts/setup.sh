#!/usr/bin/env bash
# Creates .venv (if missing), installs SteerMoE with its test dependencies (and the ONNX extra) into it, and installs
# espeak-ng (used to synthesize the demo's speech) when the system package manager can. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[dev,onnx]"
if ! command -v espeak-ng >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    $SUDO apt-get install -y --no-install-recommends espeak-ng >/dev/null 2>&1 \
      || { $SUDO apt-get update >/dev/null 2>&1 && $SUDO apt-get install -y --no-install-recommends espeak-ng >/dev/null 2>&1; } \
      || echo "setup: could not install espeak-ng; the demo needs it (apt-get install espeak-ng / brew install espeak-ng)" >&2
  else
    echo "setup: espeak-ng is not installed; the demo needs it (apt-get install espeak-ng / brew install espeak-ng)" >&2
  fi
fi
