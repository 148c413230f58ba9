"""The paper's aligner variants: one SteerMoEAligner family selected by config.aligner_type."""

import pytest
import torch
from conftest import speechlike
from safetensors import safe_open

from configuration_steermoe import SteerMoEConfig
from modeling_steermoe import SteerMoEForConditionalGeneration

VARIANTS = {
    "layerwise": {},
    "per_layer_router": {"aligner_type": "per_layer_router"},
    "post_encoder": {"aligner_type": "post_encoder"},
    "linear": {"aligner_type": "linear"},
    "layerwise_2_experts_last_layer": {"num_experts": 2, "steered_layers": [1]},
    "layerwise_16_experts": {"num_experts": 16},
}


def expected_trainable(config) -> int:
    """Parameter count of each variant by formula: steering E*d and router d*E+E per steered layer, a scale each,
    and the projector."""
    d, llm = config.audio_config.d_model, config.text_config.hidden_size
    steered = {"linear": 0, "post_encoder": 1}.get(config.aligner_type, len(config.steered_layers or range(2)))
    experts = config.num_experts
    return steered * (experts * d + d * experts + experts + 1) + d * llm + llm


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_trains_counts_and_round_trips(name, make_model, processor, tmp_path):
    model = make_model(**VARIANTS[name])
    assert model.get_parameter_report()["total"]["trainable"] == expected_trainable(model.config)
    model.train()
    inputs = processor(
        text=[processor.audio_token + " transcribe"] * 2,
        audio=[speechlike(1.0, seed=1), speechlike(1.7, seed=2)],
        sampling_rate=16000,
        text_target=["the quick fox", "a lazy dog"],
    )
    output = model(**inputs, output_router_logits=True)
    output.loss.backward()
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, param_name
    assert len(output.router_logits or ()) == len(model.config.steered_layer_indices)
    with torch.no_grad():
        for param in model.aligner.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    model.eval()
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as reader:
        assert sum(reader.get_tensor(key).numel() for key in reader.keys()) == expected_trainable(model.config)
    loaded = SteerMoEForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32)
    assert loaded.config.aligner_type == model.config.aligner_type
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_per_layer_router_has_one_router_per_layer(make_model):
    aligner = make_model(aligner_type="per_layer_router").aligner
    assert len(aligner.routers) == 2 and not hasattr(aligner, "router")
    assert all(r.out_features == aligner.num_experts for r in aligner.routers)


def test_linear_variant_leaves_the_encoder_untouched(make_model):
    model = make_model(aligner_type="linear", pooling_type=None)
    features = torch.randn(1, 80, 3000)
    plain = model.aligner.project(model.audio_encoder(features).last_hidden_state)
    torch.testing.assert_close(model.get_audio_features(features), plain, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"aligner_type": "attention"}, "aligner_type must be one of"),
        ({"steered_layers": [0, 5]}, "distinct indices"),
        ({"steered_layers": []}, "distinct indices"),
        ({"aligner_type": "linear", "steered_layers": [0]}, "applies to layerwise"),
    ],
)
def test_bad_variant_settings_raise(backbone_dirs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SteerMoEConfig(audio_model_id=str(backbone_dirs[0]), text_model_id=str(backbone_dirs[1]), **kwargs)
