import numpy as np
import pytest
import torch
from conftest import speechlike
from transformers import AutoProcessor

from configuration_steermoe import get_num_audio_tokens


def features(processor, audio, sampling_rate=16000):
    return processor(text=processor.audio_token, audio=audio, sampling_rate=sampling_rate)["input_features"]


def test_audio_token_is_added_once_and_expanded_to_the_model_count(processor):
    tokenizer = processor.tokenizer
    assert tokenizer.convert_ids_to_tokens(processor.audio_token_id) == processor.audio_token
    inputs = processor(text=f"hello {processor.audio_token} transcribe", audio=speechlike(2.3), sampling_rate=16000)
    frames = int(inputs["feature_attention_mask"].sum())
    assert frames == 230
    assert int((inputs["input_ids"] == processor.audio_token_id).sum()) == get_num_audio_tokens(frames, 4)


def test_stereo_is_downmixed_in_either_layout(processor):
    left, right = speechlike(1.0, seed=1), speechlike(1.0, seed=2)
    mono = features(processor, (left + right) / 2)
    torch.testing.assert_close(features(processor, np.stack([left, right])), mono)
    torch.testing.assert_close(features(processor, np.stack([left, right], axis=1)), mono)


def test_integer_pcm_is_scaled(processor):
    clip = speechlike(1.0)
    int16 = np.round(clip * 32767).astype(np.int16)
    int32 = int16.astype(np.int32) << 16
    reference = features(processor, int16.astype(np.float32) / 32768)
    torch.testing.assert_close(features(processor, int16), reference)
    torch.testing.assert_close(features(processor, int32), reference)


def test_other_sampling_rates_are_resampled(processor):
    clip_16k = speechlike(2.0, sampling_rate=16000, noise=0.0)
    clip_44k = speechlike(2.0, sampling_rate=44100, noise=0.0)
    at_16k = features(processor, clip_16k)
    at_44k = features(processor, clip_44k, sampling_rate=44100)
    assert at_44k.shape == at_16k.shape
    assert torch.nn.functional.cosine_similarity(at_44k.flatten(), at_16k.flatten(), dim=0) > 0.99


def test_batch_features_equal_single_features(processor):
    clips = [speechlike(1.3, seed=0), speechlike(3.1, seed=1)]
    prompts = [processor.audio_token + " a", processor.audio_token + " b c"]
    batch = processor(text=prompts, audio=clips, sampling_rate=16000)
    for index, (clip, prompt) in enumerate(zip(clips, prompts)):
        one = processor(text=prompt, audio=clip, sampling_rate=16000)
        frames = one["input_features"].shape[-1]
        assert torch.equal(batch["input_features"][index, :, :frames], one["input_features"][0])
        length = one["input_ids"].shape[1]
        assert batch["input_ids"][index, :length].tolist() == one["input_ids"][0].tolist()
        assert batch["attention_mask"][index].sum() == length


def test_long_audio_is_split_into_windows_not_cut(processor):
    inputs = processor(text=processor.audio_token, audio=speechlike(75.0), sampling_rate=16000)
    assert inputs["feature_attention_mask"].sum(-1).tolist() == [3000, 3000, 1500]
    expected = 2 * get_num_audio_tokens(3000, 4) + get_num_audio_tokens(1500, 4)
    assert int((inputs["input_ids"] == processor.audio_token_id).sum()) == expected


def test_pad_to_full_window(processor):
    processor.pad_to_full_window = True
    inputs = processor(text=processor.audio_token, audio=speechlike(2.0), sampling_rate=16000)
    assert inputs["input_features"].shape[-1] == 3000
    assert int((inputs["input_ids"] == processor.audio_token_id).sum()) == 375


