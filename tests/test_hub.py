"""Publishing to the Hub (captured at huggingface_hub's commit call, no network) and loading by Hub id from an
offline cache laid out as huggingface_hub lays it out."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import real_size_configs, speechlike
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard

import train
from configuration_steermoe import SteerMoEConfig
from modeling_steermoe import SteerMoEForConditionalGeneration

EXPECTED_FILES = {
    "README.md", "config.json", "generation_config.json", "model.safetensors",
    "configuration_steermoe.py", "modeling_steermoe.py", "processing_steermoe.py", "pipeline_steermoe.py",
    "processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
}  # fmt: skip


@pytest.fixture
def captured_commits(monkeypatch):
    """Every commit huggingface_hub would send: the repo, and each file's path and bytes."""
    commits = []

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for op in operations:
            assert isinstance(op, CommitOperationAdd)
            source = op.path_or_fileobj
            files[op.path_in_repo] = open(source, "rb").read() if isinstance(source, (str, os.PathLike)) else source
        commits.append({"repo_id": repo_id, "files": files, "message": kwargs.get("commit_message")})
        return f"https://huggingface.co/{repo_id}/commit/fake"

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: repo_id)
    return commits


def test_push_uploads_exactly_the_adapter_files_and_the_card(model, processor, captured_commits, tmp_path):
    results = {
        "eval": {"eval_wer": 0.1234, "eval_cer": 0.0567, "eval_num_samples": 100},
        "recipe": {"data": {"dataset_name": "openslr/librispeech_asr", "eval_split": "test.clean", "language": "en"}},
        "training_args": {"max_steps": 1500, "learning_rate": 1e-4, "steering_learning_rate": 1e-2},
    }
    model.push_to_hub("my-org/steermoe-test", processor=processor, results=results)
    [commit] = captured_commits
    files = commit["files"]
    assert commit["repo_id"] == "my-org/steermoe-test"
    assert set(files) == EXPECTED_FILES
    aligner_bytes = sum(p.numel() * 4 for p in model.aligner.parameters())
    assert aligner_bytes < len(files["model.safetensors"]) < aligner_bytes + 4096
    config = json.loads(files["config.json"])
    assert config["audio_model_id"] == model.config.audio_model_id and "audio_model_revision" in config
    assert config["custom_pipelines"]["automatic-speech-recognition"]["impl"] == "pipeline_steermoe.SteerMoEASRPipeline"
    (tmp_path / "README.md").write_bytes(files["README.md"])
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "automatic-speech-recognition"
    assert data["language"] == ["en"] and data["datasets"] == ["openslr/librispeech_asr"]
    assert "steermoe" in data["tags"] and data["license"] == "apache-2.0"
    metrics = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"wer": 0.1234, "cer": 0.0567}
    assert 'pipeline("automatic-speech-recognition", model="my-org/steermoe-test", trust_remote_code=True)' in card.text
    trainable = model.get_parameter_report()["aligner"]["trainable"]
    assert f"| aligner | {trainable:,} | 0 |" in card.text
    assert "| steering_learning_rate | 0.01 |" in card.text and "0.1234" in card.text


def test_card_names_hub_backbones_as_base_models(processor, captured_commits):
    audio_config, text_config = real_size_configs()
    config = SteerMoEConfig(
        audio_model_id="openai/whisper-large-v3",
        text_model_id="Qwen/Qwen2.5-7B-Instruct",
        audio_config=audio_config,
        text_config=text_config,
    )
    from hub_card.publish import render_model_card

    model = _meta_model(config)
    card = render_model_card(model, "org/big")
    assert card.data.base_model == ["openai/whisper-large-v3", "Qwen/Qwen2.5-7B-Instruct"]
    assert "5,246,752" in card.text


