"""Per decoded token, SteerMoE's `generate` runs exactly the base LLM's work: counted with torch's profiler on CPU
(the audio is encoded once, before decoding; nothing of ours runs per token)."""

import copy
import sys

import pytest
import torch
from conftest import ROOT, speechlike

sys.path.insert(0, str(ROOT / "bench"))
from inference import ops_per_decoded_token  # noqa: E402


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_nothing_of_ours_runs_per_decoded_token(model, processor, cache_implementation):
    audio_inputs = dict(processor.apply_transcription_request(speechlike(1.5)))
    text_ids = torch.randint(3, processor.tokenizer.vocab_size, audio_inputs["input_ids"].shape)
    text_inputs = {"input_ids": text_ids, "attention_mask": torch.ones_like(text_ids)}

    def generation_config(new_tokens):
        config = copy.deepcopy(model.generation_config)
        config.update(max_new_tokens=new_tokens, min_new_tokens=new_tokens, cache_implementation=cache_implementation)
        return config

    with torch.no_grad():
        ours = ops_per_decoded_token(model.generate, audio_inputs, generation_config)
        bare = ops_per_decoded_token(model.language_model.generate, text_inputs, generation_config)
    assert ours == bare
    # The counts are the decoding step's: every linear layer of the LLM once per token, and the LM head.
    llm = model.language_model.config
    assert ours["aten::linear"] == 7 * llm.num_hidden_layers + 1
    assert ours["aten::scaled_dot_product_attention"] == llm.num_hidden_layers


def test_tuned_decoding_compiles_one_graph_for_both_sides(model, processor, monkeypatch):
    """The tuned decoding setup of bench/inference.py (a static cache reused from call to call, transformers'
    `CompileConfig` with one graph and static shapes): the decoding step compiles once as a single graph (a graph
    break or a recompilation raises), SteerMoE and the bare LLM then both decode with it, and the tokens are those of
    uncompiled decoding. Traced with dynamo's eager backend, on CPU."""
    from transformers import CompileConfig, StaticCache

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    audio_inputs = dict(processor.apply_transcription_request(speechlike(1.5)))
    text_ids = torch.randint(3, processor.tokenizer.vocab_size, audio_inputs["input_ids"].shape)
    text_inputs = {"input_ids": text_ids, "attention_mask": torch.ones_like(text_ids)}
    compile_config = CompileConfig(fullgraph=True, dynamic=False, backend="eager")
    compile_config._compile_all_devices = True  # transformers compiles on CUDA only unless told so
    cache = StaticCache(config=model.language_model.config, max_cache_len=text_ids.shape[1] + 8)
    sides = ((model.generate, audio_inputs), (model.language_model.generate, text_inputs))
    try:
        for generate, inputs in sides + sides:
            expected = generate(**inputs, max_new_tokens=5, min_new_tokens=5, cache_implementation="static")
            cache.reset()
            compiled = generate(**inputs, max_new_tokens=5, min_new_tokens=5, cache=cache, compile_config=compile_config)
            assert torch.equal(compiled, expected)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    finally:
        torch._dynamo.reset()
