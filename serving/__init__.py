# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Serving SteerMoE adapters with vLLM (OpenAI-compatible transcription and audio chat).

`register` is the `vllm.general_plugins` entry point of the steermoe package: vLLM calls it in each of its
processes. `python -m serving ADAPTER [vLLM arguments]` starts vLLM's own OpenAI-compatible server on an adapter
(see `serving/__main__.py`).
"""


def register() -> None:
    """Make vLLM and transformers know SteerMoE adapters (idempotent, as vLLM may call it several times).

    vLLM: the `SteerMoEForConditionalGeneration` architecture of a saved adapter's `config.json` maps to
    `serving.vllm_steermoe.SteerMoEForVLLM`. transformers: the `steermoe` config and processor classes are
    registered with the Auto classes, so adapters load without `--trust-remote-code`.
    """
    from transformers import AutoConfig, AutoProcessor
    from vllm import ModelRegistry

    from configuration_steermoe import SteerMoEConfig
    from processing_steermoe import SteerMoEProcessor

    if "SteerMoEForConditionalGeneration" not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model("SteerMoEForConditionalGeneration", "serving.vllm_steermoe:SteerMoEForVLLM")
    AutoConfig.register(SteerMoEConfig.model_type, SteerMoEConfig, exist_ok=True)
    AutoProcessor.register(SteerMoEConfig, SteerMoEProcessor, exist_ok=True)
    _cut_long_transcriptions_as_the_pipeline()


def _cut_long_transcriptions_as_the_pipeline() -> None:
    """Route vLLM's transcription splitter to SteerMoE's segmentation for SteerMoE adapters (`split_like_the_pipeline`);
    vLLM versions without that splitter keep their own behaviour, with a warning."""
    import logging

    try:
        from vllm.entrypoints.speech_to_text.base import serving as transcription_serving
    except ImportError:
        logging.getLogger(__name__).warning(
            "This vLLM has no speech_to_text.base.serving.split_audio: long transcriptions are cut by vLLM's rules."
        )
        return
    from serving.vllm_steermoe import split_like_the_pipeline

    if not getattr(transcription_serving.split_audio, "steermoe_segmentation", False):
        transcription_serving.split_audio = split_like_the_pipeline(transcription_serving.split_audio)
