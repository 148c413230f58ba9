"""The demo's stop rule: an instruct LLM ends its turn with its EOS token (<|im_end|> for ChatML models); training
targets end with it, generation stops there and nowhere else (no period-stop crutch, so sentences with inner
punctuation are not cut and run-on text is not hidden)."""

import torch
from conftest import ROOT, speechlike

import train


def _recipe(name):
    return train.parse_args([str(ROOT / "configs" / name)])


def test_demo_recipes_stop_on_eos_only():
    for name in ("demo.yaml", "demo_long.yaml"):
        _, _, training_args = _recipe(name)
        assert not training_args.generation_stop_strings, name
        assert training_args.generation_max_new_tokens >= 40, name  # room for the longest (16-word) sentences


def test_training_targets_end_with_eos(processor):
    batch = processor(
        text=[processor.build_prompt("Transcribe the audio.")] * 2,
        audio=[speechlike(0.5), speechlike(0.7, seed=1)],
        sampling_rate=16000,
        text_target=["the quick fox.", "a lazy dog. it slept"],
    )
    eos = processor.tokenizer.eos_token_id
    for labels in batch["labels"]:
        target = labels[labels != -100].tolist()
        assert target[-1] == eos and eos not in target[:-1]


def _force_tokens(model, tokens):
    """Make the LLM's greedy choice follow `tokens` (one per forward pass), whatever its inputs."""
    calls = {"n": 0}

    def hook(module, args, output):
        forced = torch.full_like(output, -1e4)
        forced[:, -1, tokens[min(calls["n"], len(tokens) - 1)]] = 1e4
        calls["n"] += 1
        return forced

    return model.language_model.get_output_embeddings().register_forward_hook(hook)


def test_generation_runs_past_periods_and_stops_at_eos(make_model, processor):
    model = make_model().eval()
    _, _, training_args = _recipe("demo.yaml")
    tokenizer = processor.tokenizer
    sentence = tokenizer("the fox. the dog", add_special_tokens=False)["input_ids"]
    tail = tokenizer(" and more", add_special_tokens=False)["input_ids"]
    hook = _force_tokens(model, sentence + [tokenizer.eos_token_id] + tail)
    try:
        inputs = processor(text=processor.build_prompt("Transcribe the audio."), audio=speechlike(0.6), sampling_rate=16000)
        output = model.generate(
            **inputs, max_new_tokens=training_args.generation_max_new_tokens, do_sample=False, tokenizer=tokenizer
        )
    finally:
        hook.remove()
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    assert new_tokens[0].tolist() == sentence + [tokenizer.eos_token_id]
    assert processor.batch_decode(new_tokens, skip_special_tokens=True) == ["the fox. the dog"]
