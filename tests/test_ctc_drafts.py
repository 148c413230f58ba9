"""CTC-drafted decoding: the CTC head's readout drafts the transcript and the LLM verifies it; the output is plain
greedy decoding's, token for token, whatever the draft."""

import pytest
import torch
from conftest import speechlike
from transformers import TextStreamer

from processing_steermoe import TranscriptLengthCriteria


@pytest.fixture
def drafted(make_model, processor):
    model = make_model(ctc_loss_coef=1.0, ctc_logit_scale=30.0)
    clips = [speechlike(2.0, seed=0), speechlike(1.3, seed=1)]
    batch = processor(text=[processor.build_prompt("Transcribe the audio.")] * 2, audio=clips, sampling_rate=16000)
    return model, batch


def alone(batch, row: int) -> dict:
    real = int(batch["attention_mask"][row].sum())
    return {
        "input_ids": batch["input_ids"][row : row + 1, :real], "attention_mask": batch["attention_mask"][row : row + 1, :real],
        "input_features": batch["input_features"][row : row + 1],
        "feature_attention_mask": batch["feature_attention_mask"][row : row + 1],
    }  # fmt: skip


def with_draft(model, monkeypatch, draft_of):
    """Make the CTC readout (the draft) `draft_of(plain greedy tokens)`."""
    state = {}
    monkeypatch.setattr(model, "_ctc_greedy_tokens", lambda *args: [draft_of(state["plain"])])
    return state


@pytest.mark.parametrize(
    "draft_of",
    [
        lambda plain: plain,  # the draft is the greedy output itself
        lambda plain: plain[:3] + [(t + 1) % 200 for t in plain[3:6]] + plain[6:],  # wrong in the middle
        lambda plain: plain[4:] + plain[:4],  # out of order
        lambda plain: [],  # nothing heard
    ],
)
@pytest.mark.parametrize(
    "settings",
    [
        {"max_new_tokens": 24},
        {"max_new_tokens": 24, "stop_strings": ["e"]},
        {"max_new_tokens": 40, "bound": 7},  # the transcript length bound stops first
        {"max_new_tokens": 5},
    ],
)
def test_drafted_decoding_equals_greedy_decoding(drafted, processor, monkeypatch, draft_of, settings):
    model, batch = drafted
    state = with_draft(model, monkeypatch, draft_of)
    settings = dict(settings)
    bound = settings.pop("bound", None)
    for row in range(2):
        inputs = alone(batch, row)
        width = inputs["input_ids"].shape[1]
        criteria = {"stopping_criteria": [TranscriptLengthCriteria(width, torch.tensor([bound]))]} if bound else {}
        kwargs = {**settings, **criteria, "tokenizer": processor.tokenizer}
        plain = model.generate(**inputs, ctc_drafts=False, **kwargs)
        state["plain"] = plain[0, width:].tolist()
        fast = model.generate(**inputs, ctc_drafts=True, **kwargs)
        assert fast.tolist() == plain.tolist()
        if bound:
            assert plain.shape[1] - width == bound
    if draft_of(list(range(12))) == list(range(12)):  # a right draft: several tokens per LLM pass
        decoding = model._last_ctc_drafting
        assert decoding.tokens >= 2 * (decoding.passes + 1)


def test_drafts_are_used_by_default_only_where_they_decode_exactly(drafted, processor, monkeypatch):
    model, batch = drafted
    state = with_draft(model, monkeypatch, lambda plain: plain)
    inputs = alone(batch, 0)
    state["plain"] = model.generate(**inputs, ctc_drafts=False, max_new_tokens=12)[0, inputs["input_ids"].shape[1] :].tolist()
    model.__dict__.pop("_last_ctc_drafting", None)
    model.generate(**inputs, max_new_tokens=12)
    assert model.__dict__.pop("_last_ctc_drafting").passes < 11  # on by default
    for kwargs in ({"do_sample": True}, {"repetition_penalty": 1.3}, {"output_scores": True, "return_dict_in_generate": True}):
        model.generate(**inputs, max_new_tokens=12, **kwargs)
        assert "_last_ctc_drafting" not in model.__dict__
        with pytest.raises(ValueError, match="ctc_drafts=True cannot decode exactly as greedy decoding"):
            model.generate(**inputs, max_new_tokens=12, ctc_drafts=True, **kwargs)
    batched = model.generate(**batch, max_new_tokens=12)  # a batch decodes as before
    assert "_last_ctc_drafting" not in model.__dict__
    assert batched[0, -12:].tolist() == state["plain"]
    with pytest.raises(ValueError, match="a batch of 2 prompts"):
        model.generate(**batch, max_new_tokens=12, ctc_drafts=True)


def test_adapters_without_a_ctc_head_decode_as_before(model, processor):
    batch = processor(text=[processor.build_prompt("Transcribe the audio.")], audio=[speechlike(1.0)], sampling_rate=16000)
    model.generate(**batch, max_new_tokens=6)
    assert "_last_ctc_drafting" not in model.__dict__
    with pytest.raises(ValueError, match="without a trained CTC head"):
        model.generate(**batch, max_new_tokens=6, ctc_drafts=True)


def test_a_streamer_prints_the_same_text(drafted, processor, monkeypatch, capsys):
    model, batch = drafted
    state = with_draft(model, monkeypatch, lambda plain: plain)
    inputs = alone(batch, 0)
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True)
    state["plain"] = model.generate(**inputs, ctc_drafts=False, max_new_tokens=16, streamer=streamer)[0, -16:].tolist()
    plain_text = capsys.readouterr().out
    model.generate(**inputs, ctc_drafts=True, max_new_tokens=16, streamer=streamer)
    assert capsys.readouterr().out == plain_text and plain_text.strip()


def test_compressed_adapter_with_copy_turns_reuses_the_prompt_prefix(make_model, processor, monkeypatch):
    """Frames dropped by the CTC head leave padding in the prompt, and the copy turns a long constant prefix; drafted
    decoding drops the padding, reads the prefix's cached keys and values, and still decodes as plain greedy."""
    model = make_model(ctc_loss_coef=1.0, ctc_logit_scale=30.0, frame_compression="ctc_argmax", soft_token_temperature=0.5)
    processor.transcription_examples = ["the cat sat on the mat", "rain fell on the market"]
    prompt = processor.build_prompt(processor.transcription_prompt)
    state = with_draft(model, monkeypatch, lambda plain: plain)
    outputs = []
    for seed, seconds in ((0, 2.0), (1, 1.3), (0, 2.0)):
        inputs = processor(text=[prompt], audio=[speechlike(seconds, seed=seed)], sampling_rate=16000)
        frames = int(inputs["input_ids"].eq(model.config.audio_token_id).sum())
        state["plain"] = model.generate(**inputs, ctc_drafts=False, max_new_tokens=16)[0, -16:].tolist()
        assert model.ctc_readout(**inputs, return_frames_read=True)[1][0] < frames  # some placeholders left unfilled
        fast = model.generate(**inputs, ctc_drafts=True, max_new_tokens=16)
        assert fast[0, -16:].tolist() == state["plain"]
        outputs.append(fast)
    assert len(model._prefix_caches) == 1  # one prompt prefix, computed once
    assert outputs[2].tolist() == outputs[0].tolist()
