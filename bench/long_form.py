"""Long-form transcription on a trained adapter: sentences read one after another in one file, transcribed through the
pipeline's segmentation, against the same sentences transcribed one by one and against one pass over the whole file;
and minutes-long files (a recording repeated) timed end to end.

    python bench/long_form.py --model outputs/demo --manifest data/demo/test_unseen_voice.jsonl \\
        --long_audio ../shared/audio/jfk.flac --minutes 1 5 12
"""

import argparse
import json
import sys
import time
from pathlib import Path

import evaluate
import numpy as np
import soxr
from transformers import pipeline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from processing_steermoe import load_audio  # noqa: E402

RATE = 16000


def clip_at_rate(path) -> np.ndarray:
    samples, rate = load_audio(str(path))
    samples = samples.mean(axis=1) if samples.ndim == 2 else samples
    return samples if rate == RATE else soxr.resample(samples, rate, RATE).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A trained adapter folder.")
    parser.add_argument("--manifest", required=True, help="JSONL with audio (relative to it) and text.")
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--pause_seconds", type=float, default=0.3, help="Silence put between the sentences.")
    parser.add_argument("--long_audio", help="A recording repeated to make the minutes-long files.")
    parser.add_argument("--minutes", type=float, nargs="*", default=[])
    parser.add_argument("--chunk_length_s", type=float, default=None, help="Default: the adapter's own limit.")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "long_form.json"))
    args = parser.parse_args()
    metric = evaluate.load(str(ROOT / "metrics" / "asr_error_rate"))
    asr = pipeline("automatic-speech-recognition", model=args.model, trust_remote_code=True)
    chunk = {"chunk_length_s": args.chunk_length_s} if args.chunk_length_s else {}
    limit = args.chunk_length_s or asr.processor.max_segment_seconds or 30.0

    manifest = Path(args.manifest)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[: args.sentences]]
    clips = [clip_at_rate(manifest.parent / row["audio"]) for row in rows]
    references = [row["text"] for row in rows]
    pause = np.zeros(int(args.pause_seconds * RATE), np.float32)
    joined = np.concatenate([piece for clip in clips for piece in (clip, pause)])
    one_by_one = [out["text"] for out in asr([{"array": c, "sampling_rate": RATE} for c in clips], batch_size=args.batch_size)]
    start = time.perf_counter()
    long_form = asr({"array": joined, "sampling_rate": RATE}, batch_size=args.batch_size, return_timestamps=True, **chunk)
    long_seconds = time.perf_counter() - start
    one_pass = asr({"array": joined, "sampling_rate": RATE}, chunk_length_s=len(joined) / RATE + 1)["text"]
    score = lambda predictions, refs: round(metric.compute(predictions=predictions, references=refs)["wer"], 3)  # noqa: E731
    reference = " ".join(references)
    report = {
        "model": args.model, "segment_limit_s": limit, "sentences": len(rows), "joined_seconds": round(len(joined) / RATE, 1),
        "wer_one_by_one": score([" ".join(one_by_one)], [reference]),
        "wer_long_form": score([long_form["text"]], [reference]), "segments": len(long_form["chunks"]),
        "long_form_rtf": round(long_seconds / (len(joined) / RATE), 3), "wer_one_pass": score([one_pass], [reference]),
        "one_pass_text": one_pass[:300], "long_form_text": long_form["text"][:300], "files": [],
    }  # fmt: skip
    if args.long_audio:
        recording = clip_at_rate(args.long_audio)
        for minutes in args.minutes:
            audio = np.tile(recording, int(np.ceil(minutes * 60 * RATE / len(recording))))[: int(minutes * 60 * RATE)]
            start = time.perf_counter()
            result = asr({"array": audio, "sampling_rate": RATE}, batch_size=args.batch_size, return_timestamps=True, **chunk)
            seconds = time.perf_counter() - start
            times = [chunk_["timestamp"] for chunk_ in result["chunks"]]
            report["files"].append({
                "minutes": minutes, "seconds": round(seconds, 1), "rtf": round(seconds / (minutes * 60), 3),
                "segments": len(times), "words": len(result["text"].split()),
                "times_in_order": times == sorted(times) and all(0 <= s < e <= minutes * 60 + 1e-3 for s, e in times),
            })  # fmt: skip
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
