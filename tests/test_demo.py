"""A shortened run of the README's main job: synthesize speech with espeak-ng, train briefly, evaluate."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, SHARED

import train


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it where apt-get is usable)")
    out = tmp_path_factory.mktemp("demo-data")
    command = [sys.executable, str(ROOT / "scripts" / "synthesize_demo_data.py"), "--output_dir", str(out),
               "--num_train", "48", "--num_test", "8"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return out


def test_synthesized_dataset_has_a_held_out_voice(demo_data):
    train_rows = [json.loads(line) for line in (demo_data / "train.jsonl").read_text().splitlines()]
    test_rows = [json.loads(line) for line in (demo_data / "test_unseen_voice.jsonl").read_text().splitlines()]
    assert len(train_rows) == 48 and len(test_rows) == 8
    assert {row["voice"] for row in test_rows}.isdisjoint({row["voice"] for row in train_rows})
    assert {row["text"] for row in test_rows}.isdisjoint({row["text"] for row in train_rows})
    assert all((demo_data / row["audio"]).stat().st_size > 1000 for row in train_rows + test_rows)


def test_shortened_demo_trains_and_reports_wer(demo_data, backbone_dirs, tmp_path, capsys):
    audio_model, text_model = SHARED / "models" / "whisper-tiny.en-encoder", SHARED / "models" / "stories260K"
    if not (audio_model.is_dir() and text_model.is_dir()):
        audio_model, text_model = backbone_dirs
    out = tmp_path / "demo"
    report = train.main([
        str(ROOT / "configs" / "demo.yaml"),
        "--audio_model_id", str(audio_model), "--text_model_id", str(text_model),
        "--train_files", str(demo_data / "train.jsonl"), "--eval_files", str(demo_data / "test_unseen_voice.jsonl"),
        "--extra_eval_files", str(demo_data / "test_seen_voice.jsonl"), "--eval_on_start", "true",
        "--output_dir", str(out), "--max_steps", "60", "--logging_steps", "10", "--save_steps", "60",
        "--llm_loss_start_step", "30", "--generation_max_new_tokens", "12",
    ])  # fmt: skip
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    curve = [entry["loss"] for entry in history if "loss" in entry]
    ctc_phase = [entry["loss"] for entry in history if "loss" in entry and entry["step"] <= 30]
    assert ctc_phase[-1] < ctc_phase[0]  # the total loss jumps when the LLM's loss joins at step 30
    assert report["eval_before"]["eval_before_num_samples"] == report["eval"]["eval_num_samples"] == 8
    assert report["extra_eval"]["test_seen_voice"]["test_seen_voice_num_samples"] == 8
    ctc = [entry["ctc_loss"] for entry in history if "ctc_loss" in entry]
    llm = [entry for entry in history if "llm_loss" in entry]
    assert len(ctc) == len(curve) and ctc[-1] < ctc[0]  # the recipe's CTC loss trains from the first step
    assert llm and all(entry["step"] > 30 for entry in llm)  # the LLM's loss only after llm_loss_start_step
    printed = capsys.readouterr().out
    assert "SteerMoE results: before training: WER" in printed and "test_seen_voice: WER" in printed
    assert json.loads((out / "results.json").read_text())["eval"]["eval_wer"] == report["eval"]["eval_wer"]
