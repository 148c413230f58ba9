"""CTC-drafted decoding against plain greedy decoding on a trained adapter: the same clips transcribed end to end
(audio in, text out, through `pipeline("automatic-speech-recognition")`) with drafts on (the default) and off
(`generate_kwargs={"ctc_drafts": False}`), single-stream and batched, interleaved in one run; identical transcripts,
tokens per LLM pass and the time ratio. Single-stream also times drafts with the prompt before the audio recomputed
for every clip (its cached keys and values not reused), to show what each part gives.

    python bench/ctc_drafts.py --model outputs/demo --manifest data/demo/test_unseen_voice.jsonl --clips 60

Without `--model`, random weights at `--size` (drafts meaningless there; `--size large --device cuda` for GPU shapes)
time one prompt decoded one token per LLM pass against drafts equal to the greedy output (every draft token
accepted): the verify pass's cost and the speed at that acceptance.
"""

import json
import sys
import time
from pathlib import Path

import torch
from transformers import pipeline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import SIZES, build_model, measure_interleaved, parser, report, resolve_dtype  # noqa: E402
from long_form import clip_at_rate  # noqa: E402

RATE = 16000


PLAIN, DRAFTS, DRAFTS_RECOMPUTED = "plain", "drafts", "drafts, prompt recomputed"


def transcribe(asr, clips, batch_size: int, mode: str) -> tuple[list[str], float, list]:
    kwargs = {"generate_kwargs": {"ctc_drafts": False}} if mode == PLAIN else {}
    if mode == DRAFTS_RECOMPUTED:  # the prompt prefix's cache is never found
        asr.model._prompt_prefix_cache = lambda *args, **kwargs: (None, 0)
    counts = []
    start = time.perf_counter()
    texts = []
    for index in range(0, len(clips), batch_size):
        inputs = [{"array": clip, "sampling_rate": RATE} for clip in clips[index : index + batch_size]]
        asr.model.__dict__.pop("_last_ctc_drafting", None)
        texts += [out["text"] for out in asr(inputs, batch_size=batch_size, **kwargs)]
        decoding = asr.model.__dict__.get("_last_ctc_drafting")
        if decoding is not None and batch_size == 1:
            counts.append((decoding.tokens, decoding.passes + 1))
    seconds = time.perf_counter() - start
    asr.model.__dict__.pop("_prompt_prefix_cache", None)
    return texts, seconds, counts


def trained_adapter(args):
    asr = pipeline("automatic-speech-recognition", model=args.model, trust_remote_code=True)
    manifest = Path(args.manifest)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[: args.clips]]
    clips = [clip_at_rate(manifest.parent / row["audio"]) for row in rows]
    transcribe(asr, clips[:2], 1, DRAFTS)  # warm-up
    results = {"clips": len(clips), "model": args.model}
    for batch_size in (1, args.batch_size):
        modes = (DRAFTS, PLAIN, DRAFTS_RECOMPUTED) if batch_size == 1 else (DRAFTS, PLAIN)
        times = dict.fromkeys(modes, 0.0)
        texts = {}
        counts = []
        for repeat in range(args.repeats):  # interleaved: drafts on, off, on, off ...
            for mode in modes:
                texts[mode], seconds, seen = transcribe(asr, clips, batch_size, mode)
                times[mode] += seconds / args.repeats
                counts += seen if mode == DRAFTS and repeat == 0 else []
        identical = sum(all(text == texts[PLAIN][i] for text in (texts[mode][i] for mode in modes)) for i in range(len(clips)))
        row = {
            "batch_size": batch_size, "plain_s": round(times[PLAIN], 2), "drafted_s": round(times[DRAFTS], 2),
            "speedup": round(times[PLAIN] / times[DRAFTS], 3), "identical": f"{identical}/{len(clips)}",
        }  # fmt: skip
        if DRAFTS_RECOMPUTED in times:
            row["drafted_prompt_recomputed_s"] = round(times[DRAFTS_RECOMPUTED], 2)
            row["speedup_prompt_recomputed"] = round(times[PLAIN] / times[DRAFTS_RECOMPUTED], 3)
        if counts:
            row["tokens_per_llm_pass"] = round(sum(t for t, _ in counts) / sum(p for _, p in counts), 3)
        results[f"batch_{batch_size}"] = row
        print(json.dumps(row), flush=True)
    return results


def verify_cost(args):
    """Random weights at `--size`: one prompt of 200 audio-like embeddings, `--new_tokens` tokens decoded one per LLM
    pass and with drafts that are the greedy output itself (every draft token accepted), 4 or 10 per pass."""
    from modeling_steermoe import CTCDraftedGreedyDecoding

    dtype = resolve_dtype(args)
    model = build_model(args.size, dtype=dtype, device=args.device)
    prompt = torch.randn(1, 200, SIZES[args.size][1][0], device=args.device, dtype=dtype) * 0.02
    ids = torch.zeros(1, 200, dtype=torch.long, device=args.device)
    llm = model.language_model
    greedy = CTCDraftedGreedyDecoding(llm, []).decode(ids, prompt, None, args.new_tokens, [])[0, 200:].tolist()
    settings = {"one token per pass": ([], 1), "drafts of 4": (greedy, 4), "drafts of 10": (greedy, 10)}
    passes = {}

    def run(label):
        draft, size = settings[label]
        decoding = CTCDraftedGreedyDecoding(llm, draft, size)
        assert decoding.decode(ids, prompt, None, args.new_tokens, [])[0, 200:].tolist() == greedy
        passes[label] = decoding.passes + 1

    seconds = measure_interleaved({label: (lambda label=label: run(label)) for label in settings}, args.device, args.repeats, args.warmup)
    rows = [
        {"decoding": label, "seconds": seconds[label], "tokens_per_s": args.new_tokens / seconds[label],
         "llm_passes": passes[label], "speedup": seconds["one token per pass"] / seconds[label]}
        for label in settings
    ]  # fmt: skip
    report("ctc_drafts", args, rows, {"new_tokens": args.new_tokens})


def main():
    p = parser(__doc__)
    p.add_argument("--model", help="A trained (CTC-trained) adapter folder: times it instead of random weights.")
    p.add_argument("--manifest", help="With --model: JSONL with audio (relative to it) and text.")
    p.add_argument("--clips", type=int, default=60)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--new_tokens", type=int, default=64, help="Random weights: tokens decoded per prompt.")
    args = p.parse_args()
    if not args.model:
        verify_cost(args)
        return
    if not args.manifest:
        p.error("--model needs --manifest")
    results = trained_adapter(args)
    path = Path(args.output_dir) / "ctc_drafts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": "ctc_drafts", **results}, indent=2))


if __name__ == "__main__":
    main()
