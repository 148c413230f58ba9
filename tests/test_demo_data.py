"""The demo's open-vocabulary data: a real sentence list (not a template grammar), splits disjoint by sentence and
by voice, and the synthesized manifests (when espeak-ng is installed)."""

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synth = _load("synthesize_demo_data")
sentences_tool = _load("make_demo_sentences")


def test_committed_sentence_list_is_open_vocabulary():
    sentences = synth.read_sentences(synth.DEFAULT_SENTENCES)
    words = {word for sentence in sentences for word in synth.normalize(sentence).split()}
    assert len(sentences) >= 5000
    assert len(words) >= 1500  # the old template grammar had 32 words
    assert len({synth.normalize(s) for s in sentences}) == len(sentences)
    assert synth.DEFAULT_SENTENCES.stat().st_size < 1_000_000
    assert all(5 <= len(s.split()) <= 16 for s in sentences)


def test_read_sentences_deduplicates_on_words(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("The cat sat.\nthe  cat sat!\n\nA dog ran far away.\n")
    assert synth.read_sentences(path) == ["The cat sat.", "A dog ran far away."]


def test_splits_are_disjoint_by_sentence_and_voice():
    sentences = [f"Sentence number {i} is here." for i in range(400)]
    splits = synth.plan(sentences, num_train=300, num_test=50, seed=0)
    train, seen, unseen = splits["train"], splits["test_seen_voice"], splits["test_unseen_voice"]
    assert len(train) == 300 and len(seen) == len(unseen) == 50
    train_texts = {text for text, _ in train}
    assert train_texts.isdisjoint(text for text, _ in seen + unseen)
    assert [t for t, _ in seen] == [t for t, _ in unseen]  # the same held-out sentences, only the voice differs
    train_pairs = {(voice[0], voice[1]) for _, voice in train}
    train_variants = {voice[1] for _, voice in train}
    train_accents = {voice[0] for _, voice in train}
    assert all((voice[0], voice[1]) in train_pairs for _, voice in seen)
    assert all(voice[1] not in train_variants for _, voice in unseen)  # timbres never heard in training
    assert any(voice[0] not in train_accents for _, voice in unseen)  # and an accent never heard in training
    assert set(synth.HELD_OUT_VARIANTS).isdisjoint(synth.TRAIN_VARIANTS)
    with pytest.raises(SystemExit):
        synth.plan(sentences, num_train=390, num_test=50, seed=0)


def test_sentence_selection_filters_dialogue_typos_and_duplicates():
    stories = [
        'Tom saw a big dog in the park. "Hello there," said Tom. Tom saw a big dog in the park!',
        "Tom saw a big dog in the park. The dog ran to the park with Tom. It was fun",
    ] * 3 + ["Then Tom saw a qzx dog in the park."]  # "qzx" is seen once: a typo
    picked = sentences_tool.select_sentences(stories, min_word_count=3)
    assert picked == ["Tom saw a big dog in the park.", "The dog ran to the park with Tom."]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synthesized_manifests(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "synthesize_demo_data.py"), "--output_dir", str(tmp_path),
               "--num_train", "24", "--num_test", "6"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    rows = {
        split: [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "test_seen_voice", "test_unseen_voice")
    }
    assert [len(rows[s]) for s in rows] == [24, 6, 6]
    train_texts = {row["text"] for row in rows["train"]}
    assert train_texts.isdisjoint(row["text"] for row in rows["test_unseen_voice"] + rows["test_seen_voice"])
    train_voices = {row["voice"] for row in rows["train"]}
    train_variants = {voice.split("+")[1] for voice in train_voices}
    assert {row["voice"].split("+")[1] for row in rows["test_unseen_voice"]}.isdisjoint(train_variants)
    assert all((tmp_path / row["audio"]).stat().st_size > 1000 for split in rows.values() for row in split)
