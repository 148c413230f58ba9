# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Sample the demo's open-vocabulary sentence list from a frozen story LM (stories260K by default).

    python scripts/make_demo_sentences.py --lm ../shared/models/stories260K --output scripts/demo_sentences.txt

Stories are sampled (temperature 1, top-p 0.95, a fixed seed), split into sentences and filtered: no dialogue
(quotes), 5-16 words, letters and simple punctuation only, every word seen at least `--min_word_count` times in
the whole sample (drops the LM's misspellings), at most `--max_per_prefix` sentences per three-word opening (the LM
loves "One day, ..."), deduplicated on the lower-cased words. The committed `scripts/demo_sentences.txt` was made
with the defaults; `synthesize_demo_data.py` reads it, so the demo does not need to run an LM.
"""

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

SENTENCE = re.compile(r"[A-Z][^.!?\"\n]*[.!?]")
ALLOWED = re.compile(r"^[A-Za-z][A-Za-z ,']*[A-Za-z][.!?]$")


def words_of(sentence: str) -> list[str]:
    return re.findall(r"[a-z']+", sentence.lower())


def sample_stories(lm: str, num_stories: int, batch_size: int, seed: int, max_new_tokens: int) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lm)
    model = AutoModelForCausalLM.from_pretrained(lm, dtype=torch.float32).eval()
    torch.manual_seed(seed)
    stories = []
    for _ in range(0, num_stories, batch_size):
        ids = torch.full((batch_size, 1), tokenizer.bos_token_id)
        with torch.no_grad():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_p=0.95,
                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id,
            )
        stories += tokenizer.batch_decode(out, skip_special_tokens=True)
        print(f"sampled {len(stories)} stories", file=sys.stderr, flush=True)
    return stories


def select_sentences(stories: list[str], min_words=5, max_words=16, min_word_count=3, max_per_prefix=20) -> list[str]:
    candidates = []
    for story in stories:
        # A sentence cut by the token budget has no end mark and is not matched; quoted speech is dropped.
        for match in SENTENCE.finditer(story.replace("\n", " \n ")):
            start, end = match.span()
            if start > 0 and story.replace("\n", " \n ")[start - 1] == '"':
                continue
            sentence = " ".join(match.group().split())
            if ALLOWED.match(sentence) and min_words <= len(sentence.split()) <= max_words:
                candidates.append(sentence)
    counts = Counter(word for sentence in candidates for word in words_of(sentence))
    seen, per_prefix, selected = set(), Counter(), []
    for sentence in candidates:
        words = words_of(sentence)
        key = " ".join(words)
        prefix = " ".join(words[:3])
        if key in seen or per_prefix[prefix] >= max_per_prefix or min(counts[w] for w in words) < min_word_count:
            continue
        seen.add(key)
        per_prefix[prefix] += 1
        selected.append(sentence)
    return selected


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", default="../shared/models/stories260K")
    parser.add_argument("--output", default="scripts/demo_sentences.txt")
    parser.add_argument("--num_stories", type=int, default=3072)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--min_word_count", type=int, default=3)
    parser.add_argument("--max_per_prefix", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    stories = sample_stories(args.lm, args.num_stories, args.batch_size, args.seed, args.max_new_tokens)
    sentences = select_sentences(stories, min_word_count=args.min_word_count, max_per_prefix=args.max_per_prefix)
    Path(args.output).write_text("\n".join(sentences) + "\n")
    vocabulary = {word for sentence in sentences for word in words_of(sentence)}
    print(f"{args.output}: {len(sentences)} distinct sentences, {len(vocabulary)} distinct words, "
          f"{sum(len(s.split()) for s in sentences) / len(sentences):.1f} words each on average")
    return 0


if __name__ == "__main__":
    sys.exit(main())
