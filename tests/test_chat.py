"""The standard chat call: `processor.apply_chat_template(conversation, tokenize=True, return_dict=True,
return_tensors="pt")` with audio parts, then `model.generate(**inputs)` (issue 13)."""

import http.server
import threading
from functools import partial
from threading import Thread

import numpy as np
import pytest
import soundfile
import torch
from conftest import speechlike
from transformers import TextIteratorStreamer, TextStreamer

GENERATE = {"max_new_tokens": 6, "min_new_tokens": 6}


@pytest.fixture
def steered(model):
    with torch.no_grad():
        model.aligner.projector.weight.normal_(std=0.5)
    return model


@pytest.fixture
def clips(tmp_path):
    paths = []
    for index, (seconds, rate) in enumerate([(1.0, 16000), (1.6, 44100), (0.7, 22050)]):
        path = tmp_path / f"clip{index}.wav"
        soundfile.write(path, speechlike(seconds, rate, seed=index), rate)
        paths.append(path)
    return paths


def answer(model, processor, inputs):
    out = model.generate(**inputs, **GENERATE)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_tokenize_false_returns_the_prompt_string(processor):
    conversation = [{"role": "user", "content": [{"type": "audio", "path": "x.wav"}, {"type": "text", "text": "Hi"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert prompt == f"<|im_start|>user\n{processor.audio_token}Hi<|im_end|>\n<|im_start|>assistant\n"
    assert processor.apply_chat_template(conversation).endswith("<|im_end|>\n")
    assert processor.apply_chat_template([conversation, conversation], add_generation_prompt=True) == [prompt] * 2


def test_paths_arrays_and_several_clips_across_turns(processor, clips):
    arrays = [soundfile.read(path, dtype="float32") for path in clips]
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [
            {"type": "audio", "path": str(clips[0])},
            {"type": "text", "text": "and"},
            {"type": "audio", "audio": arrays[1][0], "sampling_rate": arrays[1][1]},
            {"type": "text", "text": "What differs?"},
        ]},
        {"role": "assistant", "content": "The second is longer."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "audio", "audio": str(clips[2])}]},
    ]  # fmt: skip
    inputs = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert prompt.count(processor.audio_token) == 3 and "<|im_start|>system" in prompt and "longer." in prompt
    manual = processor(
        text=prompt, audio=[a for a, _ in arrays], sampling_rate=[r for _, r in arrays], add_special_tokens=False
    )
    assert set(inputs) == {"input_ids", "attention_mask", "input_features", "feature_attention_mask"}
    for key in inputs:
        assert torch.equal(inputs[key], manual[key]), key
    ids_only = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    assert torch.equal(ids_only, inputs["input_ids"])


def test_audio_from_a_url(processor, clips):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(clips[0].parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{clips[1].name}"
        part = lambda source: [{"role": "user", "content": [source, {"type": "text", "text": "Transcribe."}]}]  # noqa: E731
        from_url = processor.apply_chat_template(part({"type": "audio", "url": url}), tokenize=True, return_dict=True)
        from_path = processor.apply_chat_template(
            part({"type": "audio", "path": str(clips[1])}), tokenize=True, return_dict=True
        )
        assert torch.equal(from_url["input_features"], from_path["input_features"])
    finally:
        server.shutdown()


def test_generate_answers_and_batched_equals_one_by_one(steered, processor, clips):
    conversations = [
        [{"role": "user", "content": [{"type": "audio", "path": str(clips[i])}, {"type": "text", "text": question}]}]
        for i, question in enumerate(["Transcribe the audio.", "What is said?", "Who speaks?"])
    ]
    one_by_one = [
        answer(steered, processor, processor.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=True))[0]
        for c in conversations
    ]  # fmt: skip
    batch = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert answer(steered, processor, batch) == one_by_one
    assert len(set(one_by_one)) > 1


@pytest.mark.parametrize("with_audio", [True, False])
def test_streamers_stream_the_answer(steered, processor, clips, capsys, with_audio):
    content = [{"type": "text", "text": "Transcribe the audio."}]
    if with_audio:
        content.insert(0, {"type": "audio", "path": str(clips[0])})
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    expected = answer(steered, processor, inputs)[0]
    steered.generate(**inputs, **GENERATE, streamer=TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True))
    assert capsys.readouterr().out.rstrip("\n") == expected
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    thread = Thread(target=steered.generate, kwargs={**inputs, **GENERATE, "streamer": streamer})
    thread.start()
    pieces = list(streamer)
    thread.join()
    assert "".join(pieces) == expected and len(pieces) >= 1


def test_text_only_conversation_is_the_base_llm(steered, processor, backbone_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
    ]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)
    tokenizer = AutoTokenizer.from_pretrained(backbone_dirs[1])
    reference = tokenizer.apply_chat_template(
        [conversation[0], {"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
    )  # fmt: skip
    assert torch.equal(inputs["input_ids"], reference["input_ids"])
    base = AutoModelForCausalLM.from_pretrained(backbone_dirs[1], dtype=torch.float32)
    assert torch.equal(steered.generate(**inputs, **GENERATE), base.generate(**reference, **GENERATE, do_sample=False))


def test_bad_chat_parts_are_refused(processor, tmp_path):
    def chat(part):
        conversation = [{"role": "user", "content": [part, {"type": "text", "text": "hi"}]}]
        return processor.apply_chat_template(conversation, tokenize=True, return_dict=True)

    with pytest.raises(ValueError, match='exactly one of "path", "url" or "audio"'):
        chat({"type": "audio"})
    with pytest.raises(FileNotFoundError, match="absent.wav"):
        chat({"type": "audio", "path": str(tmp_path / "absent.wav")})
    with pytest.raises(ValueError, match="Unsupported content part type 'image'"):
        chat({"type": "image", "path": "x.png"})
    assert chat({"type": "audio", "audio": np.zeros(1600, dtype=np.float32)})["input_features"].shape[0] == 1


def test_cli_chat_answers_the_spoken_turn_as_the_chat_call_does(steered, processor, clips, tmp_path, capsys):
    import json

    import steermoe_cli

    steered.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    conversation = [{"role": "user", "content": [{"type": "audio", "path": str(clips[0])}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)
    out = steered.generate(**inputs, max_new_tokens=6)
    expected = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    args = [str(clips[0]), "--model", str(tmp_path / "adapter"), "--task", "chat", "--format", "jsonl"]
    assert steermoe_cli.main([*args, "--max-new-tokens", "6"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == expected
    with pytest.raises(SystemExit):
        steermoe_cli.parse_args([*args, "--prompt", "hi"])


def test_any_to_any_pipeline_chats_with_audio(steered, processor, clips, tmp_path):
    from transformers import pipeline

    steered.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    chat = pipeline("any-to-any", model=str(tmp_path / "adapter"), trust_remote_code=True, dtype=torch.float32)
    messages = [{"role": "user", "content": [{"type": "audio", "path": str(clips[1])}, {"type": "text", "text": "What is said?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    expected = answer(steered, processor, inputs)[0]
    [result] = chat(text=messages, return_full_text=False, generate_kwargs=GENERATE)
    assert result["generated_text"] == expected
