# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""SteerMoE: a frozen audio encoder steered layer by layer by a mixture of steering vectors, projected into a frozen
decoder-only LLM."""

import contextlib
import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.errors import HFValidationError
from safetensors import safe_open
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    DynamicCache,
    GenerationConfig,
    GenerationMixin,
    PreTrainedModel,
    StopStringCriteria,
)
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import cached_file


try:
    from .configuration_steermoe import LOSS_COEFFICIENTS, SteerMoEConfig, backbone_not_found_message, resolve_backbone
    from .pipeline_steermoe import SteerMoEASRPipeline
except ImportError:
    from configuration_steermoe import LOSS_COEFFICIENTS, SteerMoEConfig, backbone_not_found_message, resolve_backbone
    from pipeline_steermoe import SteerMoEASRPipeline


ADAPTER_WEIGHTS_NAME = "model.safetensors"
ADAPTER_PREFIXES = ("aligner.",)
_ENCODER_PASSES = {"whisper": "_whisper_encoder_pass"}  # model_type -> encoder pass; others use the hooked pass
# Encoders whose convolution modules mix padding into real frames: their windows are encoded one by one, unpadded.
_ENCODERS_LEAKING_PADDING = {"wav2vec2-conformer"}
LORA_KEY = "lora_"
_FEED_FORWARD = ["intermediate_dense", "output_dense"]
ENCODER_LORA_TARGETS = {  # attention and feed-forward projections of each encoder family
    "whisper": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "hubert": ["q_proj", "k_proj", "v_proj", "out_proj", *_FEED_FORWARD],
    "wav2vec2": ["q_proj", "k_proj", "v_proj", "out_proj", *_FEED_FORWARD],
    "wav2vec2-conformer": ["linear_q", "linear_k", "linear_v", "linear_out", *_FEED_FORWARD],
    # WavLM's attention passes its projection weights to F.multi_head_attention_forward, bypassing LoRA layers.
    "wavlm": _FEED_FORWARD,
}
LLM_LORA_TARGETS = ["q_proj", "v_proj"]


def _is_adapter_key(key: str) -> bool:
    return key.startswith(ADAPTER_PREFIXES) or LORA_KEY in key


def _add_lora(module: nn.Module, rank: int, alpha: float, target_modules: list[str]) -> None:
    """Inject a peft LoRA adapter named "default" into `module` in place (its keys gain `lora_A/B.default`)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as error:
        raise ImportError("LoRA options need peft: pip install peft") from error
    lora = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0)
    inject_adapter_in_model(lora, module, adapter_name="default")


class SteerMoEWhisperEncoder(WhisperEncoder):
    """A Whisper encoder that loads from a full Whisper checkpoint (encoder half only) or an encoder-only one."""

    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^model\.decoder\.", r"^proj_out\."]
    _checkpoint_key_mapping = {r"^model\.encoder\.": "", r"^encoder\.": ""}


