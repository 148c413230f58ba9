import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer

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
        config_kwargs = {"audio_token_id": processor.audio_token_id, **config_kwargs}
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

