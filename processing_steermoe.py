# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""SteerMoE processor: the audio encoder's feature extractor + the LLM's tokenizer with an audio placeholder token."""

import io
import math
import os
import re
import urllib.request

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin, StoppingCriteria
from transformers.processing_utils import ProcessingKwargs


try:
    from .configuration_steermoe import WHISPER_CONV_LAYERS, add_audio_token, get_num_audio_tokens
except ImportError:
    from configuration_steermoe import WHISPER_CONV_LAYERS, add_audio_token, get_num_audio_tokens

try:
    import soxr
except ImportError:
    soxr = None

try:
    import soundfile
except ImportError:
    soundfile = None


DEFAULT_TRANSCRIPTION_PROMPT = "Transcribe the audio."
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "fr": "French", "de": "German", "es": "Spanish", "ja": "Japanese"}
WINDOW_SECONDS = 30
MIN_SAMPLING_RATE = 1_000
MAX_SAMPLING_RATE = 768_000
MAX_CHANNELS = 64


def load_audio(source) -> tuple[np.ndarray, int]:
    """Decode an audio file (path, bytes or file object; WAV, FLAC, OGG, MP3 via libsndfile) to float32.

    Returns `(samples, sampling_rate)` with samples `(num_samples,)` for mono or `(num_samples, channels)`.
    Raises `FileNotFoundError` for a missing path and `ValueError` naming the file for one that cannot be decoded,
    holds no samples or is cut short (fewer samples than its header announces).
    """
    if soundfile is None:
        raise ImportError("Decoding audio files needs the soundfile package: pip install soundfile")
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    name = source if isinstance(source, str) else f"<{type(source).__name__} audio input>"
    if isinstance(source, str) and not os.path.exists(source):
        raise FileNotFoundError(f"Audio file not found: {source}")
    if isinstance(source, str) and os.path.isdir(source):
        raise ValueError(f"{source} is a folder, not an audio file.")
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ValueError(f"{name}: empty input (0 bytes), not an audio file.")
        source = io.BytesIO(source)
    try:
        handle = soundfile.SoundFile(source)
    except soundfile.LibsndfileError as error:
        reason = str(error).split(": ", 1)[-1] if isinstance(source, str) else str(error).split(">: ")[-1]
        raise ValueError(f"{name}: not a decodable audio file (WAV, FLAC, OGG or MP3): {reason}") from error
    with handle:
        announced, sampling_rate = handle.frames, handle.samplerate
        header_data = re.search(r"^data\s*:\s*(\d+) \(should be (\d+)\)", handle.extra_info, re.MULTILINE)
        try:
            samples = handle.read(dtype="float32", always_2d=False)
        except RuntimeError as error:  # libsndfile errors raised while decoding the data
            raise ValueError(f"{name}: the audio data is corrupt or truncated: {error}") from error
    if samples.shape[0] == 0:
        raise ValueError(f"{name}: the file holds no audio samples.")
    if header_data is not None and int(header_data.group(2)) < int(header_data.group(1)) < 0xFFFFFF00:
        raise ValueError(
            f"{name}: truncated audio: the header announces {header_data.group(1)} bytes of samples but only "
            f"{header_data.group(2)} are present."
        )
    # Compressed formats announce an estimate (MP3 frame padding); only a clear shortfall is a truncation.
    if 0 < announced < 2**62 and samples.shape[0] < 0.98 * announced - 2048:
        raise ValueError(
            f"{name}: truncated audio: the header announces {announced} samples but only {samples.shape[0]} are present."
        )
    return samples, sampling_rate


