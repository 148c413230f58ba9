"""Streaming: time to first token with a transformers streamer against the offline path's time to the whole answer,
and the live microphone mode (space/live_transcription.py) against offline transcription of the same audio.

    python bench/streaming.py --size small --seconds 10 --new_tokens 64
    python bench/streaming.py --adapter outputs/demo --audio ../shared/audio/*.flac ../shared/audio/*.wav

Time to first token: the `--size` model (random weights, `--seconds` of audio, exactly `--new_tokens` tokens),
`generate` with a streamer recording when each token arrives, against the same `generate` without one.

Live mode: each clip is fed in `--chunk_seconds` chunks at real time to the LocalAgreement transcriber, which
re-decodes its buffer with the offline path (the adapter's processor + `generate`); time runs as the audio arrives
plus the measured compute, so a decoder slower than real time falls behind. Reported per clip: the final live text's
WER against the offline transcript of the same audio, the time from the start of speech to the first word shown,
the time from the end of the recording to the final text against offline's (which decodes the clip once the
recording has ended), and the compute against offline; medians of `--repeats` runs. A clip of sentences synthesized with espeak-ng by the demo's held-out voice, 0.8 s
apart (`--synthesize`, on by default when espeak-ng is installed), is transcribed offline sentence by sentence (the
demo recipe stops at the first period), and for each sentence the latency from its end until the live text holds as
many words as the offline text up to it is reported.

The live model is `--adapter` (a saved adapter: folder or Hub id) or, without one, an untrained aligner on the real
small pair in ../shared/models when present; the table says which.
"""

import copy
import glob
import io
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jiwer
import numpy as np
import torch
from common import ROOT, build_model, parser, report, resolve_dtype
from transformers.generation.streamers import BaseStreamer

sys.path.insert(0, str(ROOT / "space"))
from live_transcription import LocalAgreementTranscriber  # noqa: E402

SHARED = ROOT.parent / "shared"
SENTENCES = [
    "Lily saw the big dog.",
    "Tom had the red ball.",
    "The little bird found a cake.",
    "Mia liked the old hat.",
]


class TimingStreamer(BaseStreamer):
    """Records the time at which each new token reaches the streamer (the first call is the prompt)."""

    def __init__(self):
        self.times, self.prompt_seen = [], False

    def put(self, value):
        if self.prompt_seen:
            self.times.append(time.perf_counter())
        self.prompt_seen = True

    def end(self):
        pass


