# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot spoken chat on an instruct adapter: are spoken questions answered as typed ones?

Each question (and each tool request) is synthesized with espeak-ng by voices held out from the demo's training
voices, then asked twice through the standard chat call: typed (the text as the user turn) and spoken (the audio as
the whole user turn). Reports, greedy decoding:

- `text_right` / `speech_right`: the fraction of questions whose answer contains an expected key word, and their
  ratio `speech_right / text_right` (the goal is >= 0.8; the LLM's own typed answers are the reference, since a small
  LLM gets some facts wrong either way), plus `same_answer`, the fraction of spoken answers identical to the typed;
- tool calls (a system prompt describes the tools and a JSON call format, then two worked exchanges): the fraction
  of answers that parse as a JSON call, and the fraction that name the right tool with the right argument.

With `--equivalence_manifest` (a JSONL manifest with `audio` and `text`, e.g. the demo's held-out sentences by
held-out voices `data/demo/test_unseen_voice.jsonl`), it reports the measure that does not depend on what the small
LLM knows: each sentence is the whole user turn, typed and spoken, and `equivalence` holds the share of spoken
answers identical to the typed answer and the mean word-level F1 between the two (bag of words, case and punctuation
ignored; the typed answer is the base LLM's, since text-only use is exactly the base LLM).

With `--wer_manifest` (a JSONL manifest with `audio` and `text`, e.g. the held-out sentences by held-out voices
`data/instruct/test_unseen_voice.jsonl`), it also reports the transcription WER through the same chat call: the
clip followed by the adapter's transcription prompt as one user turn.

    python scripts/spoken_chat_eval.py --model outputs/instruct --output outputs/instruct/spoken_chat.json \
        --wer_manifest data/instruct/test_unseen_voice.jsonl
    python scripts/spoken_chat_eval.py --model outputs/demo_chat --max_new_tokens 32 \
        --equivalence_manifest data/demo/test_unseen_voice.jsonl --equivalence_samples 100
"""

import argparse
import collections
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import evaluate
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor

# Questions never used in training (the demo trains on story sentences), with the key words a right answer holds.
QUESTIONS = [
    ("What is the capital of France?", ["paris"]),
    ("What is the capital of Italy?", ["rome"]),
    ("What is the capital of Japan?", ["tokyo"]),
    ("What is the capital of Germany?", ["berlin"]),
    ("What is the capital of Spain?", ["madrid"]),
    ("What is the capital of England?", ["london"]),
    ("What is the capital of Russia?", ["moscow"]),
    ("What is the capital of China?", ["beijing"]),
    ("What is the capital of Egypt?", ["cairo"]),
    ("What is the capital of Canada?", ["ottawa"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What is the opposite of big?", ["small", "little"]),
    ("What is the opposite of happy?", ["sad", "unhappy"]),
    ("What is the opposite of up?", ["down"]),
    ("What is the opposite of day?", ["night"]),
    ("What is the opposite of fast?", ["slow"]),
    ("What is the opposite of old?", ["young", "new"]),
    ("What is the opposite of light?", ["dark", "heavy"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What color are bananas?", ["yellow"]),
    ("How many days are in a week?", ["seven", "7"]),
    ("How many legs does a spider have?", ["eight", "8"]),
    ("How many months are in a year?", ["twelve", "12"]),
    ("What animal says moo?", ["cow"]),
    ("What do bees make?", ["honey"]),
    ("Which planet do we live on?", ["earth"]),
    ("What is frozen water called?", ["ice"]),
    ("What is the largest ocean on Earth?", ["pacific"]),
    ("Who wrote Romeo and Juliet?", ["shakespeare"]),
    ("What gas do plants take in from the air?", ["carbon dioxide", "co2"]),
    ("What is the closest star to the Earth?", ["sun"]),
    ("In which country are the pyramids of Giza?", ["egypt"]),
    ("What is the boiling point of water in Celsius?", ["100", "hundred"]),
    ("How many hours are in a day?", ["24", "twenty four"]),
    ("What is the largest planet in our solar system?", ["jupiter"]),
    ("Who painted the Mona Lisa?", ["leonardo", "vinci"]),
    ("What is the chemical symbol for gold?", ["au"]),
    ("What is the tallest animal in the world?", ["giraffe"]),
    ("What is the fastest land animal?", ["cheetah"]),
    ("How many continents are there?", ["seven", "7"]),
    ("What language is spoken in Brazil?", ["portuguese"]),
    ("Who was the first president of the United States?", ["washington"]),
    ("What is the main ingredient of guacamole?", ["avocado", "avocados"]),
    ("What do caterpillars turn into?", ["butterfly", "butterflies", "moth", "moths"]),
    ("What is the currency of Japan?", ["yen"]),
    ("How many sides does a triangle have?", ["three", "3"]),
    ("What is two plus two?", ["four", "4"]),
    ("Which animal is known as the king of the jungle?", ["lion"]),
    ("What is the hardest natural substance?", ["diamond", "diamonds"]),
    ("Who discovered the law of gravity?", ["newton"]),
    ("Which musical instrument has eighty eight keys?", ["piano"]),
    ("Which organ pumps blood through the body?", ["heart"]),
    ("What do you call a baby dog?", ["puppy"]),
    ("What do you call a baby cat?", ["kitten"]),
    ("What is the largest mammal?", ["whale"]),
    ("Which season comes after winter?", ["spring"]),
    ("What color is grass?", ["green"]),
    ("How many minutes are in an hour?", ["sixty", "60"]),
    ("What language do people speak in Mexico?", ["spanish"]),
    ("Which bird is a symbol of peace?", ["dove"]),
    ("What is the longest river in Africa?", ["nile"]),
    ("Who invented the telephone?", ["bell"]),
    ("What do pandas eat?", ["bamboo"]),
    ("Which planet is known as the red planet?", ["mars"]),
    ("What is the capital of Australia?", ["canberra"]),
    ("In which city is the Eiffel Tower?", ["paris"]),
    ("What is the opposite of wet?", ["dry"]),
    ("What shape has four equal sides?", ["square"]),
    ("What is the plural of mouse?", ["mice"]),
    ("How many wheels does a bicycle have?", ["two", "2"]),
    ("What color is snow?", ["white"]),
    ("What do plants need from the sun to grow?", ["light", "sunlight", "energy"]),
]

TOOLS_SYSTEM = (
    "You are an assistant that controls a phone. Tools: set_timer(minutes), get_weather(city), play_music(artist), "
    "call(person), set_alarm(time). When the user asks for one of these, reply with only a JSON object such as "
    '{"name": "get_weather", "arguments": {"city": "Paris"}} and nothing else.'
)
# Two worked exchanges before the request (typed in both arms): without them the 135M LLM never writes the JSON
# call, even typed (0/10 parse); with them it writes one every time. Neither names a requested city or person.
TOOLS_EXAMPLES = [
    {"role": "user", "content": "Turn on the radio."},
    {"role": "assistant", "content": '{"name": "play_music", "arguments": {"artist": "radio"}}'},
    {"role": "user", "content": "Is it raining in Oslo?"},
    {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
]
# (request, tool name, a word the arguments must hold)
TOOL_REQUESTS = [
    ("Set a timer for five minutes.", "set_timer", ["5", "five"]),
    ("Set a timer for ten minutes.", "set_timer", ["10", "ten"]),
    ("What is the weather in London?", "get_weather", ["london"]),
    ("What is the weather like in Tokyo?", "get_weather", ["tokyo"]),
    ("Play some music by the Beatles.", "play_music", ["beatles"]),
    ("Play a song by Mozart.", "play_music", ["mozart"]),
    ("Call my mother.", "call", ["mother", "mom"]),
    ("Please call John.", "call", ["john"]),
    ("Set an alarm for seven in the morning.", "set_alarm", ["7", "seven"]),
    ("Wake me up at six.", "set_alarm", ["6", "six"]),
]

METRIC_PATH = str(Path(__file__).resolve().parent.parent / "metrics" / "asr_error_rate")

# espeak-ng voices the demo never trains on (scripts/synthesize_demo_data.py holds them out).
EVAL_ACCENTS = ["en-gb-scotland", "en-us", "en-gb"]
EVAL_VARIANTS = ["m7", "f5", "klatt4", "Annie", "edward", "grandpa", "linda", "travis"]


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def holds_keyword(answer: str, keywords: list[str]) -> bool:
    """Whether `answer` contains one of `keywords` as whole words (case and punctuation ignored)."""
    words = f" {normalize(answer)} "
    return any(f" {normalize(keyword)} " in words for keyword in keywords)


def word_f1(prediction: str, reference: str) -> float:
    """Word-level F1 between two texts as bags of words (case and punctuation ignored); 1.0 when both are empty."""
    predicted, expected = normalize(prediction).split(), normalize(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def parse_tool_call(answer: str) -> dict | None:
    """The first JSON object in `answer` that has a string "name" (and optional "arguments"), else None."""
    decoder = json.JSONDecoder()
    for start in [match.start() for match in re.finditer(r"\{", answer)]:
        try:
            call, _ = decoder.raw_decode(answer[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            return call
    return None


def tool_call_matches(call: dict | None, name: str, keywords: list[str]) -> bool:
    if call is None or call["name"] != name:
        return False
    return holds_keyword(json.dumps(call.get("arguments", {})), keywords)


def synthesize(texts: list[str], folder: Path, seed: int) -> list[Path]:
    """One WAV per text, each read by a random held-out espeak-ng voice."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is required: apt-get install espeak-ng (or brew install espeak-ng)")
    rng = random.Random(seed)
    paths = []
    for index, text in enumerate(tqdm(texts, desc="Synthesizing")):
        voice = f"{rng.choice(EVAL_ACCENTS)}+{rng.choice(EVAL_VARIANTS)}"
        path = folder / f"{index:04d}.wav"
        command = ["espeak-ng", "-v", voice, "-s", str(rng.randint(140, 190)), "-p", str(rng.randint(30, 70)),
                   "-w", str(path), text]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        paths.append(path)
    return paths