class SteerMoEAligner(nn.Module):
    """The trainable part: per-layer steering of the frozen encoder, temporal pooling and the projection to the LLM.

    `config.aligner_type` picks the variant; `S = len(steered_layers)` layers are steered (all `L` by default, the last
    one for `post_encoder`, none for `linear`).

    Attributes:
        steering_vectors (`nn.Parameter` of shape `(S, num_experts, audio_hidden_size)`)
        router (`nn.Linear`): `audio_hidden_size -> S * num_experts`; rows `s*E:(s+1)*E` route the `s`-th steered
            layer (`routers`, one `Linear(audio_hidden_size, num_experts)` per steered layer, for `per_layer_router`).
        layer_scales (`nn.Parameter` of shape `(S,)`)
        projector (`nn.Module`): `audio_hidden_size -> text_hidden_size`.
    """

    def __init__(self, config):
        super().__init__()
        audio_hidden_size = config.audio_hidden_size
        text_hidden_size = config.text_config.hidden_size
        self.steered_layers = config.steered_layer_indices
        self.num_layers = len(self.steered_layers)
        self.num_experts = config.num_experts
        self.pooling_type = config.pooling_type
        self.pooling_kernel_size = config.audio_frames_per_token
        self._slots = {layer: slot for slot, layer in enumerate(self.steered_layers)}

        if self.steered_layers:
            self.steering_vectors = nn.Parameter(torch.empty(self.num_layers, self.num_experts, audio_hidden_size))
            self.layer_scales = nn.Parameter(torch.full((self.num_layers,), float(config.steering_scale)))
            if config.aligner_type == "per_layer_router":
                self.routers = nn.ModuleList(
                    nn.Linear(audio_hidden_size, self.num_experts) for _ in range(self.num_layers)
                )
            else:
                self.router = nn.Linear(audio_hidden_size, self.num_layers * self.num_experts)
        if config.projector_type == "linear":
            self.projector = nn.Linear(audio_hidden_size, text_hidden_size)
        else:
            self.projector = nn.Sequential(
                nn.Linear(audio_hidden_size, text_hidden_size),
                nn.GELU(),
                nn.Linear(text_hidden_size, text_hidden_size),
            )

    @property
    def dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def router_logits(self, hidden_states: torch.Tensor, slot: int) -> torch.Tensor:
        """Router logits of the `slot`-th steered layer, `(..., num_experts)`, in `hidden_states`' dtype; only that
        layer's rows of the router are computed."""
        if hasattr(self, "routers"):
            weight, bias = self.routers[slot].weight, self.routers[slot].bias
        else:
            rows = slice(slot * self.num_experts, (slot + 1) * self.num_experts)
            weight, bias = self.router.weight[rows], self.router.bias[rows]
        dtype = hidden_states.dtype
        return nn.functional.linear(hidden_states, weight.to(dtype), bias.to(dtype))

    def steer(self, hidden_states: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """After encoder layer `l` (steered slot `s`): `h + layer_scales[s] * sum_k softmax(router_s(h))_k *
        steering_vectors[s, k]` for `h` of shape `(batch, frames, audio_hidden_size)`, with the router logits
        `(batch, frames, num_experts)`; unsteered layers pass `h` through (logits `None`).

        Only `(experts, d)`-sized tensors change dtype: the router and the scaled vectors are cast to `h`'s dtype,
        the softmax runs in fp32, and the mix is added to `h` in one fused `addmm`."""
        slot = self._slots.get(layer_idx)
        if slot is None:
            return hidden_states, None
        dtype = hidden_states.dtype
        logits = self.router_logits(hidden_states, slot)
        gates = logits.float().softmax(dim=-1).to(dtype)
        scaled_vectors = (self.layer_scales[slot] * self.steering_vectors[slot]).to(dtype)
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        steered = torch.addmm(flat, gates.reshape(-1, self.num_experts), scaled_vectors)
        return steered.view_as(hidden_states), logits

    def pool(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked temporal pooling with kernel = stride; a partial last window is kept.

        Args:
            hidden_states: `(batch, frames, hidden)`; frame_mask: `(batch, frames)` bool, True on real frames.
        Returns:
            pooled `(batch, ceil(frames / kernel), hidden)` (zeros where no real frame) and its bool mask.
        """
        kernel = self.pooling_kernel_size
        if self.pooling_type is None or kernel == 1:
            return hidden_states.masked_fill(~frame_mask[..., None], 0.0), frame_mask
        batch, frames, hidden = hidden_states.shape
        pad = -frames % kernel
        hidden_states = nn.functional.pad(hidden_states, (0, 0, 0, pad))
        frame_mask = nn.functional.pad(frame_mask, (0, pad))
        windows = hidden_states.view(batch, -1, kernel, hidden)
        window_mask = frame_mask.view(batch, -1, kernel, 1)
        pooled_mask = window_mask.any(dim=2)
        if self.pooling_type == "max":
            pooled = windows.masked_fill(~window_mask, float("-inf")).amax(dim=2)
        else:
            counts = window_mask.sum(dim=2).clamp(min=1)
            pooled = windows.masked_fill(~window_mask, 0.0).sum(dim=2) / counts.to(windows.dtype)
        return pooled.masked_fill(~pooled_mask, 0.0), pooled_mask.squeeze(-1)

    def project(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(..., audio_hidden_size)` -> `(..., text_hidden_size)` in the aligner's dtype."""
        return self.projector(hidden_states.to(self.dtype))


@dataclass
class SteerMoECausalLMOutputWithPast(CausalLMOutputWithPast):
    """The LLM's output plus, when asked for, each steered layer's router logits over the real audio frames,
    a tuple of `num_layers` tensors `(frames, num_experts)`, and, with `labels` and audio, each part of the training
    loss (scalars, before their coefficients; `None` when not computed): `llm_loss` (cross-entropy on the targets),
    `kl_loss`, `ctc_loss`, `frame_norm_loss` and `router_balance_loss`. `logits` is `None` during the CTC-only
    warm-up and `(targets, vocab)` with `target_logits_only`."""

    router_logits: tuple[torch.Tensor, ...] | None = None
    llm_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    ctc_loss: torch.FloatTensor | None = None
    frame_norm_loss: torch.FloatTensor | None = None
    router_balance_loss: torch.FloatTensor | None = None


LOSS_PARTS = tuple(LOSS_COEFFICIENTS)
_MAX_PREFIX_CACHES = 8


def router_balance_loss(probs: torch.Tensor) -> torch.Tensor:
    """Switch-style load balancing, averaged over layers: `E * sum_k f_k * P_k` with `f_k` the share of frames whose
    top expert is `k` and `P_k` the mean routing probability; 1 when balanced. `probs`: `(layers, frames, E)`."""
    experts = probs.shape[-1]
    top_share = nn.functional.one_hot(probs.argmax(-1), experts).float().mean(dim=1)
    return experts * (top_share * probs.mean(dim=1)).sum(-1).mean()


def ctc_logits(
    frames: torch.Tensor,
    embedding_matrix: torch.Tensor,
    logit_scale: float = 0.0,
    inverse_row_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """The CTC head's fp32 logits `(num_frames, V)` of `frames` `(num_frames, D)` over the LLM's vocabulary, the
    matmul in `embedding_matrix`'s dtype: `frames @ embedding_matrix^T`, or with `logit_scale > 0` `logit_scale *
    cos(frame, row)` (`inverse_row_norms` `(V,)` are the rows' inverse norms)."""
    dtype = embedding_matrix.dtype
    if logit_scale > 0:
        frames = nn.functional.normalize(frames.float(), dim=-1).to(dtype)
        return (frames @ embedding_matrix.t()).float() * (inverse_row_norms * logit_scale)
    return (frames.to(dtype) @ embedding_matrix.t()).float()


def ctc_loss_over_vocabulary(
    frames: torch.Tensor,
    frame_counts: torch.Tensor,
    labels: torch.Tensor,
    embedding_matrix: torch.Tensor,
    blank_id: int,
    eos_token_ids: list[int] | None = None,
    logit_scale: float = 0.0,
    inverse_row_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """CTC loss of each example's audio frames against its transcript tokens, over the LLM's vocabulary.

    Args:
        frames: `(total_frames, D)`, the projected audio frames of all examples in order (`frame_counts[i]` each).
        frame_counts: `(batch,)` frames per example.
        labels: `(batch, len)` the transcript's token ids, -100 where none; a final EOS (`eos_token_ids`) and any
            `blank_id` are dropped from the targets.
        embedding_matrix: `(V, D)` the LLM's input embeddings: a frame is pushed toward the embedding of the token
            it carries; the logits are `ctc_logits(frames, embedding_matrix, logit_scale, inverse_row_norms)`.
    Returns:
        The mean over examples of the loss per target token (torch's "mean" reduction); examples whose transcript
        cannot fit their frames give 0 (`zero_infinity`).
    """
    logits = ctc_logits(frames, embedding_matrix, logit_scale, inverse_row_norms)
    per_example = nn.utils.rnn.pad_sequence(list(logits.log_softmax(-1).split(frame_counts.tolist())))
    targets, target_lengths = [], []
    eos = torch.tensor(eos_token_ids or [], device=labels.device)
    for row in labels:
        tokens = row[row != -100]
        if len(tokens) and bool(torch.isin(tokens[-1], eos)):
            tokens = tokens[:-1]
        tokens = tokens[tokens != blank_id]
        targets.append(tokens)
        target_lengths.append(len(tokens))
    return nn.functional.ctc_loss(
        per_example,
        torch.cat(targets).to(per_example.device),
        frame_counts.to(per_example.device),
        torch.tensor(target_lengths, device=per_example.device),
        blank=blank_id,
        reduction="mean",
        zero_infinity=True,
    )


def ctc_compress(
    inputs_embeds: torch.Tensor, placeholder_mask: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CTC compression of the audio frames in the LLM's input, vectorised over the batch.

    Each run of kept frames at consecutive placeholder positions with the same label becomes one frame, their mean,
    at the run's first position; frames not kept are dropped. Placeholders of different clips or windows are
    separate runs only where text stands between them.

    Args:
        inputs_embeds: `(batch, seq_len, D)` the LLM's input with the audio frames at the placeholders.
        placeholder_mask: `(batch, seq_len)` bool, the audio placeholders.
        labels: `(batch, seq_len)` each frame's best CTC label (any value elsewhere).
        keep: `(batch, seq_len)` bool, the frames to keep (a subset of `placeholder_mask`).
    Returns:
        `inputs_embeds` with each run's mean at its first position, and the bool mask `(batch, seq_len)` of the
        placeholders to remove (the dropped frames and the rest of each run).
    """
    previous_kept = nn.functional.pad(keep[:, :-1], (1, 0))
    previous_label = nn.functional.pad(labels[:, :-1], (1, 0), value=-1)
    starts = keep & ~(previous_kept & (labels == previous_label))
    run_index = starts.flatten().cumsum(0) - 1  # the run of every position (meaningful where kept)
    flat_keep = keep.flatten()
    num_runs = int(starts.sum())
    hidden = inputs_embeds.shape[-1]
    members = run_index[flat_keep]
    sums = inputs_embeds.new_zeros(num_runs, hidden, dtype=torch.float32).index_add(
        0, members, inputs_embeds.reshape(-1, hidden)[flat_keep].float()
    )
    sizes = torch.zeros(num_runs, device=inputs_embeds.device).index_add(0, members, torch.ones_like(members, dtype=torch.float32))
    means = (sums / sizes[:, None]).to(inputs_embeds.dtype)
    compressed = inputs_embeds.masked_scatter(starts[..., None], means)
    return compressed, placeholder_mask & ~starts


def ctc_soft_tokens(
    frames: torch.Tensor,
    embedding_matrix: torch.Tensor,
    blank_id: int,
    temperature: float,
    logit_scale: float = 0.0,
    inverse_row_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft tokens `(num_frames, D)` of `frames` `(num_frames, D)`: the mean of the rows of `embedding_matrix`
    `(V, D)` (the LLM's input embeddings) weighted by `softmax(ctc_logits(frames, ...) / temperature)` with the
    blank excluded. Differentiable in `frames`; the LLM reads text-like input that keeps the head's doubt."""
    logits = ctc_logits(frames, embedding_matrix, logit_scale, inverse_row_norms) / temperature
    logits = logits.index_fill(-1, torch.tensor([blank_id], device=logits.device), float("-inf"))
    return (logits.softmax(-1).to(embedding_matrix.dtype) @ embedding_matrix).to(frames.dtype)


def remove_positions(remove: torch.Tensor, inputs_embeds, input_ids, attention_mask=None, labels=None, pad_token_id=0):
    """Remove the positions in `remove` `(batch, seq_len)` from each row, the others kept in order and packed to
    the left; rows are padded on the right to the longest (`pad_token_id`, attention 0, label -100).

    Returns `(inputs_embeds, input_ids, attention_mask, labels)` of width `max(seq_len - removed)`."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    width = int((~remove).sum(1).max())
    index = remove.int().argsort(dim=1, stable=True)[:, :width]
    filled = torch.arange(width, device=remove.device) < (~remove).sum(1, keepdim=True)
    inputs_embeds, input_ids, attention_mask, labels = gather_positions(
        index, inputs_embeds, input_ids, attention_mask, labels
    )
    input_ids = input_ids.masked_fill(~filled, pad_token_id)
    attention_mask = attention_mask.masked_fill(~filled.to(attention_mask.device), 0)
    if labels is not None:
        labels = labels.masked_fill(~filled.to(labels.device), -100)
    return inputs_embeds, input_ids, attention_mask, labels


def gather_positions(index: torch.Tensor, *tensors):
    """Each of `tensors` (`(batch, seq_len)` or `(batch, seq_len, D)`, or `None`) with its positions taken in the
    order of `index` `(batch, width)`."""
    return tuple(
        None if tensor is None
        else tensor.gather(1, (index[..., None].expand(-1, -1, tensor.shape[-1]) if tensor.dim() == 3 else index).to(tensor.device))
        for tensor in tensors
    )  # fmt: skip


def frame_norm_loss(frames: torch.Tensor, target_norm: float) -> torch.Tensor:
    """`mean((|frame| / target_norm - 1)^2)` over `frames` `(num_frames, D)`: keeps the projected frames at the
    token embeddings' mean norm, where the LLM reads them."""
    return ((frames.float().norm(dim=-1) / target_norm - 1) ** 2).mean()


def distillation_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0):
    """KL(teacher || student) between the next-token distributions `softmax(logits / temperature)`, summed over
    the vocabulary and averaged over positions (not rescaled by the temperature). Logits: `(positions, vocab)`."""
    student = (student_logits.float() / temperature).log_softmax(-1)
    teacher = (teacher_logits.float() / temperature).log_softmax(-1)
    return nn.functional.kl_div(student, teacher, reduction="batchmean", log_target=True)


# Generation settings under which CTC-drafted decoding equals plain greedy decoding: these unset or at these values (no
# logits processor, no extra outputs), and only these keyword arguments to `generate`.
_DRAFT_NEUTRAL_SETTINGS = {
    "do_sample": False, "num_beams": 1, "num_return_sequences": 1, "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0,
    "min_new_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "renormalize_logits": False, "guidance_scale": None, "watermarking_config": None, "return_dict_in_generate": False,
    "output_scores": False, "output_logits": False, "assistant_model": None, "prompt_lookup_num_tokens": None,
    "cache_implementation": None, "max_time": None,
}  # fmt: skip
_DRAFT_NEUTRAL_KWARGS = {"stopping_criteria", "streamer", "tokenizer"}
DEFAULT_DRAFT_TOKENS = 10


class CTCDraftedGreedyDecoding:
    """Greedy decoding of one prompt in which the CTC head's readout of the audio drafts the transcript: each LLM
    pass scores the last token and up to `num_draft_tokens` draft tokens, accepts the longest run of draft tokens
    that equals the LLM's own greedy choices, and adds the LLM's next choice after it. Every token is the LLM's
    greedy choice, so the text equals plain greedy decoding; passes that accept draft tokens save LLM passes.

    The draft continues where the tokens decoded so far last match it (the longest of their last 3, 2 or 1 tokens
    found in the draft, the first occurrence at or after the previous match); with no match a pass scores one token.

    Attributes:
        passes (`int`), tokens (`int`): LLM passes after the prompt and tokens decoded (`tokens / (passes + 1)` tokens
            per LLM pass, the prompt's pass included).
    """

    def __init__(self, language_model, draft: list[int], num_draft_tokens: int = DEFAULT_DRAFT_TOKENS):
        self.language_model = language_model
        self.draft = draft
        self.num_draft_tokens = num_draft_tokens
        self.passes = self.tokens = 0
        self._cursor = 0

    def continuation(self, decoded: list[int]) -> list[int]:
        """The draft tokens proposed after `decoded` (possibly none)."""
        draft = self.draft
        for size in (3, 2, 1):
            if len(decoded) < size:
                continue
            tail = decoded[-size:]
            starts = [i for i in range(len(draft) - size + 1) if draft[i : i + size] == tail]
            if starts:
                start = next((i for i in starts if i + size >= self._cursor), starts[0]) + size
                self._cursor = start
                return draft[start : start + self.num_draft_tokens]
        return []

    @torch.no_grad()
    def decode(
        self, input_ids, inputs_embeds, attention_mask, max_new_tokens, eos_token_ids, stopping_criteria=(),
        streamer=None, prefix=(None, 0),
    ):  # fmt: skip
        """Args:
            input_ids: `(1, prompt_len)` the prompt as the LLM's `generate` would see it (what criteria read).
            inputs_embeds: `(1, prompt_len, D)` its embeddings; attention_mask: `(1, prompt_len)` (left padding).
            max_new_tokens (`int`); eos_token_ids (`list[int]`); stopping_criteria: called as `generate` calls them,
                after each token; streamer: gets the prompt, then each accepted token.
            prefix: `(key/value cache, length)` of the prompt's first `length` tokens after its padding (the LLM then
                reads the rest of the prompt only), or `(None, 0)`.
        Returns:
            `(1, prompt_len + new_tokens)`."""
        llm = self.language_model
        if attention_mask is not None:  # one prompt: its padding is dropped, not masked
            inputs_embeds = inputs_embeds[:, attention_mask[0].bool()]
        mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=input_ids.device)
        cache, start = prefix
        if cache is None:
            cache = DynamicCache(config=llm.config)
        logits = llm(
            inputs_embeds=inputs_embeds[:, start:], attention_mask=mask,
            position_ids=torch.arange(start, mask.shape[1], device=input_ids.device)[None], past_key_values=cache,
            use_cache=True, logits_to_keep=1,
        ).logits[:, -1]  # fmt: skip
        if streamer is not None:
            streamer.put(input_ids.cpu())
        sequence, decoded, next_position = input_ids, [], mask.shape[1]
        while True:
            accepted, candidates = [], []
            token = int(logits[0].argmax())
            scores = [logits]
            if len(decoded) + 1 < max_new_tokens and token not in eos_token_ids:
                candidates = self.continuation(decoded + [token])[: max_new_tokens - len(decoded) - 1]
            if candidates:  # score `token` and the draft in one pass
                step = torch.tensor([[token, *candidates]], device=input_ids.device)
                mask = torch.cat([mask, mask.new_ones(1, step.shape[1])], dim=1)
                step_positions = torch.arange(next_position, next_position + step.shape[1], device=input_ids.device)
                step_logits = llm(
                    input_ids=step, attention_mask=mask, position_ids=step_positions[None], past_key_values=cache,
                    use_cache=True,
                ).logits[0]  # fmt: skip
                self.passes += 1
                choices = step_logits.argmax(-1).tolist()
                matched = 0
                while matched < len(candidates) and candidates[matched] == choices[matched]:
                    matched += 1
                accepted = candidates[:matched]
                scores += [step_logits[i : i + 1] for i in range(matched)]
                kept = cache.get_seq_length() - (len(candidates) - matched)
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, :kept], layer.values[:, :, :kept]
                mask = mask[:, :kept]
                next_position += 1 + matched
                logits = step_logits[matched : matched + 1]
            for new_token, new_scores in zip([token, *accepted], scores):
                decoded.append(new_token)
                sequence = torch.cat([sequence, sequence.new_tensor([[new_token]])], dim=1)
                if streamer is not None:
                    streamer.put(sequence.new_tensor([new_token]).cpu())
                stop = new_token in eos_token_ids or len(decoded) >= max_new_tokens
                if stop or any(bool(criterion(sequence, new_scores).any()) for criterion in stopping_criteria):
                    self.tokens += len(decoded)
                    if streamer is not None:
                        streamer.end()
                    return sequence
            if not candidates:  # a plain greedy step
                step = torch.tensor([[token]], device=input_ids.device)
                mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
                logits = llm(
                    input_ids=step, attention_mask=mask, position_ids=step.new_tensor([[next_position]]),
                    past_key_values=cache, use_cache=True,
                ).logits[:, -1]  # fmt: skip
                self.passes += 1
                next_position += 1


class SteerMoEForConditionalGeneration(PreTrainedModel, GenerationMixin):
    """Frozen audio encoder + trainable [`SteerMoEAligner`] + frozen decoder-only LLM.

    `SteerMoEForConditionalGeneration(config, **backbone_kwargs)` loads the backbones named by `config.audio_model_id`
    / `config.text_model_id` with their own `from_pretrained` (`backbone_kwargs` such as `dtype`, `device_map`,
    `attn_implementation`, `token` are passed on), or builds them from `audio_config` / `text_config`.
    `from_pretrained(adapter_dir_or_id)` rebuilds the backbones from the recorded ids and loads the aligner strictly.
    """

    config_class = SteerMoEConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _keep_in_fp32_modules_strict = ["aligner"]
    accepts_loss_kwargs = False

    def __init__(self, config, **backbone_kwargs):
        super().__init__(config)
        self.audio_encoder = self._build_audio_encoder(config, backbone_kwargs)
        self.language_model = self._build_language_model(config, backbone_kwargs)
        if config.encoder_lora_rank:
            targets = config.encoder_lora_target_modules or ENCODER_LORA_TARGETS[config.audio_config.model_type]
            _add_lora(self.audio_encoder, config.encoder_lora_rank, config.encoder_lora_alpha, targets)
        if config.lora_rank:
            targets = config.lora_target_modules or LLM_LORA_TARGETS
            _add_lora(self.language_model, config.lora_rank, config.lora_alpha, targets)
        self._llm_lora_layers = [m for m in self.language_model.modules() if hasattr(m, "lora_A")]
        config.audio_config = self.audio_encoder.config
        config.text_config = self.language_model.config
        self.aligner = SteerMoEAligner(config)
        self.post_init()
        self.aligner.to(next(self.audio_encoder.parameters()).device)
        self.freeze_backbones()
        self.generation_config = _asr_generation_config(self.language_model.generation_config)
        self.gradient_checkpointing = False
        self.recipe_step = 0  # training forwards with labels and audio so far (`llm_loss_start_step`)
        self._keys_to_ignore_on_save = {key for key in self.state_dict() if not _is_adapter_key(key)}

    @staticmethod
    def _build_audio_encoder(config, backbone_kwargs):
        """Whisper: the encoder half only; wav2vec2-style families: the base model (`AutoModel`). Layerdrop off."""
        whisper = config.audio_config.model_type == "whisper"
        no_layerdrop = {"encoder_layerdrop": 0.0} if whisper else {"layerdrop": 0.0}
        if config.audio_model_id is None:
            audio_config = copy.deepcopy(config.audio_config)
            audio_config.update(no_layerdrop)
            return SteerMoEWhisperEncoder(audio_config) if whisper else AutoModel.from_config(audio_config)
        encoder_class = SteerMoEWhisperEncoder if whisper else AutoModel
        key_mapping = {"key_mapping": SteerMoEWhisperEncoder._checkpoint_key_mapping} if whisper else {}
        with _backbone_errors("audio_model_id", config.audio_model_id, config.audio_model_hub_id):
            encoder, info = encoder_class.from_pretrained(
                config.audio_model_id,
                revision=config.audio_model_revision,
                output_loading_info=True,
                **key_mapping,
                **no_layerdrop,
                **backbone_kwargs,
            )
        _raise_on_missing_backbone_weights("audio", config.audio_model_id, info)
        return encoder

    @staticmethod
    def _build_language_model(config, backbone_kwargs):
        if config.text_model_id is None:
            return AutoModelForCausalLM.from_config(copy.deepcopy(config.text_config))
        with _backbone_errors("text_model_id", config.text_model_id, config.text_model_hub_id):
            model, info = AutoModelForCausalLM.from_pretrained(
                config.text_model_id,
                revision=config.text_model_revision,
                output_loading_info=True,
                **backbone_kwargs,
            )
        _raise_on_missing_backbone_weights("text", config.text_model_id, info)
        return model

    def _init_weights(self, module):
        if isinstance(module, SteerMoEAligner) and module.steered_layers:
            init.normal_(module.steering_vectors, std=0.01)
            init.constant_(module.layer_scales, self.config.steering_scale)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=self.config.initializer_range)
            init.zeros_(module.bias)

    def freeze_backbones(self):
        """Freeze the encoder and the LLM (no gradients, eval mode); the aligner and any LoRA stay trainable."""
        for backbone in (self.audio_encoder, self.language_model):
            for name, param in backbone.named_parameters():
                param.requires_grad_(LORA_KEY in name)
            backbone.eval()
        self.aligner.requires_grad_(True)

    def train(self, mode: bool = True):
        """Switch the aligner to `mode`; the backbones (and their LoRA, dropout 0) always stay in eval mode."""
        super().train(mode)
        self.audio_encoder.eval()
        self.language_model.eval()
        return self

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def get_parameter_report(self) -> dict[str, dict[str, int]]:
        """Trainable and frozen parameter counts per component (`audio_encoder`, `aligner`, `language_model`) and
        in total; works on a model built on the meta device."""
        report = {}
        for name in ("audio_encoder", "aligner", "language_model"):
            params = list(getattr(self, name).parameters())
            trainable = sum(p.numel() for p in params if p.requires_grad)
            report[name] = {"trainable": trainable, "frozen": sum(p.numel() for p in params) - trainable}
        report["total"] = {key: sum(row[key] for row in report.values()) for key in ("trainable", "frozen")}
        return report

    def _steered_layer(self, hidden_states, attention_mask, layer_idx: int):
        return self.aligner.steer(self.audio_encoder.layers[layer_idx](hidden_states, attention_mask), layer_idx)

    def _encode_audio(
        self,
        input_features: torch.Tensor,
        feature_attention_mask: torch.Tensor | None,
        output_router_logits: bool = False,
    ):
        """Steered encoder pass, then pooling and projection.

        Args:
            input_features: `(windows, num_mel_bins, frames)` log-mel features (Whisper) or `(windows, samples)`
                waveforms (wav2vec2-style encoders), each window at most 30 s.
            feature_attention_mask: `(windows, frames or samples)`, 1 on real inputs; `None` means all are real.
        Returns:
            audio embeddings `(windows, tokens, text_hidden_size)`, their bool mask `(windows, tokens)`, and with
            `output_router_logits` a tuple of each steered layer's router logits on the real frames, `(frames, E)`.
        """
        if feature_attention_mask is None:
            feature_attention_mask = torch.ones(input_features.shape[:1] + input_features.shape[-1:])
        encoder_pass = getattr(self, _ENCODER_PASSES.get(self.config.audio_config.model_type, "_hooked_encoder_pass"))
        hidden_states, frame_mask, router_logits, final_norm = encoder_pass(input_features, feature_attention_mask)
        hidden_states, token_mask = self.aligner.pool(hidden_states, frame_mask)
        if final_norm is not None:
            hidden_states = final_norm(hidden_states)
        audio_embeds = self.aligner.project(hidden_states).masked_fill(~token_mask[..., None], 0.0)
        router_logits = tuple(logits[frame_mask] for logits in router_logits) if output_router_logits else None
        return audio_embeds, token_mask, router_logits

    def _hooked_encoder_pass(self, input_values: torch.Tensor, sample_mask: torch.Tensor):
        """A wav2vec2-style encoder's own forward, with the steering applied to each layer's output by forward
        hooks (its stem, positional convolution, masking and final norm stay the library's). Returns the hidden
        states `(windows, frames, d)`, their bool mask, each steered layer's router logits, and no extra norm."""
        lengths = sample_mask.sum(-1)
        padded = bool((lengths < sample_mask.shape[-1]).any())
        if padded and self.config.audio_config.model_type in _ENCODERS_LEAKING_PADDING:
            passes = [
                self._hooked_encoder_pass(input_values[i : i + 1, : int(n)], sample_mask[i : i + 1, : int(n)])
                for i, n in enumerate(lengths.tolist())
            ]
            frames = max(hidden.shape[1] for hidden, *_ in passes)
            hidden_states = torch.cat([nn.functional.pad(h, (0, 0, 0, frames - h.shape[1])) for h, *_ in passes])
            frame_mask = torch.cat([nn.functional.pad(m, (0, frames - m.shape[1])) for _, m, *_ in passes])
            router_logits = [
                torch.cat([nn.functional.pad(p[2][k], (0, 0, 0, frames - p[2][k].shape[1])) for p in passes])
                for k in range(len(passes[0][2]))
            ]
            return hidden_states, frame_mask, router_logits, None
        encoder = self.audio_encoder
        router_logits = []

        def steer_output(layer_idx):
            def hook(module, args, output):
                hidden = output[0] if isinstance(output, tuple) else output
                steered, logits = self.aligner.steer(hidden, layer_idx)
                if logits is not None:
                    router_logits.append(logits)
                return (steered, *output[1:]) if isinstance(output, tuple) else steered

            return hook

        handles = [layer.register_forward_hook(steer_output(i)) for i, layer in enumerate(encoder.encoder.layers)]
        try:
            parameter = next(encoder.parameters())
            input_values = input_values.to(dtype=parameter.dtype, device=parameter.device)
            sample_mask = sample_mask.to(device=parameter.device, dtype=torch.long)
            hidden_states = encoder(input_values, attention_mask=sample_mask).last_hidden_state
        finally:
            for handle in handles:
                handle.remove()
        lengths = encoder._get_feat_extract_output_lengths(sample_mask.sum(-1))
        frame_mask = torch.arange(hidden_states.shape[1], device=hidden_states.device) < lengths[:, None]
        return hidden_states, frame_mask, router_logits, None

    def _whisper_encoder_pass(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor):
        """Whisper's stem on the real length (positional table sliced, padding masked), then each layer followed
        by its steering step; the final layer norm is returned to run after pooling."""
        encoder = self.audio_encoder
        num_frames = input_features.shape[-1]
        max_frames = encoder.max_source_positions * encoder.conv1.stride[0] * encoder.conv2.stride[0]
        if num_frames > max_frames:
            raise ValueError(
                f"An audio window has {num_frames} feature frames but the encoder takes at most {max_frames} "
                "(30 s); split longer audio into windows with the SteerMoEProcessor."
            )
        weight = encoder.conv1.weight
        input_mask = feature_attention_mask.to(dtype=weight.dtype, device=weight.device)[:, None, :]
        # Padding is zeroed before each conv so the last real frames see what they would see unpadded.
        input_features = input_features.to(dtype=weight.dtype, device=weight.device) * input_mask
        hidden_states = nn.functional.gelu(encoder.conv1(input_features)) * input_mask
        # Made contiguous: the transposed conv layout would otherwise survive every residual add, and each layer's
        # norms and adds would copy or stride through it (until a steering step's reshape happens to copy it).
        hidden_states = nn.functional.gelu(encoder.conv2(hidden_states)).transpose(1, 2).contiguous()
        hidden_states = hidden_states + encoder.embed_positions.weight[: hidden_states.shape[1]]

        feature_lengths = feature_attention_mask.sum(-1).to(hidden_states.device)
        encoder_lengths = (feature_lengths - 1).div(2, rounding_mode="floor") + 1
        encoder_lengths = encoder_lengths.masked_fill(feature_lengths == 0, 0)
        frame_mask = torch.arange(hidden_states.shape[1], device=hidden_states.device) < encoder_lengths[:, None]
        attention_mask = create_bidirectional_mask(
            config=encoder.config, inputs_embeds=hidden_states, attention_mask=frame_mask
        )
        router_logits = []
        for layer_idx in range(len(encoder.layers)):
            if self.gradient_checkpointing and self.training:
                hidden_states, logits = self._gradient_checkpointing_func(
                    self._steered_layer, hidden_states, attention_mask, layer_idx
                )
            else:
                hidden_states, logits = self._steered_layer(hidden_states, attention_mask, layer_idx)
            if logits is not None:
                router_logits.append(logits)
        return hidden_states, frame_mask, router_logits, encoder.layer_norm

    def get_audio_features(
        self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Audio embeddings for the LLM, `(windows, tokens, text_hidden_size)`; positions past a window's real
        length are zero. A window of `n` real feature frames gives `get_num_audio_tokens(n, ...)` tokens."""
        return self._encode_audio(input_features, feature_attention_mask)[0]

    def get_placeholder_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask `(batch, seq_len)` of the audio placeholder tokens."""
        if self.config.audio_token_id is None:
            raise ValueError(
                "The audio token id is unknown: this model's LLM was given by config, not by an id with a tokenizer. "
                "Build the config with audio_token_id=processor.audio_token_id."
            )
        return input_ids == self.config.audio_token_id

    def _merge_audio_into_embeddings(
        self, input_ids, input_features, feature_attention_mask, output_router_logits: bool = False
    ):
        """Text embeddings with the audio placeholders replaced, in order, by the audio frames of all windows
        (and the router logits when asked for)."""
        audio_embeds, token_mask, router_logits = self._encode_audio(
            input_features, feature_attention_mask, output_router_logits
        )

        def hint(num_placeholders: int) -> str:
            if num_placeholders == 0:
                return (
                    f"The inputs were made by a processor whose audio token is not this model's (id "
                    f"{self.config.audio_token_id}): a tokenizer of another LLM? Use the processor saved with this "
                    "model, or SteerMoEProcessor.from_config(model.config)."
                )
            return (
                "Build inputs with the SteerMoEProcessor whose pooling matches this model "
                f"(pooling_kernel_size={self.config.audio_frames_per_token})."
            )

        inputs_embeds = merge_audio_embeddings(
            input_ids, self.get_placeholder_mask(input_ids), audio_embeds[token_mask], self.get_input_embeddings(),
            self.config.audio_token_id, hint,
        )  # fmt: skip
        return inputs_embeds, router_logits

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_router_logits: bool = False,
        transcript_labels: torch.LongTensor | None = None,
        teacher_input_ids: torch.LongTensor | None = None,
        teacher_attention_mask: torch.Tensor | None = None,
        teacher_labels: torch.LongTensor | None = None,
        **kwargs,
    ):
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`): Prompt (and target) ids with one audio
                placeholder per audio token, as written by the SteerMoEProcessor.
            attention_mask (`torch.Tensor` of shape `(batch, seq_len)`, *optional*): Text padding mask.
            input_features (`torch.FloatTensor` of shape `(windows, num_mel_bins, frames)`, *optional*): Log-mel
                features; the windows of all clips in batch order. Without them this is the plain LLM.
            feature_attention_mask (`torch.Tensor` of shape `(windows, frames)`, *optional*): 1 on real frames.
            labels (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*): Target ids, -100 where no loss.
                With audio, the loss is the config's recipe (see [`SteerMoEConfig`]): the LLM's cross-entropy plus
                the CTC, frame-norm, router-balance and KL terms whose coefficients are set.
            output_router_logits (`bool`, *optional*): Also return each layer's router logits on the audio frames.
            transcript_labels (`torch.LongTensor` of shape `(batch, transcript_len)`, *optional*): The CTC targets,
                the transcripts' token ids (-100 padded), when the target in `labels` is not the transcript (spoken
                chat); `labels` by default.
            teacher_input_ids (`torch.LongTensor` of shape `(batch, teacher_len)`, *optional*): The KL teacher's
                input (same prompt and target, the transcript's tokens where the audio goes), with
                `teacher_attention_mask` and `teacher_labels` of the same shape; needed when `kl_loss_coef > 0`.
        Returns:
            [`SteerMoECausalLMOutputWithPast`]: the LLM's output, `loss` the weighted sum of the loss parts, which
            are returned too (for logging).
        """
        if input_features is None or labels is None or inputs_embeds is not None:
            return self._llm_forward(
                input_ids, attention_mask, input_features, feature_attention_mask, labels, inputs_embeds,
                output_router_logits, **kwargs,
            )  # fmt: skip
        config = self.config
        config.validate_loss()
        need_router_logits = output_router_logits or config.router_balance_loss_coef > 0
        inputs_embeds, router_logits = self._merge_audio_into_embeddings(
            input_ids, input_features, feature_attention_mask, need_router_logits
        )
        parts, outputs = {}, {}
        if self._llm_loss_this_step():
            llm_embeds, llm_ids, llm_mask, llm_labels = self._compressed_llm_inputs(
                input_ids, inputs_embeds, attention_mask, labels
            )
            prefix = self._prompt_prefix_cache(llm_ids)
            logits, outputs = self._target_logits(llm_embeds, llm_mask, llm_labels, prefix, **kwargs)
            targets = llm_labels[:, 1:][llm_labels[:, 1:] != -100].to(logits.device)
            parts["llm_loss"] = nn.functional.cross_entropy(logits.float(), targets)
            outputs["logits"] = outputs.get("logits", logits)
            if config.kl_loss_coef > 0:
                teacher = self._teacher_logits(input_ids, teacher_input_ids, teacher_attention_mask, teacher_labels)
                parts["kl_loss"] = distillation_kl_loss(logits, teacher, config.kl_temperature)
        placeholder_mask = self.get_placeholder_mask(input_ids)
        frames = inputs_embeds[placeholder_mask]
        if config.ctc_loss_coef > 0:
            parts["ctc_loss"] = self._ctc_loss(frames, placeholder_mask.sum(1), transcript_labels, labels)
        if config.frame_norm_loss_coef > 0:
            parts["frame_norm_loss"] = frame_norm_loss(frames, self._embedding_row_norms()[1])
        if config.router_balance_loss_coef > 0 and router_logits:
            probs = torch.stack([logits.float().softmax(-1) for logits in router_logits])
            parts["router_balance_loss"] = router_balance_loss(probs)
        loss = sum(getattr(config, LOSS_COEFFICIENTS[name]) * value for name, value in parts.items())
        if "llm_loss" not in parts:  # the LLM's LoRA takes no part in the warm-up: keep it in the graph for DDP
            loss = loss + sum(param.sum() for param in self._llm_lora_parameters()) * 0.0
        return SteerMoECausalLMOutputWithPast(
            loss=loss, **outputs, router_logits=router_logits if output_router_logits else None, **parts
        )

    def _llm_forward(
        self, input_ids, attention_mask, input_features, feature_attention_mask, labels, inputs_embeds,
        output_router_logits, **kwargs,
    ):  # fmt: skip
        """The LLM on the prompt with the audio merged in (or on text alone, exactly the base LLM); its loss is its
        own shifted cross-entropy over `labels`. With `frame_compression` the LLM reads the compressed frames, and
        its logits are those of the prompt without the placeholders the compression left unfilled."""
        router_logits = None
        text_only = input_features is None
        if not text_only and inputs_embeds is None:
            inputs_embeds, router_logits = self._merge_audio_into_embeddings(
                input_ids, input_features, feature_attention_mask, output_router_logits
            )
            inputs_embeds, _, attention_mask, labels = self._compressed_llm_inputs(
                input_ids, inputs_embeds, attention_mask, labels
            )
            input_ids = None
        with self._llm_lora_enabled(not text_only or self.config.lora_for_text_only):
            outputs = self.language_model(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, labels=labels, **kwargs
            )
        return SteerMoECausalLMOutputWithPast(**outputs, router_logits=router_logits)

    @torch.no_grad()
    def ctc_readout(
        self,
        input_ids: torch.LongTensor,
        input_features: torch.FloatTensor,
        feature_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_frames_read: bool = False,
    ) -> list[list[int]] | tuple[list[list[int]], torch.LongTensor]:
        """The CTC head's greedy transcript of each row's audio, without the LLM: every projected frame is scored
        against the LLM's input embeddings as the CTC loss scores it (cosine with `ctc_logit_scale > 0`, else the dot
        product), then argmax, repeats collapsed, blanks dropped. Meaningful for adapters trained with
        `ctc_loss_coef > 0`.

        Args:
            input_ids: `(batch, seq_len)` prompts with audio placeholders (they say which frames are whose).
            input_features, feature_attention_mask: as in `forward`.
            attention_mask: the prompts' mask, unused (the placeholders say where the audio is): taken so that the
                processor's whole output can be passed, `model.ctc_readout(**inputs)`.
            return_frames_read (`bool`): also return how many audio frames the LLM reads in each row (every
                placeholder, or with `frame_compression` those the CTC head keeps, one per run), from the same pass.
        Returns:
            One list of LLM token ids per row (`processor.batch_decode` turns them into text); with
            `return_frames_read`, `(those lists, (batch,) frames read)`.
        """
        inputs_embeds, _ = self._merge_audio_into_embeddings(input_ids, input_features, feature_attention_mask)
        placeholder_mask = self.get_placeholder_mask(input_ids).to(inputs_embeds.device)
        tokens, choice = self._ctc_readout_with_choice(inputs_embeds, placeholder_mask)
        if not return_frames_read:
            return tokens
        _, remove = self._compress_frames(placeholder_mask, inputs_embeds, choice)
        return tokens, (placeholder_mask & ~remove).sum(1)

    def _ctc_readout_with_choice(self, inputs_embeds, placeholder_mask):
        """`(_ctc_greedy_tokens of the frames, their _compression_choice)`: with `frame_compression` the readout is
        read from the choice's labels (the frames scored over the vocabulary once for both); the choice is `None`
        without compression."""
        choice = None
        if self.config.frame_compression is not None:
            choice = self._compression_choice(inputs_embeds, placeholder_mask)
        return self._ctc_greedy_tokens(inputs_embeds, placeholder_mask, None if choice is None else choice[0]), choice

    def _ctc_greedy_tokens(self, inputs_embeds, placeholder_mask, labels=None) -> list[list[int]]:
        """The CTC head's greedy readout of the frames at `placeholder_mask` in `inputs_embeds`, one list per row;
        `labels` `(batch, seq_len)`: the frames' best labels when already known (`_compression_choice`)."""
        blank = self._ctc_blank()
        if labels is None:
            labels = ctc_logits(
                inputs_embeds[placeholder_mask], self._ctc_head_weight(), self.config.ctc_logit_scale,
                self._embedding_row_norms()[0],
            ).argmax(-1)  # fmt: skip
        else:
            labels = labels[placeholder_mask]
        labels = labels.split(placeholder_mask.sum(1).tolist())
        tokens = []
        for row in labels:
            keep = torch.ones_like(row, dtype=torch.bool)
            keep[1:] = row[1:] != row[:-1]
            row = row[keep]
            tokens.append(row[row != blank].tolist())
        return tokens

    def _compressed_llm_inputs(self, input_ids, inputs_embeds, attention_mask=None, labels=None):
        """The LLM's inputs after `frame_compression`: `(inputs_embeds, input_ids, attention_mask, labels)` with the
        unfilled placeholders removed (`remove_positions`); unchanged without compression."""
        if self.config.frame_compression is None:
            return inputs_embeds, input_ids, attention_mask, labels
        inputs_embeds, remove = self._compress_frames(self.get_placeholder_mask(input_ids), inputs_embeds)
        remove = remove.to(input_ids.device)
        return remove_positions(remove, inputs_embeds, input_ids, attention_mask, labels, self._pad_token_id())

    def _pad_token_id(self) -> int:
        pad = self.generation_config.pad_token_id
        return pad if pad is not None else 0

    def _llm_loss_this_step(self) -> bool:
        """Whether this forward runs the LLM: always outside training; in training, from the
        `llm_loss_start_step`-th training forward on (`recipe_step` counts them, the same on every rank)."""
        if not self.training:
            return True
        run = self.recipe_step >= self.config.llm_loss_start_step
        self.recipe_step += 1
        return run

    def _llm_lora_parameters(self):
        return [param for layer in self._llm_lora_layers for param in layer.parameters() if param.requires_grad]

    def _target_logits(self, inputs_embeds, attention_mask, labels, prefix=(None, 0), **kwargs):
        """The LLM's next-token logits `(targets, vocab)` at the positions that predict a labelled token, and the
        LLM's other outputs. `prefix` is `(key/value cache, length)` of the rows' shared prompt prefix
        (`_prompt_prefix_cache`): the LLM then runs on the rest only. With `target_logits_only` the output layer
        runs on the target positions only."""
        llm = self.language_model
        past, start = prefix
        positions = labels[:, start + 1 :] != -100
        if past is None and not self.config.target_logits_only:
            outputs = llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
            return outputs.logits[:, :-1][positions.to(outputs.logits.device)], dict(outputs)
        hidden = llm.base_model(
            inputs_embeds=inputs_embeds[:, start:], attention_mask=attention_mask, past_key_values=past,
            use_cache=past is not None,
        ).last_hidden_state  # fmt: skip
        return llm.get_output_embeddings()(hidden[:, :-1][positions.to(hidden.device)]), {}

    def _teacher_logits(self, input_ids, teacher_input_ids, teacher_attention_mask, teacher_labels):
        """The KL teacher's logits `(targets, vocab)`, without gradients: the frozen LLM (LoRA off) on
        `teacher_input_ids` (the transcript's tokens where the audio goes, same prompt and target), at the positions
        that predict `teacher_labels`. The student's cached prompt prefix is reused when the teacher rows begin with
        it."""
        if teacher_input_ids is None or teacher_labels is None:
            raise ValueError(
                "kl_loss_coef > 0 needs the teacher's inputs: teacher_input_ids, teacher_attention_mask and "
                "teacher_labels (train.py's SteerMoEDataCollator writes them with teacher_inputs=True)."
            )
        with torch.no_grad(), self._llm_lora_enabled(False):
            teacher_embeds = self.get_input_embeddings()(teacher_input_ids)
            prefix = self._prompt_prefix_cache(input_ids)  # a fresh cache: the student's has grown
            if prefix[0] is not None and not torch.equal(teacher_input_ids[:, : prefix[1]], input_ids[:, : prefix[1]]):
                prefix = (None, 0)
            logits, _ = self._target_logits(teacher_embeds, teacher_attention_mask, teacher_labels, prefix)
        return logits

    def _prompt_prefix_cache(self, input_ids, always: bool = False):
        """`(DynamicCache, prefix length)` for the rows' shared prompt prefix (the tokens before the first audio
        placeholder, identical in every row), computed once per distinct prefix, dtype and device without
        gradients; `(None, 0)` when `cache_prompt_prefix` is off (unless `always`), the LLM has LoRA or the rows
        share no prefix."""
        if not (self.config.cache_prompt_prefix or always) or input_ids is None or self._llm_lora_layers:
            return None, 0
        is_audio = self.get_placeholder_mask(input_ids)
        if not bool(is_audio.any(dim=1).all()):
            return None, 0
        start = int(is_audio.int().argmax(dim=1).min())
        prefix = input_ids[0, :start]
        if start == 0 or not bool((input_ids[:, :start] == prefix).all()):
            return None, 0
        embeddings = self.get_input_embeddings().weight
        key = (tuple(prefix.tolist()), embeddings.dtype, embeddings.device)
        caches = self.__dict__.setdefault("_prefix_caches", {})
        if key not in caches:
            with torch.no_grad():
                past = self.language_model.base_model(
                    inputs_embeds=self.get_input_embeddings()(prefix[None]), use_cache=True
                ).past_key_values
            if len(caches) >= _MAX_PREFIX_CACHES:
                caches.pop(next(iter(caches)))
            caches[key] = [(layer.keys, layer.values) for layer in past.layers]
        past = DynamicCache()
        for index, (keys, values) in enumerate(caches[key]):
            past.update(keys.expand(len(input_ids), -1, -1, -1), values.expand(len(input_ids), -1, -1, -1), index)
        return past, start

    def _embedding_row_norms(self) -> tuple[torch.Tensor, float]:
        """The inverse norms `(V,)` of the LLM's input embedding rows and their mean norm, computed once per
        embedding matrix (the LLM is frozen)."""
        weight = self.get_input_embeddings().weight
        key = (weight.data_ptr(), weight.dtype, weight.device)
        cached = self.__dict__.get("_row_norms")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                norms = weight.float().norm(dim=-1)
            cached = self.__dict__["_row_norms"] = (key, norms.clamp_min(1e-12).reciprocal(), float(norms.mean()))
        return cached[1], cached[2]

    def _ctc_blank(self) -> int:
        """The CTC blank the head is trained (and read) with."""
        if self.config.ctc_blank_token_id is None:
            raise ValueError(
                "The CTC head needs its blank token: set config.ctc_blank_token_id (e.g. the id of the LLM tokenizer's "
                "single-space token); it is resolved automatically when the LLM is given by id."
            )
        return self.config.ctc_blank_token_id

    def _ctc_head_weight(self) -> torch.Tensor:
        """The matrix the CTC head scores frames against: the LLM's input embeddings, detached, in bf16 when the
        LLM is, else fp32."""
        weight = self.get_input_embeddings().weight.detach()
        return weight if weight.dtype == torch.bfloat16 else weight.float()

    @torch.no_grad()
    def _compression_choice(self, inputs_embeds, placeholder_mask):
        """The CTC head's decision for `frame_compression`: each placeholder frame's best label and whether it is
        kept, both `(batch, seq_len)` (the LLM's loss trains through the kept frames, not through this choice)."""
        blank = self._ctc_blank()
        scores = ctc_logits(
            inputs_embeds[placeholder_mask], self._ctc_head_weight(), self.config.ctc_logit_scale,
            self._embedding_row_norms()[0],
        )  # fmt: skip
        best = scores.argmax(-1)
        if self.config.frame_compression == "ctc_argmax":
            kept = best != blank
        else:
            kept = (scores[:, blank] - scores.logsumexp(-1)).exp() <= self.config.ctc_blank_threshold
        labels = torch.full(placeholder_mask.shape, -1, dtype=torch.long, device=placeholder_mask.device)
        labels[placeholder_mask] = best.to(labels.device)
        keep = torch.zeros_like(placeholder_mask)
        keep[placeholder_mask] = kept.to(keep.device)
        return labels, keep

    def _compress_frames(self, placeholder_mask, inputs_embeds, choice=None):
        """`ctc_compress` of the audio frames of `inputs_embeds` `(batch, seq_len, D)` at `placeholder_mask` as
        `frame_compression` says (as `ctc_soft_tokens` with `soft_token_temperature`): the compressed embeddings and
        the mask `(batch, seq_len)` of the placeholders to remove (all False without compression). `choice`: the
        `_compression_choice` of these frames when already made."""
        placeholder_mask = placeholder_mask.to(inputs_embeds.device)
        if self.config.frame_compression is None:
            return inputs_embeds, torch.zeros_like(placeholder_mask)
        labels, keep = choice if choice is not None else self._compression_choice(inputs_embeds, placeholder_mask)
        compressed, remove = ctc_compress(inputs_embeds, placeholder_mask, labels, keep)
        if self.config.soft_token_temperature is None:
            return compressed, remove
        read = placeholder_mask & ~remove
        soft = ctc_soft_tokens(
            compressed[read], self._ctc_head_weight(), self._ctc_blank(), self.config.soft_token_temperature,
            self.config.ctc_logit_scale, self._embedding_row_norms()[0],
        )  # fmt: skip
        return compressed.masked_scatter(read[..., None], soft), remove

    def _ctc_loss(self, frames, frame_counts, transcript_labels, labels):
        """`ctc_loss_over_vocabulary` of the frames against `transcript_labels` (else `labels`), over the LLM's
        input embeddings (in bf16 when the LLM is, else fp32), blank `ctc_blank_token_id`."""
        blank = self._ctc_blank()
        weight = self._ctc_head_weight()
        eos = self.generation_config.eos_token_id
        return ctc_loss_over_vocabulary(
            frames, frame_counts, labels if transcript_labels is None else transcript_labels, weight, blank,
            eos if isinstance(eos, list) else [eos] if eos is not None else [], self.config.ctc_logit_scale,
            self._embedding_row_norms()[0],
        )  # fmt: skip

    @contextlib.contextmanager
    def _llm_lora_enabled(self, enabled: bool):
        """Run the LLM with its LoRA layers on or off (a no-op without LLM LoRA)."""
        if enabled or not self._llm_lora_layers:
            yield
            return
        for layer in self._llm_lora_layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in self._llm_lora_layers:
                layer.enable_adapters(True)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        ctc_drafts: bool | None = None,
        **kwargs,
    ) -> torch.LongTensor:
        """Generate from a prompt with audio placeholders, or from text alone exactly as the base LLM.

        `ctc_drafts`: decode with the CTC head's readout of the audio as a draft ([`CTCDraftedGreedyDecoding`]: the
        same tokens as plain greedy decoding, in fewer LLM passes). By default (`None`) it is used where it gives
        exactly plain greedy decoding's output: one prompt with audio, an adapter trained with the CTC loss, greedy
        decoding with no logits processor and no output but the sequences, an LLM with full attention only; `False`
        turns it off; `True` raises where it cannot be used.

        The model's `generation_config` (saved with the adapter: greedy, the LLM's EOS, any `stop_strings`) applies
        with no extra arguments; keyword arguments override it. Stop strings need a tokenizer: the LLM's own is
        loaded once when none is passed. Right-padded batches (as the processor writes them) are moved to left
        padding first.

        Returns `(batch, prompt_len + new_tokens)` with or without audio, as transformers' audio LLMs do: the prompt
        (left-padded) then the new tokens, so `processor.batch_decode(out[:, inputs["input_ids"].shape[1]:],
        skip_special_tokens=True)` is the answer. With `return_dict_in_generate=True`, the same in `.sequences`.
        """
        generation_config = copy.deepcopy(generation_config or self.generation_config)
        kwargs = generation_config.update(**kwargs)
        if generation_config.stop_strings and kwargs.get("tokenizer") is None:
            kwargs["tokenizer"] = self._stop_strings_tokenizer()
        if input_ids is None:
            raise ValueError("generate needs input_ids: the prompt, with audio placeholders where the audio goes.")
        if input_features is not None:
            self._check_context(input_ids)
        if attention_mask is not None:
            input_ids, attention_mask = _right_to_left_padding(input_ids, attention_mask)
        with self._llm_lora_enabled(input_features is not None or self.config.lora_for_text_only):
            if input_features is None:
                return self.language_model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config, **kwargs
                )
            inputs_embeds, _ = self._merge_audio_into_embeddings(input_ids, input_features, feature_attention_mask)
            placeholder_mask = self.get_placeholder_mask(input_ids)
            drafting = self._ctc_drafting(ctc_drafts, input_ids, generation_config, kwargs)
            choice = None
            if drafting:  # the compression's labels are the draft's
                drafts, choice = self._ctc_readout_with_choice(inputs_embeds, placeholder_mask.to(inputs_embeds.device))
                draft = drafts[0]
                # The prompt before the audio (system turn, copy turns) runs once per model: its cache is reused.
                unpadded = attention_mask is None or bool(attention_mask.all())
                prefix = self._prompt_prefix_cache(input_ids, always=True) if unpadded else (None, 0)
            # The LLM sees the prompt ids (placeholders as padding, which the embeddings replace) so that its output,
            # streamers and logits processors hold the prompt; the placeholders are put back in the result.
            pad_id = generation_config.pad_token_id if generation_config.pad_token_id is not None else 0
            llm_input_ids = input_ids.masked_fill(placeholder_mask, pad_id)
            inputs_embeds, remove = self._compress_frames(placeholder_mask, inputs_embeds, choice)
            if bool(remove.any()):  # unfilled placeholders become left padding: the prompt keeps its width
                if attention_mask is None:
                    attention_mask = torch.ones_like(input_ids)
                attention_mask = attention_mask.masked_fill(remove.to(attention_mask.device), 0)
                order = (~remove).int().argsort(dim=1, stable=True)
                llm_input_ids, attention_mask, inputs_embeds = gather_positions(
                    order, llm_input_ids, attention_mask, inputs_embeds
                )
            if drafting:
                eos = generation_config.eos_token_id
                criteria = list(kwargs.get("stopping_criteria") or [])
                if generation_config.stop_strings:
                    criteria.append(StopStringCriteria(kwargs["tokenizer"], generation_config.stop_strings))
                max_new_tokens = generation_config.max_new_tokens
                if max_new_tokens is None:
                    max_new_tokens = generation_config.max_length - input_ids.shape[1]
                decoding = CTCDraftedGreedyDecoding(self.language_model, draft)
                output = decoding.decode(
                    llm_input_ids, inputs_embeds, attention_mask, max_new_tokens,
                    [] if eos is None else eos if isinstance(eos, list) else [eos], criteria, kwargs.get("streamer"),
                    prefix,
                )  # fmt: skip
                self.__dict__["_last_ctc_drafting"] = decoding  # its counts, for bench/ctc_drafts.py
            else:
                output = self.language_model.generate(
                    input_ids=llm_input_ids,
                    inputs_embeds=inputs_embeds,
                    attention_mask=attention_mask,
                    generation_config=generation_config,
                    **kwargs,
                )
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        sequences[:, : input_ids.shape[1]] = input_ids.to(sequences.device)
        return output

    def _ctc_drafting(self, ctc_drafts: bool | None, input_ids, generation_config, kwargs) -> bool:
        """Whether `generate` decodes with CTC drafts (see its `ctc_drafts`); `True` where they cannot be used raises
        saying why."""
        if ctc_drafts is False:
            return False
        reasons = []
        if input_ids.shape[0] != 1:
            reasons.append(f"a batch of {input_ids.shape[0]} prompts (drafts decode one prompt)")
        if self.config.ctc_loss_coef <= 0 or self.config.ctc_blank_token_id is None:
            reasons.append("an adapter without a trained CTC head (ctc_loss_coef = 0)")
        changed = [
            key for key, neutral in _DRAFT_NEUTRAL_SETTINGS.items()
            if getattr(generation_config, key, None) not in (None, neutral)
        ]
        if changed:
            reasons.append(f"generation settings beyond greedy decoding ({', '.join(changed)})")
        other = sorted(key for key, value in kwargs.items() if value is not None and key not in _DRAFT_NEUTRAL_KWARGS)
        if other:
            reasons.append(f"generate arguments {other}")
        layer_types = getattr(self.config.text_config, "layer_types", None) or ["full_attention"]
        if any(layer_type != "full_attention" for layer_type in layer_types):
            reasons.append("an LLM with other than full attention layers")
        if reasons and ctc_drafts:
            raise ValueError(f"ctc_drafts=True cannot decode exactly as greedy decoding here: {'; '.join(reasons)}.")
        return not reasons

    def _check_context(self, input_ids: torch.Tensor) -> None:
        """Raise when a prompt with its audio does not fit the LLM's context (`max_position_embeddings`)."""
        limit = getattr(self.config.text_config, "max_position_embeddings", None)
        if limit is None or input_ids.shape[1] <= limit:
            return
        audio_tokens = int(self.get_placeholder_mask(input_ids).sum(-1).max())
        raise ValueError(
            f"The audio gives {audio_tokens} audio tokens and the prompt {input_ids.shape[1] - audio_tokens} more: "
            f"{input_ids.shape[1]} tokens, beyond the LLM's context of {limit}. Ask about a shorter clip, or "
            "transcribe it with the ASR pipeline or the CLI, which cut long audio into segments."
        )

    def _stop_strings_tokenizer(self):
        """The LLM's tokenizer, loaded once, for generation configs with `stop_strings`."""
        if getattr(self, "_cached_stop_strings_tokenizer", None) is None:
            source = self.config.text_model_id
            if source is None:
                raise ValueError(
                    "The generation config has stop_strings, which need a tokenizer, and this model's LLM has no id "
                    "to load one from: pass tokenizer=processor.tokenizer to generate."
                )
            from transformers import AutoTokenizer

            self._cached_stop_strings_tokenizer = AutoTokenizer.from_pretrained(
                source, revision=self.config.text_model_revision
            )
        return self._cached_stop_strings_tokenizer

    def _adapter_state_dict(self, state_dict: dict | None = None) -> dict:
        state_dict = self.state_dict() if state_dict is None else state_dict
        return {key: value for key, value in state_dict.items() if _is_adapter_key(key)}

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """Save `config.json`, `generation_config.json`, the code files and the aligner weights only."""
        module = self.__class__.__module__.split(".")[-1]
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.setdefault("AutoConfig", f"{module.replace('modeling_', 'configuration_')}.SteerMoEConfig")
        for auto_class in ("AutoModel", "AutoModelForSpeechSeq2Seq", "AutoModelForMultimodalLM"):
            auto_map[auto_class] = f"{module}.{self.__class__.__name__}"
        self.config.auto_map = auto_map
        pipeline_module = SteerMoEASRPipeline.__module__.split(".")[-1]
        self.config.custom_pipelines = {
            "automatic-speech-recognition": {
                "impl": f"{pipeline_module}.{SteerMoEASRPipeline.__name__}",
                "pt": ["AutoModelForSpeechSeq2Seq"],
                "type": "audio",
            }
        }
        return super().save_pretrained(save_directory, *args, state_dict=self._adapter_state_dict(state_dict), **kwargs)

    def push_to_hub(self, repo_id: str, processor=None, results: dict | None = None, **kwargs):
        """Upload the adapter with its processor and a model card rendered from `hub_card/`: exactly config.json,
        the aligner weights, the code files, the processor files, generation_config.json and README.md.
        `results` is train.py's `results.json` (its WER/CER go into the card's `model-index`)."""
        try:
            from hub_card.publish import push_adapter
        except ImportError as error:
            raise ImportError("Publishing needs the steermoe package's hub_card module: pip install steermoe") from error
        return push_adapter(self, processor, repo_id, results=results, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *model_args,
        config=None,
        revision: str | None = None,
        subfolder: str = "",
        output_loading_info: bool = False,
        **kwargs,
    ):
        """Load an adapter saved by `save_pretrained`: backbones from the ids its config records (their own
        `from_pretrained`, with `dtype`, `device_map`, `attn_implementation`, `token`, ... passed on), then the
        aligner weights, strictly. Config fields can be overridden as keyword arguments."""
        hub_kwargs = {
            key: kwargs.pop(key)
            for key in ("cache_dir", "force_download", "local_files_only", "token", "proxies")
            if key in kwargs
        }
        kwargs.pop("trust_remote_code", None)
        kwargs.pop("_from_auto", None)
        kwargs.pop("_from_pipeline", None)
        kwargs.pop("adapter_kwargs", None)
        backbone_keys = ("dtype", "torch_dtype", "device_map", "attn_implementation", "low_cpu_mem_usage")
        backbone_kwargs = {key: kwargs.pop(key) for key in backbone_keys if key in kwargs}
        if "torch_dtype" in backbone_kwargs:
            backbone_kwargs.setdefault("dtype", backbone_kwargs.pop("torch_dtype"))
        if config is None:
            config, kwargs = cls.config_class.from_pretrained(
                pretrained_model_name_or_path,
                revision=revision,
                subfolder=subfolder,
                return_unused_kwargs=True,
                **hub_kwargs,
                **kwargs,
            )
        else:
            for key, value in list(kwargs.items()):
                if hasattr(config, key):
                    setattr(config, key, kwargs.pop(key))
        if kwargs:
            raise TypeError(f"Unexpected arguments for SteerMoEForConditionalGeneration.from_pretrained: {sorted(kwargs)}")
        if "token" in hub_kwargs:
            backbone_kwargs["token"] = hub_kwargs["token"]
        if config._attn_implementation_internal is not None and "attn_implementation" not in backbone_kwargs:
            backbone_kwargs["attn_implementation"] = config._attn_implementation_internal

        model = cls(config, *model_args, **backbone_kwargs)
        lookup = {"revision": revision, "subfolder": subfolder, **hub_kwargs}
        weights_file = cached_file(pretrained_model_name_or_path, ADAPTER_WEIGHTS_NAME, **lookup)
        loaded_keys = model._load_adapter_weights(weights_file, pretrained_model_name_or_path, lookup)
        generation_file = cached_file(
            pretrained_model_name_or_path, "generation_config.json", _raise_exceptions_for_missing_entries=False, **lookup
        )
        if generation_file is not None:
            model.generation_config = GenerationConfig.from_pretrained(pretrained_model_name_or_path, **lookup)
        model.eval()
        if output_loading_info:
            return model, {"loaded_keys": loaded_keys, "missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
        return model

    def _load_adapter_weights(self, weights_file: str, source, lookup: dict) -> list[str]:
        """Load the aligner (and any adapter) weights strictly; raise on missing, extra or mis-shaped tensors."""
        expected = self._adapter_state_dict()
        with safe_open(weights_file, framework="pt") as reader:
            saved_keys = set(reader.keys())
            missing = sorted(set(expected) - saved_keys)
            unexpected = sorted(saved_keys - set(expected))
            if missing or unexpected:
                raise ValueError(
                    f"The adapter weights in {source} do not match this model: missing {missing}, unexpected "
                    f"{unexpected}. Nothing was loaded."
                )
            mismatched = {
                key: (tuple(reader.get_slice(key).get_shape()), tuple(expected[key].shape))
                for key in expected
                if tuple(reader.get_slice(key).get_shape()) != tuple(expected[key].shape)
            }
            if mismatched:
                raise ValueError(self._pair_mismatch_message(source, lookup, mismatched))
            state_dict = {key: reader.get_tensor(key) for key in expected}
        self.load_state_dict(state_dict, strict=False)
        return sorted(state_dict)

    def _pair_mismatch_message(self, source, lookup: dict, mismatched: dict) -> str:
        saved_file = cached_file(source, "config.json", _raise_exceptions_for_missing_entries=False, **lookup)
        saved = json.loads(Path(saved_file).read_text()) if saved_file else {}
        shapes = ", ".join(f"{key}: saved {old} vs model {new}" for key, (old, new) in mismatched.items())
        return (
            f"The adapter in {source} was trained for audio encoder {saved.get('audio_model_id')!r} + LLM "
            f"{saved.get('text_model_id')!r}, but this model is built on audio encoder {self.config.audio_model_id!r} "
            f"(width={self.config.audio_hidden_size}, layers={self.config.audio_num_layers}) + LLM "
            f"{self.config.text_model_id!r} (hidden_size={self.config.text_config.hidden_size}); "
            f"shapes differ: {shapes}."
        )


def merge_audio_embeddings(input_ids, placeholder_mask, audio_embeds, embed_tokens, audio_token_id, hint=None):
    """The text embeddings `(batch, seq_len, hidden)` of `input_ids` with the audio placeholders (`placeholder_mask`,
    `(batch, seq_len)`) replaced, in order, by the frames `audio_embeds` `(num_frames, hidden)` of all clips.
    `embed_tokens` embeds token ids; a count mismatch raises, with `hint(num_placeholders)` appended when given."""
    num_placeholders = int(placeholder_mask.sum())
    if num_placeholders != audio_embeds.shape[0]:
        raise ValueError(
            f"The text holds {num_placeholders} audio placeholder tokens (id {audio_token_id}) but the audio gives "
            f"{audio_embeds.shape[0]} frames. {hint(num_placeholders) if hint else ''}".rstrip()
        )
    inputs_embeds = embed_tokens(input_ids.masked_fill(placeholder_mask, 0))
    audio_embeds = audio_embeds.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)
    return inputs_embeds.masked_scatter(placeholder_mask[..., None].to(inputs_embeds.device), audio_embeds)


def _asr_generation_config(llm_config: GenerationConfig) -> GenerationConfig:
    """The LLM's generation config (its EOS and pad tokens) with ASR defaults: greedy, at most 256 new tokens."""
    config = copy.deepcopy(llm_config)
    config.update(do_sample=False, num_beams=1, max_new_tokens=256, temperature=None, top_p=None, top_k=None)
    if config.pad_token_id is None:
        eos = config.eos_token_id
        config.pad_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos
    return config


@contextlib.contextmanager
def _backbone_errors(field: str, value: str, hub_id: str | None):
    """Turn a backbone that cannot be loaded (no such folder, an unreachable or unknown Hub id) into an error that
    names the field, the value, every place looked and the override to use."""
    try:
        yield
    except (OSError, HFValidationError) as error:
        message = backbone_not_found_message(field, value, resolve_backbone(value, None, hub_id)[1])
        raise OSError(f"{message} ({type(error).__name__}: {error})") from error


def _raise_on_missing_backbone_weights(kind: str, model_id: str, loading_info: dict):
    missing = loading_info.get("missing_keys") or []
    if missing:
        raise ValueError(
            f"The {kind} backbone {model_id!r} lacks weights for {sorted(missing)[:10]} "
            f"({len(missing)} missing tensors); refusing to use randomly initialised backbone weights."
        )


def _right_to_left_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Move right padding to the left (row by row, order kept), as decoder-only generation needs."""
    if not bool((attention_mask[:, -1] == 0).any()):
        return input_ids, attention_mask
    trailing = attention_mask.flip(-1).cumsum(-1).eq(0).sum(-1)
    index = (torch.arange(input_ids.shape[1], device=input_ids.device) - trailing[:, None]) % input_ids.shape[1]
    return input_ids.gather(1, index), attention_mask.gather(1, index)


SteerMoEConfig.register_for_auto_class()
SteerMoEForConditionalGeneration.register_for_auto_class("AutoModel")

__all__ = ["SteerMoEAligner", "SteerMoEForConditionalGeneration"]
