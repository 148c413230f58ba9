"""ONNX Runtime (CPU execution provider) against PyTorch on this CPU, measured in the same run on real clips of a
saved adapter and its export: audio-side latency (features -> LLM input embeddings), decode tokens/s, the real-time
factor of the whole transcription pipeline (one pass over the clips, batch 1), peak resident memory and the size of
the graphs loaded, for PyTorch fp32, ONNX fp32 and (when the export has them) ONNX int8: both graphs, the audio graph
alone, the LLM alone. Each backend's transcripts are scored against PyTorch's (WER, and how many clips get an
identical greedy transcript) and, with references, against the truth (WER).

    python -m steermoe_onnx export outputs/demo --int8
    python bench/onnx_runtime.py --adapter outputs/demo --manifest data/demo/test_unseen_voice.jsonl --limit 60 --threads 2
    python bench/onnx_runtime.py --size small --audio ../shared/audio --max_new_tokens 32   # random backbones

Each backend runs in its own process (one after the other), so each peak memory is that backend's alone.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import evaluate
import torch
from common import ROOT, SIZES, build_model, machine, measure, report


sys.path.insert(0, str(ROOT / "metrics" / "asr_error_rate"))
from asr_error_rate import normalize  # noqa: E402


# Each backend and the ONNX precision it loads (None: PyTorch).
BACKENDS = {
    "pytorch": None,
    "onnx fp32": "fp32",
    "onnx int8": "int8",
    "onnx int8 audio only": {"audio_encoder": "int8"},
    "onnx int8 llm only": {"decoder_model": "int8"},
}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--adapter", help="A saved adapter with its ONNX export in <adapter>/onnx/.")
    source.add_argument("--size", choices=["tiny", "small"],
                        help="Random backbones of bench/common.py's shapes, saved with an adapter and exported (int8 too) "
                             "in a temporary folder.")  # fmt: skip
    p.add_argument("--audio", nargs="*", default=[], help="Audio files or folders.")
    p.add_argument("--manifest", help="A JSON Lines manifest of clips ('audio', paths relative to it) and references ('text').")
    p.add_argument("--limit", type=int, default=None, help="Use the first N clips.")
    p.add_argument("--new_tokens", type=int, default=32, help="Tokens decoded for the decode-rate measurement.")
    p.add_argument("--max_new_tokens", type=int, default=None, help="Cap for transcripts (default: the adapter's generation config).")
    p.add_argument("--threads", type=int, default=None, help="Threads for both runtimes (default: each library's).")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--output_dir", default=str(ROOT / "bench" / "results"))
    p.add_argument("--backends", nargs="+", choices=list(BACKENDS)[1:], metavar="BACKEND",
                   help=f"ONNX backends beside PyTorch (default: those the export has): {', '.join(list(BACKENDS)[1:])}.")
    p.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.device = "cpu"
    return args


def build_adapter(size: str, folder: Path) -> Path:
    """Random backbones of `size` saved as checkpoints, an adapter on them, and its export with every int8 graph."""
    from pipeline_rtf import word_tokenizer
    from transformers import WhisperFeatureExtractor

    from configuration_steermoe import SteerMoEConfig
    from modeling_steermoe import SteerMoEForConditionalGeneration
    from processing_steermoe import SteerMoEProcessor
    from steermoe_onnx import export_onnx
    from steermoe_onnx.export import INT8_GRAPHS

    (_, _, _, _, mels), (*_, vocab) = SIZES[size]
    backbones = build_model(size, "cpu", torch.float32)
    backbones.audio_encoder.save_pretrained(folder / "encoder")
    WhisperFeatureExtractor(feature_size=mels).save_pretrained(folder / "encoder")
    backbones.language_model.save_pretrained(folder / "llm")
    word_tokenizer(vocab).save_pretrained(folder / "llm")
    config = SteerMoEConfig(audio_model_id=str(folder / "encoder"), text_model_id=str(folder / "llm"))
    torch.manual_seed(0)
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32)
    processor = SteerMoEProcessor.from_config(config)
    adapter = folder / "adapter"
    model.save_pretrained(adapter)
    processor.save_pretrained(adapter)
    export_onnx(model, processor, adapter / "onnx", int8=list(INT8_GRAPHS), source=f"random {size} backbones")
    return adapter


def clips_and_references(args) -> tuple[list[str], list[str] | None]:
    files, references = [], None
    for entry in args.audio:
        path = Path(entry)
        files += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if path.is_dir() else [entry]
    if args.manifest:
        rows = [json.loads(line) for line in Path(args.manifest).read_text().splitlines() if line.strip()]
        files += [str(Path(args.manifest).parent / row["audio"]) for row in rows]
        references = [row["text"] for row in rows]
    if not files:
        raise SystemExit("No clips: pass --audio files/folders or --manifest.")
    if args.limit:
        files, references = files[: args.limit], references[: args.limit] if references else None
    return files, references


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started (`VmHWM`; `ru_maxrss` would carry the parent's peak
    over the exec that started it)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 2**10


def worker_args(args) -> list[str]:
    """The command line of a worker: this run's, with the (possibly just built) adapter."""
    argv = ["--adapter", args.adapter, "--new_tokens", str(args.new_tokens), "--repeats", str(args.repeats),
            "--warmup", str(args.warmup), "--audio", *args.audio]  # fmt: skip
    for name in ("manifest", "limit", "max_new_tokens", "threads"):
        if getattr(args, name) is not None:
            argv += [f"--{name}", str(getattr(args, name))]
    return argv


