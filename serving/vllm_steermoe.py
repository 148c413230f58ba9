# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""SteerMoE as a vLLM model: the frozen audio encoder with the steering, pooling and projection as the multimodal
embedder, the LLM as vLLM's own implementation of its architecture.

Loaded by vLLM for adapters whose `config.json` names `SteerMoEForConditionalGeneration` (see `serving.register`).
The backbones come from the ids the adapter records, as `SteerMoEForConditionalGeneration.from_pretrained` loads
them: the encoder with its transformers `from_pretrained`, the LLM's weights through vLLM's loader; the aligner
weights are the adapter's `model.safetensors`, loaded strictly. The audio is featurised by the adapter's
`SteerMoEProcessor` and encoded by the transformers model's own encoder pass, so the audio embeddings are the
transformers model's.
"""

import functools
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from transformers import BatchFeature
from vllm.config import ModelConfig, SpeechToTextConfig, VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.config.speech_to_text import SpeechToTextParams
from vllm.inputs import MultiModalDataDict, PromptType, TokensPrompt
from vllm.model_executor.model_loader import DefaultModelLoader
from vllm.model_executor.models.interfaces import SupportsMultiModal, SupportsTranscription
from vllm.model_executor.models.utils import AutoWeightsLoader, init_vllm_registered_model, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)

from configuration_steermoe import get_num_audio_tokens
from modeling_steermoe import ENCODER_LORA_TARGETS, SteerMoEAligner, SteerMoEForConditionalGeneration, _add_lora
from processing_steermoe import (
    DEFAULT_SEGMENT_SECONDS,
    LANGUAGE_NAMES,
    WINDOW_SECONDS,
    SteerMoEProcessor,
    speech_segments,
)

OWN_SEGMENTATION = 0  # min_energy_split_window_size that means: cut as the transformers pipeline cuts


@functools.lru_cache(maxsize=8)
def load_processor(model: str, revision: str | None = None) -> SteerMoEProcessor:
    """The adapter's `SteerMoEProcessor` (feature extractor, tokenizer with the audio token, chat template), once
    per process."""
    return SteerMoEProcessor.from_pretrained(model, revision=revision)


def _model_processor(model_config: ModelConfig) -> SteerMoEProcessor:
    return load_processor(model_config.model, model_config.revision)


def count_audio_tokens(processor: SteerMoEProcessor, num_samples: int) -> int:
    """LLM audio tokens for a clip of `num_samples` samples at the feature extractor's rate: the clip is cut into
    30 s windows and each window counted with `get_num_audio_tokens`, exactly as the processor writes them."""
    extractor = processor.feature_extractor
    window = WINDOW_SECONDS * extractor.sampling_rate
    conv_layers = tuple(map(tuple, processor.conv_layers))
    total = 0
    for start in range(0, max(num_samples, 1), window):
        piece = min(window, num_samples - start)
        if processor.pad_to_full_window:
            piece = window
        if "input_features" in extractor.model_input_names:  # log-mel: one frame per hop, at least one FFT window
            frames = max(piece, extractor.n_fft) // extractor.hop_length
        else:  # waveform: at least the conv stem's receptive field
            min_length = 1
            for kernel, stride, _ in reversed(conv_layers):
                min_length = (min_length - 1) * stride + kernel
            frames = max(piece, min_length)
        total += get_num_audio_tokens(frames, processor.pooling_kernel_size, conv_layers)
    return total


class SteerMoEProcessingInfo(BaseProcessingInfo):
    """What vLLM needs to know about SteerMoE inputs: the processor, mono audio at the feature extractor's rate,
    any number of clips per prompt, and the most audio tokens one clip can take."""

    def get_hf_processor(self, **kwargs: object) -> SteerMoEProcessor:
        return _model_processor(self.ctx.model_config)

    def get_data_parser(self) -> MultiModalDataParser:
        # Mono, then soxr resampling: the same library and quality as the processor's own resampling.
        return MultiModalDataParser(
            target_sr=self.get_hf_processor().feature_extractor.sampling_rate,
            target_channels=1,
            audio_resample_method="soxr",
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"audio": None}

    def get_max_audio_samples(self, seq_len: int) -> int:
        """The longest clip (in samples) whose audio tokens fit in `seq_len`: whole 30 s windows, at least one."""
        processor = self.get_hf_processor()
        window = WINDOW_SECONDS * processor.feature_extractor.sampling_rate
        windows = max(1, seq_len // count_audio_tokens(processor, window))
        return windows * window

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"audio": count_audio_tokens(self.get_hf_processor(), self.get_max_audio_samples(seq_len))}


class SteerMoEDummyInputsBuilder(BaseDummyInputsBuilder[SteerMoEProcessingInfo]):
    """Profiling inputs: one audio placeholder per clip, each clip as long as a prompt can hold."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return self.info.get_hf_processor().audio_token * mm_counts.get("audio", 0)

    def get_dummy_mm_data(
        self, seq_len: int, mm_counts: Mapping[str, int], mm_options: MultiModalDummyOptions
    ) -> MultiModalDataDict:
        return {
            "audio": self._get_dummy_audios(
                length=self.info.get_max_audio_samples(seq_len),
                num_audios=mm_counts.get("audio", 0),
                overrides=mm_options.get("audio"),
            )
        }