def answer_all(model, processor, conversations: list[list[dict]], batch_size: int, max_new_tokens: int) -> list[str]:
    """Greedy answers to chat conversations through `apply_chat_template` + `generate`, in batches."""
    answers = []
    for first in tqdm(range(0, len(conversations), batch_size), desc="Answering"):
        batch = conversations[first : first + batch_size]
        inputs = processor.apply_chat_template(
            batch, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        ).to(model.device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answers += [text.strip() for text in processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)]
    return answers


def evaluate_spoken_chat(model, processor, audio_dir: Path, seed: int = 0, batch_size: int = 8,
                         max_new_tokens: int = 48, questions=QUESTIONS, tool_requests=TOOL_REQUESTS) -> dict:  # fmt: skip
    """Typed vs spoken answers to `questions` and tool calls for `tool_requests` (see the module docstring)."""
    texts = [q for q, _ in questions] + [r for r, _, _ in tool_requests]
    paths = synthesize(texts, audio_dir, seed)
    question_paths, tool_paths = paths[: len(questions)], paths[len(questions) :]
    typed = [[{"role": "user", "content": q}] for q, _ in questions]
    spoken = [[{"role": "user", "content": [{"type": "audio", "path": str(p)}]}] for p in question_paths]
    context = [{"role": "system", "content": TOOLS_SYSTEM}, *TOOLS_EXAMPLES]
    typed_tools = [[*context, {"role": "user", "content": r}] for r, _, _ in tool_requests]
    spoken_tools = [[*context, {"role": "user", "content": [{"type": "audio", "path": str(p)}]}] for p in tool_paths]
    answers = answer_all(model, processor, typed + spoken + typed_tools + spoken_tools, batch_size, max_new_tokens)
    n, m = len(questions), len(tool_requests)
    typed_answers, spoken_answers = answers[:n], answers[n : 2 * n]
    typed_calls, spoken_calls = answers[2 * n : 2 * n + m], answers[2 * n + m :]
    text_right = [holds_keyword(a, k) for a, (_, k) in zip(typed_answers, questions)]
    speech_right = [holds_keyword(a, k) for a, (_, k) in zip(spoken_answers, questions)]

    def tool_scores(calls):
        parsed = [parse_tool_call(a) for a in calls]
        return {
            "parse_rate": sum(c is not None for c in parsed) / m,
            "match_rate": sum(tool_call_matches(c, name, k) for c, (_, name, k) in zip(parsed, tool_requests)) / m,
        }

    report = {
        "questions": n,
        "text_right": sum(text_right) / n,
        "speech_right": sum(speech_right) / n,
        "speech_right_over_text_right": (sum(speech_right) / sum(text_right)) if any(text_right) else None,
        "speech_right_where_text_right": (
            sum(s for s, t in zip(speech_right, text_right) if t) / sum(text_right) if any(text_right) else None
        ),
        "same_answer": sum(a == b for a, b in zip(typed_answers, spoken_answers)) / n,
        "tool_calls_typed": tool_scores(typed_calls),
        "tool_calls_spoken": tool_scores(spoken_calls),
        "examples": [
            {"question": q, "typed": t, "spoken": s} for (q, _), t, s in zip(questions, typed_answers, spoken_answers)
        ]
        + [{"request": r, "typed": t, "spoken": s} for (r, _, _), t, s in zip(tool_requests, typed_calls, spoken_calls)],
    }
    return report


