# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Word and character error rates after a documented text normalisation, as an offline `evaluate` metric."""

import unicodedata

import datasets
import evaluate
import jiwer
from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer


_DESCRIPTION = """
WER and CER (jiwer) over a corpus, after normalising predictions and references:
- `language="en"`: Whisper's English normaliser (lower case, punctuation and filler words removed, numbers and
  contractions standardised; no British->American spelling map);
- `language="zh"`: every character that is not a letter or a digit (punctuation, symbols, spaces) is removed and the
  text is compared character by character (WER is then computed on characters too, and equals CER);
- any other language: Whisper's basic normaliser (lower case, punctuation and symbols removed).
An empty reference after normalisation is scored as the single word "<empty>". CER counts spaces as characters,
except for Chinese.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): transcripts produced by the model.
    references (`list[str]`): the true transcripts.
    language (`str`, defaults to "en"): which normalisation to use ("en", "zh", or another language code).
Returns:
    `dict` with `wer`, `cer` (corpus-level, between 0 and possibly above 1) and `num_samples`.
Example:
    >>> metric = evaluate.load("metrics/asr_error_rate")
    >>> metric.compute(predictions=["Hello, world!"], references=["hello world"])
    {'wer': 0.0, 'cer': 0.0, 'num_samples': 1}
"""

EMPTY = "<empty>"


def _strip_non_word_characters(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def normalize(text: str, language: str = "en") -> str:
    """The normalised form of `text` that the error rates compare."""
    if language.startswith("zh"):
        return " ".join(_strip_non_word_characters(text))
    normalizer = EnglishTextNormalizer({}) if language.startswith("en") else BasicTextNormalizer()
    return " ".join(normalizer(text).split())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AsrErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, language: str = "en"):
        hypotheses = [normalize(p, language) for p in predictions]
        truths = [normalize(r, language) or EMPTY for r in references]
        if language.startswith("zh"):
            characters = [t.replace(" ", "") for t in truths], [h.replace(" ", "") for h in hypotheses]
        else:
            characters = truths, hypotheses
        return {"wer": jiwer.wer(truths, hypotheses), "cer": jiwer.cer(*characters), "num_samples": len(truths)}
