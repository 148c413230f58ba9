import json

import numpy as np
import pytest
import soundfile
import torch
from conftest import SHARED, speechlike
from transformers import pipeline

GENERATE = {"max_new_tokens": 6, "min_new_tokens": 6}


@pytest.fixture
def repo(model, processor, tmp_path):
    with torch.no_grad():
        model.aligner.steering_vectors.normal_(std=0.5)
        model.aligner.projector.weight.normal_(std=0.5)
    model.save_pretrained(tmp_path / "repo")
    processor.save_pretrained(tmp_path / "repo")
    return tmp_path / "repo"


@pytest.fixture
def asr(repo):
    return pipeline("automatic-speech-recognition", model=str(repo), trust_remote_code=True, dtype=torch.float32)


def expected_text(model, processor, clips, rates, prompt="Transcribe the audio."):
    texts = []
    for clip, rate in zip(clips, rates):
        inputs = processor(text=processor.build_prompt(prompt), audio=clip, sampling_rate=rate)
        output = model.generate(**inputs, **GENERATE)
        texts.append(processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return texts


def test_config_routes_the_task_to_the_shipped_pipeline(repo, asr):
    config = json.loads((repo / "config.json").read_text())
    assert config["custom_pipelines"]["automatic-speech-recognition"]["impl"] == "pipeline_steermoe.SteerMoEASRPipeline"
    assert (repo / "pipeline_steermoe.py").exists()
    assert type(asr).__name__ == "SteerMoEASRPipeline"
    generation = json.loads((repo / "generation_config.json").read_text())
    assert generation["do_sample"] is False and generation["num_beams"] == 1 and generation["max_new_tokens"] == 256
    assert generation["eos_token_id"] is not None and generation["pad_token_id"] is not None
    inferred = pipeline(model=str(repo), trust_remote_code=True)
    assert inferred.task == "automatic-speech-recognition" and type(inferred).__name__ == "SteerMoEASRPipeline"


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_files_in_every_format_at_any_rate(asr, model, processor, tmp_path, fmt):
    stereo = np.stack([speechlike(1.5, 44100, seed=1), speechlike(1.5, 44100, seed=2)], axis=1)
    path = tmp_path / f"clip.{fmt.lower()}"
    soundfile.write(path, stereo, 44100, format=fmt)
    decoded, rate = soundfile.read(path, dtype="float32")
    result = asr(str(path), generate_kwargs=GENERATE)
    assert result == {"text": expected_text(model, processor, [decoded], [rate])[0]}
    assert result["text"]


def test_bytes_arrays_and_dicts(asr, model, processor, tmp_path):
    clip_16k, clip_8k = speechlike(1.2, 16000, seed=3), speechlike(1.2, 8000, seed=4)
    path = tmp_path / "clip.flac"
    soundfile.write(path, clip_8k, 8000)
    [from_16k, from_8k] = expected_text(model, processor, [clip_16k, clip_8k], [16000, 8000])
    assert asr(clip_16k, generate_kwargs=GENERATE)["text"] == from_16k
    assert asr(torch.from_numpy(clip_16k), generate_kwargs=GENERATE)["text"] == from_16k
    assert asr({"array": clip_8k, "sampling_rate": 8000}, generate_kwargs=GENERATE)["text"] == from_8k
    assert asr({"raw": clip_8k, "sampling_rate": 8000}, generate_kwargs=GENERATE)["text"] == from_8k
    decoded_8k = soundfile.read(path, dtype="float32")[0]
    assert asr(path.read_bytes(), generate_kwargs=GENERATE)["text"] == expected_text(model, processor, [decoded_8k], [8000])[0]
    with pytest.raises(ValueError, match="sampling_rate"):
        asr({"array": clip_8k}, generate_kwargs=GENERATE)


def test_batching_gives_the_same_texts(asr):
    clips = [speechlike(d, seed=i) for i, d in enumerate((0.8, 2.5, 1.4, 3.1, 0.5))]
    one_by_one = [asr(clip, generate_kwargs=GENERATE)["text"] for clip in clips]
    assert [r["text"] for r in asr(clips, batch_size=3, generate_kwargs=GENERATE)] == one_by_one
    assert len(set(one_by_one)) > 1


def test_batching_with_a_left_padding_llm_tokenizer(repo, processor):
    config = json.loads((repo / "tokenizer_config.json").read_text())
    (repo / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "left"}))
    asr = pipeline("automatic-speech-recognition", model=str(repo), trust_remote_code=True, dtype=torch.float32)
    clips = [speechlike(d, seed=i) for i, d in enumerate((0.8, 2.5))]
    assert [r["text"] for r in asr(clips, batch_size=2, generate_kwargs=GENERATE)] == [
        asr(clip, generate_kwargs=GENERATE)["text"] for clip in clips
    ]


