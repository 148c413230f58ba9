# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Synthesize the demo's small spoken dataset with espeak-ng: simple story sentences read by many training voices,
and a test set read by a voice never used in training. Writes WAV files and `train.jsonl` / `test.jsonl` manifests
(`{"audio": <relative path>, "text": ...}`)."""

import argparse
import itertools
import json
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

NAMES = ["Lily", "Tom", "Sue", "Ben", "Max", "Anna", "Tim", "Mia"]
VERBS = ["saw", "liked", "found", "had", "wanted", "took"]
ADJECTIVES = ["big", "little", "red", "happy", "old", "blue", "small", "funny"]
NOUNS = ["dog", "cat", "ball", "tree", "car", "bird", "cake", "box", "fish", "hat"]
TRAIN_ACCENTS = ["en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-us-nyc", "en-gb-x-gbcwmd"]
TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4"]
TEST_VOICE = ("en-gb-scotland", "f5", 165, 55)


def sentences(seed: int) -> list[str]:
    combos = [f"{n} {v} the {a} {o}." for n, v, a, o in itertools.product(NAMES, VERBS, ADJECTIVES, NOUNS)]
    random.Random(seed).shuffle(combos)
    return combos


def synthesize(text: str, voice: tuple, path: Path) -> None:
    accent, variant, speed, pitch = voice
    command = ["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch), "-w", str(path), text]
    subprocess.run(command, check=True, capture_output=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default="data/demo")
    parser.add_argument("--num_train", type=int, default=1200)
    parser.add_argument("--num_test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        sys.stderr.write("espeak-ng is not installed: apt-get install espeak-ng (Debian/Ubuntu) or brew install espeak-ng\n")
        return 2
    out = Path(args.output_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    texts = sentences(args.seed)
    if args.num_train + args.num_test > len(texts):
        raise SystemExit(f"At most {len(texts)} distinct sentences.")
    rng = random.Random(args.seed)
    train_voices = [
        (accent, variant, rng.choice([140, 160, 180]), rng.choice([35, 50, 65]))
        for accent, variant in itertools.product(TRAIN_ACCENTS, TRAIN_VARIANTS)
    ]
    jobs = []
    for split, split_texts in (("train", texts[: args.num_train]), ("test", texts[args.num_train :][: args.num_test])):
        for index, text in enumerate(split_texts):
            voice = TEST_VOICE if split == "test" else train_voices[index % len(train_voices)]
            jobs.append((split, text, voice, Path("wav") / f"{split}-{index:05d}.wav"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(tqdm(pool.map(lambda job: synthesize(job[1], job[2], out / job[3]), jobs), total=len(jobs), desc="Synthesizing"))
    for split in ("train", "test"):
        with open(out / f"{split}.jsonl", "w") as handle:
            for job_split, text, voice, path in jobs:
                if job_split == split:
                    handle.write(json.dumps({"audio": str(path), "text": text, "voice": "+".join(map(str, voice))}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
