import json

import pytest
import torch
from conftest import real_size_configs, speechlike
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, WhisperForConditionalGeneration

from configuration_steermoe import SteerMoEConfig, get_num_audio_tokens
from modeling_steermoe import SteerMoEForConditionalGeneration


def asr_inputs(processor, durations=(1.0,), targets=None, prompt="{audio} transcribe the audio"):
    audio = [speechlike(d, seed=i) for i, d in enumerate(durations)]
    texts = [prompt.format(audio=processor.audio_token)] * len(audio)
    return processor(text=texts, audio=audio, sampling_rate=16000, text_target=targets)


def without_labels(inputs):
    return {k: v for k, v in inputs.items() if k != "labels"}


def test_steering_matches_direct_formula(model):
    aligner = model.aligner
    torch.manual_seed(1)
    with torch.no_grad():
        aligner.steering_vectors.normal_()
        aligner.layer_scales.uniform_(0.5, 1.5)
    hidden = torch.randn(2, 7, aligner.steering_vectors.shape[-1])
    experts = aligner.num_experts
    all_logits = hidden @ aligner.router.weight.T + aligner.router.bias
    for layer in range(aligner.num_layers):
        logits = all_logits[..., layer * experts : (layer + 1) * experts]
        gates = torch.softmax(logits, dim=-1)
        expected = hidden + aligner.layer_scales[layer] * torch.einsum(
            "btk,kd->btd", gates, aligner.steering_vectors[layer]
        )
        steered, router_logits = aligner.steer(hidden, layer)
        torch.testing.assert_close(steered, expected)
        torch.testing.assert_close(router_logits, logits)


def test_router_computes_only_its_layer_slice(model):
    aligner = model.aligner
    hidden = torch.randn(1, 3, aligner.router.in_features)
    logits = aligner.router_logits(hidden, 1)
    assert logits.shape[-1] == aligner.num_experts
    torch.testing.assert_close(logits, aligner.router(hidden)[..., aligner.num_experts : 2 * aligner.num_experts])


def test_zero_layer_scales_give_the_plain_encoder_output(make_model):
    model = make_model(pooling_type=None)
    with torch.no_grad():
        model.aligner.steering_vectors.normal_()
        model.aligner.layer_scales.zero_()
    features = torch.randn(2, 80, 3000)
    plain = model.audio_encoder(features).last_hidden_state
    expected = model.aligner.project(plain)
    torch.testing.assert_close(model.get_audio_features(features), expected, rtol=0, atol=0)
    with torch.no_grad():
        model.aligner.layer_scales.fill_(0.1)
    assert not torch.allclose(model.get_audio_features(features), expected)


def test_audio_features_shape_follows_the_shared_token_count(model):
    for frames in (1, 2, 7, 100, 1001, 3000):
        features = model.get_audio_features(torch.randn(1, 80, frames))
        assert features.shape == (1, get_num_audio_tokens(frames, 4), model.config.text_config.hidden_size)


def test_short_audio_is_not_padded_to_thirty_seconds(model, processor):
    inputs = asr_inputs(processor, durations=(2.0,))
    assert inputs["input_features"].shape[-1] == 200
    assert model.get_audio_features(inputs["input_features"]).shape[1] == 25


def test_padding_in_a_batch_does_not_change_a_clip(model, processor):
    alone = asr_inputs(processor, durations=(1.01,))
    batch = asr_inputs(processor, durations=(1.01, 3.5))
    assert int(alone["feature_attention_mask"].sum()) % 2 == 1
    single = model.get_audio_features(alone["input_features"], alone["feature_attention_mask"])
    batched = model.get_audio_features(batch["input_features"], batch["feature_attention_mask"])
    torch.testing.assert_close(batched[0, : single.shape[1]], single[0], atol=1e-5, rtol=1e-5)
    assert batched[0, single.shape[1] :].abs().sum() == 0


@pytest.mark.parametrize("pooling_type", ["max", "avg"])
def test_pooling_ignores_padded_frames(make_model, pooling_type):
    aligner = make_model(pooling_type=pooling_type).aligner
    hidden = torch.randn(1, 6, 4)
    mask = torch.tensor([[True] * 5 + [False]])
    pooled, pooled_mask = aligner.pool(hidden.clone().index_fill_(1, torch.tensor([5]), 1e4), mask)
    reduce = (lambda x: x.amax(1)) if pooling_type == "max" else (lambda x: x.mean(1))
    torch.testing.assert_close(pooled[0, 0], reduce(hidden[:, :4])[0])
    torch.testing.assert_close(pooled[0, 1], reduce(hidden[:, 4:5])[0])
    assert pooled_mask.tolist() == [[True, True]]


def test_gradients_reach_every_aligner_parameter_and_no_backbone_parameter(model, processor):
    model.train()
    inputs = asr_inputs(processor, durations=(1.0, 2.0), targets=["the quick fox", "brown dog"])
    model(**inputs).loss.backward()
    for name, param in model.named_parameters():
        if name.startswith("aligner."):
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert not param.requires_grad and param.grad is None, name


