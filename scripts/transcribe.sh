#!/usr/bin/env bash
# Sets up .venv and transcribes audio files with SteerMoE (arguments go to steermoe-transcribe).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/steermoe-transcribe "$@"
