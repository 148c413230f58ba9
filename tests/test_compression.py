"""CTC compression of the audio frames (`frame_compression`): the CTC head decides which frames the LLM reads, the
processor keeps writing the fixed-rate placeholders, and the model removes the ones it does not fill."""

import pytest
import torch
from conftest import speechlike

from configuration_steermoe import SteerMoEConfig
from modeling_steermoe import ctc_compress, ctc_logits, ctc_soft_tokens, remove_positions

BLANK, A, B = 7, 3, 5


def test_runs_of_one_label_become_their_mean_and_the_rest_is_removed():
    # row: text, then frames labelled a a (blank) a b, text, then frames b b of a second clip
    labels = torch.tensor([[0, A, A, BLANK, A, B, 0, B, B]])
    placeholders = torch.tensor([[0, 1, 1, 1, 1, 1, 0, 1, 1]], dtype=torch.bool)
    keep = placeholders & (labels != BLANK)
    embeds = torch.arange(9 * 2, dtype=torch.float32).view(1, 9, 2)
    compressed, remove = ctc_compress(embeds, placeholders, labels, keep)
    # runs: {1, 2}, {4} (a blank stands between it and the first a), {5}, {7, 8} (text stands between 5 and 7)
    assert remove.tolist() == [[False, False, True, True, False, False, False, False, True]]
    torch.testing.assert_close(compressed[0, 1], embeds[0, 1:3].mean(0))
    torch.testing.assert_close(compressed[0, 7], embeds[0, 7:9].mean(0))
    for position in (0, 4, 5, 6):
        assert torch.equal(compressed[0, position], embeds[0, position])


def test_the_compression_is_the_same_row_by_row_and_in_a_batch():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (4, 12), generator=generator)
    placeholders = torch.rand(4, 12, generator=generator) > 0.3
    keep = placeholders & (labels != 0)
    embeds = torch.randn(4, 12, 6, generator=generator, requires_grad=True)
    batched, batched_remove = ctc_compress(embeds, placeholders, labels, keep)
    for row in range(4):
        alone, alone_remove = ctc_compress(embeds[row : row + 1], placeholders[row : row + 1], labels[row : row + 1], keep[row : row + 1])
        torch.testing.assert_close(batched[row], alone[0])
        assert torch.equal(batched_remove[row], alone_remove[0])
    batched[~batched_remove].sum().backward()  # what the LLM reads: gradients reach the kept frames only
    assert embeds.grad[keep].abs().min() > 0 and embeds.grad[placeholders & ~keep].abs().max() == 0


def test_removed_positions_leave_packed_rows_padded_on_the_right():
    input_ids = torch.tensor([[1, 9, 9, 9, 2, 3], [1, 9, 9, 2, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, -100, 2, 3], [-100, -100, -100, 2, -100, -100]])
    remove = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    embeds = input_ids[..., None].float().expand(-1, -1, 3)
    embeds, ids, mask, labels = remove_positions(remove, embeds, input_ids, attention_mask, labels, pad_token_id=0)
    assert ids.tolist() == [[1, 9, 2, 3, 0], [1, 9, 2, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert labels.tolist() == [[-100, -100, 2, 3, -100], [-100, -100, 2, -100, -100]]
    assert torch.equal(embeds[..., 0][mask.bool()], ids[mask.bool()].float())


def test_soft_tokens_are_the_heads_expected_embedding_without_the_blank():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(9, 4, generator=generator)
    inverse_norms = 1 / embeddings.norm(dim=-1)
    frames = torch.cat([embeddings[[A, B, BLANK]] * 2.0, torch.randn(2, 4, generator=generator)]).requires_grad_()
    sharp = ctc_soft_tokens(frames, embeddings, BLANK, 1e-3, 30.0, inverse_norms)
    torch.testing.assert_close(sharp[:2], embeddings[[A, B]])  # a frame on a token's direction reads as the token
    runner_up = ctc_logits(frames[2:3], embeddings, 30.0, inverse_norms)[0].index_fill(0, torch.tensor([BLANK]), -1e9)
    torch.testing.assert_close(sharp[2], embeddings[int(runner_up.argmax())])  # never the blank: its best other token
    flat = ctc_soft_tokens(frames, embeddings, BLANK, 1e6, 30.0, inverse_norms)
    others = torch.ones(9, dtype=torch.bool).index_fill(0, torch.tensor([BLANK]), False)
    torch.testing.assert_close(flat[3], embeddings[others].mean(0), atol=1e-4, rtol=0)
    ctc_soft_tokens(frames, embeddings, BLANK, 0.5, 30.0, inverse_norms)[3:].sum().backward()
    assert frames.grad[3:].abs().min() > 0 and frames.grad[:3].abs().max() == 0


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"frame_compression": "ctc_argmax"}, "only ctc_loss_coef > 0 trains that head"),
        ({"frame_compression": "blank", "ctc_loss_coef": 1.0}, "frame_compression must be one of"),
        ({"frame_compression": "ctc_threshold", "ctc_loss_coef": 1.0, "ctc_blank_threshold": 1.0}, r"in \(0, 1\)"),
        ({"soft_token_temperature": 0.5, "ctc_loss_coef": 1.0}, "needs frame_compression"),
        ({"soft_token_temperature": 0.0, "ctc_loss_coef": 1.0, "frame_compression": "ctc_argmax"}, "must be > 0"),
    ],
)
def test_bad_compression_settings_are_refused(backbone_dirs, fields, message):
    audio_dir, text_dir = backbone_dirs
    with pytest.raises(ValueError, match=message):
        SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir), **fields)