def test_gradient_checkpointing_keeps_the_steering_gradients(make_model, processor):
    inputs = asr_inputs(processor, durations=(1.0, 2.0), targets=["the quick fox", "brown dog"])
    grads = []
    for checkpointing in (False, True):
        model = make_model()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.gradient_checkpointing and model._gradient_checkpointing_func is not None
        model.train()
        model(**inputs).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)
    assert grads[1]["aligner.steering_vectors"].abs().sum() > 0


def test_router_logits_cover_every_layer_and_real_frame(model, processor):
    inputs = asr_inputs(processor, durations=(1.0, 2.0))
    output = model(**inputs, output_router_logits=True)
    real_frames = int(((inputs["feature_attention_mask"].sum(-1) - 1) // 2 + 1).sum())
    assert len(output.router_logits) == model.aligner.num_layers
    assert all(logits.shape == (real_frames, model.config.num_experts) for logits in output.router_logits)
    assert model(**inputs).router_logits is None


def test_frozen_backbones_stay_in_eval_mode(model):
    model.train()
    assert model.aligner.training
    assert not any(m.training for m in model.audio_encoder.modules())
    assert not any(m.training for m in model.language_model.modules())
    assert model.audio_encoder.config.encoder_layerdrop == 0.0
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in model.aligner.named_parameters(prefix="aligner")}


def test_loss_only_on_target_labels(model, processor):
    inputs = asr_inputs(processor, durations=(1.0,), targets=["the quick fox"])
    labels = inputs["labels"][0]
    target = processor.tokenizer("the quick fox", add_special_tokens=False)["input_ids"]
    assert labels[labels != -100].tolist() == target + [processor.tokenizer.eos_token_id]
    assert (labels[inputs["input_ids"][0] == processor.audio_token_id] == -100).all()
    logits = model(**without_labels(inputs)).logits
    expected = torch.nn.functional.cross_entropy(logits[0, :-1], labels[1:], ignore_index=-100)
    torch.testing.assert_close(model(**inputs).loss, expected)


def test_encoder_loads_only_the_encoder_half(model, backbone_dirs):
    whisper = WhisperForConditionalGeneration.from_pretrained(backbone_dirs[0])
    expected = whisper.model.encoder.state_dict()
    loaded = model.audio_encoder.state_dict()
    assert loaded.keys() == expected.keys()
    for key in expected:
        assert torch.equal(loaded[key], expected[key]), key
    assert not any("decoder" in name for name, _ in model.named_parameters())


def test_text_only_is_exactly_the_base_llm(model, backbone_dirs, processor):
    base = AutoModelForCausalLM.from_pretrained(backbone_dirs[1], dtype=torch.float32)
    inputs = processor.tokenizer(["what is said in this recording", "the quick"], return_tensors="pt", padding=True)
    assert torch.equal(model(**inputs).logits, base(**inputs).logits)
    single = processor.tokenizer("the quick brown", return_tensors="pt")
    ours = model.generate(**single, max_new_tokens=12, do_sample=False)
    theirs = base.generate(**single, max_new_tokens=12, do_sample=False)
    assert torch.equal(ours, theirs)
    assert ours.shape[1] > single["input_ids"].shape[1]


def test_generate_batched_equals_one_by_one(model, processor):
    with torch.no_grad():
        model.aligner.steering_vectors.normal_(std=0.5)
    durations = (1.0, 3.0, 2.2)
    prompts = ["{audio} transcribe", "{audio} transcribe the audio please", "{audio} what"]
    batch = processor(
        text=[p.format(audio=processor.audio_token) for p in prompts],
        audio=[speechlike(d, seed=i) for i, d in enumerate(durations)],
        sampling_rate=16000,
    )
    batched = model.generate(**batch, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    batched = batched[:, batch["input_ids"].shape[1] :]
    for i, (duration, prompt) in enumerate(zip(durations, prompts)):
        one = processor(text=prompt.format(audio=processor.audio_token), audio=speechlike(duration, seed=i), sampling_rate=16000)
        single = model.generate(**one, max_new_tokens=8, do_sample=False, min_new_tokens=8)
        assert batched.shape[1] == 8 and batched[i].tolist() == single[0, one["input_ids"].shape[1] :].tolist()


def test_placeholder_count_mismatch_raises(model, processor):
    inputs = asr_inputs(processor, durations=(1.0,))
    inputs["input_ids"] = inputs["input_ids"][:, 1:]
    inputs["attention_mask"] = inputs["attention_mask"][:, 1:]
    with pytest.raises(ValueError, match="audio placeholder tokens .* but the audio gives"):
        model(**inputs)


def test_audio_token_id_comes_from_the_llm_tokenizer(make_model, processor):
    assert make_model(audio_token_id=None).config.audio_token_id == processor.audio_token_id


def test_missing_audio_token_id_raises(model, processor):
    config = SteerMoEConfig(audio_config=model.config.audio_config.to_dict(), text_config=model.config.text_config.to_dict())
    assert config.audio_token_id is None
    with pytest.raises(ValueError, match="audio token id is unknown"):
        SteerMoEForConditionalGeneration(config)(**asr_inputs(processor))


def test_window_longer_than_thirty_seconds_raises(model):
    with pytest.raises(ValueError, match="at most 3000"):
        model.get_audio_features(torch.randn(1, 80, 3002))


def test_long_audio_is_encoded_window_by_window(model, processor):
    inputs = asr_inputs(processor, durations=(35.0,))
    assert inputs["input_features"].shape[0] == 2
    assert inputs["feature_attention_mask"].sum(-1).tolist() == [3000, 500]
    expected = get_num_audio_tokens(3000, 4) + get_num_audio_tokens(500, 4)
    assert int((inputs["input_ids"] == processor.audio_token_id).sum()) == expected
    assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_save_holds_the_aligner_only_and_round_trips(model, processor, tmp_path):
    with torch.no_grad():
        model.aligner.steering_vectors.normal_()
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as reader:
        keys = set(reader.keys())
    assert keys == set(model.aligner.state_dict(prefix="aligner.").keys())
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["audio_config"]["model_type"] == "whisper" and saved["text_config"]["model_type"] == "qwen2"
    assert saved["auto_map"]["AutoModel"] == "modeling_steermoe.SteerMoEForConditionalGeneration"
    loaded = SteerMoEForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32)
    inputs = asr_inputs(processor, durations=(1.0, 2.5))
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == keys


def test_missing_weight_file_fails_loudly(model, tmp_path):
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        SteerMoEForConditionalGeneration.from_pretrained(tmp_path)


def test_partial_weight_file_fails_loudly(model, tmp_path):
    model.save_pretrained(tmp_path)
    state = model.aligner.state_dict(prefix="aligner.")
    state.pop("aligner.router.bias")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing \['aligner.router.bias'\]"):
        SteerMoEForConditionalGeneration.from_pretrained(tmp_path)


def test_adapter_on_another_backbone_pair_names_both(model, tmp_path):
    from backbones import save_qwen2

    model.save_pretrained(tmp_path / "adapter")
    wider = save_qwen2(tmp_path / "wider-llm", hidden_size=48)
    with pytest.raises(ValueError) as error:
        SteerMoEForConditionalGeneration.from_pretrained(tmp_path / "adapter", text_model_id=str(wider))
    message = str(error.value)
    assert str(model.config.text_model_id) in message and str(wider) in message
    assert "hidden_size=48" in message and "aligner.projector.weight" in message


def test_missing_backbone_weights_fail_loudly(backbone_dirs, processor, tmp_path):
    from backbones import make_tokenizer, qwen2_config

    broken = tmp_path / "broken-llm"
    model = AutoModelForCausalLM.from_config(qwen2_config(len(make_tokenizer())))
    state = {k: v for k, v in model.state_dict().items() if "layers.1." not in k}
    model.save_pretrained(broken, state_dict=state)
    config = SteerMoEConfig(audio_model_id=str(backbone_dirs[0]), text_model_id=str(broken))
    with pytest.raises(ValueError, match="refusing to use randomly initialised"):
        SteerMoEForConditionalGeneration(config)


def test_bf16_backbones_keep_an_fp32_aligner(make_model, backbone_dirs, processor):
    config = SteerMoEConfig(
        audio_model_id=str(backbone_dirs[0]),
        text_model_id=str(backbone_dirs[1]),
        audio_token_id=processor.audio_token_id,
    )
    model = SteerMoEForConditionalGeneration(config, dtype=torch.bfloat16)
    assert model.audio_encoder.conv1.weight.dtype == torch.bfloat16
    assert model.language_model.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.aligner.parameters())
    inputs = asr_inputs(processor, durations=(1.0,), targets=["the quick"])
    loss = model(**inputs).loss
    loss.backward()
    assert torch.isfinite(loss) and model.aligner.steering_vectors.grad is not None
    assert all(p.dtype == torch.float32 for p in model.aligner.parameters())
    assert model.audio_encoder.conv1.weight.dtype == torch.bfloat16


def test_parameter_report_at_real_size_on_meta():
    audio_config, text_config = real_size_configs()
    config = SteerMoEConfig(audio_config=audio_config, text_config=text_config)
    with torch.device("meta"):
        model = SteerMoEForConditionalGeneration(config)
    report = model.get_parameter_report()
    layers, experts, width, llm = 32, 8, 1280, 3584
    aligner = layers * experts * width + (width * layers * experts + layers * experts) + layers + (width * llm + llm)
    assert report["aligner"] == {"trainable": aligner, "frozen": 0}
    assert report["total"]["trainable"] == aligner
    assert report["language_model"]["trainable"] == 0 and report["language_model"]["frozen"] > 7_000_000_000
    assert 600_000_000 < report["audio_encoder"]["frozen"] < 700_000_000