def worker(args) -> dict:
    """Load one backend, time it, transcribe every clip; runs in its own process."""
    from transformers import AutoProcessor, pipeline

    from processing_steermoe import load_audio

    if args.threads:
        torch.set_num_threads(args.threads)
    files, _ = clips_and_references(args)
    start = time.perf_counter()
    if args.worker == "pytorch":
        asr = pipeline("automatic-speech-recognition", model=args.adapter, trust_remote_code=True, dtype=torch.float32)
    else:
        import onnxruntime

        from steermoe_onnx import onnx_pipeline

        options = onnxruntime.SessionOptions()
        if args.threads:
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        asr = onnx_pipeline(args.adapter, precision=BACKENDS[args.worker], session_options=options)
    model = asr.model
    files_mb = None  # PyTorch reads the backbones' own checkpoints, in whatever precision they were saved
    if args.worker != "pytorch":
        folder = Path(args.adapter) / "onnx"
        graphs = model.manifest["graphs"]
        names = [graphs[graph]["files"][precision] for graph, precision in model.precisions.items()]
        files_mb = sum(file.stat().st_size for name in names for file in folder.glob(name + "*")) / 2**20
    load_s = time.perf_counter() - start
    processor = AutoProcessor.from_pretrained(args.adapter, trust_remote_code=True)
    audio = [load_audio(file) for file in files]
    seconds = sum(samples.shape[0] / rate for samples, rate in audio)
    requests = [processor.apply_transcription_request({"array": s, "sampling_rate": r}) for s, r in audio]

    def audio_side():
        with torch.no_grad():
            for inputs in requests:
                model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"])

    def generate(tokens):
        return model.generate(**requests[0], max_new_tokens=tokens, min_new_tokens=tokens, stop_strings=None)

    audio_s = measure(audio_side, "cpu", args.repeats, args.warmup)
    first = measure(lambda: generate(1), "cpu", args.repeats, args.warmup)
    full = measure(lambda: generate(args.new_tokens), "cpu", args.repeats, args.warmup)
    call = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    inputs = [{"array": s, "sampling_rate": r} for s, r in audio]
    transcripts = []
    # One pass over all the clips, after the warm-up above.
    pipeline_s = measure(lambda: transcripts.append([out["text"] for out in asr(inputs, **call)]), "cpu", 1, 0)
    return {
        "backend": args.worker,
        "load_s": load_s,
        "audio_side_ms_per_clip": 1000 * audio_s / len(files),
        "decode_tokens_per_s": (args.new_tokens - 1) / (full - first),
        "time_to_first_token_s": first,
        "rtf": pipeline_s / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "graphs_mb": files_mb,
        "audio_seconds": seconds,
        "transcripts": transcripts[-1],
    }


def main():
    args = parse_args()
    if args.worker:
        sys.stdout.write("\n" + json.dumps(worker(args)) + "\n")
        return
    if args.size:
        with tempfile.TemporaryDirectory() as folder:
            args.adapter = str(build_adapter(args.size, Path(folder)))
            compare(args)
    else:
        args.size = Path(args.adapter).name  # for common.report's header and file name
        compare(args)


def compare(args):
    """Run each backend in its own process, then report the figures with their ratios to PyTorch."""
    files, references = clips_and_references(args)
    manifest = json.loads((Path(args.adapter) / "onnx" / "steermoe_onnx.json").read_text())
    exported = set((manifest.get("int8") or {}).get("graphs", []))
    available = {  # a backend runs where the export has every int8 graph its precision names
        backend: precision == "fp32" or (bool(exported) if precision == "int8" else set(precision) <= exported)
        for backend, precision in list(BACKENDS.items())[1:]
    }
    if args.backends:
        missing = [backend for backend in args.backends if not available[backend]]
        if missing:
            raise SystemExit(f"The export has no graphs for {missing}: python -m steermoe_onnx export <adapter> --int8")
    backends = ["pytorch", *(args.backends or [b for b in available if available[b]])]
    results = []
    for backend in backends:
        command = [sys.executable, __file__, *worker_args(args), "--worker", backend]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{backend} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    metric = evaluate.load(str(ROOT / "metrics" / "asr_error_rate"))
    base = results[0]
    rows = []
    for result in results:
        row = {key: value for key, value in result.items() if key not in ("transcripts", "audio_seconds")}
        row["audio_side_speedup"] = base["audio_side_ms_per_clip"] / result["audio_side_ms_per_clip"]
        row["decode_vs_pytorch"] = result["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        row["rtf_vs_pytorch"] = result["rtf"] / base["rtf"]
        row["memory_vs_pytorch"] = result["peak_rss_mb"] / base["peak_rss_mb"]
        pairs = list(zip(result["transcripts"], base["transcripts"]))
        row["identical_to_pytorch"] = sum(a == b for a, b in pairs) / len(pairs)
        row["identical_clips"] = f"{sum(a == b for a, b in pairs)}/{len(pairs)}"
        scored = [(ours, theirs) for ours, theirs in pairs if normalize(theirs)]  # a transcript with words
        if scored:
            ours, theirs = zip(*scored)
            row["wer_vs_pytorch"] = metric.compute(predictions=list(ours), references=list(theirs))["wer"]
        if references:
            row["wer"] = metric.compute(predictions=result["transcripts"], references=references)["wer"]
        rows.append(row)
    extra = {
        "clips": len(files),
        "audio_seconds": base["audio_seconds"],
        "load_average": os.getloadavg(),
        "transcripts": {result["backend"]: result["transcripts"] for result in results},
        "references": references,
    }
    report("onnx_runtime", args, rows, extra)
    threads = args.threads or "each library's default"
    sys.stdout.write(f"{len(files)} clips, {base['audio_seconds']:.1f} s of audio; {machine('cpu')}; threads per "
                     f"backend: {threads}; load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip


if __name__ == "__main__":
    main()
