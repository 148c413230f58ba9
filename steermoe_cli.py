# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""steermoe-transcribe: transcribe (or ask about) audio files with a SteerMoE model from a folder or the Hub.

    steermoe-transcribe --model my-org/steermoe-adapter recordings/ "calls/*.flac" --format jsonl
    steermoe-transcribe --model my-org/steermoe-adapter --stream talk.wav     # text as it is generated

Unreadable or empty files are reported by name and skipped; the rest still run; the exit code is 1 if any failed.
"""

import argparse
import glob
import json
import logging
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import TextStreamer, pipeline


try:
    from .processing_steermoe import DEFAULT_SPEECH_THRESHOLD_DB, load_audio
except ImportError:
    from processing_steermoe import DEFAULT_SPEECH_THRESHOLD_DB, load_audio


logger = logging.getLogger("steermoe")

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aiff", ".aif"}
EMPTY_WARNING = "no text came back for audio that passed the no-speech gate"


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files as given, audio files inside folders (recursively), and glob matches; sorted, without duplicates."""
    paths = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif any(ch in pattern for ch in "*?["):
            paths += sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        else:
            paths.append(path)
    return list(dict.fromkeys(paths))


def srt_time(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d},{millis % 1000:03d}"


def write(out, fmt: str, path: Path, seconds: float, rtf: float, result: dict, empty: bool) -> None:
    """One file's result as a text line, a JSON line (file, text, seconds, real-time factor, segments with their
    times, and a warning when speech gave no text) or SRT segments at the times the pipeline cut the audio."""
    if fmt == "text":
        out.write(f"{path}\t{result['text']}\n")
    elif fmt == "jsonl":
        record = {"file": str(path), "text": result["text"], "seconds": round(seconds, 3), "rtf": round(rtf, 4),
                  "segments": [{"start": c["timestamp"][0], "end": c["timestamp"][1], "text": c["text"]}
                               for c in result["chunks"]]}  # fmt: skip
        if empty:
            record["warning"] = EMPTY_WARNING
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        out.write(f"# {path}\n")
        for index, chunk in enumerate(result["chunks"]):
            begin, end = chunk["timestamp"]
            out.write(f"{index + 1}\n{srt_time(begin)} --> {srt_time(end)}\n{chunk['text']}\n\n")
    out.flush()