def test_labels_mark_only_the_target(processor):
    inputs = processor(
        text=[processor.audio_token + " transcribe", processor.audio_token + " transcribe the audio"],
        audio=[speechlike(1.0), speechlike(1.5)],
        sampling_rate=16000,
        text_target=["the quick brown fox", "dog"],
    )
    for row, target in enumerate(["the quick brown fox", "dog"]):
        expected = processor.tokenizer(target, add_special_tokens=False)["input_ids"]
        labels = inputs["labels"][row]
        assert labels[labels != -100].tolist() == expected + [processor.tokenizer.eos_token_id]
        ids = inputs["input_ids"][row][labels != -100]
        assert ids.tolist() == expected + [processor.tokenizer.eos_token_id]
    assert (inputs["labels"][inputs["attention_mask"] == 0] == -100).all()


def test_chat_template_puts_the_audio_in_the_user_turn(processor):
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Transcribe the audio."}]}],
        add_generation_prompt=True,
    )
    assert prompt == f"<|im_start|>user\n{processor.audio_token}Transcribe the audio.<|im_end|>\n<|im_start|>assistant\n"
    inputs = processor(text=prompt, audio=speechlike(1.0), sampling_rate=16000)
    assert int((inputs["input_ids"] == processor.audio_token_id).sum()) == 13


@pytest.mark.parametrize(
    "audio, sampling_rate, message",
    [
        (np.zeros(0, dtype=np.float32), 16000, "empty"),
        (np.full(16000, np.nan, dtype=np.float32), 16000, "NaN"),
        (speechlike(1.0), None, "sampling_rate is required"),
        (speechlike(1.0), 0, "not a plausible"),
        (speechlike(1.0), -16000, "not a plausible"),
        (speechlike(1.0), 16000.5, "not a plausible"),
        (speechlike(1.0), "16k", "must be a number"),
        (np.zeros((3, 4, 5), dtype=np.float32), 16000, "1-D"),
        (np.array(["a", "b"]), 16000, "int or float"),
    ],
)
def test_bad_audio_raises_a_clear_error(processor, audio, sampling_rate, message):
    with pytest.raises(ValueError, match=message):
        processor(text=processor.audio_token, audio=audio, sampling_rate=sampling_rate)


def test_text_and_audio_must_agree(processor):
    with pytest.raises(ValueError, match="0 audio token"):
        processor(text="transcribe this", audio=speechlike(1.0), sampling_rate=16000)
    with pytest.raises(ValueError, match="no audio was given"):
        processor(text=processor.audio_token + " transcribe")
    with pytest.raises(ValueError, match="2 audio token.* but 1 audio clip"):
        processor(text=[processor.audio_token] * 2, audio=[speechlike(1.0)], sampling_rate=16000)


def test_save_and_load_with_auto_processor(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "SteerMoEProcessor"
    assert loaded.audio_token_id == processor.audio_token_id
    assert loaded.pooling_kernel_size == processor.pooling_kernel_size
    text, clip = processor.audio_token + " transcribe", speechlike(1.7)
    ours = processor(text=text, audio=clip, sampling_rate=16000, text_target="the quick")
    theirs = loaded(text=text, audio=clip, sampling_rate=16000, text_target="the quick")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_transcription_request_from_paths_bytes_and_arrays(processor, tmp_path):
    import soundfile

    clip = speechlike(1.5, 22050, seed=3)
    path = tmp_path / "clip.flac"
    soundfile.write(path, clip, 22050)
    decoded = soundfile.read(path, dtype="float32")[0]
    expected = processor(text=processor.build_prompt("Transcribe the audio."), audio=decoded, sampling_rate=22050)
    for source in (path, str(path), path.read_bytes()):
        inputs = processor.apply_transcription_request(source)
        assert all(torch.equal(inputs[k], expected[k]) for k in expected)
    batch = processor.apply_transcription_request([clip, speechlike(0.5)], sampling_rate=22050, language="zh")
    assert batch["input_ids"].shape[0] == 2
    prompt = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=False)
    assert "Transcribe the Chinese audio." in prompt
    asked = processor.apply_transcription_request(clip, sampling_rate=22050, prompt="Who speaks?")
    assert "Who speaks?" in processor.tokenizer.decode(asked["input_ids"][0])
