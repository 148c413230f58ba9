"""The vLLM server (`python -m serving`) against the transformers ASR pipeline on the same transcription requests, in
the same run on the same machine: requests/s, audio seconds/s, time to first token and p50/p90 latency, as ratios.

Run it from the serving environment; the pipeline side runs in the project's environment (`--reference_python`,
`.venv` by default), one side at a time so they never share the CPU. On a shared machine the load drifts over
minutes, so every configuration runs `--rounds` times, the two sides interleaved, and the median round is reported
with the range of requests/s:

    .venv-serving/bin/python bench/serving_throughput.py --clips 32 --concurrency 1 8 32 --batch_sizes 1 4 8 16

The requests are `--clips` clips of mixed lengths cut from real speech (`../shared/audio`), each transcribed greedily
with at most `--max_new_tokens` new tokens (both sides decode the same tokens: the texts are compared). The adapter
is `--adapter`, or a randomised aligner between whisper-tiny.en's encoder and SmolLM2-135M-Instruct (the
`tests/serving_reference.py` build; `scripts/setup_serving.sh` converts SmolLM2). Latency is from a request's
submission to its last token: for the pipeline every request is queued at the start, as for vLLM at concurrency
>= `--clips`; at lower concurrency each client sends its next request when the previous one is answered. Time to first
token is the first streamed text for vLLM, and the first decoding step of the request's batch for the pipeline.
Extra server arguments follow `--`, e.g. `-- --max-num-seqs 64`; server environment with `--server_env KEY=VALUE`.
"""

