"""The calls a transformers user types, as written, and the answers bad input gets (issue 11)."""

import io
import json

import numpy as np
import pytest
import soundfile
import torch
from backbones import save_qwen2
from conftest import speechlike
from transformers import AutoFeatureExtractor, AutoModel, AutoProcessor, AutoTokenizer, pipeline

import steermoe_cli
from configuration_steermoe import SteerMoEConfig
from modeling_steermoe import SteerMoEForConditionalGeneration
from processing_steermoe import SteerMoEProcessor, has_speech, load_audio

GENERATE = {"max_new_tokens": 5, "min_new_tokens": 5}


@pytest.fixture
def fresh_pair(backbone_dirs):
    """A model and a processor built independently from the same backbone ids, nothing copied between them."""
    audio_dir, text_dir = map(str, backbone_dirs)
    torch.manual_seed(0)
    config = SteerMoEConfig(audio_model_id=audio_dir, text_model_id=text_dir)
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32)
    with torch.no_grad():
        model.aligner.projector.weight.normal_(std=0.5)
    return model, SteerMoEProcessor.from_config(SteerMoEConfig(audio_model_id=audio_dir, text_model_id=text_dir))


@pytest.mark.parametrize("padding", [None, True, "longest"])
def test_processor_takes_return_tensors_and_padding(processor, padding):
    prompt = processor.build_prompt("Transcribe the audio.")
    extra = {} if padding is None else {"padding": padding}
    inputs = processor(text=prompt, audio=speechlike(1.0), sampling_rate=16000, return_tensors="pt", **extra)
    assert type(inputs).__name__ == "BatchFeature"
    assert all(isinstance(value, torch.Tensor) for value in inputs.values())
    assert inputs["input_ids"].shape == inputs["attention_mask"].shape
    as_numpy = processor(text=prompt, audio=speechlike(1.0), sampling_rate=16000, return_tensors="np", **extra)
    assert all(isinstance(value, np.ndarray) for value in as_numpy.values())
    for key in inputs:
        np.testing.assert_array_equal(as_numpy[key], inputs[key].numpy())
    as_lists = processor(text=prompt, audio=speechlike(1.0), sampling_rate=16000, return_tensors=None)
    assert as_lists["input_ids"] == [inputs["input_ids"][0].tolist()]


def test_processor_padding_options(processor):
    prompts = [processor.audio_token + " a", processor.audio_token + " transcribe the audio please"]
    clips = [speechlike(1.0), speechlike(1.0)]
    longest = processor(text=prompts, audio=clips, sampling_rate=16000, return_tensors="pt", padding=True)
    lengths = longest["attention_mask"].sum(-1).tolist()
    assert lengths[0] < lengths[1] == longest["input_ids"].shape[1]
    fixed = processor(text=prompts, audio=clips, sampling_rate=16000, padding="max_length", max_length=80)
    assert fixed["input_ids"].shape[1] == 80 and fixed["attention_mask"].sum(-1).tolist() == lengths
    multiple = processor(text=prompts, audio=clips, sampling_rate=16000, pad_to_multiple_of=16)
    assert multiple["input_ids"].shape[1] % 16 == 0
    ragged = processor(text=prompts, audio=clips, sampling_rate=16000, padding=False, return_tensors=None)
    assert [len(ids) for ids in ragged["input_ids"]] == lengths
    with pytest.raises(ValueError, match="padding=True"):
        processor(text=prompts, audio=clips, sampling_rate=16000, padding=False, return_tensors="pt")
    with pytest.raises(ValueError, match="max_length"):
        processor(text=prompts, audio=clips, sampling_rate=16000, padding="max_length", max_length=10)
    with pytest.raises(ValueError, match="truncation"):
        processor(text=prompts, audio=clips, sampling_rate=16000, truncation=True, max_length=10)


def test_model_and_processor_from_the_same_ids_work_together(fresh_pair, tmp_path):
    model, processor = fresh_pair
    assert model.config.audio_token_id == processor.audio_token_id
    inputs = processor(
        text=processor.build_prompt("Transcribe the audio."), audio=speechlike(1.2), sampling_rate=16000, return_tensors="pt"
    )
    assert model(**inputs).logits.shape[:2] == inputs["input_ids"].shape
    output = model.generate(**inputs, **GENERATE)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    assert new_tokens.shape == (1, 5)
    model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "adapter"), trust_remote_code=True)
    expected = processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()
    assert asr(speechlike(1.2), generate_kwargs=GENERATE)["text"] == expected
    reloaded = AutoModel.from_pretrained(tmp_path / "adapter", trust_remote_code=True)
    assert torch.equal(reloaded.generate(**inputs, **GENERATE), output)