def token_frames(model, processor, words: list[str], monkeypatch, text_target=None):
    """Make the model's frames the embeddings of `blank w1 w1 blank w2 w2 blank ...` (then blanks) per clip: the CTC
    head reads them as the words' tokens. Returns the batch and each row's tokens as the LLM reads them (the blank,
    here the space token, is never a frame the compression keeps)."""
    blank = model.config.ctc_blank_token_id
    clips = [speechlike(4.0 + 0.4 * index, seed=index) for index in range(len(words))]
    prompts = [processor.build_prompt("Transcribe the audio.")] * len(words)
    batch = processor(text=prompts, audio=clips, sampling_rate=16000, text_target=text_target)
    counts = model.get_placeholder_mask(batch["input_ids"]).sum(1).tolist()
    tokens = [processor.tokenizer(text, add_special_tokens=False)["input_ids"] for text in words]
    labels = {}  # each clip's frame labels, by its (distinct) number of placeholders
    for row, count in zip(tokens, counts):
        frames = [blank] + [token for token in row for token in (token, token, blank)]
        assert len(frames) <= count
        labels[count] = frames + [blank] * (count - len(frames))
    merge = model._merge_audio_into_embeddings

    def merged(input_ids, *args, **kwargs):
        embeds, router_logits = merge(input_ids, *args, **kwargs)
        placeholders = model.get_placeholder_mask(input_ids)
        rows = [labels[count] for count in placeholders.sum(1).tolist()]
        frames = model.get_input_embeddings().weight[torch.tensor(sum(rows, []))]
        return embeds.masked_scatter(placeholders[..., None], frames), router_logits

    monkeypatch.setattr(model, "_merge_audio_into_embeddings", merged)
    return batch, [[token for token in row if token != blank] for row in tokens]


def with_tokens_for_audio(processor, tokens: list[int]) -> torch.Tensor:
    """The transcription prompt with `tokens` where the audio placeholders stand."""
    prompt = processor.tokenizer(processor.build_prompt("Transcribe the audio."), add_special_tokens=False)["input_ids"]
    at = prompt.index(processor.audio_token_id)
    return torch.tensor([prompt[:at] + tokens + prompt[at + 1 :]])


@pytest.mark.parametrize("mode, temperature", [("ctc_argmax", None), ("ctc_threshold", None), ("ctc_argmax", 0.01)])
def test_generate_reads_the_compressed_frames_and_returns_the_prompt_with_its_placeholders(make_model, processor, monkeypatch, mode, temperature):
    # frames on the tokens' own embeddings: read as they are, or as sharp soft tokens (the same embeddings)
    model = make_model(ctc_loss_coef=1.0, ctc_logit_scale=30.0, frame_compression=mode, soft_token_temperature=temperature)
    batch, tokens = token_frames(model, processor, ["the quick", "a dog ran"], monkeypatch)
    greedy = {"max_new_tokens": 6, "do_sample": False}
    _, read = model.ctc_readout(
        batch["input_ids"], batch["input_features"], batch["feature_attention_mask"], return_frames_read=True
    )
    assert read.tolist() == [len(row) for row in tokens]  # one frame per token
    out = model.generate(**batch, **greedy)
    width = batch["input_ids"].shape[1]
    assert out.shape[1] == width + 6
    for row, row_tokens in enumerate(tokens):
        # what the LLM reads: the prompt with exactly one frame per token, each the token's own embedding
        expected = model.language_model.generate(input_ids=with_tokens_for_audio(processor, row_tokens), **greedy)
        assert out[row, width:].tolist() == expected[0, -6:].tolist()
        real = batch["attention_mask"][row].bool()
        assert out[row, :width][-int(real.sum()) :].tolist() == batch["input_ids"][row][real].tolist()  # left-padded prompt
        alone = {key: value[row : row + 1] for key, value in batch.items() if key != "input_features"}
        alone["input_features"] = batch["input_features"][row : row + 1]
        alone["feature_attention_mask"] = batch["feature_attention_mask"][row : row + 1]
        alone = {key: value[:, : int(real.sum())] if key in ("input_ids", "attention_mask") else value for key, value in alone.items()}
        assert model.generate(**alone, **greedy)[0, -6:].tolist() == out[row, width:].tolist()  # batch = one by one


def test_training_loss_is_the_llms_on_the_compressed_sequence(make_model, processor, monkeypatch):
    model = make_model(ctc_loss_coef=1.0, ctc_logit_scale=30.0, frame_compression="ctc_argmax", ce_loss_coef=1.0)
    model.config.ctc_loss_coef = 1e-9  # the loss is then the LLM's (the CTC term is still computed)
    targets = ["the quick", "a dog ran"]
    labelled, tokens = token_frames(model, processor, targets, monkeypatch, text_target=targets)
    output = model(**labelled)
    losses = []
    for row_tokens, target in zip(tokens, targets):
        target_ids = processor.tokenizer(target, add_special_tokens=False)["input_ids"] + [processor.tokenizer.eos_token_id]
        ids = torch.cat([with_tokens_for_audio(processor, row_tokens), torch.tensor([target_ids])], dim=1)
        labels = ids.clone()
        labels[:, : -len(target_ids)] = -100
        logits = model.language_model(input_ids=ids).logits[0, :-1]
        losses.append(torch.nn.functional.cross_entropy(logits, labels[0, 1:], reduction="sum"))
    count = sum(len(processor.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in targets)
    assert float(output.llm_loss) == pytest.approx(float(sum(losses) / count), rel=1e-4)
    assert float(output.ctc_loss) < 5.0  # CTC scores every frame, before the compression: its labels fit them
