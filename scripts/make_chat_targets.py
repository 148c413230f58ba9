# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Targets for chat-style training: the frozen LLM's own answer to each transcript typed as the user turn.

Every row of MANIFEST (JSONL) is copied to OUTPUT with a `response` column: the LLM's greedy answer to the row's
transcript as the only user turn of its chat template (at most `--max_new_tokens` tokens). Relative audio paths are
rewritten relative to OUTPUT's folder. `train.py --task chat --text_column response --transcript_column text` then
trains the aligner so that the audio, as the whole user turn, gets that answer (Ultravox's recipe with
`--kl_loss_coef`).

    python scripts/make_chat_targets.py data/demo/train.jsonl --text_model_id models/SmolLM2-135M-Instruct \\
        --output data/demo/train_chat.jsonl

With `--repeat_fraction F`, a seeded fraction F of the rows become transcription rows instead: their
`--prompt_column` holds `--repeat_prompt` (the instruction that follows the audio) and their response is the
transcript itself, so no answer is generated for them; the other rows get an empty instruction (the audio is the
whole user turn). `train.py --task chat --prompt_column prompt` trains on both kinds in one run.

Rows are written as each batch finishes; the same command continues an interrupted run where it stopped, and does
nothing (without loading the LLM) when OUTPUT is complete.
"""

import argparse
import json
import logging
import os
import random
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer


logger = logging.getLogger("steermoe.make_chat_targets")


def chat_responses(model, tokenizer, questions: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers of `model` to each question as the only (typed) user turn of the chat template, generated as
    one left-padded batch; decoded without special tokens and stripped."""
    conversations = [[{"role": "user", "content": question}] for question in questions]
    inputs = tokenizer.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, padding=True, return_tensors="pt"
    ).to(model.device)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [text.strip() for text in texts]


def rebase_audio(value, source_dir: Path, output_dir: Path):
    """A relative audio path of a manifest in `source_dir`, made relative to `output_dir`; other values as is."""
    if not isinstance(value, str) or Path(value).is_absolute() or "://" in value:
        return value
    return os.path.relpath(source_dir / value, output_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", help="A JSONL manifest with an audio and a transcript column.")
    parser.add_argument("--text_model_id", required=True, help="The instruct LLM (id or folder) the adapter uses.")
    parser.add_argument("--output", required=True, help="The JSONL manifest to write (continued if it exists).")
    parser.add_argument("--text_column", default="text", help="The transcript column.")
    parser.add_argument("--audio_column", default="audio")
    parser.add_argument("--response_column", default="response")
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--limit", type=int, help="Only the first N rows.")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (use the training LLM's).")
    parser.add_argument("--repeat_fraction", type=float, default=0.0, help="Fraction of transcription rows.")
    parser.add_argument("--repeat_prompt", default="Repeat the text above exactly.")
    parser.add_argument("--prompt_column", default="prompt", help="Written when --repeat_fraction > 0.")
    parser.add_argument("--seed", type=int, default=0, help="Which rows become transcription rows.")
    args = parser.parse_args(argv)
    if not 0.0 <= args.repeat_fraction <= 1.0:
        raise SystemExit(f"--repeat_fraction must lie in [0, 1], got {args.repeat_fraction}.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    source, output = Path(args.manifest), Path(args.output)
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()][: args.limit]
    done = len(output.read_text().splitlines()) if output.exists() else 0
    if done > len(rows):
        raise SystemExit(f"{output} holds {done} rows, more than the {len(rows)} asked for: a different manifest?")
    if done == len(rows):
        logger.info("%s: all %d rows already written", output, done)
        return 0
    if done:
        logger.info("%s: %d of %d rows already written; continuing", output, done, len(rows))

    tokenizer = AutoTokenizer.from_pretrained(args.text_model_id)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.text_model_id, dtype=getattr(torch, args.dtype))
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()

    output.parent.mkdir(parents=True, exist_ok=True)
    source_dir, output_dir = source.resolve().parent, output.resolve().parent
    rng = random.Random(args.seed)
    repeat = [rng.random() < args.repeat_fraction for _ in rows]
    with open(output, "a") as handle, torch.inference_mode():
        for first in tqdm(range(done, len(rows), args.batch_size), desc="Answering", unit="batch"):
            batch = rows[first : first + args.batch_size]
            flags = repeat[first : first + args.batch_size]
            asked = [row[args.text_column] for row, flag in zip(batch, flags) if not flag]
            answers = iter(chat_responses(model, tokenizer, asked, args.max_new_tokens) if asked else [])
            for row, flag in zip(batch, flags):
                response = row[args.text_column] if flag else next(answers)
                row = {**row, args.response_column: response}
                if args.repeat_fraction > 0:
                    row[args.prompt_column] = args.repeat_prompt if flag else ""
                row[args.audio_column] = rebase_audio(row[args.audio_column], source_dir, output_dir)
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
    logger.info("%s: %d rows", output, len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