def test_processor_from_the_backbones_parts_needs_no_wiring(fresh_pair, backbone_dirs):
    model, _ = fresh_pair
    audio_dir, text_dir = backbone_dirs
    processor = SteerMoEProcessor(AutoFeatureExtractor.from_pretrained(audio_dir), AutoTokenizer.from_pretrained(text_dir))
    inputs = processor(text=processor.build_prompt("Hi"), audio=speechlike(0.7), sampling_rate=16000)
    assert model.generate(**inputs, **GENERATE).shape == (1, inputs["input_ids"].shape[1] + 5)


def test_a_processor_for_another_llm_is_refused(fresh_pair, backbone_dirs, tmp_path):
    model, _ = fresh_pair
    audio_dir, _ = backbone_dirs
    other_llm = save_qwen2(tmp_path / "other", hidden_size=32)
    tokenizer = AutoTokenizer.from_pretrained(other_llm)
    tokenizer.add_tokens(["alpha", "beta", "gamma"])
    other = SteerMoEProcessor(AutoFeatureExtractor.from_pretrained(audio_dir), tokenizer)
    assert other.audio_token_id != model.config.audio_token_id
    inputs = other(text=other.build_prompt("Hi"), audio=speechlike(0.7), sampling_rate=16000)
    with pytest.raises(ValueError, match="another LLM"):
        model.generate(**inputs, **GENERATE)
    with pytest.raises(ValueError, match="another LLM"):
        model(**inputs)
    model.save_pretrained(tmp_path / "adapter")
    other.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ValueError, match="another LLM"):
        pipeline("automatic-speech-recognition", model=str(tmp_path / "adapter"), trust_remote_code=True)


def test_generate_returns_the_prompt_then_the_answer(model, processor):
    prompts = [processor.build_prompt("Transcribe the audio."), processor.build_prompt("What is said?")]
    clips = [speechlike(0.8, seed=1), speechlike(2.0, seed=2)]
    batch = processor(text=prompts, audio=clips, sampling_rate=16000, return_tensors="pt")
    out = model.generate(**batch, **GENERATE)
    answers = processor.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    for prompt, clip, answer in zip(prompts, clips, answers):
        one = processor(text=prompt, audio=clip, sampling_rate=16000, return_tensors="pt")
        single = model.generate(**one, **GENERATE)
        assert torch.equal(single[:, : one["input_ids"].shape[1]], one["input_ids"])
        assert processor.batch_decode(single[:, one["input_ids"].shape[1] :], skip_special_tokens=True)[0] == answer
    as_dict = model.generate(**batch, **GENERATE, return_dict_in_generate=True)
    assert torch.equal(as_dict.sequences, out)
    text_only = processor(text=["hello there"], return_tensors="pt")
    text_out = model.generate(**text_only, **GENERATE)
    assert torch.equal(text_out[:, : text_only["input_ids"].shape[1]], text_only["input_ids"])


def test_saved_stop_strings_apply_to_generate_without_extra_arguments(model, processor, tmp_path):
    with torch.no_grad():
        model.aligner.projector.weight.normal_(std=0.5)
    inputs = processor(text=processor.build_prompt("Transcribe the audio."), audio=speechlike(1.0), sampling_rate=16000)
    model.generation_config.update(max_new_tokens=12)
    free = model.generate(**inputs)[0, inputs["input_ids"].shape[1] :].tolist()
    pieces = [processor.decode([token]) for token in free]
    index = next(i for i, piece in enumerate(pieces) if i > 0 and piece.strip() and piece not in "".join(pieces[:i]))
    model.generation_config.stop_strings = [pieces[index]]
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=True)
    stopped = loaded.generate(**inputs)[0, inputs["input_ids"].shape[1] :].tolist()
    assert stopped == free[: index + 1]
    text = processor(text=["the quick brown fox"], return_tensors="pt")
    ours = loaded.generate(**text)
    base = loaded.language_model.generate(
        **text, generation_config=loaded.generation_config, tokenizer=AutoTokenizer.from_pretrained(tmp_path)
    )
    assert torch.equal(ours, base)


