# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""SteerMoE on ONNX Runtime: the graphs written by `steermoe_onnx.export_onnx`, run by `onnxruntime` sessions behind
the same `generate` as the PyTorch model (transformers' generation loop, so the generation config, stop strings,
beam search, streamers and the ASR pipeline behave as they do with PyTorch)."""

import copy
import json
import logging
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import pipeline as transformers_pipeline
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import cached_file

from configuration_steermoe import SteerMoEConfig, get_num_audio_tokens  # the repo's root modules (py_modules)
from modeling_steermoe import _right_to_left_padding, merge_audio_embeddings
from pipeline_steermoe import SteerMoEASRPipeline
from processing_steermoe import SteerMoEProcessor

from .export import EXPORT_SUBFOLDER, GRAPHS, LLM_GENERATION_CONFIG_NAME, MANIFEST_NAME, PRECISIONS


logger = logging.getLogger(__name__)


def open_session(path, session_options=None, providers=None):
    """An ONNX Runtime session on `path` (the CPU execution provider unless `providers` says otherwise)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("The ONNX backend needs onnxruntime: pip install 'steermoe[onnx]'") from error
    return onnxruntime.InferenceSession(
        str(path), sess_options=session_options, providers=providers or ["CPUExecutionProvider"]
    )


class _CpuOnnxModel:
    """What the ONNX models report to transformers: no weights, CPU float32 tensors in and out."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32


class SteerMoEOnnxLanguageModel(_CpuOnnxModel, PreTrainedModel, GenerationMixin):
    """The frozen LLM on ONNX Runtime (`embed_tokens.onnx` and `decoder_model.onnx` with its KV cache), a causal LM
    for transformers' generation loop, with the LLM's own config and generation config."""

    config_class = PreTrainedConfig
    base_model_prefix = ""
    main_input_name = "input_ids"

    def __init__(self, config, embed_session, decoder_session):
        super().__init__(config)
        self.embed_session, self.decoder_session = embed_session, decoder_session
        self._kv_shape = (config.num_key_value_heads, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        self._decoder_outputs = [output.name for output in decoder_session.get_outputs()]
        self.post_init()

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The input embeddings of `input_ids` `(batch, length)`: `(batch, length, hidden_size)`."""
        return torch.from_numpy(self.embed_session.run(None, {"input_ids": _array(input_ids, np.int64)})[0])

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: DynamicCache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""One step of the LLM.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, length)`): the new tokens, unless `inputs_embeds` are given.
            attention_mask (`torch.Tensor` of shape `(batch, past + length)`, *optional*): padding mask.
            position_ids (`torch.LongTensor` of shape `(batch, length)`, *optional*): defaults to the positions after
                the cache.
            cache (`DynamicCache`, *optional*): the KV cache, updated in place (a new one when not given).
            inputs_embeds (`torch.FloatTensor` of shape `(batch, length, hidden_size)`, *optional*).
            kwargs: other generation-time arguments, ignored.
        Returns:
            [`CausalLMOutputWithPast`] with `logits` `(batch, 1, vocab_size)` of the last position and the `cache`.
        """
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, length = inputs_embeds.shape[:2]
        cache = cache if cache is not None else DynamicCache(config=self.config)
        past = cache.get_seq_length()
        if attention_mask is None:
            attention_mask = torch.ones(batch, past + length, dtype=torch.long)
        if position_ids is None:
            position_ids = torch.arange(past, past + length).expand(batch, -1)
        feed = {
            "inputs_embeds": _array(inputs_embeds, np.float32),
            "attention_mask": _array(attention_mask, np.int64),
            "position_ids": _array(position_ids, np.int64),
        }
        empty = np.zeros((batch, *self._kv_shape[:1], 0, self._kv_shape[1]), dtype=np.float32)
        for index, layer in enumerate(cache.layers):
            feed[f"past_key_values.{index}.key"] = _array(layer.keys, np.float32) if past else empty
            feed[f"past_key_values.{index}.value"] = _array(layer.values, np.float32) if past else empty
        outputs = dict(zip(self._decoder_outputs, self.decoder_session.run(None, feed)))
        for index, layer in enumerate(cache.layers):
            # The graph returns the whole updated cache: it replaces the layer's tensors (no second concatenation).
            keys, values = (torch.from_numpy(outputs[f"present.{index}.{kind}"]) for kind in ("key", "value"))
            if not layer.is_initialized:
                layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
        return CausalLMOutputWithPast(logits=torch.from_numpy(outputs["logits"]), cache=cache)


class SteerMoEOnnxForConditionalGeneration(_CpuOnnxModel, PreTrainedModel, GenerationMixin):
    """A SteerMoE export run by ONNX Runtime, called as [`SteerMoEForConditionalGeneration`] is.

    `from_pretrained(adapter)` opens `<adapter>/onnx/` (or an export folder itself; a Hub id works too), at
    `precision="fp32"`, `"int8"` or per graph. `generate(**processor_outputs)` returns the prompt then the new tokens, with the
    saved generation config applied; `get_audio_features` gives the audio embeddings; `forward` returns the logits
    of the last position. The LLM is `language_model`, a [`SteerMoEOnnxLanguageModel`]. No PyTorch weights are
    loaded: torch only carries tensors between the sessions and transformers' generation loop.
    """

    config_class = SteerMoEConfig
    base_model_prefix = ""
    main_input_name = "input_ids"

    def __init__(self, config, audio_session, language_model, manifest: dict, source: tuple | None = None):
        super().__init__(config)
        self.audio_session = audio_session
        self.language_model = language_model
        self.manifest = manifest
        self._source = source
        self._max_frames = config.audio_config.max_source_positions * 2  # Whisper's conv stem halves the frame rate
        self.post_init()

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, precision: str = "fp32", session_options=None, providers=None, **hub_kwargs
    ):
        """Open the export in `pretrained_model_name_or_path` (its `onnx/` subfolder, or the folder itself).

        Args:
            precision (`str` or `dict`, defaults to `"fp32"`): `"fp32"`; `"int8"`: every graph the export has an
                int8 copy of at int8, the others fp32; or per graph, e.g. `{"audio_encoder": "int8"}` (graphs not
                named run fp32). `model.precisions` says what runs.
            session_options (`onnxruntime.SessionOptions`, *optional*): e.g. `intra_op_num_threads`.
            providers (`list`, *optional*): ONNX Runtime execution providers; `["CPUExecutionProvider"]` by default.
            hub_kwargs: `revision`, `token`, `cache_dir`, `local_files_only` for a Hub id.
        """
        source = str(pretrained_model_name_or_path)
        subfolder, manifest_file = _find_export(source, hub_kwargs)
        manifest = json.loads(Path(manifest_file).read_text())
        precisions = _graph_precisions(precision, manifest, source)
        sessions = {}
        for name in GRAPHS:
            file = manifest["graphs"][name]["files"][precisions[name]]
            path = cached_file(source, file, subfolder=subfolder, **hub_kwargs)
            cached_file(  # the weights file sits next to its graph (fetched too for a Hub id)
                source, file + ".data", subfolder=subfolder, _raise_exceptions_for_missing_entries=False, **hub_kwargs
            )
            sessions[name] = open_session(path, session_options, providers)
        config = SteerMoEConfig.from_pretrained(source, subfolder=subfolder, **hub_kwargs)
        language_model = SteerMoEOnnxLanguageModel(config.text_config, sessions["embed_tokens"], sessions["decoder_model"])
        language_model.generation_config = GenerationConfig.from_pretrained(
            source, LLM_GENERATION_CONFIG_NAME, subfolder=subfolder, **hub_kwargs
        )
        model = cls(config, sessions["audio_encoder"], language_model, manifest, source=(source, subfolder, hub_kwargs))
        model.precisions = precisions
        model.generation_config = GenerationConfig.from_pretrained(source, subfolder=subfolder, **hub_kwargs)
        return model

    def get_audio_features(
        self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Audio embeddings for the LLM, `(windows, tokens, text_hidden_size)`, zero past each window's real length,
        from log-mel `input_features` `(windows, num_mel_bins, frames)` (each window at most 30 s)."""
        if input_features.shape[-1] > self._max_frames:
            raise ValueError(
                f"An audio window has {input_features.shape[-1]} feature frames but the encoder takes at most "
                f"{self._max_frames} (30 s); split longer audio into windows with the SteerMoEProcessor."
            )
        if feature_attention_mask is None:
            feature_attention_mask = torch.ones(input_features.shape[:1] + input_features.shape[-1:], dtype=torch.long)
        feed = {
            "input_features": _array(input_features, np.float32),
            "feature_attention_mask": _array(feature_attention_mask, np.int64),
        }
        return torch.from_numpy(self.audio_session.run(None, feed)[0])

    def get_placeholder_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask `(batch, seq_len)` of the audio placeholder tokens."""
        return input_ids == self.config.audio_token_id

    def _merge_audio_into_embeddings(self, input_ids, input_features, feature_attention_mask) -> torch.Tensor:
        """Text embeddings with the audio placeholders replaced, in order, by the audio frames of all windows."""
        placeholder_mask = self.get_placeholder_mask(input_ids)
        audio_embeds = self.get_audio_features(input_features, feature_attention_mask)
        lengths = (
            feature_attention_mask.sum(-1).tolist()
            if feature_attention_mask is not None
            else [input_features.shape[-1]] * input_features.shape[0]
        )
        counts = torch.tensor(
            [
                get_num_audio_tokens(int(n), self.config.audio_frames_per_token, self.config.audio_conv_layers)
                for n in lengths
            ]
        )
        return merge_audio_embeddings(
            input_ids, placeholder_mask, audio_embeds[torch.arange(audio_embeds.shape[1]) < counts[:, None]],
            self.language_model.embed_tokens, self.config.audio_token_id,
            lambda _: "Build inputs with the processor saved with this export.",
        )  # fmt: skip

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""The LLM on the prompt with its audio placeholders filled (the plain LLM without `input_features`).

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`): prompt ids with the audio placeholders.
            attention_mask (`torch.Tensor` of shape `(batch, seq_len)`, *optional*): text padding mask.
            input_features, feature_attention_mask (*optional*): the audio windows, as the processor writes them.
            kwargs: passed to [`SteerMoEOnnxLanguageModel.forward`] (`position_ids`, `cache`).
        Returns:
            [`CausalLMOutputWithPast`] with `logits` `(batch, 1, vocab_size)` of the last position and the `cache`.
        """
        if input_features is not None and inputs_embeds is None:
            inputs_embeds = self._merge_audio_into_embeddings(input_ids, input_features, feature_attention_mask)
            input_ids = None
        return self.language_model(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        **kwargs,
    ) -> torch.LongTensor:
        """As `SteerMoEForConditionalGeneration.generate`: the saved generation config (stop strings included)
        applies, keyword arguments override it, right padding is moved to the left, the LLM generates with it, and
        the result is the prompt followed by the new tokens, `(batch, prompt_len + new_tokens)`."""
        generation_config = copy.deepcopy(generation_config or self.generation_config)
        kwargs = generation_config.update(**kwargs)
        if generation_config.cache_implementation not in (None, "dynamic"):
            raise ValueError(
                f"The ONNX backend keeps its KV cache in a dynamic cache; cache_implementation="
                f"{generation_config.cache_implementation!r} is for the PyTorch backend."
            )
        if generation_config.stop_strings and kwargs.get("tokenizer") is None:
            kwargs["tokenizer"] = self._stop_strings_tokenizer()
        if input_ids is None:
            raise ValueError("generate needs input_ids: the prompt, with audio placeholders where the audio goes.")
        if attention_mask is not None:
            input_ids, attention_mask = _right_to_left_padding(input_ids, attention_mask)
        if input_features is None:
            return self.language_model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config, **kwargs
            )
        inputs_embeds = self._merge_audio_into_embeddings(input_ids, input_features, feature_attention_mask)
        # As in PyTorch: the LLM sees the prompt ids (placeholders as padding) so that its output, streamers and
        # logits processors hold the prompt; the placeholders are put back in the result.
        pad_id = generation_config.pad_token_id if generation_config.pad_token_id is not None else 0
        output = self.language_model.generate(
            input_ids=input_ids.masked_fill(self.get_placeholder_mask(input_ids), pad_id),
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            generation_config=generation_config,
            **kwargs,
        )
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        sequences[:, : input_ids.shape[1]] = input_ids
        return output

    def _stop_strings_tokenizer(self):
        """The tokenizer saved with the export, loaded once, for generation configs with `stop_strings`."""
        if getattr(self, "_cached_stop_strings_tokenizer", None) is None:
            if self._source is None:
                raise ValueError("Stop strings need a tokenizer: pass tokenizer=processor.tokenizer to generate.")
            source, subfolder, hub_kwargs = self._source
            self._cached_stop_strings_tokenizer = AutoTokenizer.from_pretrained(source, subfolder=subfolder, **hub_kwargs)
        return self._cached_stop_strings_tokenizer


def onnx_pipeline(model, precision: str = "fp32", session_options=None, **pipeline_kwargs) -> SteerMoEASRPipeline:
    """`pipeline("automatic-speech-recognition", ...)` on ONNX Runtime: the SteerMoE ASR pipeline (same inputs,
    batching, long audio, no-speech gate and generation config) over the export in `model` (an adapter folder or Hub
    id with an `onnx/` export, or an export folder), at `precision` "fp32", "int8" or per graph (see
    `SteerMoEOnnxForConditionalGeneration.from_pretrained`)."""
    onnx_model = SteerMoEOnnxForConditionalGeneration.from_pretrained(
        model, precision=precision, session_options=session_options
    )
    source, subfolder, hub_kwargs = onnx_model._source
    # The installed processor beside the installed pipeline class: transformers reads remote code from the repository's
    # root, not the export's subfolder, so an export inside an older adapter would pair this pipeline with its older
    # processor.
    processor = SteerMoEProcessor.from_pretrained(source, subfolder=subfolder, trust_remote_code=True, **hub_kwargs)
    return transformers_pipeline(
        "automatic-speech-recognition",
        model=onnx_model,
        processor=processor,
        tokenizer=processor.tokenizer,
        feature_extractor=processor.feature_extractor,
        pipeline_class=SteerMoEASRPipeline,
        **pipeline_kwargs,
    )


def _graph_precisions(precision, manifest: dict, source: str) -> dict[str, str]:
    """`{graph: "fp32" | "int8"}` for each graph of the export, from a `precision` name or a per-graph dict."""
    has = {name: set(manifest["graphs"][name]["files"]) for name in GRAPHS}
    if isinstance(precision, str):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} or a dict per graph, got {precision!r}.")
        chosen = {name: precision if precision in has[name] else "fp32" for name in GRAPHS}
        if precision != "fp32" and set(chosen.values()) == {"fp32"}:
            raise ValueError(
                f"The ONNX export in {source} has no {precision} graphs: re-export with "
                f"`python -m steermoe_onnx export <adapter> --int8`."
            )
    elif isinstance(precision, dict):
        unknown = sorted(set(precision) - set(GRAPHS))
        bad = {name: value for name, value in precision.items() if value not in PRECISIONS}
        if unknown or bad:
            raise ValueError(f"precision per graph takes graphs {GRAPHS} and values {PRECISIONS}; got {precision!r}.")
        chosen = {name: precision.get(name, "fp32") for name in GRAPHS}
        missing = [name for name, value in chosen.items() if value not in has[name]]
        if missing:
            raise ValueError(f"The ONNX export in {source} has no {precision} copy of {missing}.")
    else:
        raise TypeError(f"precision must be a str or a dict, got {type(precision).__name__}.")
    if chosen["decoder_model"] == "int8" and manifest.get("format_version", 1) < 2:
        logger.warning(
            "%s: this export's int8 LLM is ONNX Runtime's dynamic quantization, which turned a trained adapter's "
            "transcripts into loops; re-export with this version (weight-only int8 for the LLM).", source
        )
    return chosen


def _array(tensor: torch.Tensor, dtype) -> np.ndarray:
    """A contiguous numpy view (or copy, when the dtype or layout differs) of a CPU tensor."""
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=dtype)


def _find_export(source: str, hub_kwargs: dict) -> tuple[str, str]:
    """`(subfolder, manifest path)` of the export in `source`: its `onnx/` subfolder, or the folder itself."""
    for subfolder in (EXPORT_SUBFOLDER, ""):
        try:
            manifest = cached_file(
                source, MANIFEST_NAME, subfolder=subfolder, _raise_exceptions_for_missing_entries=False, **hub_kwargs
            )
        except (OSError, ValueError):
            manifest = None
        if manifest is not None:
            return subfolder, manifest
    raise FileNotFoundError(
        f"No SteerMoE ONNX export ({MANIFEST_NAME}) in {source} or its {EXPORT_SUBFOLDER}/ subfolder: export it "
        f"first with `python -m steermoe_onnx export {source}`."
    )


__all__ = ["SteerMoEOnnxForConditionalGeneration", "SteerMoEOnnxLanguageModel", "onnx_pipeline"]