def read_manifest(manifest: Path, limit: int | None = None) -> list[dict]:
    """The first `limit` rows of a JSONL manifest, each `audio` made a path (relative ones from the manifest's folder)."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()][:limit]
    return [{**row, "audio": str(manifest.parent / row["audio"])} for row in rows]


def answer_equivalence(model, processor, manifest: Path, limit: int | None = None, batch_size: int = 8,
                       max_new_tokens: int = 32, cascade: bool = False) -> dict:  # fmt: skip
    """Spoken vs typed answers to the same sentences: each row of `manifest` (JSONL, `audio`, `text`) as the whole
    user turn, once typed (its `text`) and once spoken (its clip), greedy through the chat call. Returns the share of
    identical answers (`identical`), the mean word-level F1 between the two (`mean_word_f1`) and every pair.

    With `cascade`, also the same two figures for the answer to the adapter's own transcript of the clip typed
    (`cascade`: what hearing as well as the adapter transcribes would give if the LLM then read text), with the
    transcripts' WER: it tells a hearing gap from a reading gap."""
    rows = read_manifest(manifest, limit)
    if not rows:
        raise SystemExit(f"{manifest}: no rows to ask.")
    typed = [[{"role": "user", "content": row["text"]}] for row in rows]
    spoken = [[{"role": "user", "content": [{"type": "audio", "path": row["audio"]}]}] for row in rows]
    answers = answer_all(model, processor, typed + spoken, batch_size, max_new_tokens)
    typed_answers, spoken_answers = answers[: len(rows)], answers[len(rows) :]
    report = {"manifest": str(manifest), "clips": len(rows), "max_new_tokens": max_new_tokens,
              **agreement(spoken_answers, typed_answers)}  # fmt: skip
    report["examples"] = [
        {"sentence": row["text"], "typed": t, "spoken": s, "word_f1": round(word_f1(s, t), 4)}
        for row, t, s in zip(rows, typed_answers, spoken_answers)
    ]
    if cascade:
        instruction = processor.transcription_prompt
        heard = answer_all(model, processor, [
            [{"role": "user", "content": [{"type": "audio", "path": row["audio"]}, {"type": "text", "text": instruction}]}]
            for row in rows
        ], batch_size, max_new_tokens)  # fmt: skip
        relayed = answer_all(model, processor, [[{"role": "user", "content": text}] for text in heard], batch_size,
                             max_new_tokens)  # fmt: skip
        scores = evaluate.load(METRIC_PATH).compute(predictions=heard, references=[r["text"] for r in rows], language="en")
        report["cascade"] = {"transcript_wer": scores["wer"], **agreement(relayed, typed_answers)}
        for example, text, answer in zip(report["examples"], heard, relayed):
            example["cascade"] = {"transcript": text, "answer": answer, "word_f1": round(word_f1(answer, example["typed"]), 4)}
    return report