def decode_audio_input(source, sampling_rate: int | None = None, default_rate: int = 16000) -> tuple[np.ndarray, int]:
    """Any audio input users pass, as `(samples, sampling_rate)`: a file path or `http(s)://` URL, file bytes, a
    `{"array" or "raw": samples, "sampling_rate": rate}` dict, or an array / tensor at `sampling_rate` (or
    `default_rate`, the feature extractor's, when not given)."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, str):
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source) as response:
                data = response.read()
            try:
                return load_audio(data)
            except ValueError as error:
                raise ValueError(f"{source}: {str(error).split(': ', 1)[-1]}") from error
        return load_audio(source)
    if isinstance(source, (bytes, bytearray)):
        return load_audio(bytes(source))
    if isinstance(source, dict):
        samples = source.get("array", source.get("raw"))
        if samples is None or "sampling_rate" not in source:
            raise ValueError('A dict audio input needs "array" (or "raw") and "sampling_rate".')
        return np.asarray(samples), source["sampling_rate"]
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, (np.ndarray, list, tuple)):
        return np.asarray(source), sampling_rate or default_rate
    raise TypeError(f"Unsupported audio input of type {type(source).__name__}.")


def _to_mono_float32(audio) -> np.ndarray:
    """One clip as float32 mono `(num_samples,)`: integer PCM is scaled to [-1, 1), channels are averaged."""
    audio = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if audio.dtype.kind not in "iuf":
        raise ValueError(f"Audio must be an int or float array, got dtype {audio.dtype}.")
    if audio.dtype.kind == "i":
        audio = audio.astype(np.float32) / np.float32(np.iinfo(audio.dtype).max + 1)
    elif audio.dtype.kind == "u":
        info = np.iinfo(audio.dtype)
        audio = (audio.astype(np.float32) - (info.max + 1) / 2) / np.float32((info.max + 1) / 2)
    audio = audio.astype(np.float32, copy=False)
    if audio.ndim == 2:
        channel_axis = int(np.argmin(audio.shape))
        if audio.shape[channel_axis] > MAX_CHANNELS:
            raise ValueError(f"Audio of shape {audio.shape} is not one clip: expected (samples,) or (channels, samples).")
        audio = audio.mean(axis=channel_axis)
    elif audio.ndim != 1:
        raise ValueError(f"One audio clip must be 1-D (mono) or 2-D (multi-channel), got shape {audio.shape}.")
    if audio.size == 0:
        raise ValueError("Audio clip is empty.")
    if not np.isfinite(audio).all():
        raise ValueError("Audio clip contains NaN or infinite samples.")
    return audio


def _check_sampling_rate(sampling_rate):
    if sampling_rate is None:
        raise ValueError("sampling_rate is required with audio (the rate the samples were recorded at, e.g. 16000).")
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer, float)):
        raise ValueError(f"sampling_rate must be a number of samples per second, got {sampling_rate!r}.")
    if not MIN_SAMPLING_RATE <= sampling_rate <= MAX_SAMPLING_RATE or int(sampling_rate) != sampling_rate:
        raise ValueError(
            f"sampling_rate={sampling_rate} is not a plausible audio rate "
            f"(an integer in [{MIN_SAMPLING_RATE}, {MAX_SAMPLING_RATE}] Hz)."
        )


MAX_TRANSCRIPT_TOKENS_PER_SECOND = 10.0
TRANSCRIPT_TOKEN_MARGIN = 10


class TranscriptLengthCriteria(StoppingCriteria):
    """The length bound of a transcript: stops a row once it has `MAX_TRANSCRIPT_TOKENS_PER_SECOND` new tokens per
    second of its audio plus `TRANSCRIPT_TOKEN_MARGIN`. Speech carries about 3-6 LLM tokens per second, so a
    transcript that ends its turn is never cut, and one that does not cannot run on for hundreds of tokens. Decided
    per row, so batched transcription equals one by one.

    Args:
        prompt_length (`int`): Width of the (padded) prompt `input_ids` passed to `generate`.
        max_new_tokens (`torch.Tensor`): `(batch,)` each row's bound.
    """

    def __init__(self, prompt_length: int, max_new_tokens: torch.Tensor):
        self.prompt_length = prompt_length
        self.max_new_tokens = max_new_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        bound = self.max_new_tokens.to(input_ids.device)
        return torch.full_like(bound, input_ids.shape[1] - self.prompt_length) >= bound


DEFAULT_SPEECH_THRESHOLD_DB = -50.0
MIN_SPEECH_SECONDS = 0.1
DEFAULT_SEGMENT_SECONDS = 30.0  # long-form transcription's segment limit when the adapter records none
PAUSE_SMOOTHING_SECONDS = 0.2
MIN_PAUSE_SECONDS = 0.25  # long-form transcription cuts in pauses at least this long
PAUSE_BELOW_DB = 40.0  # a pause is this far under the clip's loud level (and under the no-speech gate's level)
LEAD_MARGIN_SECONDS = 0.1  # a segment starts this long before its speech (training clips start at the speech)
TRAIL_MARGIN_SECONDS = 0.5  # and keeps up to this much of the pause after it
SPEECH_FRAME_SECONDS = 0.03


def has_speech(
    audio, sampling_rate: int, threshold_db: float | None = DEFAULT_SPEECH_THRESHOLD_DB, min_seconds: float = MIN_SPEECH_SECONDS
) -> bool:
    """The no-speech gate of every transcription path: False for a clip without speech energy.

    A clip passes when it lasts at least `min_seconds` and its loudest 30 ms frame has an RMS level of at least
    `threshold_db` dBFS (0 dBFS is a full-scale square wave; speech at a normal recording level peaks around -20 to
    -10). `threshold_db=None` turns the gate off. Digital silence, near-silent noise (-80 dBFS) and clips of a few
    samples are gated, so they give an empty transcript instead of an invented one.

    Args:
        audio: one clip, `(samples,)` or multi-channel, int or float PCM.
        sampling_rate: its rate in Hz.
    """
    if threshold_db is None:
        return True
    _check_sampling_rate(sampling_rate)
    clip = _to_mono_float32(audio)
    if clip.shape[0] < min_seconds * sampling_rate:
        return False
    frame = max(1, int(SPEECH_FRAME_SECONDS * sampling_rate))
    usable = clip[: clip.shape[0] // frame * frame].reshape(-1, frame)
    loudest = float(np.sqrt(np.mean(np.square(usable, dtype=np.float64), axis=1)).max())
    return 20 * np.log10(max(loudest, 1e-12)) >= threshold_db


def speech_segments(
    audio, sampling_rate: int, max_seconds: float, min_pause_seconds: float = MIN_PAUSE_SECONDS
) -> list[tuple[int, int]]:
    """Cut a clip at pauses into consecutive segments of at most `max_seconds`, for long-form transcription.

    A clip no longer than `max_seconds` is one segment. A longer one is cut in every pause: a run of at least
    `min_pause_seconds` of 30 ms frames (the no-speech gate's frames) quieter than both `PAUSE_BELOW_DB` under the
    clip's loud level (its 95th-percentile frame) and the gate's level. Each pause is cut `LEAD_MARGIN_SECONDS` before
    the speech resumes, so that a segment starts just before its speech, as clips (and training clips) do, and keeps
    the pause after it; a pause longer than `TRAIL_MARGIN_SECONDS` of that is also cut there, its silent rest a
    segment of its own, which the no-speech gate skips. So each
    utterance gets its own segment, as adapters are trained on one utterance per clip. A piece still longer than
    `max_seconds` is cut in the second half of each `max_seconds` span, at its quietest point (frame energy averaged
    over `PAUSE_SMOOTHING_SECONDS`).

    Args:
        audio: one clip, `(samples,)` or multi-channel, int or float PCM.
        sampling_rate: its rate in Hz.
    Returns:
        `(start, end)` sample ranges covering the clip in order, without gaps.
    """
    _check_sampling_rate(sampling_rate)
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    clip = _to_mono_float32(audio)
    total, limit = clip.shape[0], max(1, int(max_seconds * sampling_rate))
    frame = max(1, int(SPEECH_FRAME_SECONDS * sampling_rate))
    if total <= limit or total < 2 * frame:
        return [(0, total)]
    power = np.mean(np.square(clip[: total // frame * frame].reshape(-1, frame), dtype=np.float64), axis=1)
    level = 10 * np.log10(np.maximum(power, 1e-20))
    quiet = level < max(float(np.percentile(level, 95)) - PAUSE_BELOW_DB, DEFAULT_SPEECH_THRESHOLD_DB)
    min_pause = max(1, int(round(min_pause_seconds / SPEECH_FRAME_SECONDS)))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    cuts = []
    lead = int(round(LEAD_MARGIN_SECONDS / SPEECH_FRAME_SECONDS))
    trail = int(round(TRAIL_MARGIN_SECONDS / SPEECH_FRAME_SECONDS))
    for first, last in zip(edges[::2], edges[1::2]):  # quiet frames first..last-1
        if last - first < min_pause:
            continue
        if first > 0 and last - first >= trail + lead + min_pause:
            cuts.append((first + trail) * frame)  # the rest of a long pause is a silent segment, gated out
        cuts.append((last - lead) * frame)
    bounds = [0, *(int(cut) for cut in cuts if 0 < cut < total), total]
    smoothed = None
    segments = []
    for start, end in zip(bounds, bounds[1:]):
        while end - start > limit:
            if smoothed is None:
                width = max(1, int(round(PAUSE_SMOOTHING_SECONDS / SPEECH_FRAME_SECONDS)))
                smoothed = np.convolve(power, np.ones(width) / width, mode="same")
            first, last = (start + limit // 2) // frame, min((start + limit) // frame, len(smoothed))
            cut = start + limit
            if last > first:
                cut = int(min((first + int(np.argmin(smoothed[first:last]))) * frame + frame // 2, start + limit))
            segments.append((start, cut))
            start = cut
        segments.append((start, end))
    return segments


class SteerMoEProcessorKwargs(ProcessingKwargs, total=False):
    """The keyword arguments `SteerMoEProcessor.__call__` takes: the tokenizer's (`padding`, `max_length`,
    `pad_to_multiple_of`, `add_special_tokens`, `return_attention_mask`, ...), `sampling_rate`, and
    `return_tensors` ("pt" by default, "np", or None for lists)."""

    _defaults = {}  # transformers < 5.20 (vLLM's pin, see serving/) reads it unconditionally; TypedDicts do not inherit it


class SteerMoEProcessor(ProcessorMixin):
    r"""
    Builds SteerMoE inputs: log-mel features of each clip (split into 30 s windows, never cut) and the prompt with its
    audio placeholder expanded to exactly as many tokens as the model makes audio frames.

    Args:
        feature_extractor (`WhisperFeatureExtractor`): The audio encoder's feature extractor.
        tokenizer (`PreTrainedTokenizerBase`): The LLM's tokenizer; the audio token is added if missing, a missing
            pad token is set to the EOS token, and padding is on the right (the model left-pads for generation).
        audio_token (`str`, *optional*, defaults to `"<|audio|>"`): The audio placeholder token.
        pooling_kernel_size (`int`, *optional*, defaults to 4): Encoder frames per audio token; must equal the model
            config's `audio_frames_per_token`.
        conv_layers (`list`, *optional*): `(kernel, stride, padding)` of the encoder's conv stem, the model config's
            `audio_conv_layers`; Whisper's by default.
        pad_to_full_window (`bool`, *optional*, defaults to `False`): Pad every clip to a 30 s window (Whisper's
            training condition, every frame passed on) instead of encoding only its real length.
        speech_threshold_db (`float`, *optional*, defaults to -50.0): The no-speech gate's level (see `has_speech`)
            used by the transcription paths; `None` turns the gate off.
        transcription_prompt (`str`, *optional*, defaults to `"Transcribe the audio."`): The instruction the
            transcription paths (pipeline, CLI, `apply_transcription_request`, serving) put after the audio when
            none is given; `train.py` saves the one the adapter was trained with.
        transcription_examples (`list[str]`, *optional*): Sentences shown as earlier turns of every transcription
            request, before the audio turn: the user gives the sentence followed by `transcription_prompt`, the
            assistant repeats it verbatim. In-context examples of verbatim copying keep a small frozen LLM from
            rephrasing what it reads (docs/demo_experiments.md); `train.py` saves those the adapter was trained with.
        max_segment_seconds (`float`, *optional*): The longest audio the adapter transcribes in one pass; longer
            audio is cut at pauses into segments no longer than this (`speech_segments`). `train.py` saves the
            longest training clip; `None` means `DEFAULT_SEGMENT_SECONDS` (30 s).
        chat_template (`str`, *optional*): Defaults to the tokenizer's.
    """

    valid_processor_kwargs = SteerMoEProcessorKwargs
    text_kwargs = {"padding": True}

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        audio_token="<|audio|>",
        pooling_kernel_size=4,
        conv_layers=None,
        pad_to_full_window=False,
        speech_threshold_db=DEFAULT_SPEECH_THRESHOLD_DB,
        transcription_prompt=DEFAULT_TRANSCRIPTION_PROMPT,
        transcription_examples=None,
        max_segment_seconds=None,
        chat_template=None,
    ):
        self.audio_token_id = add_audio_token(tokenizer, audio_token)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        self.audio_token = audio_token
        self.pooling_kernel_size = pooling_kernel_size
        self.conv_layers = [list(layer) for layer in (conv_layers or WHISPER_CONV_LAYERS)]
        self.pad_to_full_window = pad_to_full_window
        self.speech_threshold_db = speech_threshold_db
        self.transcription_prompt = transcription_prompt
        self.transcription_examples = list(transcription_examples or [])
        self.max_segment_seconds = max_segment_seconds
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template)

    @classmethod
    def from_config(cls, config, **kwargs) -> "SteerMoEProcessor":
        """A processor for a new model: the feature extractor of `config.audio_model_id`, the tokenizer of
        `config.text_model_id` (at their revisions), and the encoder's conv stem and pooling from `config`. Its
        audio token id equals `config.audio_token_id` by construction (both come from `add_audio_token`)."""
        from transformers import AutoFeatureExtractor, AutoTokenizer

        return cls(
            AutoFeatureExtractor.from_pretrained(config.audio_model_id, revision=config.audio_model_revision),
            AutoTokenizer.from_pretrained(config.text_model_id, revision=config.text_model_revision),
            audio_token=config.audio_token,
            pooling_kernel_size=config.audio_frames_per_token,
            conv_layers=config.audio_conv_layers,
            **kwargs,
        )

    def has_speech(self, audio, sampling_rate: int, threshold_db: float | None = "default") -> bool:
        """The no-speech gate (`has_speech`) at this processor's `speech_threshold_db` unless `threshold_db` is
        given (`None` turns it off)."""
        threshold_db = self.speech_threshold_db if threshold_db == "default" else threshold_db
        return has_speech(audio, sampling_rate, threshold_db)

    def speech_segments(self, audio, sampling_rate: int, max_seconds: float | None = None) -> list[tuple[int, int]]:
        """`speech_segments` at this processor's `max_segment_seconds` (30 s when unset) unless `max_seconds` is
        given."""
        return speech_segments(audio, sampling_rate, max_seconds or self.max_segment_seconds or DEFAULT_SEGMENT_SECONDS)

    @property
    def audio_token_seconds(self) -> float:
        """Seconds of audio per audio token: the feature rate (mel frames or samples per second), through the
        encoder's conv stem strides and the pooling."""
        extractor = self.feature_extractor
        rate = extractor.sampling_rate
        if "input_features" in extractor.model_input_names:
            rate = rate / extractor.hop_length
        strides = math.prod(stride for _, stride, _ in self.conv_layers)
        return self.pooling_kernel_size * strides / rate

    def transcript_token_bound(self, num_audio_tokens: int) -> int:
        """The most new tokens a transcript of a clip of `num_audio_tokens` audio tokens may have:
        `MAX_TRANSCRIPT_TOKENS_PER_SECOND` per second of audio plus `TRANSCRIPT_TOKEN_MARGIN`."""
        seconds = num_audio_tokens * self.audio_token_seconds
        return math.ceil(round(seconds * MAX_TRANSCRIPT_TOKENS_PER_SECOND, 6)) + TRANSCRIPT_TOKEN_MARGIN

    def transcript_length_criteria(self, input_ids: torch.Tensor) -> TranscriptLengthCriteria:
        """The `TranscriptLengthCriteria` of a transcription batch, from each row's count of audio tokens in
        `input_ids` `(batch, prompt_length)`; pass it to `generate(..., stopping_criteria=[...])`."""
        counts = (input_ids == self.audio_token_id).sum(-1).tolist()
        bounds = torch.tensor([self.transcript_token_bound(count) for count in counts])
        return TranscriptLengthCriteria(input_ids.shape[1], bounds)

    def transcription_instruction(self, language: str | None = None) -> str:
        """The instruction of a transcription request: the saved `transcription_prompt`; the stock prompt names
        `language` when one is given ("Transcribe the Chinese audio.")."""
        if language is not None and self.transcription_prompt == DEFAULT_TRANSCRIPTION_PROMPT:
            return f"Transcribe the {LANGUAGE_NAMES.get(language, language)} audio."
        return self.transcription_prompt

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_features", "feature_attention_mask"]

    def _window_features(self, clip: np.ndarray) -> list[np.ndarray]:
        """The features of each 30 s window of one mono clip at the extractor's rate: log-mel `(num_mel_bins,
        frames)` for Whisper, the normalised waveform `(samples,)` for wav2vec2-style extractors."""
        extractor = self.feature_extractor
        log_mel = "input_features" in extractor.model_input_names
        window = WINDOW_SECONDS * extractor.sampling_rate
        if log_mel:
            min_length = extractor.n_fft
        else:
            min_length = 1
            for kernel, stride, _ in reversed(self.conv_layers):
                min_length = (min_length - 1) * stride + kernel
        features = []
        for start in range(0, len(clip), window):
            piece = clip[start : start + window]
            target = window if self.pad_to_full_window else max(len(piece), min_length)
            piece = np.pad(piece, (0, target - len(piece)))
            output = extractor(piece, sampling_rate=extractor.sampling_rate, padding="do_not_pad", return_tensors="np")
            features.append((output.input_features if log_mel else output.input_values)[0])
        return features

    def _prepare_audio(self, audio, sampling_rate):
        """Returns the batch's features, their frame mask and each clip's number of audio tokens."""
        clips = audio if isinstance(audio, (list, tuple)) else [audio]
        rates = list(sampling_rate) if isinstance(sampling_rate, (list, tuple)) else [sampling_rate] * len(clips)
        if len(rates) != len(clips):
            raise ValueError(f"Got {len(rates)} sampling rates for {len(clips)} audio clips.")
        target_rate = self.feature_extractor.sampling_rate
        windows, token_counts = [], []
        for clip, rate in zip(clips, rates):
            _check_sampling_rate(rate)
            clip = _to_mono_float32(clip)
            if rate != target_rate:
                if soxr is None:
                    raise ImportError(f"Resampling {rate} Hz audio needs the soxr package: pip install soxr")
                clip = soxr.resample(clip, int(rate), target_rate).astype(np.float32)
            clip_windows = self._window_features(clip)
            windows.extend(clip_windows)
            conv_layers = tuple(map(tuple, self.conv_layers))
            token_counts.append(
                sum(get_num_audio_tokens(w.shape[-1], self.pooling_kernel_size, conv_layers) for w in clip_windows)
            )
        max_frames = max(w.shape[-1] for w in windows)
        input_features = np.zeros((len(windows), *windows[0].shape[:-1], max_frames), dtype=np.float32)
        feature_attention_mask = np.zeros((len(windows), max_frames), dtype=np.int64)
        for index, window in enumerate(windows):
            input_features[index, ..., : window.shape[-1]] = window
            feature_attention_mask[index, : window.shape[-1]] = 1
        return torch.from_numpy(input_features), torch.from_numpy(feature_attention_mask), token_counts

    def __call__(self, text=None, audio=None, sampling_rate=None, text_target=None, **kwargs) -> BatchFeature:
        """Tokenise prompts (audio placeholders expanded) and extract features.

        Args:
            text (`str` or `list[str]`): Prompts; with audio, the audio token marks where each clip goes (clips fill
                the placeholders in order, across the batch; a prompt may hold several or none).
            audio (array or list of arrays, *optional*): The clips, `(samples,)` or `(channels, samples)` (or
                `(samples, channels)`), int16/int32/float, any sampling rate.
            sampling_rate (`int` or `list[int]`): Rate of `audio` (or one per clip); resampled to the feature
                extractor's.
            text_target (`str` or `list[str]`, *optional*): Targets for training: appended to each prompt with the
                EOS token, and returned as `labels` (-100 on the prompt, the audio and the padding).
            kwargs: the tokenizer's keyword arguments (`padding`: True / "longest" by default, "max_length" with
                `max_length`, or False; `pad_to_multiple_of`, `add_special_tokens`, `return_attention_mask`, ...) and
                `return_tensors`: "pt" (default), "np", or None for lists; also as `text_kwargs={...}`.
        Returns:
            `BatchFeature` with `input_ids`, `attention_mask` `(batch, seq_len)` (padded on the right), and with audio
            `input_features` `(windows, num_mel_bins, frames)` (Whisper) or `(windows, samples)` (wav2vec2-style
            extractors), `feature_attention_mask` `(windows, frames or samples)`, and `labels`.
        """
        if text is None:
            raise ValueError("text is required: a prompt holding the audio token where the audio goes.")
        if isinstance(text, str):
            texts = [text]
        elif isinstance(text, (list, tuple)) and all(isinstance(prompt, str) for prompt in text):
            texts = list(text)
        else:
            raise ValueError(f"text must be a string or a list of strings, got {type(text).__name__}.")
        if not texts:
            raise ValueError("text is an empty list.")
        merged = self._merge_kwargs(
            SteerMoEProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs = merged["text_kwargs"]
        sampling_rate = merged["audio_kwargs"].get("sampling_rate", sampling_rate) if sampling_rate is None else sampling_rate
        return_tensors = text_kwargs.pop("return_tensors", "pt")
        padding = text_kwargs.pop("padding", True)
        max_length = text_kwargs.pop("max_length", None)
        pad_to_multiple_of = text_kwargs.pop("pad_to_multiple_of", None)
        return_attention_mask = text_kwargs.pop("return_attention_mask", None)
        if text_kwargs.get("truncation") not in (None, False, "do_not_truncate"):
            raise ValueError(
                "truncation is not supported: cutting a prompt could drop audio placeholders or the instruction. "
                "Shorten the prompt or the audio instead."
            )
        text_kwargs.pop("truncation", None)
        for unsupported in ("return_offsets_mapping", "return_overflowing_tokens"):
            if text_kwargs.pop(unsupported, False):
                raise ValueError(f"{unsupported} is not supported by the SteerMoE processor.")

        data = {}
        placeholders = sum(prompt.count(self.audio_token) for prompt in texts)
        if audio is not None:
            if isinstance(audio, (list, tuple)) and len(audio) == 0:
                raise ValueError("audio is an empty list.")
            input_features, feature_attention_mask, token_counts = self._prepare_audio(audio, sampling_rate)
            if placeholders != len(token_counts):
                raise ValueError(
                    f"The text holds {placeholders} audio token(s) {self.audio_token!r} but {len(token_counts)} audio "
                    "clip(s) were given: write the audio token once where each clip goes, in order."
                )
            counts = iter(token_counts)
            texts = [
                "".join(
                    piece if index == 0 else self.audio_token * next(counts) + piece
                    for index, piece in enumerate(prompt.split(self.audio_token))
                )
                for prompt in texts
            ]
            data.update(input_features=input_features, feature_attention_mask=feature_attention_mask)
        elif placeholders:
            raise ValueError(f"The text contains the audio token {self.audio_token!r} but no audio was given.")

        prompt_ids = self.tokenizer(texts, **text_kwargs)["input_ids"]
        if text_target is None:
            sequences, labels = prompt_ids, None
        else:
            targets = [text_target] if isinstance(text_target, str) else list(text_target)
            if len(targets) != len(texts):
                raise ValueError(f"Got {len(targets)} targets for {len(texts)} prompts.")
            target_ids = self.tokenizer(targets, add_special_tokens=False)["input_ids"]
            eos = [self.tokenizer.eos_token_id]
            sequences = [p + t + eos for p, t in zip(prompt_ids, target_ids)]
            labels = [[-100] * len(p) + t + eos for p, t in zip(prompt_ids, target_ids)]
        data.update(self._pad(sequences, labels, padding, max_length, pad_to_multiple_of))
        if return_attention_mask is False:
            data.pop("attention_mask")
        if return_tensors is not None and len({len(ids) for ids in data["input_ids"]}) > 1:
            raise ValueError(
                f"padding={padding!r} leaves prompts of different lengths, which cannot form one tensor: use "
                "padding=True or return_tensors=None."
            )
        if return_tensors in ("np", "numpy") and audio is not None:
            data["input_features"] = data["input_features"].numpy()
            data["feature_attention_mask"] = data["feature_attention_mask"].numpy()
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _pad(self, sequences: list[list[int]], labels: list[list[int]] | None, padding=True, max_length=None,
             pad_to_multiple_of=None) -> dict:  # fmt: skip
        """Right-pad to the longest sequence (`padding` True / "longest"), to `max_length` ("max_length"), or not at
        all (False / "do_not_pad"); lengths are rounded up to `pad_to_multiple_of`."""
        padding = getattr(padding, "value", padding)
        if padding in (False, "do_not_pad", None):
            return {
                "input_ids": sequences,
                "attention_mask": [[1] * len(s) for s in sequences],
                **({"labels": labels} if labels is not None else {}),
            }
        longest = max(len(s) for s in sequences)
        if padding == "max_length":
            if max_length is None:
                raise ValueError('padding="max_length" needs max_length.')
            if longest > max_length:
                raise ValueError(
                    f"A prompt has {longest} tokens (audio placeholders included), more than max_length={max_length}."
                )
            length = max_length
        elif padding in (True, "longest"):
            length = longest
        else:
            raise ValueError(f"padding must be True, 'longest', 'max_length' or False, got {padding!r}.")
        if pad_to_multiple_of:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        pad_id = self.tokenizer.pad_token_id
        padded = {
            "input_ids": [s + [pad_id] * (length - len(s)) for s in sequences],
            "attention_mask": [[1] * len(s) + [0] * (length - len(s)) for s in sequences],
        }
        if labels is not None:
            padded["labels"] = [s + [-100] * (length - len(s)) for s in labels]
        return padded

    def apply_transcription_request(
        self, audio, prompt: str | None = None, language: str | None = None, sampling_rate: int | None = None
    ) -> BatchFeature:
        """Inputs for `model.generate` that ask for a transcript (or answer `prompt` about the audio).

        Args:
            audio: one clip or a list: file paths, file bytes, or arrays at `sampling_rate`.
            prompt (`str`, *optional*): the instruction; defaults to the saved `transcription_prompt`.
            language (`str`, *optional*): the spoken language, e.g. "en" or "zh", named in the stock prompt.
            sampling_rate (`int`, *optional*): rate of array inputs.
        Decode the answer with `processor.batch_decode(model.generate(**inputs), skip_special_tokens=True)`.
        """
        clips = list(audio) if isinstance(audio, (list, tuple)) else [audio]
        rate = self.feature_extractor.sampling_rate
        decoded = [decode_audio_input(clip, sampling_rate, rate) for clip in clips]
        if prompt is None:
            prompt = self.transcription_instruction(language)
        return self(
            text=[self.build_prompt(prompt)] * len(decoded),
            audio=[samples for samples, _ in decoded],
            sampling_rate=[rate for _, rate in decoded],
        )

    def build_prompt(self, instruction: str, use_chat_template: bool = True) -> str:
        """A user turn holding the audio then `instruction`, in the chat template when there is one (and
        `use_chat_template`), else the plain `audio token + instruction`. When `instruction` is the
        `transcription_prompt`, the `transcription_examples` come first as turns of their own (user: example +
        instruction, assistant: example; plain form: one line each)."""
        examples = self.transcription_examples if instruction == self.transcription_prompt else []
        if use_chat_template and (self.chat_template or self.tokenizer.chat_template):
            conversation = []
            for example in examples:
                conversation.append({"role": "user", "content": [{"type": "text", "text": example + instruction}]})
                conversation.append({"role": "assistant", "content": [{"type": "text", "text": example}]})
            conversation.append(
                {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": instruction}]}
            )
            return self.apply_chat_template(conversation, add_generation_prompt=True)
        shown = "".join(f"{example}{instruction}\n{example}\n" for example in examples)
        return f"{shown}{self.audio_token}{instruction}"

    def apply_chat_template(
        self,
        conversation,
        chat_template: str | None = None,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        tokenize: bool = False,
        return_tensors: str | None = "pt",
        return_dict: bool = False,
        processor_kwargs: dict | None = None,
        **kwargs,
    ):
        """Render one conversation (a list of messages) or a batch of them with the LLM's chat template, as
        `ProcessorMixin.apply_chat_template` does.

        Message content is a string or a list of parts: `{"type": "text", "text": ...}` and `{"type": "audio"}`,
        the latter with its clip as `"path"` (a file), `"url"`, or `"audio"` (a path, URL, bytes, or an array at
        the feature extractor's rate, or at `"sampling_rate"` when the part gives one). Each audio part becomes the
        audio token in the prompt; clips may appear anywhere, several per turn and across turns. System and
        assistant turns, `tools` and `documents` go to the template as the tokenizer's `apply_chat_template` takes
        them; other keyword arguments are template variables.

        Returns the prompt string (or list of strings) when `tokenize=False`; otherwise the processor's output for
        the prompts and the clips, loaded and resampled here: a `BatchFeature` (`input_ids`, `attention_mask`,
        `input_features`, `feature_attention_mask`) with `return_dict=True`, else just `input_ids`. The template
        writes its own special tokens, so none are added (a text-only conversation gives exactly the tokenizer's
        `apply_chat_template` ids). `processor_kwargs` go to `__call__` (e.g. `{"padding": "max_length", ...}`).
        """
        template = chat_template or self.chat_template or self.tokenizer.chat_template
        if template is None:
            raise ValueError("Neither the processor nor the tokenizer has a chat template; write the prompt as text.")
        batched = isinstance(conversation, (list, tuple)) and len(conversation) > 0 and isinstance(conversation[0], (list, tuple))
        conversations = list(conversation) if batched else [conversation]
        rate = self.feature_extractor.sampling_rate
        rendered, clips = [], []
        for messages in conversations:
            flat = []
            for message in messages:
                content = message.get("content")
                if isinstance(content, (list, tuple)):
                    pieces = []
                    for part in content:
                        kind = part.get("type")
                        if kind == "text":
                            pieces.append(part["text"])
                        elif kind == "audio":
                            pieces.append(self.audio_token)
                            if tokenize:
                                clips.append(self._chat_audio(part, rate))
                        else:
                            raise ValueError(f"Unsupported content part type {kind!r}: use 'text' or 'audio'.")
                    content = "".join(pieces)
                flat.append({**message, "content": content})
            rendered.append(
                self.tokenizer.apply_chat_template(
                    flat,
                    chat_template=template,
                    tools=tools,
                    documents=documents,
                    add_generation_prompt=add_generation_prompt,
                    continue_final_message=continue_final_message,
                    tokenize=False,
                    **kwargs,
                )
            )
        if not tokenize:
            return rendered if batched else rendered[0]
        call_kwargs = {"add_special_tokens": False, "return_tensors": return_tensors, **(processor_kwargs or {})}
        audio = [samples for samples, _ in clips] or None
        rates = [clip_rate for _, clip_rate in clips] or None
        out = self(text=rendered, audio=audio, sampling_rate=rates, **call_kwargs)
        return out if return_dict else out["input_ids"]

    @staticmethod
    def _chat_audio(part: dict, default_rate: int) -> tuple[np.ndarray, int]:
        """The clip of one `{"type": "audio", ...}` content part."""
        sources = [key for key in ("path", "url", "audio") if part.get(key) is not None]
        if len(sources) != 1:
            raise ValueError(
                f'An audio part needs exactly one of "path", "url" or "audio" to tokenize, got {sorted(part)}.'
            )
        return decode_audio_input(part[sources[0]], part.get("sampling_rate"), default_rate)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


SteerMoEProcessor.register_for_auto_class()

__all__ = ["SteerMoEProcessor", "decode_audio_input", "has_speech", "load_audio", "speech_segments"]