class SteerMoEMultiModalProcessor(BaseMultiModalProcessor[SteerMoEProcessingInfo]):
    """Features of each clip from the `SteerMoEProcessor` (its 30 s windows at their real length), and each audio
    placeholder of the prompt expanded to as many tokens as the processor writes for that clip."""

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        processor = self.info.get_hf_processor()
        rate = processor.feature_extractor.sampling_rate
        features, masks, counts = [], [], []
        for clip in hf_data["audio"]:
            # One clip at a time, so its features are what the processor makes for that clip alone.
            out = processor(text=processor.audio_token, audio=clip, sampling_rate=rate)
            features.append(out["input_features"])
            masks.append(out["feature_attention_mask"])
            counts.append(int((out["input_ids"] == processor.audio_token_id).sum()))
        return BatchFeature(
            {"input_features": features, "feature_attention_mask": masks, "audio_num_tokens": torch.tensor(counts)}
        )

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {
            "input_features": MultiModalFieldConfig.batched("audio"),
            "feature_attention_mask": MultiModalFieldConfig.batched("audio"),
            "audio_num_tokens": MultiModalFieldConfig.batched("audio", keep_on_cpu=True),
        }

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        audio_token_id = self.info.get_hf_processor().audio_token_id
        counts = out_mm_kwargs.get_data().get("audio_num_tokens", torch.zeros(0))
        return [
            PromptReplacement(
                modality="audio",
                target=[audio_token_id],
                replacement=lambda item_idx: [audio_token_id] * int(counts[item_idx]),
            )
        ]


def check_servable(config) -> None:
    """Raise saying why the vLLM plugin cannot serve the adapter of this `SteerMoEConfig`, if it cannot."""
    if config.audio_model_id is None or config.text_model_id is None:
        raise ValueError(
            "Serving needs an adapter whose backbones are named by id (audio_model_id and text_model_id): this "
            "one was built from full configs, so its backbone weights exist nowhere."
        )
    if config.lora_rank:
        raise NotImplementedError(
            "This adapter puts LoRA on the LLM (lora_rank > 0), which the vLLM plugin does not serve; serve it "
            "with transformers, or train without LLM LoRA."
        )
    if getattr(config, "frame_compression", None) is not None:
        raise NotImplementedError(
            f"This adapter compresses its audio frames (frame_compression={config.frame_compression!r}), so the "
            "number of audio tokens depends on what is said, while vLLM reserves a prompt's tokens before the "
            "model runs; the vLLM plugin does not serve it. Serve it with transformers (pipeline, CLI), or train "
            "without frame compression."
        )


