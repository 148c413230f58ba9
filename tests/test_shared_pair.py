"""The real pretrained pair from ../shared/models (Whisper tiny.en encoder + stories260K), skipped where absent."""

import pytest
import torch
from conftest import SHARED
from transformers import AutoFeatureExtractor, AutoModelForCausalLM, AutoTokenizer

from configuration_steermoe import SteerMoEConfig
from modeling_steermoe import SteerMoEForConditionalGeneration
from processing_steermoe import SteerMoEProcessor, load_audio


@pytest.fixture(scope="module")
def real(request):
    audio_dir, text_dir = SHARED / "models" / "whisper-tiny.en-encoder", SHARED / "models" / "stories260K"
    if not (audio_dir.is_dir() and text_dir.is_dir()):
        pytest.skip(f"real backbones not found under {SHARED / 'models'} (only on developer machines and CI)")
    processor = SteerMoEProcessor(AutoFeatureExtractor.from_pretrained(audio_dir), AutoTokenizer.from_pretrained(text_dir))
    config = SteerMoEConfig(
        audio_model_id=str(audio_dir), text_model_id=str(text_dir), audio_token_id=processor.audio_token_id
    )
    torch.manual_seed(0)
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32)
    return model, processor, text_dir


def test_real_pair_transcribes_a_real_stereo_44k_flac(real):
    model, processor, _ = real
    samples, rate = load_audio(SHARED / "audio" / "jfk.flac")
    assert samples.ndim == 2 and rate == 44100
    inputs = processor(text=processor.audio_token + "Once", audio=samples, sampling_rate=rate)
    seconds = samples.shape[0] / rate
    frames = int(inputs["feature_attention_mask"].sum())
    assert abs(frames - seconds * 100) <= 1
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    assert new_tokens.shape[0] == 8
    assert processor.decode(new_tokens, skip_special_tokens=True).strip()


def test_real_pair_text_only_is_the_base_llm(real):
    model, processor, text_dir = real
    base = AutoModelForCausalLM.from_pretrained(text_dir, dtype=torch.float32)
    inputs = processor.tokenizer("Once upon a time, a little girl", return_tensors="pt")
    assert torch.equal(model(**inputs).logits, base(**inputs).logits)
    ours = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    assert torch.equal(ours, base.generate(**inputs, max_new_tokens=20, do_sample=False))


def test_real_pair_adapter_round_trip(real, tmp_path):
    model, processor, _ = real
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_size < 200_000
    loaded = SteerMoEForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32)
    samples, rate = load_audio(SHARED / "audio" / "librispeech-1995-1837-0001.wav")
    inputs = processor(text=processor.audio_token, audio=samples, sampling_rate=rate)
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