class FileTextStreamer(TextStreamer):
    """transformers' `TextStreamer` writing the answer to `out` as soon as each word is final, instead of printing
    it; special tokens are skipped and the text is stripped as the pipeline strips it (trailing spaces are held
    back until more text follows). A long file is transcribed segment by segment, one `generate` each: segments
    are joined with one space, as the pipeline joins them."""

    def __init__(self, tokenizer, out):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.out = out
        self.written = False
        self.held = ""
        self.segment_start = True

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if self.segment_start and text.strip():
            text = (" " if self.written else "") + text.lstrip()
            self.segment_start = False
        text = self.held + text
        kept = text.rstrip()
        self.held = "" if stream_end else text[len(kept) :]
        self.segment_start = self.segment_start or stream_end
        if kept:
            self.out.write(kept)
            self.out.flush()
            self.written = True


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="steermoe-transcribe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="Audio files, folders or glob patterns (WAV, FLAC, OGG, MP3).")
    parser.add_argument("--model", required=True, help="A saved SteerMoE model: folder or Hub id.")
    parser.add_argument("--task", choices=["transcribe", "qa", "chat"], default="transcribe",
                        help="transcribe; qa: answer --prompt about the audio; chat: the audio is the whole user turn "
                             "(a spoken question or request) and an instruct LLM answers it.")  # fmt: skip
    parser.add_argument("--prompt", help="The instruction (transcribe) or the question about the audio (qa).")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--device", help="PyTorch backend: cuda when available, else cpu.")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--backend", choices=["pytorch", "onnx"], default="pytorch",
                        help="onnx: ONNX Runtime on the CPU, from the export in <model>/onnx/ (python -m steermoe_onnx "
                             "export <model>).")  # fmt: skip
    parser.add_argument("--onnx-precision", choices=["fp32", "int8"], default="fp32",
                        help="ONNX backend: the float32 graphs, or the int8 copies the export has (export --int8), "
                             "fp32 for the others.")  # fmt: skip
    parser.add_argument("--format", choices=["text", "jsonl", "srt"], default="text",
                        help="text: 'file<TAB>text'; jsonl: file, text, seconds, rtf, segments; srt: one entry per "
                             "segment (long files are cut at pauses, see --chunk-length-s).")  # fmt: skip
    parser.add_argument("--chunk-length-s", type=float, default=None,
                        help="Transcription cuts longer audio at pauses into segments no longer than this (default: "
                             "the longest clip the adapter was trained on, as its processor records, else 30).")  # fmt: skip
    parser.add_argument("--output", help="Write here instead of standard output.")
    parser.add_argument("--stream", action="store_true",
                        help="Write each file's text as it is generated ('file<TAB>' then the words as they come).")  # fmt: skip
    parser.add_argument("--speech-threshold-db", type=float, default=None,
                        help=f"No-speech gate for transcription: clips whose loudest 30 ms is below this level (dBFS) "
                             f"give an empty transcript (default: the model's processor, {DEFAULT_SPEECH_THRESHOLD_DB:g}).")  # fmt: skip
    parser.add_argument("--no-speech-gate", action="store_true", help="Transcribe every clip, even silent ones.")
    parser.add_argument("--no-ctc-drafts", action="store_true",
                        help="Decode without the CTC head's drafts (the text is the same; drafts only save LLM passes "
                             "where they apply: one clip at a time, a CTC-trained adapter, PyTorch backend).")  # fmt: skip
    args = parser.parse_args(argv)
    if args.task == "qa" and not args.prompt:
        parser.error("--task qa needs --prompt with the question")
    if args.task == "chat" and args.prompt:
        parser.error("--task chat takes no --prompt: the audio is the user's turn")
    if args.stream and (args.format != "text" or args.batch_size != 1):
        parser.error("--stream writes one clip's text at a time: it takes --format text and --batch-size 1")
    if args.backend == "onnx" and (args.device not in (None, "cpu") or args.dtype != "auto"):
        parser.error("--backend onnx runs on the CPU with the exported precision: use --onnx-precision, not --device/--dtype")
    if args.backend == "onnx" and args.no_ctc_drafts:
        parser.error("--no-ctc-drafts applies to the PyTorch backend (the ONNX backend decodes without drafts)")
    if args.backend == "pytorch" and args.onnx_precision != "fp32":
        parser.error("--onnx-precision needs --backend onnx")
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    if args.backend == "onnx":
        from steermoe_onnx import onnx_pipeline

        asr = onnx_pipeline(args.model, precision=args.onnx_precision)
    else:
        dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        asr = pipeline(
            "automatic-speech-recognition", model=args.model, trust_remote_code=True, dtype=dtype, device=device
        )
    call_kwargs = {"batch_size": args.batch_size}
    if args.prompt or args.task == "chat":
        call_kwargs["prompt"] = args.prompt or ""
    if args.no_speech_gate:
        call_kwargs["speech_threshold_db"] = None
    elif args.speech_threshold_db is not None:
        call_kwargs["speech_threshold_db"] = args.speech_threshold_db
    if args.max_new_tokens is not None:
        call_kwargs["max_new_tokens"] = args.max_new_tokens
    if args.chunk_length_s is not None:
        call_kwargs["chunk_length_s"] = args.chunk_length_s
    generate_kwargs = {"ctc_drafts": False} if args.no_ctc_drafts else {}
    if generate_kwargs:
        call_kwargs["generate_kwargs"] = generate_kwargs
    gated = "prompt" not in call_kwargs and not args.no_speech_gate
    paths = expand_inputs(args.inputs)
    if not paths:
        logger.error("No audio files found in %s", args.inputs)
        return 1
    out = open(args.output, "w") if args.output else sys.stdout
    failed = []
    progress = tqdm(total=len(paths), desc="Transcribing", unit="file", disable=None)
    for first in range(0, len(paths), args.batch_size):
        clips = []
        for path in paths[first : first + args.batch_size]:
            try:
                samples, rate = load_audio(str(path))
            except (OSError, ValueError) as error:
                logger.error("%s", error)
                failed.append(path)
                continue
            speech = not gated or asr.processor.has_speech(samples, rate, call_kwargs.get("speech_threshold_db", "default"))
            clips.append((path, samples.shape[0] / rate, {"array": samples, "sampling_rate": rate}, speech))
        if clips and args.stream:
            path, _, clip, speech = clips[0]
            out.write(f"{path}\t")
            streamer = {"streamer": FileTextStreamer(asr.tokenizer, out)}
            result = asr(clip, **{**call_kwargs, "generate_kwargs": {**generate_kwargs, **streamer}})
            out.write("\n")
            out.flush()
            if speech and not result["text"]:
                logger.warning("%s: %s", path, EMPTY_WARNING)
        elif clips:
            start = time.perf_counter()
            results = asr([clip for _, _, clip, _ in clips], return_timestamps=True, **call_kwargs)
            rtf = (time.perf_counter() - start) / sum(seconds for _, seconds, _, _ in clips)
            for (path, seconds, _, speech), result in zip(clips, results):
                empty = speech and not result["text"]
                if empty:
                    logger.warning("%s: %s", path, EMPTY_WARNING)
                write(out, args.format, path, seconds, rtf, result, empty)
        progress.update(len(paths[first : first + args.batch_size]))
    progress.close()
    if args.output:
        out.close()
    if failed:
        logger.error("%d of %d files failed: %s", len(failed), len(paths), ", ".join(map(str, failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
