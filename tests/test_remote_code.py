"""The root modules as a Hub repo of remote code, and as pip-installed top-level modules."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT, speechlike

CODE_FILES = ("configuration_steermoe.py", "modeling_steermoe.py", "processing_steermoe.py")

LOAD_AS_REMOTE_CODE = """
import sys, torch
from transformers import AutoConfig, AutoModel, AutoModelForSpeechSeq2Seq, AutoProcessor
repo = sys.argv[1]
config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
model = AutoModel.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32)
speech_model = AutoModelForSpeechSeq2Seq.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32)
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
assert "steermoe" not in sys.modules and "modeling_steermoe" not in sys.modules, "repo code leaked into sys.path"
for obj in (config, model, speech_model, processor):
    print(type(obj).__name__, type(obj).__module__)
inputs = torch.load(sys.argv[2])
logits = model(**inputs).logits
torch.save(logits, sys.argv[3])
"""


def run_python(code: str, *args, cwd, env=None) -> subprocess.CompletedProcess:
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (env or {})
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=clean_env, capture_output=True, text=True
    )


def test_saved_repo_loads_as_remote_code_in_a_fresh_process(model, processor, tmp_path):
    repo = tmp_path / "repo"
    with torch.no_grad():
        model.aligner.steering_vectors.normal_()
    model.save_pretrained(repo)
    processor.save_pretrained(repo)
    for name in CODE_FILES:
        assert (repo / name).read_bytes() == (ROOT / name).read_bytes(), f"{name} in the repo is not the source file"
    inputs = dict(processor(text=processor.audio_token + " transcribe", audio=speechlike(1.2), sampling_rate=16000))
    torch.save(inputs, tmp_path / "inputs.pt")
    result = run_python(
        LOAD_AS_REMOTE_CODE,
        repo,
        tmp_path / "inputs.pt",
        tmp_path / "logits.pt",
        cwd=tmp_path,
        env={"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()[-4:]
    names = [line.split()[0] for line in lines]
    assert names == [
        "SteerMoEConfig",
        "SteerMoEForConditionalGeneration",
        "SteerMoEForConditionalGeneration",
        "SteerMoEProcessor",
    ]
    assert all(line.split()[1].startswith("transformers_modules.") for line in lines)
    assert torch.equal(torch.load(tmp_path / "logits.pt"), model(**inputs).logits)


def test_remote_code_requires_trust(model, tmp_path):
    from transformers import AutoModel

    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModel.from_pretrained(tmp_path, trust_remote_code=False)


def test_pip_installed_modules_import_flat(tmp_path):
    probe = run_python("import importlib.util; print(importlib.util.find_spec('modeling_steermoe') is not None)", cwd=tmp_path)
    if probe.stdout.strip() != "True":
        pytest.skip("steermoe is not pip-installed in this environment (pip install -e . installs it)")
    code = textwrap.dedent(
        """
        import modeling_steermoe, processing_steermoe, configuration_steermoe
        from modeling_steermoe import SteerMoEConfig, SteerMoEForConditionalGeneration
        from transformers import WhisperConfig, Qwen2Config
        assert modeling_steermoe.__package__ in ("", None)
        assert SteerMoEConfig is configuration_steermoe.SteerMoEConfig
        assert processing_steermoe.get_num_audio_tokens is configuration_steermoe.get_num_audio_tokens
        config = SteerMoEConfig(
            audio_config=WhisperConfig(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32).to_dict(),
            text_config=Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1).to_dict(),
            num_experts=4,
        )
        model = SteerMoEForConditionalGeneration(config)
        print(model.get_parameter_report()["aligner"]["trainable"])
        """
    )
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    steering, router, scales, projector = 2 * 4 * 16, 16 * 8 + 8, 2, 16 * 16 + 16
    assert int(result.stdout.split()[-1]) == steering + router + scales + projector
