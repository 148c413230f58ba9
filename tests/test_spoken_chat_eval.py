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