def test_long_audio_is_transcribed_end_to_end(asr, model, processor):
    clip = speechlike(75.0, seed=5)
    calls = []
    asr.model.generate = lambda **kwargs: calls.append(kwargs["input_features"].shape) or type(asr.model).generate(
        asr.model, **kwargs
    )
    text = asr(clip, generate_kwargs=GENERATE)["text"]
    segments = processor.speech_segments(clip, 16000)  # transcription: cut into segments of at most 30 s
    assert len(segments) == 3 and len(calls) == 3 and all(shape[0] == 1 for shape in calls)
    pieces = [clip[start:end] for start, end in segments]
    assert text == " ".join(expected_text(model, processor, pieces, [16000] * 3))
    calls.clear()  # a question keeps the whole clip in one context: three 30 s encoder windows, one generate
    answer = asr(clip, prompt="What is said?", generate_kwargs=GENERATE)["text"]
    assert calls == [torch.Size([3, 80, 3000])]
    assert answer == expected_text(model, processor, [clip], [16000], prompt="What is said?")[0]


def test_generate_kwargs_and_a_custom_prompt(asr, model, processor):
    clip = speechlike(1.0, seed=6)
    assert len(processor.tokenizer(asr(clip, max_new_tokens=2)["text"], add_special_tokens=False)["input_ids"]) <= 2
    beams = asr(clip, generate_kwargs={"num_beams": 3, "max_new_tokens": 4})
    assert isinstance(beams["text"], str)
    question = "What is said in this recording?"
    answer = asr(clip, prompt=question, generate_kwargs=GENERATE)["text"]
    assert answer == expected_text(model, processor, [clip], [16000], prompt=question)[0]
    with pytest.raises(TypeError, match="stride_length_s"):
        asr(clip, stride_length_s=10)


def test_real_pair_pipeline_on_jfk(tmp_path):
    audio_dir, text_dir = SHARED / "models" / "whisper-tiny.en-encoder", SHARED / "models" / "stories260K"
    if not (audio_dir.is_dir() and text_dir.is_dir()):
        pytest.skip(f"real backbones not found under {SHARED / 'models'} (only on developer machines and CI)")
    from transformers import AutoFeatureExtractor, AutoTokenizer

    from configuration_steermoe import SteerMoEConfig
    from modeling_steermoe import SteerMoEForConditionalGeneration
    from processing_steermoe import SteerMoEProcessor

    processor = SteerMoEProcessor(AutoFeatureExtractor.from_pretrained(audio_dir), AutoTokenizer.from_pretrained(text_dir))
    config = SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir), audio_token_id=processor.audio_token_id)
    SteerMoEForConditionalGeneration(config, dtype=torch.float32).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path), trust_remote_code=True, dtype=torch.float32)
    result = asr(str(SHARED / "audio" / "jfk.flac"), max_new_tokens=12)
    assert set(result) == {"text"} and result["text"].strip()


def test_stop_strings_saved_in_the_generation_config_apply_in_the_pipeline(model, processor, tmp_path):
    with torch.no_grad():
        model.aligner.projector.weight.normal_(std=0.5)
    clip = speechlike(1.0, seed=7)
    model.generation_config.update(max_new_tokens=12, min_new_tokens=None)
    inputs = processor(text=processor.build_prompt("Transcribe the audio."), audio=clip, sampling_rate=16000)
    tokens = model.generate(**inputs)[0, inputs["input_ids"].shape[1] :].tolist()
    pieces = [processor.decode([token]) for token in tokens]
    printable = [i for i, piece in enumerate(pieces) if piece.strip() and piece.isprintable() and "\ufffd" not in piece]
    index = next(i for i in printable if i > 0 and pieces[i] not in "".join(pieces[:i]))
    model.generation_config.stop_strings = [pieces[index]]
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path), trust_remote_code=True)
    assert asr(clip)["text"] == processor.decode(tokens[: index + 1], skip_special_tokens=True).strip()
    assert index + 1 < len(tokens)
