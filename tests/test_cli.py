import io
import json
import sys

import numpy as np
import pytest
import soundfile
from adapters import save_readable_adapter

from conftest import speechlike

import steermoe_cli


def test_cli_on_a_folder_with_a_corrupt_and_an_empty_file(model, processor, tmp_path, caplog):
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    folder = tmp_path / "audio"
    (folder / "nested").mkdir(parents=True)
    soundfile.write(folder / "a.wav", speechlike(1.0, seed=1), 16000)
    soundfile.write(folder / "nested" / "b.flac", speechlike(2.0, 44100, seed=2), 44100)
    (folder / "corrupt.mp3").write_bytes(b"\x00garbage" * 50)
    soundfile.write(folder / "empty.wav", speechlike(0.0), 16000)
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "out.jsonl"
    code = steermoe_cli.main(
        [str(folder), "--model", str(tmp_path / "model"), "--format", "jsonl", "--output", str(out),
         "--batch-size", "2", "--max-new-tokens", "4", "--dtype", "float32", "--device", "cpu"]
    )  # fmt: skip
    assert code == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["file"] for r in records] == [str(folder / "a.wav"), str(folder / "nested" / "b.flac")]
    assert records[1]["seconds"] == 2.0 and records[1]["rtf"] > 0 and isinstance(records[1]["text"], str)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("corrupt.mp3" in m for m in errors) and any("empty.wav" in m and "no audio" in m for m in errors)
    assert "2 of 4 files failed" in errors[-1]


def test_cli_srt_segments_and_glob(model, processor, tmp_path, capsys):
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    soundfile.write(tmp_path / "long.wav", speechlike(65.0), 16000)
    code = steermoe_cli.main(
        [str(tmp_path / "*.wav"), "--model", str(tmp_path / "model"), "--format", "srt", "--max-new-tokens", "3",
         "--dtype", "float32", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    segments = processor.speech_segments(speechlike(65.0), 16000)  # cut at the quietest points, at most 30 s each
    times = [f"{steermoe_cli.srt_time(start / 16000)} --> {steermoe_cli.srt_time(end / 16000)}" for start, end in segments]
    assert len(segments) == 3 and all(time in text for time in times) and text.count(" --> ") == 3
    assert times[0].startswith("00:00:00,000") and times[-1].endswith("00:01:05,000")


def test_cli_qa_needs_a_question(tmp_path):
    with pytest.raises(SystemExit):
        steermoe_cli.parse_args([str(tmp_path), "--model", "m", "--task", "qa"])


class RecordingOutput(io.StringIO):
    """Standard output that remembers each write."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, text):
        self.writes.append(text)
        return super().write(text)


def test_cli_stream_writes_the_text_as_it_is_generated(backbone_dirs, tmp_path, monkeypatch):
    adapter = save_readable_adapter(tmp_path / "model", backbone_dirs)
    soundfile.write(tmp_path / "a.wav", speechlike(1.5, seed=1), 16000)
    soundfile.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    common = [str(tmp_path / "a.wav"), str(tmp_path / "silent.wav"), "--model", str(adapter), "--max-new-tokens", "24",
              "--dtype", "float32", "--device", "cpu"]  # fmt: skip
    assert steermoe_cli.main([*common, "--output", str(tmp_path / "offline.txt")]) == 0
    streamed = RecordingOutput()
    monkeypatch.setattr(sys, "stdout", streamed)
    assert steermoe_cli.main([*common, "--stream"]) == 0
    assert streamed.getvalue() == (tmp_path / "offline.txt").read_text()
    first_line = streamed.getvalue().splitlines()[0]
    assert len(first_line.split("\t")[1].split()) >= 3
    pieces = streamed.writes[1 : streamed.writes.index("\n")]  # after "a.wav<TAB>", before the line's end
    assert len([piece for piece in pieces if piece]) >= 3  # the words came one write at a time
    with pytest.raises(SystemExit):
        steermoe_cli.parse_args([*common, "--stream", "--format", "jsonl"])
    with pytest.raises(SystemExit):
        steermoe_cli.parse_args([*common, "--stream", "--batch-size", "2"])


def test_cli_text_is_the_same_with_and_without_ctc_drafts(make_model, processor, tmp_path):
    model = make_model(ctc_loss_coef=1.0, ctc_logit_scale=30.0)  # a CTC head: drafts apply, one clip at a time
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    for index in range(3):
        soundfile.write(tmp_path / f"{index}.wav", speechlike(1.0 + 0.5 * index, seed=index), 16000)
    common = [str(tmp_path / "*.wav"), "--model", str(tmp_path / "model"), "--max-new-tokens", "12", "--dtype",
              "float32", "--device", "cpu", "--format", "jsonl"]  # fmt: skip
    assert steermoe_cli.main([*common, "--output", str(tmp_path / "drafted.jsonl")]) == 0
    assert steermoe_cli.main([*common, "--no-ctc-drafts", "--output", str(tmp_path / "plain.jsonl")]) == 0
    texts = [[json.loads(line)["text"] for line in (tmp_path / name).read_text().splitlines()] for name in ("drafted.jsonl", "plain.jsonl")]
    assert texts[0] == texts[1] and len(texts[0]) == 3 and any(texts[0])
    steermoe_cli.parse_args([str(tmp_path), "--model", "m", "--backend", "onnx"])
    with pytest.raises(SystemExit):
        steermoe_cli.parse_args([str(tmp_path), "--model", "m", "--backend", "onnx", "--no-ctc-drafts"])
