# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""`pipeline("automatic-speech-recognition", model=<SteerMoE repo>, trust_remote_code=True)`.

The saved `config.json` routes the task here (`custom_pipelines`), because the stock ASR pipeline treats any
remote-code model as CTC. Audio is decoded with soundfile and resampled with soxr (no ffmpeg or torchaudio needed).
"""

import logging

import numpy as np
import torch
from transformers.pipelines.base import ChunkPipeline


try:
    from .processing_steermoe import decode_audio_input
except ImportError:
    from processing_steermoe import decode_audio_input


logger = logging.getLogger(__name__)


class SteerMoEASRPipeline(ChunkPipeline):
    """Speech (or audio question answering) to text with a SteerMoE model.

    Inputs: a file path or URL (WAV, FLAC, OGG, MP3), raw file bytes, a numpy array (at the feature extractor's
    rate, 16 kHz, like the stock pipeline), or a dict `{"array" or "raw": samples, "sampling_rate": rate}` at any
    rate; mono or multi-channel.

    Call arguments: `prompt` (an instruction or a question about the audio; transcription by default; `""` makes
    the audio the whole user turn, a spoken question for an instruct LLM to answer),
    `generate_kwargs` (e.g. `{"num_beams": 4}`), `max_new_tokens`, `speech_threshold_db`, `chunk_length_s`,
    `return_timestamps` and the usual `batch_size`. Returns `{"text": generated text}`, with `return_timestamps=True`
    also `"chunks"`: `[{"text": ..., "timestamp": (start, end)}]` in seconds, one per segment.

    Long-form transcription: audio longer than `chunk_length_s` (by default the processor's `max_segment_seconds`,
    the longest clip the adapter was trained on, or 30 s) is cut at pauses into segments no longer than that
    (`processing_steermoe.speech_segments`), which are transcribed (batched with `batch_size`) and joined in order.
    Questions and chat (`prompt` given) keep the whole clip in one context; one that does not fit the LLM's context
    raises an error naming both numbers. A segment that passes the no-speech gate but yields no text is logged as a
    warning, never dropped silently.

    Transcription (no `prompt`) passes each clip through the no-speech gate first (`processing_steermoe.has_speech`,
    at the processor's `speech_threshold_db`, -50 dBFS by default; `speech_threshold_db=None` turns it off): a clip
    without speech energy gives `{"text": ""}` without running the model. Free prompts are not gated. A transcript
    ends at the LLM's end of turn or at `TranscriptLengthCriteria`'s bound (10 tokens per second of audio + 10),
    unless `max_new_tokens` (or `max_length`, `stopping_criteria` in `generate_kwargs`) is given.
    """

    _load_processor = True
    _load_tokenizer = True
    _load_feature_extractor = True
    _load_image_processor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("The SteerMoE ASR pipeline needs the model's SteerMoEProcessor (saved next to it).")
        self.tokenizer = self.processor.tokenizer
        self.feature_extractor = self.processor.feature_extractor
        model_token_id = self.model.config.audio_token_id
        if model_token_id is None:
            self.model.config.audio_token_id = self.processor.audio_token_id
        elif model_token_id != self.processor.audio_token_id:
            raise ValueError(
                f"The processor's audio token id ({self.processor.audio_token_id}) is not the model's "
                f"({model_token_id}): the processor was built for another LLM. Save the processor made with "
                "SteerMoEProcessor.from_config(model.config) next to the model."
            )

    def _sanitize_parameters(
        self, prompt=None, generate_kwargs=None, max_new_tokens=None, speech_threshold_db="default",
        chunk_length_s=None, return_timestamps=None, **kwargs,
    ):  # fmt: skip
        if kwargs:
            raise TypeError(f"Unsupported arguments for the SteerMoE ASR pipeline: {sorted(kwargs)}")
        preprocess_params = {} if prompt is None else {"prompt": prompt}
        if speech_threshold_db != "default":
            preprocess_params["speech_threshold_db"] = speech_threshold_db
        if chunk_length_s is not None:
            if chunk_length_s <= 0:
                raise ValueError(f"chunk_length_s must be > 0, got {chunk_length_s}")
            preprocess_params["chunk_length_s"] = chunk_length_s
        if return_timestamps not in (None, False, True):
            raise ValueError(f"return_timestamps takes True or False (segment times), got {return_timestamps!r}")
        forward_params = {"generate_kwargs": dict(generate_kwargs or {})}
        if max_new_tokens is not None:
            forward_params["generate_kwargs"]["max_new_tokens"] = max_new_tokens
        return preprocess_params, forward_params, {"return_timestamps": bool(return_timestamps)}

    def preprocess(self, inputs, prompt: str | None = None, speech_threshold_db="default", chunk_length_s=None):
        """One item per segment: the whole clip for questions and chat, pause-cut segments for transcription."""
        audio, sampling_rate = self._decode(inputs)
        transcribe = prompt is None
        prompt = self.processor.build_prompt(self.processor.transcription_instruction() if transcribe else prompt)
        segments = [(0, audio.shape[0])]
        if transcribe:
            segments = self.processor.speech_segments(audio, sampling_rate, chunk_length_s)
        for index, (start, end) in enumerate(segments):
            piece = audio[start:end]
            speech = not transcribe or self.processor.has_speech(piece, sampling_rate, speech_threshold_db)
            yield {
                "audio": piece, "sampling_rate": sampling_rate, "prompt": prompt, "speech": speech,
                "transcribe": transcribe, "start": start / sampling_rate, "end": end / sampling_rate,
                "is_last": index == len(segments) - 1,
            }  # fmt: skip

    def _decode(self, inputs) -> tuple[np.ndarray, int]:
        return decode_audio_input(inputs, default_rate=self.feature_extractor.sampling_rate)

    def _forward(self, model_inputs, generate_kwargs=None):
        batched = isinstance(model_inputs["prompt"], list)
        audio, rates, prompts, speech, transcribe = (
            (model_inputs[key] if batched else [model_inputs[key]])
            for key in ("audio", "sampling_rate", "prompt", "speech", "transcribe")
        )
        speech = [bool(flag) for flag in speech]
        passed = {key: model_inputs[key] for key in ("start", "end", "is_last")}
        pad_id = self.tokenizer.pad_token_id
        tokens = torch.full((len(speech), 1), pad_id, dtype=torch.long)
        if any(speech):
            keep = [index for index, flag in enumerate(speech) if flag]
            inputs = self.processor(
                text=[prompts[i] for i in keep], audio=[audio[i] for i in keep], sampling_rate=[rates[i] for i in keep]
            ).to(self.model.device)
            generate_kwargs = dict(generate_kwargs or {})
            if all(transcribe) and not {"max_new_tokens", "max_length", "stopping_criteria"} & set(generate_kwargs):
                generate_kwargs["stopping_criteria"] = [self.processor.transcript_length_criteria(inputs["input_ids"])]
            generated = self.model.generate(**inputs, tokenizer=self.tokenizer, **generate_kwargs)
            new_tokens = generated[:, inputs["input_ids"].shape[1] :].cpu()
            tokens = torch.full((len(speech), max(new_tokens.shape[1], 1)), pad_id, dtype=torch.long)
            tokens[keep, : new_tokens.shape[1]] = new_tokens
        return {"tokens": tokens, "speech": torch.tensor(speech), **passed}

    def postprocess(self, model_outputs, return_timestamps: bool = False):
        chunks = []
        for output in model_outputs:
            if not bool(output["speech"].reshape(-1)[0]):
                continue
            text = self.processor.decode(output["tokens"].reshape(-1), skip_special_tokens=True).strip()
            start, end = (round(float(output[key]), 3) for key in ("start", "end"))
            if not text:
                logger.warning("No text for the speech between %.2f s and %.2f s of the audio.", start, end)
                continue
            chunks.append({"text": text, "timestamp": (start, end)})
        result = {"text": " ".join(chunk["text"] for chunk in chunks)}
        if return_timestamps:
            result["chunks"] = chunks
        return result


__all__ = ["SteerMoEASRPipeline"]