import argparse
import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def run(command: list[str]) -> str:
    """Run `command`; its last stdout line, or exit with its error output."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


def make_clips(folder: Path, count: int, seed: int = 0) -> list[dict]:
    """`count` mono 16 kHz WAV clips of 2-25 s cut (and looped) from the recordings in ../shared/audio."""
    import soundfile
    import soxr

    speech = []
    for path in sorted((SHARED / "audio").glob("*")):
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
        speech.append(soxr.resample(samples.mean(axis=1), rate, 16000).astype(np.float32))
    if not speech:
        raise SystemExit(f"No recordings in {SHARED / 'audio'} to cut the benchmark clips from.")
    stream = np.concatenate(speech)
    rng = np.random.default_rng(seed)
    clips = []
    for index, seconds in enumerate(rng.uniform(2.0, 25.0, count)):
        start = int(rng.integers(0, stream.shape[0]))
        piece = np.take(stream, np.arange(start, start + int(seconds * 16000)), mode="wrap")
        path = folder / f"clip{index:03d}.wav"
        soundfile.write(path, piece, 16000)
        clips.append({"path": str(path), "seconds": float(seconds)})
    return clips


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarise(system: str, clips: list[dict], wall: float, latencies: list[float], first_tokens: list[float]) -> dict:
    return {
        "system": system,
        "requests_per_s": len(clips) / wall,
        "audio_s_per_s": sum(clip["seconds"] for clip in clips) / wall,
        "ttft_p50_s": percentile(first_tokens, 50),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p90_s": percentile(latencies, 90),
    }


def transformers_worker(args) -> None:
    """The pipeline side (project environment): every batch size on all clips, after one warm-up batch."""
    import torch
    from transformers import pipeline
    from transformers.generation.streamers import BaseStreamer

    class FirstTokenClock(BaseStreamer):
        """Records when each `generate` call produces its first new token (its first `put` is the prompt)."""

        def __init__(self):
            self.calls, self.times = 0, []

        def put(self, value):
            self.calls += 1
            if self.calls == 2:
                self.times.append(time.perf_counter())

        def end(self):
            self.calls = 0

    clips = json.loads(Path(args.clips_file).read_text())
    asr = pipeline("automatic-speech-recognition", model=args.adapter, trust_remote_code=True, dtype=torch.float32)
    paths = [clip["path"] for clip in clips]
    batch_size = args.batch_sizes[0]
    asr(paths[:batch_size], batch_size=batch_size, max_new_tokens=args.max_new_tokens)  # warm-up
    clock = FirstTokenClock()
    start = time.perf_counter()
    latencies, texts = [], []
    generate_kwargs = {"streamer": clock, "max_new_tokens": args.max_new_tokens}
    for output in asr((path for path in paths), batch_size=batch_size, generate_kwargs=generate_kwargs):
        latencies.append(time.perf_counter() - start)
        texts.append(output["text"])
    wall = time.perf_counter() - start
    first_tokens = [clock.times[index // batch_size] - start for index in range(len(paths))]
    row = summarise(f"transformers pipeline, batch {batch_size}", clips, wall, latencies, first_tokens)
    print(json.dumps({**row, "threads": torch.get_num_threads(), "texts": texts}))


def vllm_run(client, model: str, clips: list[dict], concurrency: int, max_new_tokens: int) -> tuple[dict, list[str]]:
    """All clips through the server with `concurrency` clients, streamed; returns the summary row and the texts."""

    def one(clip):
        submitted = time.perf_counter()
        first, pieces = None, []
        with open(clip["path"], "rb") as file:
            stream = client.audio.transcriptions.create(
                model=model, file=file, stream=True, extra_body={"max_completion_tokens": max_new_tokens}
            )
            for event in stream:
                content = event.choices[0]["delta"].get("content") if event.choices else None
                if content and first is None:
                    first = time.perf_counter()
                pieces.append(content or "")
        done = time.perf_counter()
        return (first or done) - submitted, done - submitted, "".join(pieces).strip()

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(pool.map(one, clips))
    wall = time.perf_counter() - start
    row = summarise(f"vLLM, concurrency {concurrency}", clips, wall, [a[1] for a in answers], [a[0] for a in answers])
    return row, [a[2] for a in answers]


def start_server(args, adapter: str, log_path: Path):
    """`python -m serving` on 127.0.0.1 (fp32); returns the process and the base URL once it answers."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **dict(item.split("=", 1) for item in args.server_env)}
    command = [sys.executable, "-m", "serving", adapter, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", *args.server_args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(2)
    process.kill()
    raise SystemExit(f"The server did not start; its log:\n{log_path.read_text()[-4000:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="each configuration this many times, interleaved; the median is reported")
    parser.add_argument("--adapter", help="a saved adapter; default: a randomised one on whisper-tiny.en + SmolLM2")
    parser.add_argument("--audio_model_id", default=str(SHARED / "models" / "whisper-tiny.en-encoder"))
    parser.add_argument("--text_model_id", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--reference_python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--server_url", help="measure this running server instead of starting one")
    parser.add_argument("--server_env", nargs="*", default=["VLLM_CPU_KVCACHE_SPACE=2"],
                        help="KEY=VALUE for the server (default: 2 GiB of KV cache on CPU), e.g. VLLM_CPU_OMP_THREADS_BIND=0-1")  # fmt: skip
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "serving_throughput-cpu.json"))
    parser.add_argument("--transformers_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clips_file", help=argparse.SUPPRESS)
    args, args.server_args = parser.parse_known_args()
    if args.server_args[:1] == ["--"]:
        args.server_args = args.server_args[1:]
    if args.transformers_worker:
        transformers_worker(args)
        return

    import openai

    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        folder = Path(tmp)
        clips = make_clips(folder, args.clips)
        clips_file = folder / "clips.json"
        clips_file.write_text(json.dumps(clips))
        adapter = args.adapter
        if adapter is None:
            (folder / "none.json").write_text("[]")
            build = [args.reference_python, str(ROOT / "tests" / "serving_reference.py"), str(folder / "model"),
                     str(folder / "none.json"), "--audio_model_id", args.audio_model_id, "--text_model_id", args.text_model_id]  # fmt: skip
            adapter = run(build)
        process, url = (None, args.server_url) if args.server_url else start_server(args, adapter, folder / "server.log")
        try:  # the idle server takes ~1% of a core while the pipeline runs
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=1800)
            model = client.models.list().data[0].id
            vllm_run(client, model, clips[:2], 2, args.max_new_tokens)  # warm-up
            measured = {}  # system -> [(row, texts)] over rounds, the two sides interleaved
            for round_index in range(args.rounds):
                print(f"round {round_index + 1}/{args.rounds} ({len(clips)} clips, {sum(c['seconds'] for c in clips):.0f} s of audio)", flush=True)
                for batch_size in args.batch_sizes:
                    worker = [args.reference_python, __file__, "--transformers_worker", "--adapter", adapter, "--clips_file",
                              str(clips_file), "--max_new_tokens", str(args.max_new_tokens), "--batch_sizes", str(batch_size)]  # fmt: skip
                    row = json.loads(run(worker))
                    measured.setdefault(row["system"], []).append((row, row.pop("texts")))
                for concurrency in args.concurrency:
                    row, texts = vllm_run(client, model, clips, concurrency, args.max_new_tokens)
                    measured.setdefault(row["system"], []).append((row, texts))
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=120)

    rows = []
    for system, runs in measured.items():  # the median round of each system, by requests/s, with the range
        ordered = sorted(runs, key=lambda run: run[0]["requests_per_s"])
        row, texts = ordered[(len(ordered) - 1) // 2]
        rows.append({**row, "requests_per_s_range": f"{ordered[0][0]['requests_per_s']:.3g}-{ordered[-1][0]['requests_per_s']:.3g}", "texts": texts})
    pipeline_rows = [row for row in rows if row["system"].startswith("transformers")]
    best = max(pipeline_rows, key=lambda row: row["requests_per_s"])
    for row in rows:
        if row in pipeline_rows:
            continue
        row["same_texts"] = f"{sum(a == b for a, b in zip(row['texts'], best['texts']))}/{len(row['texts'])}"
        row["requests_per_s_ratio"] = row["requests_per_s"] / best["requests_per_s"]
        row["audio_s_per_s_ratio"] = row["audio_s_per_s"] / best["audio_s_per_s"]
        for key in ("ttft_p50_s", "latency_p50_s", "latency_p90_s"):  # > 1: vLLM is faster
            row[f"{key.removesuffix('_s')}_speedup"] = best[key] / row[key]
    threads = {row.pop("threads", None) for row in rows} - {None}
    for row in rows:
        row.pop("texts")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[c]:.3g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns) + " |")
    audio = sum(clip["seconds"] for clip in clips)
    print(f"serving_throughput: {len(clips)} clips, {audio:.0f} s of audio, <= {args.max_new_tokens} new tokens each; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; ratios against {best['system']}")  # fmt: skip
    print("\n".join(lines))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    settings = {key: value for key, value in vars(args).items() if key not in ("transformers_worker", "clips_file")}
    output.write_text(json.dumps({"benchmark": "serving_throughput", "settings": settings, "audio_seconds": audio,
                                  "transformers_threads": sorted(threads), "rows": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