def _meta_model(config):
    """A real-size model on the meta device whose config still records the Hub ids (nothing is downloaded)."""
    ids = config.audio_model_id, config.text_model_id
    config.audio_model_id = config.text_model_id = None
    with torch.device("meta"):
        model = SteerMoEForConditionalGeneration(config)
    model.config.audio_model_id, model.config.text_model_id = ids
    return model


def test_trainer_push_to_hub_publishes_the_trained_adapter(backbone_dirs, captured_commits, tmp_path):
    manifest = tmp_path / "train.jsonl"
    import soundfile

    soundfile.write(tmp_path / "a.wav", speechlike(1.0), 16000)
    manifest.write_text(json.dumps({"audio": "a.wav", "text": "the quick fox"}) + "\n")
    out = tmp_path / "run"
    train.main([
        "--audio_model_id", str(backbone_dirs[0]), "--text_model_id", str(backbone_dirs[1]),
        "--train_files", str(manifest), "--eval_files", str(manifest), "--output_dir", str(out),
        "--do_train", "--do_eval", "--max_steps", "2", "--report_to", "none", "--generation_max_new_tokens", "3",
        "--push_to_hub", "--hub_model_id", "my-org/trained",
    ])  # fmt: skip
    [commit] = captured_commits
    assert commit["repo_id"] == "my-org/trained" and set(commit["files"]) == EXPECTED_FILES
    card = commit["files"]["README.md"].decode()
    results = json.loads((out / "results.json").read_text())
    assert f"{results['eval']['eval_wer']:.4f}" in card


def _put_in_hub_cache(cache, repo_id, folder, commit="0" * 39 + "1"):
    """Lay `folder` out as huggingface_hub caches `repo_id` at `commit` (refs/main -> snapshots/<commit>/)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


LOAD_BY_HUB_ID = """
import sys, torch
from transformers import AutoModel, AutoProcessor, pipeline
model = AutoModel.from_pretrained("my-org/steermoe", trust_remote_code=True, dtype=torch.float32)
processor = AutoProcessor.from_pretrained("my-org/steermoe", trust_remote_code=True)
inputs = torch.load(sys.argv[1])
clip = inputs.pop("clip")
torch.save(model(**inputs).logits, sys.argv[2])
asr = pipeline("automatic-speech-recognition", model="my-org/steermoe", trust_remote_code=True, dtype=torch.float32)
print(type(model).__name__, type(asr).__name__, repr(asr(clip.numpy(), max_new_tokens=3)["text"]))
"""


def test_load_by_hub_id_from_an_offline_cache(backbone_dirs, processor, tmp_path):
    cache = tmp_path / "hub"
    _put_in_hub_cache(cache, "fake-org/whisper-tiny", backbone_dirs[0])
    _put_in_hub_cache(cache, "fake-org/qwen2-tiny", backbone_dirs[1])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }  # fmt: skip
    config = SteerMoEConfig(
        audio_model_id=str(backbone_dirs[0]), text_model_id=str(backbone_dirs[1]), audio_token_id=processor.audio_token_id
    )
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32)
    with torch.no_grad():
        model.aligner.steering_vectors.normal_()
    model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "config.json").read_text())
    saved.update(audio_model_id="fake-org/whisper-tiny", text_model_id="fake-org/qwen2-tiny")
    (tmp_path / "adapter" / "config.json").write_text(json.dumps(saved))
    _put_in_hub_cache(cache, "my-org/steermoe", tmp_path / "adapter")
    clip = speechlike(1.0)
    inputs = dict(processor(text=processor.audio_token + " transcribe", audio=clip, sampling_rate=16000))
    torch.save({**inputs, "clip": torch.from_numpy(clip)}, tmp_path / "inputs.pt")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_BY_HUB_ID, str(tmp_path / "inputs.pt"), str(tmp_path / "logits.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[:2] == ["SteerMoEForConditionalGeneration", "SteerMoEASRPipeline"]
    assert torch.equal(torch.load(tmp_path / "logits.pt"), model(**inputs).logits)
