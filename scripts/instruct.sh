#!/usr/bin/env bash
# The instruct recipe (README, "Chat with audio"): open-domain sentences from WordNet and fortunes, spoken by the
# demo's training voices (espeak-ng), half of them as transcription rows and half as chat rows whose target is the
# frozen SmolLM2-135M-Instruct's own answer to the typed sentence; then train configs/instruct.yaml and ask held-out
# questions by held-out voices, typed and spoken (scripts/spoken_chat_eval.py), with the chat-route WER on held-out
# sentences. Each data step is skipped when its output exists. Arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
LLM=models/SmolLM2-135M-Instruct
$PY scripts/setup_smollm2.py --output_dir "$LLM"
DATA=data/instruct
[ -f $DATA/sentences.txt ] || $PY scripts/make_open_sentences.py --output $DATA/sentences.txt
[ -f $DATA/test_unseen_voice.jsonl ] \
  || $PY scripts/synthesize_demo_data.py --sentences $DATA/sentences.txt --output_dir $DATA --num_train 8000 --num_test 200
ANSWERS="--text_model_id $LLM --dtype bfloat16 --max_new_tokens 32 --batch_size 64"  # does nothing where complete
$PY scripts/make_chat_targets.py $DATA/train.jsonl --output $DATA/train_chat.jsonl $ANSWERS --repeat_fraction 0.5
$PY scripts/make_chat_targets.py $DATA/test_unseen_voice.jsonl --output $DATA/test_unseen_voice_chat.jsonl $ANSWERS
$PY train.py configs/instruct.yaml "$@"
OUT=$($PY -c "import sys, train; print(train.parse_args(sys.argv[1:])[2].output_dir)" configs/instruct.yaml "$@")
$PY scripts/spoken_chat_eval.py --model "$OUT" --output "$OUT/spoken_chat.json" --wer_manifest $DATA/test_unseen_voice.jsonl