def _wav_bytes(seconds=1.0):
    buffer = io.BytesIO()
    soundfile.write(buffer, speechlike(seconds), 16000, format="WAV")
    return buffer.getvalue()


def test_bad_files_get_named_errors(processor, tmp_path):
    missing = tmp_path / "nowhere.wav"
    with pytest.raises(FileNotFoundError, match="nowhere.wav"):
        processor.apply_transcription_request(str(missing))
    with pytest.raises(FileNotFoundError, match="nowhere.wav"):
        load_audio(missing)
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + b"\x13garbage" * 40)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(_wav_bytes()[:9000])
    header_only = tmp_path / "header.wav"
    soundfile.write(header_only, np.zeros(0, dtype=np.float32), 16000)
    for path, reason in [(corrupt, "not a decodable"), (empty, "not a decodable"), (truncated, "truncated"),
                         (header_only, "no audio samples")]:  # fmt: skip
        with pytest.raises(ValueError, match=reason) as error:
            processor.apply_transcription_request(str(path))
        assert path.name in str(error.value)
    with pytest.raises(ValueError, match="empty input"):
        load_audio(b"")


def test_pipeline_names_bad_files(model, processor, tmp_path):
    model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "adapter"), trust_remote_code=True)
    with pytest.raises(FileNotFoundError, match="missing.mp3"):
        asr(str(tmp_path / "missing.mp3"))
    (tmp_path / "bad.ogg").write_bytes(b"OggS" + b"\x00" * 100)
    with pytest.raises(ValueError, match="bad.ogg"):
        asr(str(tmp_path / "bad.ogg"))
    assert isinstance(asr(speechlike(0.5), generate_kwargs=GENERATE)["text"], str)


def test_the_speech_gate():
    rng = np.random.default_rng(0)
    assert has_speech(speechlike(1.0), 16000)
    assert not has_speech(np.zeros(48000, dtype=np.float32), 16000)
    assert not has_speech((10 ** (-80 / 20) * rng.standard_normal(48000)).astype(np.float32), 16000)
    assert not has_speech(np.array([0.5], dtype=np.float32), 16000)
    assert has_speech((0.01 * rng.standard_normal(48000)).astype(np.float32), 16000)  # -40 dBFS: passes
    quiet = (10 ** (-45 / 20) * np.sqrt(2) * np.sin(np.arange(16000) / 5)).astype(np.float32)
    assert has_speech(quiet, 16000) and not has_speech(quiet, 16000, threshold_db=-40)
    assert has_speech(np.zeros(16000, dtype=np.float32), 16000, threshold_db=None)
    assert has_speech(np.round(speechlike(1.0) * 32767).astype(np.int16), 16000)


