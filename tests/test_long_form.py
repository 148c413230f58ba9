"""Long recordings: transcription cuts audio at pauses into segments the adapter can handle and joins them in order,
with their times; questions and chat keep the whole clip and refuse one beyond the LLM's context; speech that gives
no text is reported."""

import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from adapters import save_readable_adapter
from conftest import ROOT, speechlike
from transformers import pipeline

import train
from processing_steermoe import SteerMoEProcessor, speech_segments


def words_with_pauses(rate: int = 16000, words: int = 9, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Bursts of speech-like sound (0.5-0.9 s) separated by 0.35 s of near silence; returns the audio and the
    sample ranges of the pauses."""
    rng = np.random.default_rng(seed)
    pieces, pauses, position = [], [], 0
    for index in range(words):
        burst = speechlike(float(rng.uniform(0.5, 0.9)), rate, seed=seed + index, noise=0.05)
        pause = (0.001 * rng.standard_normal(int(0.35 * rate))).astype(np.float32)
        pieces += [burst, pause]
        position += len(burst)
        pauses.append((position, position + len(pause)))
        position += len(pause)
    return np.concatenate(pieces), pauses


def test_segments_cover_the_clip_in_order_within_the_limit_and_cut_in_pauses():
    audio, pauses = words_with_pauses()
    rate, limit = 16000, 2.5
    segments = speech_segments(audio, rate, limit)
    assert segments[0][0] == 0 and segments[-1][1] == len(audio) and len(segments) >= 9
    assert all(end == next_start for (_, end), (next_start, _) in zip(segments, segments[1:]))
    assert all(0 < end - start <= limit * rate for start, end in segments)
    for _, cut in segments[:-1]:
        assert any(start <= cut < end for start, end in pauses), cut
    assert speech_segments(audio[: 2 * rate], rate, limit) == [(0, 2 * rate)]
    stereo = np.stack([audio, audio], axis=1)
    assert speech_segments(stereo, rate, limit) == segments
    with pytest.raises(ValueError, match="max_seconds"):
        speech_segments(audio, rate, 0)


@pytest.fixture
def short_clip_adapter(backbone_dirs, tmp_path):
    """A readable tiny adapter whose processor records 2.5 s as the longest clip it handles."""
    path = save_readable_adapter(tmp_path / "adapter", backbone_dirs)
    processor = SteerMoEProcessor.from_pretrained(path)
    processor.max_segment_seconds = 2.5
    processor.save_pretrained(path)
    return path


def test_pipeline_transcribes_long_audio_segment_by_segment_with_times(short_clip_adapter):
    audio, _ = words_with_pauses()
    asr = pipeline("automatic-speech-recognition", model=str(short_clip_adapter), trust_remote_code=True)
    result = asr({"array": audio, "sampling_rate": 16000}, return_timestamps=True)
    processor = asr.processor
    segments = [(s, e) for s, e in speech_segments(audio, 16000, 2.5) if processor.has_speech(audio[s:e], 16000)]
    assert len(segments) == 9  # one per word: the pauses between them are cut, the trailing silence gated out
    assert [chunk["timestamp"] for chunk in result["chunks"]] == [(round(s / 16000, 3), round(e / 16000, 3)) for s, e in segments]
    one_by_one = [asr({"array": audio[s:e], "sampling_rate": 16000})["text"] for s, e in segments]
    assert [chunk["text"] for chunk in result["chunks"]] == one_by_one and all(one_by_one)
    assert result["text"] == " ".join(one_by_one)
    batched = asr([{"array": audio, "sampling_rate": 16000}] * 2, batch_size=4)
    assert [item["text"] for item in batched] == [result["text"]] * 2
    assert asr({"array": audio, "sampling_rate": 16000})["text"] == result["text"]  # no timestamps: same text
    continuous = {"array": speechlike(8.0, seed=3), "sampling_rate": 16000}  # no pauses: cut at the limit
    coarse = asr(continuous, return_timestamps=True)["chunks"]
    finer = asr(continuous, chunk_length_s=1.2, return_timestamps=True)["chunks"]
    assert len(finer) > len(coarse) >= 4
    assert all(end - start <= 1.2 for start, end in (chunk["timestamp"] for chunk in finer))


def test_questions_keep_the_whole_clip_and_refuse_one_beyond_the_context(short_clip_adapter):
    audio, _ = words_with_pauses()
    asr = pipeline("automatic-speech-recognition", model=str(short_clip_adapter), trust_remote_code=True)
    answer = asr({"array": audio, "sampling_rate": 16000}, prompt="What is this?", return_timestamps=True)
    assert answer["chunks"][0]["timestamp"] == (0.0, round(len(audio) / 16000, 3)) and len(answer["chunks"]) == 1
    asr.model.config.text_config.max_position_embeddings = 90
    with pytest.raises(ValueError, match=r"gives \d+ audio tokens .* beyond the LLM's context of 90"):
        asr({"array": audio, "sampling_rate": 16000}, prompt="What is this?")
    assert asr({"array": audio, "sampling_rate": 16000})["text"]  # transcription cuts it into segments that fit


def test_speech_that_gives_no_text_is_reported(short_clip_adapter, caplog):
    asr = pipeline("automatic-speech-recognition", model=str(short_clip_adapter), trust_remote_code=True)
    eos = asr.model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    only_eos = {"suppress_tokens": [i for i in range(len(asr.tokenizer)) if i != eos], "max_new_tokens": 2}
    with caplog.at_level(logging.WARNING):
        result = asr({"array": speechlike(1.0), "sampling_rate": 16000}, generate_kwargs=only_eos)
    assert result["text"] == "" and "No text for the speech between 0.00 s and 1.00 s" in caplog.text


def test_cli_writes_segment_times_and_marks_empty_results(short_clip_adapter, tmp_path):
    audio, _ = words_with_pauses()
    soundfile.write(tmp_path / "long.wav", audio, 16000)
    base = [sys.executable, str(ROOT / "steermoe_cli.py"), str(tmp_path / "long.wav"), "--model", str(short_clip_adapter)]
    srt = subprocess.run([*base, "--format", "srt"], capture_output=True, text=True)
    assert srt.returncode == 0, srt.stderr[-3000:]
    entries = [block for block in srt.stdout.split("\n\n") if "-->" in block]
    assert len(entries) == 9  # one per word; the trailing silence is gated out
    segments = subprocess.run([*base, "--format", "jsonl"], capture_output=True, text=True)
    record = json.loads(segments.stdout)
    times = [(s["start"], s["end"]) for s in record["segments"]]
    assert times == sorted(times) and 0 < times[-1][1] < len(audio) / 16000
    assert record["text"] and "warning" not in record
    mute = tmp_path / "mute"  # an adapter that ends every turn at once
    shutil.copytree(short_clip_adapter, mute)
    generation = json.loads((mute / "generation_config.json").read_text())
    eos = generation["eos_token_id"][0] if isinstance(generation["eos_token_id"], list) else generation["eos_token_id"]
    generation["suppress_tokens"] = [i for i in range(len(SteerMoEProcessor.from_pretrained(mute).tokenizer)) if i != eos]
    (mute / "generation_config.json").write_text(json.dumps(generation))
    jsonl = subprocess.run([*base[:-1], str(mute), "--format", "jsonl"], capture_output=True, text=True)
    assert jsonl.returncode == 0, jsonl.stderr[-3000:]
    record = json.loads(jsonl.stdout)
    assert record["text"] == "" and "warning" in record and "no text came back" in jsonl.stderr


def test_train_py_records_the_longest_training_clip(backbone_dirs, tmp_path):
    rows = []
    for index, seconds in enumerate((1.1, 2.34, 1.7)):
        soundfile.write(tmp_path / f"c{index}.wav", speechlike(seconds, seed=index), 16000)
        rows.append({"audio": f"c{index}.wav", "text": "the quick fox"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    audio_dir, text_dir = backbone_dirs
    train.main([
        "--audio_model_id", str(audio_dir), "--text_model_id", str(text_dir), "--train_files", str(tmp_path / "m.jsonl"),
        "--output_dir", str(tmp_path / "out"), "--do_train", "--max_steps", "1", "--save_strategy", "no",
        "--report_to", "none", "--num_experts", "2", "--use_cpu", "true",
    ])  # fmt: skip
    assert json.loads((tmp_path / "out" / "processor_config.json").read_text())["max_segment_seconds"] == 3.0
