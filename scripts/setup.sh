#!/usr/bin/env bash
# Creates .venv (if missing), installs SteerMoE with its test, demo and ONNX dependencies into it, and installs
# espeak-ng (used to synthesize the demo's speech), WordNet and fortunes (the instruct recipe's sentences) and
# Chromium with its WebDriver (the web demo's browser test) when the system package manager can. Idempotent.
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
.venv/bin/python -m pip install --quiet -e ".[dev,demo,onnx]"

# system_install <command or /path> <why> <packages...>: apt-get install the packages unless <command> (or the
# file /path) exists.
system_install() {
  local command=$1 why=$2
  shift 2
  case $command in
    /*) [ -e "$command" ] && return 0 ;;
    *) command -v "$command" >/dev/null 2>&1 && return 0 ;;
  esac
  local sudo=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; }; then
    $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
      || { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; } \
      || echo "setup: could not install $*; $why (apt-get install $*)" >&2
  else
    echo "setup: $command is not installed; $why (apt-get install $*)" >&2
  fi
}
system_install espeak-ng "the demo needs it to synthesize speech" espeak-ng
system_install /usr/share/wordnet/data.noun "the instruct recipe reads its sentences from it" wordnet-base
system_install /usr/share/games/fortunes/fortunes "the instruct recipe reads its sentences from it" fortunes
system_install chromedriver "the web demo's browser test needs it" chromium chromium-driver
