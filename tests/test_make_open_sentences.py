"""scripts/make_open_sentences.py: open-domain transcripts from WordNet's examples and the fortunes collection."""

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import make_open_sentences  # noqa: E402

WORDNET_LINE = '00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which exists; "{}"; "{}"  \n'


def fake_sources(tmp_path, examples: list[str], fortunes: list[str]):
    wordnet, games = tmp_path / "wordnet", tmp_path / "fortunes"
    wordnet.mkdir()
    games.mkdir()
    lines = ["  1 This software and database is being provided to you, the LICENSEE, by  \n"]
    lines += [WORDNET_LINE.format(a, b) for a, b in zip(examples[::2], examples[1::2])]
    for part in ("noun", "verb", "adj", "adv"):
        (wordnet / f"data.{part}").write_text("".join(lines) if part == "noun" else lines[0])
    (games / "people").write_text("\n%\n".join(fortunes) + "\n%\n")
    (games / "people.dat").write_bytes(b"\x00\x01 binary index")
    return wordnet, games


def test_sentences_are_cleaned_deduplicated_and_never_the_evaluations(tmp_path):
    examples = [
        "the ship called in Athens",  # kept, capitalised, full stop added
        "how many nonstops are there to Dallas?",
        "too short",  # fewer than 4 words
        "the capital of France is a lovely city",  # holds ("capital", "france"), a pair of a held-out question
        "The ship called in Athens.",  # a duplicate of the first once normalised
        "café au lait is served at noon",  # not plain ASCII
    ]
    fortunes = ["Better hope you get what you want before you stop wanting it.  Ever get the feeling that\n"
                "the world's on tape and one of the reels is missing?", "Set the timer and forget it, said my aunt."]
    wordnet, games = fake_sources(tmp_path, examples, fortunes)
    output = tmp_path / "out" / "sentences.txt"
    folders = ["--wordnet_dir", str(wordnet), "--fortunes_dir", str(games)]
    assert make_open_sentences.main(["--output", str(output), *folders]) == 0
    sentences = output.read_text().splitlines()
    assert sorted(sentences) == sorted([
        "The ship called in Athens.",
        "How many nonstops are there to Dallas?",
        "Better hope you get what you want before you stop wanting it.",
        "Ever get the feeling that the world's on tape and one of the reels is missing?",
    ])  # fmt: skip
    again = tmp_path / "again.txt"
    make_open_sentences.main(["--output", str(again), *folders])
    assert again.read_text() == output.read_text()  # seeded order


def test_missing_packages_are_named(tmp_path, capsys):
    code = make_open_sentences.main(["--output", str(tmp_path / "s.txt"), "--wordnet_dir", str(tmp_path / "none")])
    assert code == 2 and "apt-get install wordnet-base" in capsys.readouterr().err
