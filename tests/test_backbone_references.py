"""An adapter loads from any directory: the backbone configs travel with it, backbone references resolve (as given,
relative to the adapter, the Hub original), overrides work, and a missing backbone gets an error a user can act on."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import soundfile
import torch
from conftest import speechlike
from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline

from configuration_steermoe import SteerMoEConfig, resolve_backbone
from modeling_steermoe import SteerMoEForConditionalGeneration
from processing_steermoe import SteerMoEProcessor


@pytest.fixture
def relative_adapter(backbone_dirs, tmp_path, monkeypatch):
    """A tiny adapter trained-and-saved as train.py does it from a working directory where the backbones are
    relative folders (`backbones/whisper`, `backbones/qwen2`), as the demo names `models/SmolLM2-135M-Instruct`."""
    work = tmp_path / "work"
    (work / "backbones").mkdir(parents=True)
    for source, name in zip(backbone_dirs, ("whisper", "qwen2")):
        shutil.copytree(source, work / "backbones" / name)
    monkeypatch.chdir(work)
    torch.manual_seed(0)
    config = SteerMoEConfig(audio_model_id="backbones/whisper", text_model_id="backbones/qwen2", num_experts=2)
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32)
    processor = SteerMoEProcessor.from_config(config)
    model.save_pretrained("outputs/demo")
    processor.save_pretrained("outputs/demo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return work, work / "outputs" / "demo"


def transcribe_and_chat(adapter: Path, **model_kwargs) -> tuple[str, str]:
    audio = speechlike(1.0)
    asr = pipeline("automatic-speech-recognition", model=str(adapter), trust_remote_code=True, model_kwargs=model_kwargs)
    text = asr({"array": audio, "sampling_rate": 16000}, generate_kwargs={"max_new_tokens": 3})["text"]
    model = AutoModel.from_pretrained(adapter, trust_remote_code=True, **model_kwargs)
    processor = AutoProcessor.from_pretrained(adapter, trust_remote_code=True, **model_kwargs)
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": "Hi?"}]}]
    inputs = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3)
    return text, processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]


def test_the_adapter_carries_its_backbone_configs_and_absolute_references(relative_adapter):
    work, adapter = relative_adapter
    saved = json.loads((adapter / "config.json").read_text())
    assert saved["audio_config"]["model_type"] == "whisper" and saved["text_config"]["model_type"] == "qwen2"
    assert saved["audio_model_id"] == str((work / "backbones" / "whisper").resolve())
    assert saved["text_model_id"] == str((work / "backbones" / "qwen2").resolve())


def test_loads_transcribes_and_chats_from_another_directory_and_after_a_move(relative_adapter, tmp_path):
    work, adapter = relative_adapter
    reference = transcribe_and_chat(adapter)
    moved = tmp_path / "somewhere" / "else" / "my-adapter"
    moved.parent.mkdir(parents=True)
    shutil.move(str(adapter), moved)
    assert transcribe_and_chat(moved) == reference


def test_references_relative_to_the_adapter_resolve(relative_adapter, tmp_path):
    """An adapter whose config records the backbones relative to its own folder, without their configs (as adapters
    saved before the backbone configs were), loads from another working directory."""
    work, adapter = relative_adapter
    reference = transcribe_and_chat(adapter)
    bundle = tmp_path / "bundle"
    shutil.copytree(work / "backbones", bundle / "backbones")
    shutil.copytree(adapter, bundle / "adapter")
    config = json.loads((bundle / "adapter" / "config.json").read_text())
    config.update(audio_model_id="../backbones/whisper", text_model_id="../backbones/qwen2")
    config.pop("audio_config"), config.pop("text_config")
    (bundle / "adapter" / "config.json").write_text(json.dumps(config))
    shutil.rmtree(work / "backbones")
    assert transcribe_and_chat(bundle / "adapter") == reference


def test_overrides_replace_the_recorded_backbones(relative_adapter, backbone_dirs):
    work, adapter = relative_adapter
    reference = transcribe_and_chat(adapter)
    shutil.rmtree(work / "backbones")
    overrides = {"audio_model_id": str(backbone_dirs[0]), "text_model_id": str(backbone_dirs[1])}
    assert transcribe_and_chat(adapter, **overrides) == reference
    model = SteerMoEForConditionalGeneration.from_pretrained(adapter, **overrides)
    assert model.config.audio_model_id == str(backbone_dirs[0])
    # an adapter saved before the backbone configs were, recording folders relative to where it was trained
    config = json.loads((adapter / "config.json").read_text())
    config.update(audio_model_id="../shared/models/whisper", text_model_id="models/qwen2")
    config.pop("audio_config"), config.pop("text_config")
    (adapter / "config.json").write_text(json.dumps(config))
    with pytest.raises(OSError, match=r"audio_model_id='../shared/models/whisper'.*looked at: .*; .*outputs/shared/models/whisper\. Pass"):
        AutoModel.from_pretrained(adapter, trust_remote_code=True)
    assert transcribe_and_chat(adapter, **overrides) == reference


def test_a_missing_backbone_gets_an_error_naming_field_value_places_and_override(relative_adapter):
    work, adapter = relative_adapter
    shutil.rmtree(work / "backbones")
    config = AutoConfig.from_pretrained(adapter, trust_remote_code=True)  # reading the config needs no backbone
    assert config.text_config.model_type == "qwen2"
    missing = str((work / "backbones" / "whisper").resolve())
    with pytest.raises(OSError) as error:
        AutoModel.from_pretrained(adapter, trust_remote_code=True)
    message = str(error.value)
    assert f"audio_model_id={missing!r}" in message and "looked at" in message
    assert "from_pretrained(adapter, audio_model_id=...)" in message and "model_kwargs" in message


def test_resolution_order_and_the_recorded_hub_original(backbone_dirs, tmp_path):
    copy = tmp_path / "models" / "llm"
    shutil.copytree(backbone_dirs[1], copy)
    (copy / "conversion.json").write_text(json.dumps({"original": "SomeOrg/some-llm"}))
    config = SteerMoEConfig(audio_model_id=str(backbone_dirs[0]), text_model_id=str(copy))
    assert config.text_model_hub_id == "SomeOrg/some-llm" and config.audio_model_hub_id is None
    assert resolve_backbone(str(copy)) == (str(copy), [str(copy)])
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    assert resolve_backbone("../models/llm", adapter)[0] == str(copy)
    shutil.rmtree(copy)
    location, looked = resolve_backbone(str(copy), adapter, "SomeOrg/some-llm")
    assert location == "SomeOrg/some-llm" and looked == [str(copy), "the Hub: SomeOrg/some-llm"]
    assert resolve_backbone("../nowhere/llm", adapter)[0] is None


def test_a_train_py_adapter_loads_in_a_fresh_process_from_another_directory(relative_adapter, tmp_path):
    work, adapter = relative_adapter
    soundfile.write(tmp_path / "clip.wav", speechlike(1.0), 16000)
    code = textwrap.dedent(f"""
        from transformers import pipeline
        asr = pipeline("automatic-speech-recognition", model={str(adapter)!r}, trust_remote_code=True)
        print("TEXT", repr(asr({str(tmp_path / 'clip.wav')!r}, generate_kwargs={{"max_new_tokens": 2}})["text"]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "TEXT" in result.stdout, result.stderr[-3000:]
