# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Live transcription: text while the audio is still arriving, from any offline `transcribe(samples) -> str`.

The growing buffer is re-decoded every `update_seconds` of new audio, and a word is shown for good only once two
consecutive hypotheses agree on it (LocalAgreement-2, as in Macháček et al., "Turning Whisper into Real-Time
Transcription System", 2023): the committed text only ever grows, and the unconfirmed tail is reported apart. A
pause after speech, or a buffer longer than `max_buffer_seconds`, closes the segment: the audio before it is decoded
once more and committed whole, and a new buffer starts, so the cost of each update stays bounded however long the
stream runs.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class LiveUpdate:
    """What to show after a chunk: `committed` never changes once shown (later updates only append to it);
    `tentative` is the latest hypothesis past it, which may still change. `audio_seconds` were received so far and
    `decoded` tells whether this update ran the model."""

    committed: str
    tentative: str
    audio_seconds: float
    decoded: bool


def _normalized(word: str) -> str:
    return re.sub(r"[^\w']", "", word.casefold())


class LocalAgreementTranscriber:
    """Transcribes a stream of audio chunks by re-decoding the growing buffer with the LocalAgreement-2 policy.

    Args:
        transcribe: `(samples, sampling_rate) -> text`, the offline path (e.g. a SteerMoE model's transcription of
            one clip), called on the current buffer `(buffer_samples,)` float32 mono.
        sampling_rate: the rate of the chunks pushed.
        update_seconds: new audio needed before the buffer is decoded again.
        max_buffer_seconds: a buffer this long is cut at its quietest 100 ms in the second half; the audio before the
            cut is decoded once more and committed whole, the rest starts the next buffer.
        has_speech: `(samples, sampling_rate) -> bool` (e.g. `processor.has_speech`), applied to 100 ms frames. With
            it, audio without speech is never decoded, and `pause_seconds` of no speech after speech closes the
            segment (found anywhere in the buffer, whatever the update cadence).
        pause_seconds: the pause that closes a segment.
    """

    def __init__(
        self,
        transcribe: Callable[[np.ndarray, int], str],
        sampling_rate: int = 16000,
        update_seconds: float = 1.0,
        max_buffer_seconds: float = 20.0,
        has_speech: Callable[[np.ndarray, int], bool] | None = None,
        pause_seconds: float = 0.6,
    ):
        if update_seconds <= 0 or max_buffer_seconds <= 2 * update_seconds:
            raise ValueError("Need update_seconds > 0 and max_buffer_seconds > 2 * update_seconds.")
        self.transcribe = transcribe
        self.sampling_rate = sampling_rate
        self.update_samples = int(update_seconds * sampling_rate)
        self.max_buffer_samples = int(max_buffer_seconds * sampling_rate)
        self.has_speech = has_speech
        self.pause_samples = int(pause_seconds * sampling_rate)
        self.committed: list[str] = []
        self._segment_ends: list[int] = []  # len(committed) when each segment closed
        self._buffer = np.zeros(0, dtype=np.float32)
        self._undecoded = 0  # samples pushed since the last decode
        self._received = 0
        self._segment_committed = 0  # words of the current buffer's hypothesis already committed
        self._previous: list[str] | None = None  # the last hypothesis of the current buffer
        self._tentative: list[str] = []
        self.decode_count = 0

    def push(self, samples: np.ndarray) -> LiveUpdate:
        """Add a chunk `(samples,)` (float or int PCM, mono; multi-channel `(samples, channels)` is averaged) and
        decode the buffer when `update_seconds` of new audio have arrived."""
        samples = np.asarray(samples)
        if samples.dtype.kind == "i":
            samples = samples.astype(np.float32) / np.float32(np.iinfo(samples.dtype).max + 1)
        if samples.ndim == 2:
            samples = samples.mean(axis=1)
        if samples.ndim != 1:
            raise ValueError(f"A chunk must be (samples,) or (samples, channels), got shape {samples.shape}.")
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
        self._undecoded += samples.shape[0]
        self._received += samples.shape[0]
        if self._undecoded < self.update_samples:
            return self._update(decoded=False)
        self._undecoded = 0
        if self.has_speech is not None:
            speech = self._speech_frames()
            if not speech.any():
                # Only silence so far: keep a short tail (a word may be starting) and decode nothing.
                self._buffer = self._buffer[-self.pause_samples :]
                return self._update(decoded=False)
            first = int(np.argmax(speech))
            if self._previous is None and first > 1:  # a new segment starts 100 ms before its speech
                self._buffer = self._buffer[(first - 1) * (self.sampling_rate // 10) :]
                speech = speech[first - 1 :]
            pause = self._last_pause(speech)
            if pause is not None:
                self._close_segment(*pause)
                return self._update(decoded=True)
        if len(self._buffer) > self.max_buffer_samples:
            self._close_segment(self._quietest_cut())
        else:
            self._agree(self._decode(self._buffer))
        return self._update(decoded=True)

    def finish(self) -> LiveUpdate:
        """End of the stream: decode what is left and commit it whole; the transcriber is then empty."""
        decoded = False
        if len(self._buffer) and (self.has_speech is None or self.has_speech(self._buffer, self.sampling_rate)):
            self._close_segment(len(self._buffer))
            decoded = True
        self._buffer = np.zeros(0, dtype=np.float32)
        self._undecoded = 0
        return self._update(decoded=decoded)

    @property
    def text(self) -> str:
        """The committed text."""
        return " ".join(self.committed)

    @property
    def segments(self) -> list[str]:
        """The committed text of each closed segment (speech up to a pause, or a buffer up to its cut), in order."""
        bounds = [0, *self._segment_ends]
        return [" ".join(self.committed[start:end]) for start, end in zip(bounds, bounds[1:])]

    def _decode(self, samples: np.ndarray) -> list[str]:
        """The words of the transcript of `samples` (lone punctuation, as a model writes for a half-heard buffer,
        dropped)."""
        self.decode_count += 1
        return [word for word in self.transcribe(samples, self.sampling_rate).split() if _normalized(word)]

    def _agree(self, hypothesis: list[str]) -> None:
        """Commit the words this hypothesis and the previous one agree on, past those already committed."""
        agreed = 0
        if self._previous is not None:
            for mine, theirs in zip(hypothesis, self._previous):
                if _normalized(mine) != _normalized(theirs):
                    break
                agreed += 1
        if agreed > self._segment_committed:
            self.committed += hypothesis[self._segment_committed : agreed]
            self._segment_committed = agreed
        self._previous = hypothesis
        self._tentative = hypothesis[self._segment_committed :]

    def _close_segment(self, cut: int, resume: int | None = None) -> None:
        """Decode the buffer up to `cut` and commit its words past those already committed; the buffer from
        `resume` (default `cut`) on starts the next one, whose first words may already be committed (agreed on
        before the cut)."""
        head, self._buffer = self._buffer[:cut], self._buffer[cut if resume is None else resume :]
        head_words = []
        if self.has_speech is None or self.has_speech(head, self.sampling_rate):
            head_words = self._decode(head)
            self.committed += head_words[self._segment_committed :]
            self._segment_ends.append(len(self.committed))
        self._segment_committed = max(0, self._segment_committed - len(head_words)) if len(self._buffer) else 0
        self._previous = None
        self._tentative = []

    def _speech_frames(self) -> np.ndarray:
        """`has_speech` on each whole 100 ms frame of the buffer, `(frames,)` bool."""
        frame = self.sampling_rate // 10
        return np.array(
            [
                self.has_speech(self._buffer[i : i + frame], self.sampling_rate)
                for i in range(0, len(self._buffer) - frame + 1, frame)
            ],
            dtype=bool,
        )

    def _last_pause(self, speech: np.ndarray) -> tuple[int, int] | None:
        """`(cut, resume)` around the last run of at least `pause_seconds` without speech that follows speech: the
        segment ends halfway through `pause_seconds` (quiet word endings stay in) and the next buffer starts where the
        pause ends."""
        frame = self.sampling_rate // 10
        needed = -(-self.pause_samples // frame)
        silent = np.flatnonzero(~speech)
        runs = np.split(silent, np.flatnonzero(np.diff(silent) != 1) + 1) if silent.size else []
        for run in reversed(runs):
            if len(run) >= needed and run[0] > 0 and speech[: run[0]].any():
                return (run[0] + needed // 2) * frame, min((run[-1] + 1) * frame, len(self._buffer))
        return None

    def _quietest_cut(self) -> int:
        """The start of the quietest 100 ms frame in the buffer's second half."""
        frame = max(1, self.sampling_rate // 10)
        first = len(self._buffer) // 2 // frame
        frames = self._buffer[: len(self._buffer) // frame * frame].reshape(-1, frame)[first:]
        return (first + int(np.argmin(np.square(frames).mean(axis=1)))) * frame

    def _update(self, decoded: bool) -> LiveUpdate:
        return LiveUpdate(
            committed=self.text,
            tentative=" ".join(self._tentative),
            audio_seconds=self._received / self.sampling_rate,
            decoded=decoded,
        )
