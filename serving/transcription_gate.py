# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""ASGI middleware in front of vLLM's `/v1/audio/transcriptions` (added with vLLM's `--middleware`; `python -m
serving` adds it).

An upload is decoded once with the project's decoder (`processing_steermoe.load_audio`), so a file that is not
audio, is empty, cut short or too long gets a 400 naming the problem before vLLM sees it. A transcription request
without a `prompt` then goes through the project's no-speech gate (`has_speech`, at the adapter's
`speech_threshold_db`): a clip without speech gets an empty transcript without running the model, as the
transformers pipeline returns `{"text": ""}`. A clip at another rate or with several channels reaches vLLM as mono
16 kHz float WAV made as the `SteerMoEProcessor` makes it (channel mean, soxr), so the server sees the same samples
as transformers (vLLM would resample with FFmpeg's resampler); a mono 16 kHz upload passes through as sent. A
transcription request that sets no `max_completion_tokens` gets the transformers pipeline's transcript length bound
(`SteerMoEProcessor.transcript_token_bound` for the clip), so a model that does not end its turn stops where the
pipeline stops.
"""

import functools
import io
import math
import secrets
import time
from http import HTTPStatus

import soundfile
import soxr
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from transformers import GenerationConfig
from vllm import envs
from vllm.entrypoints.generate.base.protocol import DeltaMessage
from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse
from vllm.entrypoints.speech_to_text.transcription.protocol import (
    TranscriptionResponse,
    TranscriptionResponseStreamChoice,
    TranscriptionStreamResponse,
    TranscriptionUsageAudio,
)

from processing_steermoe import _to_mono_float32, load_audio
from serving.vllm_steermoe import count_audio_tokens, load_processor

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
FORM_OVERHEAD_BYTES = 1 << 20  # room for the form's other fields and the multipart framing
GATED_FORMATS = ("json", "text")  # vLLM answers verbose_json / diarized_json itself (unsupported for SteerMoE)


def _error(status: int, message: str, param: str | None = "file") -> JSONResponse:
    """An error in vLLM's OpenAI-style shape."""
    kind = "BadRequestError" if status == 400 else HTTPStatus(status).phrase
    body = ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=status))
    return JSONResponse(body.model_dump(), status_code=status)


def _empty_transcription(form, model: str, seconds: float) -> Response:
    """The answer for a clip without speech, in the shape vLLM gives a transcription (JSON, or a stream)."""
    if str(form.get("stream", "false")).lower() != "true":
        usage = TranscriptionUsageAudio(seconds=math.ceil(seconds))
        return JSONResponse(TranscriptionResponse(text="", usage=usage).model_dump())
    choice = TranscriptionResponseStreamChoice(delta=DeltaMessage(content=""), finish_reason="stop")
    chunk = TranscriptionStreamResponse(
        id=f"transcribe-{secrets.token_hex(8)}", object="transcription.chunk", created=int(time.time()), model=model,
        choices=[choice],
    )
    events = [f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n", "data: [DONE]\n\n"]
    return StreamingResponse(iter(events), media_type="text/event-stream")


def _multipart(form, samples, sampling_rate: int, extra: dict | None = None) -> tuple[bytes, str]:
    """The form again, its file replaced by `samples` as a float WAV and the `extra` fields added; returns the body
    and its content type."""
    boundary = secrets.token_hex(16)
    wav = io.BytesIO()
    soundfile.write(wav, samples, sampling_rate, format="WAV", subtype="FLOAT")
    parts = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            header = f'Content-Disposition: form-data; name="{name}"; filename="audio.wav"\r\nContent-Type: audio/wav'
            content = wav.getvalue()
        else:
            header = f'Content-Disposition: form-data; name="{name}"'
            content = str(value).encode()
        parts.append(f"--{boundary}\r\n{header}\r\n\r\n".encode() + content + b"\r\n")
    for name, value in (extra or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class TranscriptionGate:
    """Decodes, checks and gates `/v1/audio/transcriptions` uploads before vLLM handles them (see the module
    docstring); every other route passes through untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != TRANSCRIPTIONS_PATH:
            await self.app(scope, receive, send)
            return
        limit_mb = envs.VLLM_MAX_AUDIO_CLIP_FILESIZE_MB
        body, complete = await _read_body(receive, int(limit_mb * (1 << 20)) + FORM_OVERHEAD_BYTES)
        if not complete:
            response = _error(413, f"The upload is larger than the server's {limit_mb} MB limit.")
        else:
            try:
                async with Request(scope, _replay(body, _no_more_messages)).form() as form:
                    response, body, content_type = await self._handle(scope["app"].state, form, body)
            except HTTPException as error:  # a body that is not a well-formed form
                response = _error(error.status_code, str(error.detail), param=None)
        if response is not None:
            await response(scope, receive, send)
            return
        if content_type is not None:
            headers = [(key, value) for key, value in scope["headers"] if key not in (b"content-type", b"content-length")]
            headers += [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
            scope = {**scope, "headers": headers}
        await self.app(scope, _replay(body, receive), send)

    async def _handle(self, state, form, body: bytes) -> tuple[Response | None, bytes, str | None]:
        """`(response, body, content_type)`: a response to send now, or the body for vLLM (with its new content type
        when it was rewritten)."""
        served = state.openai_serving_models
        upload, model = form.get("file"), form.get("model") or served.model_name()
        if not isinstance(upload, UploadFile) or not served.is_base_model(model):
            return None, body, None  # vLLM answers a missing file or an unknown model itself
        name = upload.filename or "the uploaded file"
        data = await upload.read()
        limit_mb = envs.VLLM_MAX_AUDIO_CLIP_FILESIZE_MB
        if len(data) > limit_mb * (1 << 20):
            return _error(413, f"{name} is larger than the server's {limit_mb} MB limit."), body, None
        try:
            seconds, limit_s = _duration(data), envs.VLLM_MAX_AUDIO_DECODE_DURATION_S
            if seconds is not None and seconds > limit_s:
                raise ValueError(f"{seconds:.0f} s of audio, more than the server's limit of {limit_s} s.")
            samples, rate = load_audio(data)
        except ValueError as error:
            reason = str(error).split(": ", 1)[-1] if str(error).startswith("<") else str(error)
            return _error(400, f"{name}: {reason}"), body, None
        processor = load_processor(state.vllm_config.model_config.model, state.vllm_config.model_config.revision)
        gated = not form.get("prompt") and form.get("response_format", "json") in GATED_FORMATS
        if gated and not processor.has_speech(samples, rate):
            return _empty_transcription(form, model, samples.shape[0] / rate), body, None
        target_rate = processor.feature_extractor.sampling_rate
        clip = _to_mono_float32(samples)
        if rate != target_rate:
            clip = soxr.resample(clip, int(rate), target_rate).astype("float32")
        extra = {}
        if not form.get("prompt") and not form.get("max_completion_tokens"):
            bound = processor.transcript_token_bound(count_audio_tokens(processor, clip.shape[0]))
            saved = _saved_max_new_tokens(state.vllm_config.model_config.model, state.vllm_config.model_config.revision)
            extra["max_completion_tokens"] = bound if saved is None else min(bound, saved)
        if rate == target_rate and samples.ndim == 1 and not extra:
            return None, body, None  # vLLM decodes it with the same libsndfile into the same samples
        return None, *_multipart(form, clip, target_rate, extra)


@functools.cache
def _saved_max_new_tokens(model: str, revision: str | None) -> int | None:
    """The adapter's saved `max_new_tokens` (its generation config), which also caps the pipeline's transcripts."""
    try:
        return GenerationConfig.from_pretrained(model, revision=revision).max_new_tokens
    except OSError:
        return None


def _duration(data: bytes) -> float | None:
    """Seconds of audio the file announces, read from its header without decoding; None when unreadable."""
    try:
        info = soundfile.info(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None
    return info.frames / info.samplerate if 0 < info.frames < 2**62 else None


async def _read_body(receive, limit: int) -> tuple[bytes, bool]:
    """The request body, and whether it fits in `limit` bytes (the rest of a larger one is read and dropped, so
    the client gets the error response instead of a reset connection)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks), size <= limit


def _replay(body: bytes, receive):
    """An ASGI `receive` that returns the already read `body` once, then the connection's own messages (so a
    client disconnecting still cancels its request)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _no_more_messages():
    return {"type": "http.disconnect"}


__all__ = ["TranscriptionGate"]