def agreement(answers: list[str], references: list[str]) -> dict:
    """The share of `answers` identical to their reference and the mean word-level F1 to it."""
    f1 = [word_f1(a, r) for a, r in zip(answers, references)]
    return {"identical": sum(a == r for a, r in zip(answers, references)) / len(answers), "mean_word_f1": sum(f1) / len(f1)}


def transcription_wer(model, processor, manifest: Path, limit: int | None = None, batch_size: int = 8,
                      max_new_tokens: int = 48) -> dict:  # fmt: skip
    """WER and CER of transcripts asked through the chat call: each clip of `manifest` (JSONL, `audio` relative to
    its folder, `text`) then the adapter's `transcription_prompt`, as one user turn; greedy."""
    rows = read_manifest(manifest, limit)
    instruction = processor.transcription_prompt
    conversations = [
        [{"role": "user", "content": [{"type": "audio", "path": row["audio"]},
                                      {"type": "text", "text": instruction}]}]
        for row in rows
    ]  # fmt: skip
    predictions = answer_all(model, processor, conversations, batch_size, max_new_tokens)
    references = [row["text"] for row in rows]
    scores = evaluate.load(METRIC_PATH).compute(predictions=predictions, references=references, language="en")
    return {
        "manifest": str(manifest),
        "prompt": instruction,
        **scores,
        "examples": [{"reference": r, "prediction": p} for r, p in zip(references[:20], predictions[:20])],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="An adapter folder or Hub id on an instruct LLM.")
    parser.add_argument("--output", help="Write the JSON report here.")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--equivalence_manifest", help="Ask each sentence of this manifest typed and spoken.")
    parser.add_argument("--equivalence_samples", type=int, help="Only the first N rows of --equivalence_manifest.")
    parser.add_argument("--cascade", action="store_true",
                        help="Also answer the adapter's own transcript of each clip, typed (tells hearing from reading).")
    parser.add_argument("--wer_manifest", help="Also score transcription through the chat call on this manifest.")
    parser.add_argument("--wer_samples", type=int, help="Only the first N rows of --wer_manifest.")
    args = parser.parse_args(argv)
    if args.cascade and not args.equivalence_manifest:
        parser.error("--cascade needs --equivalence_manifest")
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    if not (processor.chat_template or processor.tokenizer.chat_template):
        raise SystemExit(f"{args.model}: the LLM has no chat template; spoken chat needs an instruct LLM.")
    with tempfile.TemporaryDirectory() as folder:
        report = evaluate_spoken_chat(model, processor, Path(folder), args.seed, args.batch_size, args.max_new_tokens)
    if args.equivalence_manifest:
        report["equivalence"] = answer_equivalence(
            model, processor, Path(args.equivalence_manifest), args.equivalence_samples, args.batch_size,
            args.max_new_tokens, args.cascade,
        )
    if args.wer_manifest:
        report["transcription"] = transcription_wer(
            model, processor, Path(args.wer_manifest), args.wer_samples, args.batch_size, args.max_new_tokens
        )
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.output:
        Path(args.output).write_text(text + "\n")
    summary = {key: value for key, value in report.items() if key != "examples"}
    for part in ("equivalence", "transcription"):
        if part in summary:
            summary[part] = {k: v for k, v in summary[part].items() if k != "examples"}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
