"""The live transcriber's stability policy (space/live_transcription.py), driven by a decoder whose answers are known.

The fake signal is 1 kHz: each word is 400 samples of a constant level naming it, then 100 samples of silence. The
fake decoder reads complete words back exactly, and a word still being spoken (or cut) as a garbled token that
changes with its length, like a real model's guess at a half-heard word.
"""

import sys

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "space"))
from live_transcription import LocalAgreementTranscriber  # noqa: E402

RATE = 1000
WORD, GAP = 400, 100
VOCABULARY = "and so my fellow americans ask not what your country can do for you the quick brown fox".split()


def speak(words: list[str], pause_after: dict[int, float] | None = None) -> np.ndarray:
    """The fake signal of `words`, with `pause_after[i]` seconds of silence after word `i`."""
    pieces = []
    for index, word in enumerate(words):
        pieces += [np.full(WORD, (VOCABULARY.index(word) + 1) / 64, np.float32), np.zeros(GAP, np.float32)]
        pieces.append(np.zeros(int((pause_after or {}).get(index, 0) * RATE), np.float32))
    return np.concatenate(pieces)


class FakeDecoder:
    def __init__(self):
        self.lengths = []

    def __call__(self, samples: np.ndarray, rate: int) -> str:
        assert rate == RATE and samples.dtype == np.float32 and samples.ndim == 1
        self.lengths.append(len(samples) / rate)
        edges = np.flatnonzero(np.diff(np.concatenate([[0.0], samples, [0.0]])) != 0)
        words = []
        for start, end in zip(edges[:-1], edges[1:]):
            level = samples[start]
            if level == 0:
                continue
            words.append(VOCABULARY[round(level * 64) - 1] if end - start == WORD else f"#{end - start}")
        return " ".join(words)


def stream(transcriber, signal: np.ndarray, chunk: int = 250):
    updates = [transcriber.push(signal[i : i + chunk]) for i in range(0, len(signal), chunk)]
    return updates, transcriber.finish()


def test_words_are_committed_once_two_decodings_agree_and_the_text_only_grows():
    words = "and so my fellow americans ask not what your country can do for you".split()
    decoder = FakeDecoder()
    transcriber = LocalAgreementTranscriber(decoder, sampling_rate=RATE, update_seconds=0.75, max_buffer_seconds=30)
    updates, final = stream(transcriber, speak(words))
    shown = [update.committed for update in updates] + [final.committed]
    assert all(later.startswith(earlier) for earlier, later in zip(shown, shown[1:]))
    assert not any("#" in text for text in shown)  # a half-heard word is never shown for good
    assert any("#" in update.tentative for update in updates)  # ... but it is shown as tentative
    assert final.committed == " ".join(words) and final.tentative == ""
    # LocalAgreement-2's lag: a word complete at one decoding is committed at the next one.
    for update in updates:
        if update.decoded:
            ended = sum(
                1 for i in range(len(words)) if (i * (WORD + GAP) + WORD) / RATE <= update.audio_seconds - 0.75
            )
            assert len(update.committed.split()) >= ended
    assert decoder.lengths == sorted(decoder.lengths)  # one growing buffer: no segment was closed
    assert sum(update.decoded for update in updates) == len(decoder.lengths) - 1  # + the final decoding


@pytest.mark.parametrize("pause", [1.5, 0.7])
def test_a_pause_closes_the_segment_and_silence_is_never_decoded(pause):
    words = "the quick brown fox can do for you".split()
    signal = np.concatenate([np.zeros(2 * RATE, np.float32), speak(words, pause_after={3: pause})])
    decoder = FakeDecoder()
    transcriber = LocalAgreementTranscriber(
        decoder, sampling_rate=RATE, update_seconds=1.0, max_buffer_seconds=30,
        has_speech=lambda samples, rate: bool(np.abs(samples).max() > 0), pause_seconds=0.6,
    )  # fmt: skip
    updates, final = stream(transcriber, signal)
    assert final.committed == " ".join(words)
    assert transcriber.segments == ["the quick brown fox", "can do for you"]
    assert not any(update.decoded for update in updates[:8])  # the leading 2 s of silence were never decoded
    # The pause closed the first segment even when no update fell inside it (0.7 s against updates every 1 s): no
    # decoding ever covered the first sentence, the pause and more than an update of the second sentence.
    kept_silence, first_sentence = 0.1, 4 * (WORD + GAP) / RATE  # a segment starts 100 ms before its speech
    closing = kept_silence + first_sentence - GAP / RATE + 0.3  # decoded up to halfway through the 0.6 s pause
    assert decoder.lengths.count(pytest.approx(closing)) == 1
    assert max(decoder.lengths) < kept_silence + first_sentence + pause + 1.0
    assert any(later < earlier for earlier, later in zip(decoder.lengths, decoder.lengths[1:]))


def test_a_long_buffer_is_cut_at_a_quiet_point_without_losing_words():
    words = (VOCABULARY * 2)[:30]
    decoder = FakeDecoder()
    transcriber = LocalAgreementTranscriber(decoder, sampling_rate=RATE, update_seconds=0.5, max_buffer_seconds=4)
    updates, final = stream(transcriber, speak(words))
    assert final.committed == " ".join(words)
    assert max(decoder.lengths) <= 4 + 0.5  # the cost of a decoding stays bounded on a 15 s stream
    assert len(transcriber.segments) >= 4 and " ".join(transcriber.segments) == final.committed
    shown = [update.committed for update in updates]
    assert all(later.startswith(earlier) for earlier, later in zip(shown, shown[1:]))


def test_chunks_in_int16_and_stereo_and_bad_settings():
    decoder = FakeDecoder()
    transcriber = LocalAgreementTranscriber(decoder, sampling_rate=RATE, update_seconds=0.5)
    signal = speak(["so", "my"])
    pcm = np.round(signal * 32768).astype(np.int16)
    for start in range(0, len(pcm), 250):
        transcriber.push(np.stack([pcm[start : start + 250]] * 2, axis=1))
    assert transcriber.finish().committed == "so my"
    with pytest.raises(ValueError, match="shape"):
        transcriber.push(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="max_buffer_seconds"):
        LocalAgreementTranscriber(decoder, update_seconds=1.0, max_buffer_seconds=1.5)
