"""LoRA through peft: the encoder LoRA baseline and the optional LLM LoRA (off by default)."""

import torch
from conftest import speechlike
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from modeling_steermoe import SteerMoEForConditionalGeneration


def asr_batch(processor):
    return processor(
        text=[processor.audio_token + " transcribe"] * 2,
        audio=[speechlike(1.0, seed=1), speechlike(1.6, seed=2)],
        sampling_rate=16000,
        text_target=["the quick fox", "a lazy dog"],
    )


def lora_parameters(module, targets, rank) -> int:
    """r * (in + out) for every targeted Linear (wrapped by peft: its `base_layer`)."""
    linears = [m.base_layer for name, m in module.named_modules() if name.split(".")[-1] in targets]
    assert linears and all(isinstance(m, torch.nn.Linear) for m in linears)
    return sum(rank * (m.in_features + m.out_features) for m in linears)


def test_encoder_lora_baseline_trains_counts_and_round_trips(make_model, processor, tmp_path):
    model = make_model(aligner_type="linear", encoder_lora_rank=4)
    targets = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    lora = lora_parameters(model.audio_encoder, targets, 4)
    d, llm = model.config.audio_config.d_model, model.config.text_config.hidden_size
    report = model.get_parameter_report()
    assert report["audio_encoder"]["trainable"] == lora and report["language_model"]["trainable"] == 0
    assert report["total"]["trainable"] == lora + d * llm + llm
    model.train()
    model(**asr_batch(processor)).loss.backward()
    lora_grads = [p.grad for n, p in model.audio_encoder.named_parameters() if "lora_A" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert all(p.grad is None for n, p in model.audio_encoder.named_parameters() if "lora_" not in n)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as reader:
        keys = set(reader.keys())
    assert keys == {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("audio_encoder" in k and "lora_A" in k for k in keys)
    loaded = SteerMoEForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32)
    inputs = asr_batch(processor)
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_llm_lora_is_off_for_text_only_by_default(make_model, processor, backbone_dirs, tmp_path):
    model = make_model(lora_rank=4, lora_alpha=8)
    lora = lora_parameters(model.language_model, ["q_proj", "v_proj"], 4)
    assert model.get_parameter_report()["language_model"]["trainable"] == lora
    with torch.no_grad():
        for name, param in model.language_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    base = AutoModelForCausalLM.from_pretrained(backbone_dirs[1], dtype=torch.float32)
    text = processor.tokenizer(["the quick brown", "what is said"], return_tensors="pt", padding=True)
    assert torch.equal(model(**text).logits, base(**text).logits)
    prompt = processor.tokenizer("the quick brown", return_tensors="pt")
    assert torch.equal(
        model.generate(**prompt, max_new_tokens=8, do_sample=False), base.generate(**prompt, max_new_tokens=8, do_sample=False)
    )
    inputs = asr_batch(processor)
    with_lora = model(**inputs).logits
    with model._llm_lora_enabled(False):
        inputs_embeds, _ = model._merge_audio_into_embeddings(
            inputs["input_ids"], inputs["input_features"], inputs["feature_attention_mask"]
        )
        without_lora = model.language_model(inputs_embeds=inputs_embeds, attention_mask=inputs["attention_mask"]).logits
    assert not torch.allclose(with_lora, without_lora)
    model.save_pretrained(tmp_path)
    opted_in = SteerMoEForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32, lora_for_text_only=True)
    assert not torch.allclose(opted_in(**text).logits, base(**text).logits)
    assert torch.equal(opted_in(**inputs).logits, with_lora)
