#!/usr/bin/env bash
# Sets up .venv and runs the test suite (CPU, offline). With no arguments it then builds the vLLM serving environment
# (.venv-serving, scripts/setup_serving.sh) and runs the serving tests there; STEERMOE_SERVING_TESTS=0 leaves them out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q "$@"
if [ "$#" -eq 0 ] && [ "${STEERMOE_SERVING_TESTS:-1}" != 0 ]; then
  # vLLM pins an older transformers than the package, so its tests run in their own environment; the transformers
  # reference they compare with is computed in .venv.
  if bash scripts/setup_serving.sh; then
    HF_HUB_OFFLINE=1 .venv-serving/bin/python -m pytest -q tests/test_serving.py tests/test_serving_smollm2.py
  else
    echo "test: the vLLM serving environment could not be built (see above): the serving tests were not run" >&2
  fi
fi
