"""scripts/make_chat_targets.py: the frozen LLM's own answers to typed transcripts, as a training manifest."""

import json
import sys
from unittest import mock

import torch
from conftest import ROOT
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(ROOT / "scripts"))
import make_chat_targets  # noqa: E402

TRANSCRIPTS = ["the quick brown fox", "what is said in this recording", "a lazy dog", "my fellow americans ask not"]


def test_one_response_per_row_equal_to_generate_on_the_typed_turn(backbone_dirs, tmp_path):
    _, text_dir = backbone_dirs
    (tmp_path / "wav").mkdir()
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"wav/{i}.wav", "text": t}) + "\n" for i, t in enumerate(TRANSCRIPTS)))
    output = tmp_path / "chat" / "train_chat.jsonl"
    common = [str(manifest), "--text_model_id", str(text_dir), "--output", str(output), "--max_new_tokens", "6"]
    make_chat_targets.main([*common, "--batch_size", "3", "--limit", "2"])
    assert len(output.read_text().splitlines()) == 2
    make_chat_targets.main([*common, "--batch_size", "3"])  # continues after the two rows written
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["text"] for row in rows] == TRANSCRIPTS
    written = output.read_text()
    with mock.patch.object(make_chat_targets.AutoModelForCausalLM, "from_pretrained", side_effect=AssertionError):
        assert make_chat_targets.main([*common, "--batch_size", "3"]) == 0  # complete: nothing loaded or written
    assert output.read_text() == written
    assert [(output.parent / row["audio"]).resolve() for row in rows] == [
        (tmp_path / "wav" / f"{i}.wav").resolve() for i in range(len(TRANSCRIPTS))
    ]

    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    model = AutoModelForCausalLM.from_pretrained(text_dir, dtype=torch.float32)
    for row in rows:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["text"]}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        expected = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        assert row["response"] == expected and expected


def test_repeat_fraction_makes_transcription_rows_without_generating(backbone_dirs, tmp_path):
    _, text_dir = backbone_dirs
    transcripts = [f"{t} {i}" for i in range(10) for t in TRANSCRIPTS[:1]]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"{i}.wav", "text": t}) + "\n" for i, t in enumerate(transcripts)))
    output = tmp_path / "mixed.jsonl"
    make_chat_targets.main([
        str(manifest), "--text_model_id", str(text_dir), "--output", str(output), "--max_new_tokens", "4",
        "--batch_size", "4", "--repeat_fraction", "0.5", "--repeat_prompt", "Say it again.",
    ])  # fmt: skip
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    repeats = [row for row in rows if row["prompt"]]
    chats = [row for row in rows if not row["prompt"]]
    assert repeats and chats and len(rows) == len(transcripts)
    assert all(row["prompt"] == "Say it again." and row["response"] == row["text"] for row in repeats)
    assert all(row["prompt"] == "" and row["response"] != row["text"] for row in chats)
    again = tmp_path / "again.jsonl"
    make_chat_targets.main([
        str(manifest), "--text_model_id", str(text_dir), "--output", str(again), "--max_new_tokens", "4",
        "--batch_size", "3", "--repeat_fraction", "0.5", "--repeat_prompt", "Say it again.",
    ])  # fmt: skip
    assert [json.loads(line)["prompt"] for line in again.read_text().splitlines()] == [row["prompt"] for row in rows]
