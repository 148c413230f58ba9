import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer, Qwen2Config, WhisperConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))

from backbones import save_qwen2, save_whisper  # noqa: E402
from configuration_steermoe import SteerMoEConfig  # noqa: E402
from modeling_steermoe import SteerMoEForConditionalGeneration  # noqa: E402
from processing_steermoe import SteerMoEProcessor  # noqa: E402

SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def backbone_dirs(tmp_path_factory):
    """(whisper_dir, qwen2_dir): a full tiny Whisper checkpoint and a tiny Qwen2 LM with tokenizer."""
    root = tmp_path_factory.mktemp("backbones")
    return save_whisper(root / "whisper"), save_qwen2(root / "qwen2")


@pytest.fixture
def processor(backbone_dirs):
    audio_dir, text_dir = backbone_dirs
    return SteerMoEProcessor(AutoFeatureExtractor.from_pretrained(audio_dir), AutoTokenizer.from_pretrained(text_dir))


@pytest.fixture
def make_model(backbone_dirs, processor):
    """Builds a SteerMoE model on the tiny backbones; keyword arguments go to the config."""
    audio_dir, text_dir = backbone_dirs

    def make(**config_kwargs):
        torch.manual_seed(0)
        config = SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir), **config_kwargs)
        return SteerMoEForConditionalGeneration(config, dtype=torch.float32)

    return make


@pytest.fixture
def model(make_model):
    return make_model()


def speechlike(seconds: float, sampling_rate: int = 16000, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """A deterministic harmonic signal with some noise, float32 mono."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((220.0, 440.0, 660.0), start=1))
    return (0.3 * tone * (1 + np.sin(2 * np.pi * 3 * t)) + noise * rng.standard_normal(t.size)).astype(np.float32)



def real_size_configs() -> tuple[dict, dict]:
    """whisper-large-v3 and Qwen2.5-7B-Instruct configs from their published values (no download)."""
    whisper = WhisperConfig(
        d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, num_mel_bins=128,
        decoder_layers=32, decoder_attention_heads=20, decoder_ffn_dim=5120, vocab_size=51866,
    )  # fmt: skip
    qwen = Qwen2Config(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False,
    )  # fmt: skip
    return whisper.to_dict(), qwen.to_dict()


def launch_two_processes(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2` (torchrun, gloo on CPU) of tests/ddp_worker.py with `args`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(port)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*launcher, str(ROOT / "tests" / "ddp_worker.py"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
