#!/usr/bin/env bash
# The main job: synthesize a small spoken dataset with espeak-ng, train the aligner on a small real encoder and a
# small real LLM, evaluate on a held-out voice, and print WER before and after training.
# Arguments go to train.py, e.g. --audio_model_id <id or folder> --text_model_id <id or folder> --max_steps 300.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "demo: espeak-ng is required to synthesize the demo speech: apt-get install espeak-ng (or brew install espeak-ng)" >&2
  exit 2
fi
if [ ! -f data/demo/test.jsonl ]; then
  .venv/bin/python scripts/synthesize_demo_data.py --output_dir data/demo
fi
.venv/bin/python train.py configs/demo.yaml "$@"
