"""The spoken-chat evaluation: scoring rules, and an end-to-end run through the chat call on a tiny model."""

import shutil
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import spoken_chat_eval  # noqa: E402


def test_keyword_scoring_is_whole_word_and_case_free():
    assert spoken_chat_eval.holds_keyword("The capital of France is Paris.", ["paris"])
    assert not spoken_chat_eval.holds_keyword("Parisian food is good", ["paris"])
    assert spoken_chat_eval.holds_keyword("It has 8 legs", ["eight", "8"])
    assert spoken_chat_eval.holds_keyword("Plants take in carbon dioxide.", ["carbon dioxide"])
    assert not spoken_chat_eval.holds_keyword("", ["cold"])


def test_tool_calls_parse_and_match():
    parse = spoken_chat_eval.parse_tool_call
    call = parse('Sure! {"name": "set_timer", "arguments": {"minutes": 5}} done')
    assert call == {"name": "set_timer", "arguments": {"minutes": 5}}
    assert spoken_chat_eval.tool_call_matches(call, "set_timer", ["5", "five"])
    assert not spoken_chat_eval.tool_call_matches(call, "set_alarm", ["5"])
    assert not spoken_chat_eval.tool_call_matches(call, "set_timer", ["ten"])
    assert parse("no call here {not json}") is None
    assert parse('{"arguments": {}}') is None
    assert not spoken_chat_eval.tool_call_matches(None, "call", ["john"])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_end_to_end_on_a_tiny_model(model, processor, tmp_path):
    questions = [("What is the capital of France?", ["paris"]), ("What is the opposite of hot?", ["cold"])]
    tools = [("Set a timer for five minutes.", "set_timer", ["5", "five"])]
    report = spoken_chat_eval.evaluate_spoken_chat(
        model, processor, tmp_path, max_new_tokens=4, questions=questions, tool_requests=tools
    )
    assert len(list(tmp_path.glob("*.wav"))) == 3
    typed = processor.apply_chat_template(
        [{"role": "user", "content": questions[1][0]}], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    out = model.generate(**typed, max_new_tokens=4, do_sample=False)
    expected = processor.batch_decode(out[:, typed["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()
    assert report["examples"][1] == {"question": questions[1][0], "typed": expected, "spoken": report["examples"][1]["spoken"]}
    assert report["questions"] == 2 and 0 <= report["speech_right"] <= 1 and 0 <= report["text_right"] <= 1
    assert set(report["tool_calls_spoken"]) == {"parse_rate", "match_rate"} and len(report["examples"]) == 3


def test_transcription_wer_asks_each_clip_with_the_saved_prompt_through_the_chat_call(
    model, processor, tmp_path, monkeypatch
):
    import json

    import soundfile
    from conftest import speechlike

    rows = [{"audio": f"wav/{i}.wav", "text": text} for i, text in enumerate(["the quick fox", "a lazy dog"])]
    (tmp_path / "wav").mkdir()
    for i, _ in enumerate(rows):
        soundfile.write(tmp_path / "wav" / f"{i}.wav", speechlike(0.5 + 0.3 * i, seed=i), 16000)
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setattr(processor, "transcription_prompt", "Say it again.")
    asked = []
    answer_all = spoken_chat_eval.answer_all

    def recording(model_, processor_, conversations, *args):
        asked.extend(conversations)
        return ["the quick fox", "a lazy cat"]

    monkeypatch.setattr(spoken_chat_eval, "answer_all", recording)
    report = spoken_chat_eval.transcription_wer(model, processor, manifest)
    assert [c[0]["content"][1]["text"] for c in asked] == ["Say it again."] * 2
    assert [c[0]["content"][0]["path"] for c in asked] == [str(tmp_path / row["audio"]) for row in rows]
    assert report["wer"] == pytest.approx(1 / 6) and report["prompt"] == "Say it again." and report["num_samples"] == 2
    monkeypatch.setattr(spoken_chat_eval, "answer_all", answer_all)
    real = spoken_chat_eval.transcription_wer(model, processor, manifest, limit=1, max_new_tokens=3)
    assert real["num_samples"] == 1 and real["examples"][0]["reference"] == "the quick fox"


def test_word_f1_is_a_bag_of_words_f1_free_of_case_and_punctuation():
    f1 = spoken_chat_eval.word_f1
    assert f1("The cat sat.", "the cat sat") == 1.0
    assert f1("", "") == 1.0 and f1("", "a cat") == 0.0 and f1("a cat", "") == 0.0
    assert f1("dog", "the cat") == 0.0
    assert f1("the cat", "the cat sat down") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert f1("the the cat", "the cat cat") == pytest.approx(2 / 3)  # repeated words count as often as both hold them


def test_answer_equivalence_asks_each_sentence_typed_and_spoken(model, processor, tmp_path, monkeypatch):
    import json

    import soundfile
    from conftest import speechlike

    rows = [{"audio": f"wav/{i}.wav", "text": text} for i, text in enumerate(["the quick fox", "a lazy dog", "hi"])]
    (tmp_path / "wav").mkdir()
    for i, _ in enumerate(rows):
        soundfile.write(tmp_path / "wav" / f"{i}.wav", speechlike(0.5 + 0.2 * i, seed=i), 16000)
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    asked = []

    def recording(model_, processor_, conversations, *args):
        asked.extend(conversations)
        return ["Yes, a fox.", "No.", "Hello there", "yes a fox", "no dog", "Bye"]

    answer_all = spoken_chat_eval.answer_all
    monkeypatch.setattr(spoken_chat_eval, "answer_all", recording)
    report = spoken_chat_eval.answer_equivalence(model, processor, manifest)
    assert [c[0]["content"] for c in asked[:3]] == [row["text"] for row in rows]
    assert [c[0]["content"] for c in asked[3:]] == [[{"type": "audio", "path": str(tmp_path / r["audio"])}] for r in rows]
    assert report["clips"] == 3 and report["identical"] == pytest.approx(0.0)
    assert report["mean_word_f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert report["examples"][0] == {"sentence": "the quick fox", "typed": "Yes, a fox.", "spoken": "yes a fox", "word_f1": 1.0}

    asked.clear()
    replies = iter([
        ["Yes, a fox.", "No.", "Hello there", "yes a fox", "no dog", "Bye"],  # typed, then spoken
        ["the quick box", "a lazy dog", "high"],  # the adapter's transcripts
        ["Yes, a box.", "No.", "Hi"],  # the answers to those transcripts, typed
    ])  # fmt: skip
    monkeypatch.setattr(spoken_chat_eval, "answer_all", lambda model_, processor_, conversations, *args: (
        asked.append(conversations), next(replies))[1])  # fmt: skip
    monkeypatch.setattr(processor, "transcription_prompt", "Say it again.")
    report = spoken_chat_eval.answer_equivalence(model, processor, manifest, cascade=True)
    assert [c[0]["content"][1]["text"] for c in asked[1]] == ["Say it again."] * 3
    assert [c[0]["content"] for c in asked[2]] == ["the quick box", "a lazy dog", "high"]
    assert report["cascade"]["identical"] == pytest.approx(1 / 3)
    assert report["cascade"]["mean_word_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert report["cascade"]["transcript_wer"] == pytest.approx(2 / 7)  # fox -> box, hi -> high, of 7 words
    assert report["examples"][1]["cascade"] == {"transcript": "a lazy dog", "answer": "No.", "word_f1": 1.0}

    monkeypatch.setattr(spoken_chat_eval, "answer_all", answer_all)
    real = spoken_chat_eval.answer_equivalence(model, processor, manifest, limit=2, max_new_tokens=3)
    typed = processor.apply_chat_template(
        [{"role": "user", "content": "a lazy dog"}], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    out = model.language_model.generate(**typed, max_new_tokens=3, do_sample=False)
    expected = processor.batch_decode(out[:, typed["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()
    assert real["clips"] == 2 and real["examples"][1]["typed"] == expected
    assert real["identical"] == sum(e["typed"] == e["spoken"] for e in real["examples"]) / 2
