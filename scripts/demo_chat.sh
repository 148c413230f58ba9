#!/usr/bin/env bash
# Spoken turns answered as typed ones on the demo's domain (README, "Chat with audio"): warm-starts from the demo's
# ASR adapter (outputs/demo, which scripts/demo.sh trains; or pass --adapter <folder>), makes the
# chat targets (the frozen SmolLM2-135M-Instruct's own greedy answer to each typed training sentence, half the rows
# kept as transcription rows), trains configs/demo_chat.yaml, then asks held-out sentences by held-out voices typed
# and spoken and scores how alike the answers are (scripts/spoken_chat_eval.py). Each data step is skipped when its
# output exists. Arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
case " $* " in
  *" --adapter "*) ;;
  *) if [ ! -f outputs/demo/model.safetensors ]; then
       echo "demo_chat: no ASR adapter in outputs/demo: train it first (bash scripts/demo.sh, README) or pass --adapter <folder>" >&2
       exit 2
     fi ;;
esac
PY=.venv/bin/python
LLM=models/SmolLM2-135M-Instruct
$PY scripts/setup_smollm2.py --output_dir "$LLM"
[ -f data/demo/test_unseen_voice.jsonl ] || $PY scripts/synthesize_demo_data.py --output_dir data/demo
ANSWERS="--text_model_id $LLM --dtype bfloat16 --max_new_tokens 32 --batch_size 64"  # does nothing where complete
$PY scripts/make_chat_targets.py data/demo/train.jsonl --output data/demo/train_chat.jsonl $ANSWERS --repeat_fraction 0.5
$PY scripts/make_chat_targets.py data/demo/test_unseen_voice.jsonl --output data/demo/test_unseen_voice_chat.jsonl $ANSWERS
$PY train.py configs/demo_chat.yaml "$@"
OUT=$($PY -c "import sys, train; print(train.parse_args(sys.argv[1:])[2].output_dir)" configs/demo_chat.yaml "$@")
$PY scripts/spoken_chat_eval.py --model "$OUT" --output "$OUT/spoken_chat.json" --max_new_tokens 32 \
  --equivalence_manifest data/demo/test_unseen_voice.jsonl --equivalence_samples 100 \
  --wer_manifest data/demo/test_unseen_voice.jsonl --wer_samples 100
