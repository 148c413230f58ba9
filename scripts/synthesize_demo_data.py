# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Synthesize the demo's open-vocabulary spoken dataset with espeak-ng.

Sentences: `scripts/demo_sentences.txt` (distinct everyday story sentences sampled from the stories260K LM by
`make_demo_sentences.py`; not a template grammar). Voices: espeak-ng accents x voice variants x speed x pitch. A
fixed set of variants and one accent (`en-gb-scotland`) are held out: no training clip uses them.

Splits (manifests `{"audio", "text", "voice"}`; audio relative to the output folder):
- `train.jsonl`: training sentences, each read once by a random training voice;
- `test_unseen_voice.jsonl`: held-out sentences (never in training) read by held-out voices (variants never
  heard in training; half of them also with the held-out accent);
- `test_seen_voice.jsonl`: the same held-out sentences read by training voices (accent + variant pairs used in
  training), so the two test splits differ only in the voice.
"""

import argparse
import json
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

DEFAULT_SENTENCES = Path(__file__).resolve().parent / "demo_sentences.txt"
TRAIN_ACCENTS = ["en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-us-nyc", "en-gb-x-gbcwmd"]
HELD_OUT_ACCENTS = ["en-gb-scotland"]
# espeak-ng voice variants (espeak-ng-data/voices/!v) that sound like a person (robots, whisper, croak left out).
VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "Alex", "Andy", "Annie", "adam", "anika", "aunty", "belinda",
    "benjamin", "boris", "caleb", "david", "ed", "edward", "grandma", "grandpa", "gustave", "iven", "john",
    "linda", "max", "michel", "norbert", "paul", "quincy", "rob", "robert", "shelby", "steph", "travis", "victor",
]  # fmt: skip
HELD_OUT_VARIANTS = ["m7", "f5", "klatt4", "Annie", "edward", "grandpa", "linda", "travis"]
TRAIN_VARIANTS = [v for v in VARIANTS if v not in HELD_OUT_VARIANTS]
SPEEDS = (130, 200)  # words per minute (espeak-ng's default is 175)
PITCHES = (25, 75)  # 0-99 (default 50)


def read_sentences(path: Path) -> list[str]:
    """Distinct sentences (deduplicated on lower-cased words, first occurrence kept)."""
    seen, sentences = set(), []
    for line in Path(path).read_text().splitlines():
        line = " ".join(line.split())
        key = normalize(line)
        if line and key not in seen:
            seen.add(key)
            sentences.append(line)
    return sentences


def normalize(text: str) -> str:
    return " ".join("".join(c if c.isalnum() or c in " '" else " " for c in text.lower()).split())


def voice_name(voice: tuple) -> str:
    accent, variant, speed, pitch = voice
    return f"{accent}+{variant}+s{speed}+p{pitch}"


def random_voice(rng: random.Random, accents: list[str], variants: list[str]) -> tuple:
    return (rng.choice(accents), rng.choice(variants), rng.randint(*SPEEDS), rng.randint(*PITCHES))


def plan(sentences: list[str], num_train: int, num_test: int, seed: int) -> dict[str, list[tuple[str, tuple]]]:
    """`{split: [(text, voice), ...]}`: splits disjoint by sentence (train vs test) and by voice (unseen)."""
    if num_train + num_test > len(sentences):
        raise SystemExit(f"Asked for {num_train} + {num_test} sentences; the list has {len(sentences)}.")
    rng = random.Random(seed)
    order = list(sentences)
    rng.shuffle(order)
    test, train = order[:num_test], order[num_test : num_test + num_train]
    train_plan = [(text, random_voice(rng, TRAIN_ACCENTS, TRAIN_VARIANTS)) for text in train]
    seen_pairs = sorted({(voice[0], voice[1]) for _, voice in train_plan})
    seen_plan = []
    for text in test:
        accent, variant = rng.choice(seen_pairs)
        seen_plan.append((text, (accent, variant, rng.randint(*SPEEDS), rng.randint(*PITCHES))))
    unseen_plan = []
    for index, text in enumerate(test):
        accents = HELD_OUT_ACCENTS if index % 2 == 0 else TRAIN_ACCENTS
        unseen_plan.append((text, random_voice(rng, accents, HELD_OUT_VARIANTS)))
    return {"train": train_plan, "test_seen_voice": seen_plan, "test_unseen_voice": unseen_plan}


def synthesize(text: str, voice: tuple, path: Path) -> None:
    accent, variant, speed, pitch = voice
    command = ["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch), "-w", str(path), text]
    subprocess.run(command, check=True, capture_output=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="data/demo")
    parser.add_argument("--sentences", default=str(DEFAULT_SENTENCES), help="One sentence per line.")
    parser.add_argument("--num_train", type=int, default=6000)
    parser.add_argument("--num_test", type=int, default=200, help="Held-out sentences (each test split reads them all).")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        sys.stderr.write("espeak-ng is not installed: apt-get install espeak-ng (Debian/Ubuntu) or brew install espeak-ng\n")
        return 2
    out = Path(args.output_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    splits = plan(read_sentences(Path(args.sentences)), args.num_train, args.num_test, args.seed)
    jobs = [
        (split, text, voice, Path("wav") / f"{split}-{index:05d}.wav")
        for split, items in splits.items()
        for index, (text, voice) in enumerate(items)
    ]
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        list(tqdm(pool.map(lambda job: synthesize(job[1], job[2], out / job[3]), jobs), total=len(jobs), desc="Synthesizing"))
    for split in splits:
        with open(out / f"{split}.jsonl", "w") as handle:
            for job_split, text, voice, path in jobs:
                if job_split == split:
                    handle.write(json.dumps({"audio": str(path), "text": text, "voice": voice_name(voice)}) + "\n")
    voices = {split: len({voice_name(v) for _, v in items}) for split, items in splits.items()}
    print(f"{out}: " + ", ".join(f"{split} {len(items)} clips ({voices[split]} voice settings)" for split, items in splits.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