def first_token_rows(args) -> list[dict]:
    model = build_model(args.size, args.device, resolve_dtype(args))
    config = model.config
    frames = int(args.seconds * 100)
    audio_tokens = -(-((frames - 1) // 2 + 1) // config.audio_frames_per_token)
    input_ids = torch.randint(2, config.text_config.vocab_size - 1, (1, 16 + audio_tokens), device=args.device)
    input_ids[:, 4 : 4 + audio_tokens] = config.audio_token_id
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
              "input_features": torch.randn(1, config.audio_config.num_mel_bins, frames, device=args.device)}  # fmt: skip
    generation = copy.deepcopy(model.generation_config)
    generation.update(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    offlines, firsts, totals = [], [], []
    for index in range(args.warmup + args.repeats):  # the two paths alternate, so load changes hit both alike
        start = time.perf_counter()
        model.generate(**inputs, generation_config=generation)
        offline = time.perf_counter() - start
        streamer = TimingStreamer()
        start = time.perf_counter()
        model.generate(**inputs, generation_config=generation, streamer=streamer)
        if index >= args.warmup:
            offlines.append(offline)
            firsts.append(streamer.times[0] - start)
            totals.append(time.perf_counter() - start)
    offline, first, total = (float(np.median(times)) for times in (offlines, firsts, totals))
    return [
        {"path": "offline: the whole answer", "seconds": offline, "vs_offline": 1.0},
        {"path": "streamed: first token", "seconds": first, "vs_offline": first / offline},
        {"path": "streamed: the whole answer", "seconds": total, "vs_offline": total / offline},
    ]


def espeak_sentences(sentences: list[str], pause: float = 0.8) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Sentences read by the demo's held-out voice (espeak-ng, as scripts/synthesize_demo_data.py), `pause` seconds
    apart, at 16 kHz: the samples and each sentence's `(start, end)` sample range."""
    import soundfile
    import soxr

    pieces, spans, position = [], [], 0
    for sentence in sentences:
        wav = subprocess.run(["espeak-ng", "-v", "en-gb-scotland+f5", "-s", "165", "-p", "55", "--stdout", sentence],
                             check=True, capture_output=True).stdout  # fmt: skip
        samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
        samples = soxr.resample(samples, rate, 16000)
        pieces += [samples, np.zeros(int(pause * 16000), np.float32)]
        spans.append((position, position + len(samples)))
        position += len(samples) + int(pause * 16000)
    return np.concatenate(pieces), spans


def load_live_model(args):
    """(model, processor, description) for the live mode."""
    from transformers import AutoModel, AutoProcessor

    if args.adapter:
        dtype = resolve_dtype(args)
        model = AutoModel.from_pretrained(args.adapter, trust_remote_code=True, dtype=dtype).to(args.device).eval()
        return model, AutoProcessor.from_pretrained(args.adapter, trust_remote_code=True), f"adapter {args.adapter}"
    encoder, llm = SHARED / "models" / "whisper-tiny.en-encoder", SHARED / "models" / "stories260K"
    if not (encoder.is_dir() and llm.is_dir()):
        return None, None, "no --adapter and no ../shared/models pair"
    sys.path.insert(0, str(ROOT))
    from configuration_steermoe import SteerMoEConfig
    from modeling_steermoe import SteerMoEForConditionalGeneration
    from processing_steermoe import SteerMoEProcessor

    torch.manual_seed(0)
    config = SteerMoEConfig(audio_model_id=str(encoder), text_model_id=str(llm))
    model = SteerMoEForConditionalGeneration(config, dtype=resolve_dtype(args)).to(args.device).eval()
    return model, SteerMoEProcessor.from_config(config), f"UNTRAINED aligner on {encoder.name} + {llm.name}"


def processor_module(processor):
    """The processing module of the model's own code (its `load_audio`)."""
    import importlib

    return importlib.import_module(type(processor).__module__)


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]", " ", text.lower()).split())


def simulate_live(transcriber, samples: np.ndarray, rate: int, chunk_seconds: float):
    """Feed `samples` at real time; returns [(time shown, committed words, closed segments)] and the total compute
    (s)."""
    chunk = int(chunk_seconds * rate)
    clock, compute, position, shown = 0.0, 0.0, 0, []
    while position < len(samples):
        clock = max(clock, (position + chunk) / rate)  # wait for the next chunk if idle
        arrived = min(len(samples), max(position + chunk, int(clock * rate) // chunk * chunk))  # all that arrived
        start = time.perf_counter()
        update = transcriber.push(samples[position:arrived])
        spent = time.perf_counter() - start
        clock, compute, position = clock + spent, compute + spent, arrived
        shown.append((clock, update.committed.split(), len(transcriber.segments)))
    start = time.perf_counter()
    final = transcriber.finish()
    spent = time.perf_counter() - start
    shown.append((max(clock, len(samples) / rate) + spent, final.committed.split(), len(transcriber.segments)))
    return shown, compute + spent


def live_rows(args) -> tuple[list[dict], str]:
    model, processor, which = load_live_model(args)
    if model is None:
        return [], which
    kwargs = {"tokenizer": processor.tokenizer}
    if args.max_new_tokens or not args.adapter:
        kwargs["max_new_tokens"] = args.max_new_tokens or 24

    def transcribe(samples, rate):
        inputs = processor.apply_transcription_request(samples, sampling_rate=rate).to(model.device)
        out = model.generate(**inputs, **kwargs)
        return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()

    clips = []
    if args.synthesize and shutil.which("espeak-ng"):
        samples, spans = espeak_sentences(SENTENCES)
        clips.append(("espeak-ng, 4 sentences", samples, 16000, spans, " ".join(SENTENCES)))
    for path in args.audio:
        samples, rate = processor_module(processor).load_audio(path)
        clips.append((Path(path).name, samples.mean(axis=1) if samples.ndim == 2 else samples, rate, None, None))
    rows = []
    for name, samples, rate, spans, reference in clips:
        runs = [live_run(transcribe, processor, samples, rate, spans, reference, args) for _ in range(args.repeats)]
        row = {"clip": name, "seconds": round(len(samples) / rate, 2)}
        for key in runs[0][0]:
            row[key] = float(np.median([run[key] for run, _, _ in runs]))
        rows.append(row)
        _, offline, final = runs[-1]
        sys.stdout.write(f"{name}\n  offline: {offline}\n  live:    {final}\n")
    columns = list(dict.fromkeys(key for row in rows for key in row))  # one table: what a clip cannot measure is n/a
    rows = [{key: row[key] if row.get(key, float("nan")) == row.get(key) else "n/a" for key in columns} for row in rows]
    return rows, which


def live_run(transcribe, processor, samples: np.ndarray, rate: int, spans, reference, args) -> tuple[dict, str, str]:
    """One offline transcription and one live run of a clip: (figures, offline text, live text)."""
    start = time.perf_counter()
    offline = [transcribe(samples[a:b], rate) for a, b in spans or [(0, len(samples))]]
    offline_seconds = time.perf_counter() - start
    transcriber = LocalAgreementTranscriber(transcribe, sampling_rate=rate, update_seconds=args.update_seconds,
                                            has_speech=processor.has_speech)  # fmt: skip
    shown, compute = simulate_live(transcriber, samples, rate, args.chunk_seconds)
    final = shown[-1][1]
    onset, _ = speech_bounds(processor, samples, rate)
    first_word = next((at for at, words, _ in shown if words), float("nan"))
    figures = {
        "decodings": transcriber.decode_count,
        "wer_vs_offline": jiwer.wer(normalized(" ".join(offline)) or "-", normalized(" ".join(final)) or "-"),
        "first_text_s": first_word - onset,
        "after_stop_s": shown[-1][0] - len(samples) / rate,
        "offline_after_stop_s": offline_seconds,
    }
    figures["after_stop_vs_offline"] = figures["after_stop_s"] / offline_seconds
    figures["compute_vs_offline"] = compute / offline_seconds
    lags = [float("nan")]
    if spans and shown[-1][2] == len(spans):  # one segment per sentence: from its end until its segment is shown
        lags = [
            next(at for at, _, closed in shown if closed > index) - end / rate for index, (_, end) in enumerate(spans)
        ]
    figures["sentence_latency_mean_s"], figures["sentence_latency_max_s"] = float(np.mean(lags)), float(np.max(lags))
    if reference:
        figures["offline_wer_vs_text"] = jiwer.wer(normalized(reference), normalized(" ".join(offline)))
        figures["live_wer_vs_text"] = jiwer.wer(normalized(reference), normalized(" ".join(final)))
    return figures, " ".join(offline), " ".join(final)


def speech_bounds(processor, samples: np.ndarray, rate: int) -> tuple[float, float]:
    """Seconds at which speech starts and ends: the first and last 100 ms with speech (the no-speech gate)."""
    frame = rate // 10
    speech = np.flatnonzero(
        [processor.has_speech(samples[i : i + frame], rate) for i in range(0, len(samples) - frame + 1, frame)]
    )
    return speech[0] * frame / rate, (speech[-1] + 1) * frame / rate


def main():
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--adapter", help="A saved adapter for the live mode (default: an untrained aligner on ../shared)")
    default_audio = sorted(
        glob.glob(str(SHARED / "audio" / "jfk.flac")) + glob.glob(str(SHARED / "audio" / "librispeech-*.wav"))
    )
    p.add_argument("--audio", nargs="*", default=default_audio, help="Real speech clips for the live mode")
    p.add_argument("--synthesize", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                   help="Add a clip synthesized word by word with espeak-ng (known word end times)")  # fmt: skip
    p.add_argument("--chunk_seconds", type=float, default=0.5)
    p.add_argument("--update_seconds", type=float, default=1.0)
    p.add_argument(
        "--max_new_tokens", type=int, default=None, help="Per decoding (default: the adapter's config; 24 untrained)"
    )
    p.add_argument("--skip_first_token", action="store_true")
    args = p.parse_args()
    if not args.skip_first_token:
        report("streaming", args, first_token_rows(args))
    rows, which = live_rows(args)
    if rows:
        report("live", args, rows, {"live_model": which})
        sys.stdout.write(f"live model: {which}\n")
    else:
        sys.stdout.write(f"live mode not measured: {which}\n")


if __name__ == "__main__":
    main()