def test_no_speech_gives_no_text_in_the_pipeline_and_the_cli(model, processor, tmp_path, capsys):
    with torch.no_grad():
        model.aligner.projector.weight.normal_(std=0.5)
    model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "adapter"), trust_remote_code=True)
    calls = []
    generate = asr.model.generate
    asr.model.generate = lambda **kwargs: calls.append(kwargs["input_features"].shape[0]) or generate(**kwargs)
    rng = np.random.default_rng(1)
    silent = [
        np.zeros(48000, dtype=np.float32),
        (10 ** (-80 / 20) * rng.standard_normal(48000)).astype(np.float32),
        np.array([0.3], dtype=np.float32),
    ]
    assert [asr(clip, generate_kwargs=GENERATE)["text"] for clip in silent] == ["", "", ""]
    assert calls == []
    mixed = asr([silent[0], speechlike(1.0), silent[1]], batch_size=3, generate_kwargs=GENERATE)
    assert mixed[0]["text"] == mixed[2]["text"] == "" and mixed[1]["text"]
    assert calls == [1]
    assert asr(silent[0], speech_threshold_db=None, generate_kwargs=GENERATE)["text"]
    assert asr(silent[0], prompt="Is anything said?", generate_kwargs=GENERATE)["text"]
    soundfile.write(tmp_path / "silence.wav", silent[0], 16000)
    soundfile.write(tmp_path / "speech.wav", speechlike(1.0), 16000)
    args = ["--model", str(tmp_path / "adapter"), "--max-new-tokens", "4", "--device", "cpu", "--format", "jsonl"]
    assert steermoe_cli.main([str(tmp_path / "silence.wav"), str(tmp_path / "speech.wav"), *args]) == 0
    texts = {r["file"]: r["text"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert texts[str(tmp_path / "silence.wav")] == "" and texts[str(tmp_path / "speech.wav")]
    assert steermoe_cli.main([str(tmp_path / "silence.wav"), *args, "--no-speech-gate"]) == 0
    assert json.loads(capsys.readouterr().out)["text"]


def test_auto_processor_round_trip_keeps_the_gate_setting(processor, tmp_path):
    processor.speech_threshold_db = -35.0
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert loaded.speech_threshold_db == -35.0 and loaded.audio_token_id == processor.audio_token_id


@pytest.mark.parametrize("examples", [[], ["the two forms by friday the", "rain fell on the square"]])
def test_the_saved_transcription_prompt_and_examples_are_what_transcription_asks(fresh_pair, tmp_path, examples):
    model, processor = fresh_pair
    instruction = "Repeat the text above exactly."
    processor.transcription_prompt = instruction
    processor.transcription_examples = examples
    model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    reloaded = AutoProcessor.from_pretrained(tmp_path / "adapter", trust_remote_code=True)
    assert reloaded.transcription_prompt == instruction and reloaded.transcription_examples == examples
    conversation = []
    for example in examples:  # each example: an earlier turn, asked and answered verbatim
        conversation += [
            {"role": "user", "content": [{"type": "text", "text": example + instruction}]},
            {"role": "assistant", "content": [{"type": "text", "text": example}]},
        ]
    conversation.append({"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": instruction}]})
    expected_prompt = reloaded.apply_chat_template(conversation, add_generation_prompt=True)
    assert reloaded.build_prompt(instruction) == expected_prompt
    assert reloaded.build_prompt("What is said?").count("<|im_start|>user") == 1  # other instructions: no examples
    request = reloaded.apply_transcription_request(speechlike(1.2))
    asked = reloaded(text=expected_prompt, audio=speechlike(1.2), sampling_rate=16000)
    assert torch.equal(request["input_ids"], asked["input_ids"])
    expected = reloaded.batch_decode(model.generate(**asked, **GENERATE)[:, asked["input_ids"].shape[1] :], skip_special_tokens=True)
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "adapter"), trust_remote_code=True)
    assert asr(speechlike(1.2), generate_kwargs=GENERATE)["text"] == expected[0].strip()
    stock = SteerMoEProcessor.from_config(model.config)
    assert stock.transcription_instruction() == "Transcribe the audio."
    assert stock.transcription_instruction("zh") == "Transcribe the Chinese audio."
    assert reloaded.transcription_instruction("zh") == instruction


def test_transcripts_are_bounded_by_the_audio_length(fresh_pair, tmp_path):
    model, processor = fresh_pair
    model.generation_config.max_new_tokens = 200
    model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "adapter"), trust_remote_code=True)
    never_stops = {"min_new_tokens": 150}  # a model that does not end its turn
    clips = [speechlike(0.5, seed=1), speechlike(2.0, seed=2)]
    bounds, expected = [], []
    for clip in clips:
        inputs = processor(text=processor.build_prompt(processor.transcription_instruction()), audio=clip, sampling_rate=16000)
        bound = processor.transcript_length_criteria(inputs["input_ids"])
        bounds.append(int(bound.max_new_tokens[0]))
        seconds = len(clip) / 16000
        assert 10 * seconds + 10 <= bounds[-1] <= 10 * (seconds + processor.audio_token_seconds) + 11
        out = model.generate(**inputs, stopping_criteria=[bound], **never_stops)
        assert out.shape[1] - inputs["input_ids"].shape[1] == bounds[-1]
        expected.append(processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    one_by_one = [asr(clip, generate_kwargs=never_stops)["text"] for clip in clips]
    assert [row["text"] for row in asr(clips, batch_size=2, generate_kwargs=never_stops)] == one_by_one
    assert one_by_one == expected
    unbounded = asr(clips[0], max_new_tokens=60, generate_kwargs={"min_new_tokens": 60})["text"]
    assert unbounded.startswith(expected[0]) and len(unbounded) > len(expected[0])
