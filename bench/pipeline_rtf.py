"""`pipeline("automatic-speech-recognition")` throughput against batch size: real-time factor (processing seconds
per second of audio) on a set of clips, each decoding the same number of tokens; ratios are to batch size 1.

    python bench/pipeline_rtf.py --size small --clips 16 --batch_sizes 1 2 4 8
"""

import tempfile
import time

import numpy as np
from common import build_model, parser, report, resolve_dtype, synchronize
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, WhisperFeatureExtractor, pipeline

from processing_steermoe import SteerMoEProcessor


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose ids stay inside the LLM's vocabulary (the text is meaningless anyway)."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"w{i}": i + 3 for i in range(min(vocab_size, 4000) - 4)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def main():
    p = parser(__doc__)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--new_tokens", type=int, default=16)
    args = p.parse_args()
    dtype = resolve_dtype(args)
    model = build_model(args.size, args.device, dtype)
    mels = model.config.audio_config.num_mel_bins
    processor = SteerMoEProcessor(WhisperFeatureExtractor(feature_size=mels), word_tokenizer(model.config.text_config.vocab_size))
    model.config.audio_token_id = processor.audio_token_id
    model.generation_config.update(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, eos_token_id=1, pad_token_id=0)
    rng = np.random.default_rng(0)
    seconds = np.clip(rng.normal(12.7, 3.8, args.clips), 1.5, 29.5)
    clips = [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        asr = pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True, dtype=dtype, device=args.device)
    rows = []
    for batch_size in args.batch_sizes:
        asr(clips[: batch_size], batch_size=batch_size)  # warm-up
        times = []
        for _ in range(args.repeats):
            synchronize(args.device)
            start = time.perf_counter()
            asr(clips, batch_size=batch_size)
            synchronize(args.device)
            times.append(time.perf_counter() - start)
        elapsed = float(np.median(times))
        rows.append({"batch_size": batch_size, "seconds": elapsed, "rtf": elapsed / float(seconds.sum())})
    for row in rows:
        row["throughput_vs_batch_1"] = rows[0]["seconds"] / row["seconds"]
    report("pipeline_rtf", args, rows, {"audio_seconds": float(seconds.sum()), "new_tokens": args.new_tokens})


if __name__ == "__main__":
    main()
