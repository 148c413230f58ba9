"""scripts/make_chat_targets.py: the frozen LLM's own answers to typed transcripts, as a training manifest."""

import json
import sys

import torch
from conftest import ROOT
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(ROOT / "scripts"))
import make_chat_targets  # noqa: E402

TRANSCRIPTS = ["the quick brown fox", "what is said in this recording", "a lazy dog", "my fellow americans ask not"]


def test_one_response_per_row_equal_to_generate_on_the_typed_turn(backbone_dirs, tmp_path):
    _, text_dir = backbone_dirs
    (tmp_path / "wav").mkdir()
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"wav/{i}.wav", "text": t}) + "\n" for i, t in enumerate(TRANSCRIPTS)))
    output = tmp_path / "chat" / "train_chat.jsonl"
    common = [str(manifest), "--text_model_id", str(text_dir), "--output", str(output), "--max_new_tokens", "6"]
    make_chat_targets.main([*common, "--batch_size", "3", "--limit", "2"])
    assert len(output.read_text().splitlines()) == 2
    make_chat_targets.main([*common, "--batch_size", "3"])  # continues after the two rows written
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["text"] for row in rows] == TRANSCRIPTS
    assert [(output.parent / row["audio"]).resolve() for row in rows] == [
        (tmp_path / "wav" / f"{i}.wav").resolve() for i in range(len(TRANSCRIPTS))
    ]

    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    model = AutoModelForCausalLM.from_pretrained(text_dir, dtype=torch.float32)
    for row in rows:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["text"]}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        expected = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        assert row["response"] == expected and expected
