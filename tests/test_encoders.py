"""wav2vec2-style encoder families (HuBERT, WavLM, Wav2Vec2-Conformer), selected only by audio_model_id."""

import pytest
import torch
from conftest import speechlike
from safetensors import safe_open
from transformers import AutoModel, AutoProcessor

from backbones import WAV2VEC2_FAMILIES, save_wav2vec2_family
from configuration_steermoe import SteerMoEConfig
from modeling_steermoe import SteerMoEForConditionalGeneration
from processing_steermoe import SteerMoEProcessor


@pytest.fixture(scope="module", params=WAV2VEC2_FAMILIES)
def family_dir(request, tmp_path_factory):
    return request.param, save_wav2vec2_family(tmp_path_factory.mktemp(request.param) / "encoder", request.param)


def build(family_dir, backbone_dirs, **config_kwargs):
    _, encoder_dir = family_dir
    config = SteerMoEConfig(audio_model_id=str(encoder_dir), text_model_id=str(backbone_dirs[1]), **config_kwargs)
    processor = SteerMoEProcessor.from_config(config)
    config.audio_token_id = processor.audio_token_id
    torch.manual_seed(0)
    return SteerMoEForConditionalGeneration(config, dtype=torch.float32), processor


def batch(processor, durations=(0.5, 0.8), targets=("the quick fox", "a lazy dog")):
    return processor(
        text=[processor.audio_token + " transcribe"] * len(durations),
        audio=[speechlike(d, seed=i) for i, d in enumerate(durations)],
        sampling_rate=16000,
        text_target=list(targets[: len(durations)]),
    )


def test_family_trains_counts_and_round_trips(family_dir, backbone_dirs, tmp_path):
    family, _ = family_dir
    model, processor = build(family_dir, backbone_dirs)
    assert type(model.audio_encoder).__name__.lower().startswith(family.replace("-", ""))
    d, layers, experts, llm = 32, 2, 8, model.config.text_config.hidden_size
    assert model.get_parameter_report()["total"]["trainable"] == layers * (2 * experts * d + experts + 1) + d * llm + llm
    inputs = batch(processor)
    assert inputs["input_features"].ndim == 2
    model.train()
    model(**inputs).loss.backward()
    for name, param in model.named_parameters():
        if name.startswith("aligner."):
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None and not param.requires_grad, name
    model.eval()
    with torch.no_grad():
        model.aligner.steering_vectors.normal_()
    model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    with safe_open(tmp_path / "adapter" / "model.safetensors", "pt") as reader:
        assert all(key.startswith("aligner.") for key in reader.keys())
    loaded = SteerMoEForConditionalGeneration.from_pretrained(tmp_path / "adapter", dtype=torch.float32)
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path / "adapter", trust_remote_code=True)
    assert reloaded_processor.conv_layers == processor.conv_layers
    again = batch(reloaded_processor)
    assert torch.equal(again["input_ids"], inputs["input_ids"])
    assert torch.equal(loaded(**again).logits, model(**inputs).logits)


def test_zero_scales_give_the_plain_encoder(family_dir, backbone_dirs):
    model, processor = build(family_dir, backbone_dirs, pooling_type=None)
    with torch.no_grad():
        model.aligner.steering_vectors.normal_()
        model.aligner.layer_scales.zero_()
    inputs = batch(processor, durations=(0.7,))
    values, mask = inputs["input_features"], inputs["feature_attention_mask"]
    plain = model.aligner.project(model.audio_encoder(values, attention_mask=mask).last_hidden_state)
    # Bitwise for HuBERT and WavLM; the Conformer's kernels see a new (h + 0) tensor and can differ by float rounding.
    torch.testing.assert_close(model.get_audio_features(values, mask), plain, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        model.aligner.layer_scales.fill_(0.5)
    assert not torch.allclose(model.get_audio_features(values, mask), plain)


def test_padding_in_a_batch_does_not_change_a_clip(family_dir, backbone_dirs):
    model, processor = build(family_dir, backbone_dirs)
    alone = batch(processor, durations=(0.5,))
    both = batch(processor, durations=(0.5, 1.1))
    single = model.get_audio_features(alone["input_features"], alone["feature_attention_mask"])
    batched = model.get_audio_features(both["input_features"], both["feature_attention_mask"])
    torch.testing.assert_close(batched[0, : single.shape[1]], single[0], atol=1e-4, rtol=1e-4)
    count = int((alone["input_ids"] == processor.audio_token_id).sum())
    assert single.shape[1] == count


def test_router_logits_for_each_layer(family_dir, backbone_dirs):
    model, processor = build(family_dir, backbone_dirs)
    inputs = batch(processor)
    output = model(**inputs, output_router_logits=True)
    frames = model.audio_encoder._get_feat_extract_output_lengths(inputs["feature_attention_mask"].sum(-1)).sum()
    assert [tuple(logits.shape) for logits in output.router_logits] == [(int(frames), 8)] * 2


def test_plain_encoder_output_is_untouched_after_a_steered_pass(family_dir, backbone_dirs):
    model, processor = build(family_dir, backbone_dirs)
    inputs = batch(processor, durations=(0.6,))
    values, mask = inputs["input_features"], inputs["feature_attention_mask"]
    before = model.audio_encoder(values, attention_mask=mask).last_hidden_state
    model.get_audio_features(values, mask)
    assert torch.equal(model.audio_encoder(values, attention_mask=mask).last_hidden_state, before)
    assert isinstance(model.audio_encoder, type(AutoModel.from_config(model.audio_encoder.config)))


def test_encoder_lora_baseline_on_the_family(family_dir, backbone_dirs):
    model, processor = build(family_dir, backbone_dirs, aligner_type="linear", encoder_lora_rank=2)
    adapted = {name.split(".")[-1] for name, m in model.audio_encoder.named_modules() if hasattr(m, "lora_A")}
    attention = {"hubert": {"q_proj", "v_proj"}, "wavlm": set(), "wav2vec2-conformer": {"linear_q", "linear_v"}}
    assert attention[family_dir[0]] | {"intermediate_dense", "output_dense"} <= adapted
    model.train()
    model(**batch(processor)).loss.backward()
    assert all(p.grad is not None for n, p in model.audio_encoder.named_parameters() if "lora_A" in n)


def test_train_py_with_a_wav2vec2_style_encoder(family_dir, backbone_dirs, tmp_path):
    import json

    import soundfile

    import train

    soundfile.write(tmp_path / "a.wav", speechlike(0.6), 16000)
    (tmp_path / "data.jsonl").write_text(json.dumps({"audio": "a.wav", "text": "the quick fox"}) + "\n")
    report = train.main([
        "--audio_model_id", str(family_dir[1]), "--text_model_id", str(backbone_dirs[1]),
        "--train_files", str(tmp_path / "data.jsonl"), "--eval_files", str(tmp_path / "data.jsonl"),
        "--output_dir", str(tmp_path / "run"), "--do_train", "--do_eval", "--max_steps", "2",
        "--report_to", "none", "--generation_max_new_tokens", "2",
    ])  # fmt: skip
    assert report["eval"]["eval_num_samples"] == 1
    processor = AutoProcessor.from_pretrained(tmp_path / "run", trust_remote_code=True)
    assert processor.conv_layers == [[10, 5, 0], [4, 4, 0]]
