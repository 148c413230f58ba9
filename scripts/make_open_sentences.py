# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Open-domain sentences for the instruct recipe, from text the system package manager ships.

The demo's story sentences (`demo_sentences.txt`) use about 2,100 distinct words: enough to learn to transcribe,
far too few to hear a question about anything. This script collects everyday English from two Debian packages
(`apt-get install wordnet-base fortunes`; `scripts/setup.sh` installs them):

- WordNet 3.0's usage examples (`/usr/share/wordnet/data.*`, the quoted parts of the glosses: "the ship called in
  Athens", "how many nonstops are there to Dallas?"), about 34,000 usable;
- the sentences of the `fortunes` collection (quotations, jokes, proverbs), about 14,000 usable.

Kept: 4-16 words, plain ASCII letters, digits and punctuation; the first letter capitalised and a final full stop
added where none ends the sentence, so the target's casing does not depend on the source. Dropped: duplicates (on
lower-cased words), and any sentence that holds both words of a content-word pair of a question or tool request of
`scripts/spoken_chat_eval.py` ("capital" + "france", "set" + "timer"), so that evaluation never asks what training
read. Written in a seeded random order, one per line (about 49,000 lines, vocabulary about 34,000 words).

    python scripts/make_open_sentences.py --output data/instruct/sentences.txt
"""

import argparse
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spoken_chat_eval import QUESTIONS, TOOL_REQUESTS  # noqa: E402


WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
PLAIN = re.compile(r"[A-Za-z0-9 ,.'?!;:-]+")
STOPWORDS = set(
    "a an the of in on at to for by with from and or is are was were be do does did what which who whom how many "
    "much my me i you your it its this that some any like please there".split()
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def wordnet_examples(folder: Path) -> list[str]:
    """The quoted usage examples of every synset gloss in WordNet's `data.*` files."""
    examples = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in (folder / f"data.{part}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "| " not in line:  # the license header
                continue
            examples += [text.strip() for text in re.findall(r'"([^"]+)"', line.split("| ", 1)[1])]
    return examples


def fortune_sentences(folder: Path) -> list[str]:
    """The sentences of every fortune in the collection's plain-text files (the `.dat` indexes skipped)."""
    sentences = []
    for path in sorted(folder.iterdir()):
        if path.is_symlink() or "." in path.name:
            continue
        for fortune in path.read_text(encoding="utf-8", errors="ignore").split("\n%\n"):
            sentences += re.split(r"(?<=[.?!])\s+", " ".join(fortune.split()))
    return sentences


def held_out_pairs() -> list[tuple[str, str]]:
    """Consecutive content-word pairs of the evaluation's questions and tool requests."""
    pairs = []
    for text in [question for question, _ in QUESTIONS] + [request for request, _, _ in TOOL_REQUESTS]:
        content = [word for word in words(text) if word not in STOPWORDS]
        pairs += list(zip(content, content[1:]))
    return pairs


def clean(text: str) -> str | None:
    """The sentence tidied for use as a transcript, or None if it is not kept."""
    text = " ".join(text.split()).strip(" -;:,")
    if not 4 <= len(text.split()) <= 16 or not PLAIN.fullmatch(text) or not text[:1].isalpha():
        return None
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def collect(sources: list[list[str]], seed: int = 0) -> list[str]:
    """Clean, deduplicated, held-out-free sentences of all sources, in a seeded random order."""
    pairs = held_out_pairs()
    seen, kept = set(), []
    for text in (text for source in sources for text in source):
        text = clean(text)
        if text is None:
            continue
        key = " ".join(words(text))
        vocabulary = set(key.split())
        if key in seen or any(first in vocabulary and second in vocabulary for first, second in pairs):
            continue
        seen.add(key)
        kept.append(text)
    random.Random(seed).shuffle(kept)
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="data/instruct/sentences.txt")
    parser.add_argument("--wordnet_dir", default=str(WORDNET_DIR))
    parser.add_argument("--fortunes_dir", default=str(FORTUNES_DIR))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folders = {"wordnet-base": args.wordnet_dir, "fortunes": args.fortunes_dir}
    missing = [package for package, folder in folders.items() if not Path(folder).is_dir()]
    if missing:
        sys.stderr.write(f"{', '.join(missing)} not installed: apt-get install {' '.join(missing)}\n")
        return 2
    sources = [wordnet_examples(Path(args.wordnet_dir)), fortune_sentences(Path(args.fortunes_dir))]
    sentences = collect(sources, args.seed)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(sentences) + "\n")
    vocabulary = {word for text in sentences for word in words(text)}
    print(f"{output}: {len(sentences)} sentences, {len(vocabulary)} distinct words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