@MULTIMODAL_REGISTRY.register_processor(
    SteerMoEMultiModalProcessor, info=SteerMoEProcessingInfo, dummy_inputs=SteerMoEDummyInputsBuilder
)
class SteerMoEForVLLM(nn.Module, SupportsMultiModal, SupportsTranscription):
    """A SteerMoE adapter served by vLLM.

    Attributes:
        audio_encoder: the frozen encoder, loaded from `config.audio_model_id` with its transformers
            `from_pretrained` (encoder LoRA from the adapter, when the adapter has one).
        aligner (`SteerMoEAligner`): steering, pooling and projection, fp32, weights from the adapter.
        language_model: vLLM's implementation of `config.text_config.architectures`, weights from
            `config.text_model_id`.

    Transcription (`/v1/audio/transcriptions`) asks the adapter's default instruction ("Transcribe the audio.", or
    naming the request's `language`), or the request's `prompt` as the instruction, as
    `SteerMoEProcessor.apply_transcription_request` does. The whole clip goes to the LLM in one context, in 30 s
    encoder windows, as in transformers.
    """

    supported_languages = LANGUAGE_NAMES

    # The transformers model's own audio path: encoder pass with steering, pooling, final norm and projection.
    _encode_audio = SteerMoEForConditionalGeneration._encode_audio
    _whisper_encoder_pass = SteerMoEForConditionalGeneration._whisper_encoder_pass
    _hooked_encoder_pass = SteerMoEForConditionalGeneration._hooked_encoder_pass
    _steered_layer = SteerMoEForConditionalGeneration._steered_layer

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("audio"):
            # The audio token of the adapter; vLLM asks before any processor is loaded, so it is the config default.
            return "<|audio|>"
        raise ValueError("SteerMoE takes audio only.")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        check_servable(config)
        self.config = config
        self.gradient_checkpointing = False
        with self._mark_tower_model(vllm_config, "audio"):
            self.audio_encoder = SteerMoEForConditionalGeneration._build_audio_encoder(
                config, {"dtype": vllm_config.model_config.dtype}
            )
            if config.encoder_lora_rank:
                targets = config.encoder_lora_target_modules or ENCODER_LORA_TARGETS[config.audio_config.model_type]
                _add_lora(self.audio_encoder, config.encoder_lora_rank, config.encoder_lora_alpha, targets)
            self.aligner = SteerMoEAligner(config).float()  # fp32, as transformers keeps it
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.text_config,
                prefix=maybe_prefix(prefix, "language_model"),
                architectures=config.text_config.architectures,
            )
        self.secondary_weights = [
            DefaultModelLoader.Source(config.text_model_id, config.text_model_revision, prefix="language_model.")
        ]
        self.configure_mm_token_handling(config.text_config.vocab_size, [config.audio_token_id])
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def embed_multimodal(self, **kwargs: object) -> list[torch.Tensor]:
        """One `(audio_tokens, text_hidden_size)` tensor per clip, in prompt order.

        Args:
            input_features: per clip, `(windows, num_mel_bins, frames)` (or `(windows, samples)`), stacked when
                the clips' shapes agree, else a list.
            feature_attention_mask: per clip, `(windows, frames)`.
            audio_num_tokens: `(clips,)`, the placeholders each clip fills.
        """
        features = kwargs.get("input_features")
        if features is None:
            return []
        embed_dtype = self.language_model.model.embed_tokens.weight.dtype
        embeddings = []
        for clip_features, clip_mask, expected in zip(
            features, kwargs["feature_attention_mask"], kwargs["audio_num_tokens"]
        ):
            audio_embeds, token_mask, _ = self._encode_audio(clip_features, clip_mask)
            clip_embeds = audio_embeds[token_mask]
            if clip_embeds.shape[0] != int(expected):
                raise ValueError(f"A clip gave {clip_embeds.shape[0]} audio frames for {int(expected)} placeholders.")
            embeddings.append(clip_embeds.to(embed_dtype))
        return embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors=None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """The adapter's tensors (`aligner.*`, encoder LoRA) and the LLM's (`language_model.*`, from
        `text_model_id`); the encoder's own weights were loaded with the encoder."""
        loaded = AutoWeightsLoader(self).load_weights(weights)
        encoder_weights = {
            f"audio_encoder.{name}" for name, _ in self.audio_encoder.named_parameters() if "lora_" not in name
        }
        return loaded | encoder_weights

    @classmethod
    def get_speech_to_text_config(cls, model_config: ModelConfig, task_type: str) -> SpeechToTextConfig:
        # Long audio is cut into segments no longer than the adapter's limit (the processor's max_segment_seconds,
        # the longest clip it was trained on, else 30 s; vLLM takes whole seconds) exactly as the transformers
        # pipeline cuts it: OWN_SEGMENTATION routes vLLM's splitter to `speech_segments` (see `split_like_the_pipeline`).
        processor = _model_processor(model_config)
        return SpeechToTextConfig(
            sample_rate=processor.feature_extractor.sampling_rate,
            max_audio_clip_s=math.ceil(processor.max_segment_seconds or DEFAULT_SEGMENT_SECONDS),
            min_energy_split_window_size=OWN_SEGMENTATION,
        )

    @classmethod
    def get_generation_prompt(cls, stt_params: SpeechToTextParams) -> PromptType:
        if stt_params.task_type != "transcribe":
            raise ValueError("SteerMoE adapters transcribe; translation is not supported.")
        processor = _model_processor(stt_params.model_config)
        instruction = stt_params.request_prompt
        if not instruction:
            instruction = processor.transcription_instruction(stt_params.language)
        # Tokenised as the processor tokenises it; vLLM then expands the one audio token per clip.
        prompt_ids = processor.tokenizer(processor.build_prompt(instruction))["input_ids"]
        rate = int(stt_params.stt_config.sample_rate)
        return TokensPrompt(prompt_token_ids=prompt_ids, multi_modal_data={"audio": (stt_params.audio, rate)})

    @classmethod
    def get_num_audio_tokens(
        cls, audio_duration_s: float, stt_config: SpeechToTextConfig, model_config: ModelConfig
    ) -> int | None:
        processor = _model_processor(model_config)
        return count_audio_tokens(processor, round(audio_duration_s * processor.feature_extractor.sampling_rate))

    @classmethod
    def post_process_output(cls, text: str) -> str:
        return text.strip()  # as the transformers pipeline returns it


def split_like_the_pipeline(split_audio):
    """Wrap vLLM's `split_audio` (its transcription endpoint's splitter) so that a model whose speech-to-text config
    sets `min_energy_split_window_size=OWN_SEGMENTATION` is cut by `processing_steermoe.speech_segments`, as the
    transformers pipeline, the CLI and the web demo cut it; every other model keeps vLLM's splitter."""

    @functools.wraps(split_audio)
    def split(audio_data, sample_rate, max_clip_duration_s, overlap_duration_s, min_energy_window_size):
        if min_energy_window_size != OWN_SEGMENTATION:
            return split_audio(audio_data, sample_rate, max_clip_duration_s, overlap_duration_s, min_energy_window_size)
        return [audio_data[start:end] for start, end in speech_segments(audio_data, sample_rate, max_clip_duration_s)]

    split.steermoe_segmentation = True
    return split


__all__ = ["SteerMoEForVLLM", "check_servable", "count_audio_tokens", "load_processor", "split_like_the_pipeline"]
