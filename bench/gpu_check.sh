#!/usr/bin/env bash
# The README's GPU figures in one short run: whisper-large-v3 + Qwen2.5-7B shapes, random weights, bf16; an estimated
# 8 minutes on one H200, model builds and compilation included (not yet run on a GPU). Needs a CUDA GPU with ~80 GB,
# torch with CUDA, and this repo's requirements (transformers >= 5.23, soundfile, soxr).
#
#   bash bench/gpu_check.sh                          # all parts
#   bash bench/gpu_check.sh decode drafts            # some: train, encoder, decode, drafts
#
# Each benchmark runs in its own process under a time limit ($STEP_TIMEOUT seconds); one that fails is reported and
# the others still run; the exit status is 1 if any failed. Tables go to stdout, JSON to $RESULTS/<part>/.
# decode runs the issue's two setups (dynamic cache; static cache with transformers' default compilation) and the
# tuned one (one graph, CUDA graphs, one reused static cache, no EOS check), each on both sides, with the ops per
# decoded token counted by the profiler; TORCH_LOGS=perf_hints prints why a CUDA graph was skipped, if one was.
# drafts times CTC-drafted decoding's verify passes with drafts equal to the greedy output (tokens per second per
# stream against one token per pass).
# SIZE=tiny DEVICE=cpu runs the same steps at the smoke-test size on a CPU (a check of this script, not a figure).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-bench/results/gpu}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
SIZE=${SIZE:-large}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(train encoder decode drafts)

DEVICE=$DEVICE "$PYTHON" - <<'PY' || exit 1
import os, soundfile, soxr, torch, transformers
cuda = os.environ["DEVICE"].startswith("cuda")
if cuda and not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no CUDA device")
print(f"gpu_check: {torch.cuda.get_device_name() if cuda else 'CPU'}, torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}), transformers {transformers.__version__}")
PY

failed=0
step() {  # step <name> <script> [arguments...]: one benchmark at $SIZE on $DEVICE
  local name=$1 start=$SECONDS
  shift
  echo "== $name: $*"
  timeout "$STEP_TIMEOUT" "$PYTHON" "$@" --size "$SIZE" --device "$DEVICE" --output_dir "$RESULTS/$name" \
    || { echo "!! $name failed (exit $?)"; failed=1; }
  echo "== $name: $((SECONDS - start)) s"
}
decode=(bench/inference.py --new_tokens 128 --skip_load --repeats 3 --warmup 1 --profile_tokens)
for part in "${parts[@]}"; do
  case $part in
    train) step train bench/train_step.py --batch 8 --repeats 3 --warmup 1 ;;
    encoder) step encoder bench/encoder_overhead.py --seconds 30 --batch 8 --repeats 9 ;;
    decode)
      step decode-dynamic "${decode[@]}"
      TORCH_LOGS=perf_hints step decode-static "${decode[@]}" --cache_implementation static
      TORCH_LOGS=perf_hints step decode-tuned "${decode[@]}" --cache_implementation static \
        --compile_mode reduce-overhead --reuse_cache --ignore_eos
      ;;
    drafts) step drafts bench/ctc_drafts.py --new_tokens 64 --repeats 3 --warmup 1 ;;
    *) echo "gpu_check: unknown part '$part' (train, encoder, decode, drafts)" >&2; exit 2 ;;
  esac
done
exit $failed
