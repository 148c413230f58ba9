# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Transcribe audio files with SteerMoE: a saved adapter (folder or Hub id), or a fresh aligner on two backbones."""

import argparse
import logging
import sys

import torch
from transformers import AutoFeatureExtractor, AutoTokenizer


try:
    from .configuration_steermoe import SteerMoEConfig
    from .modeling_steermoe import SteerMoEForConditionalGeneration
    from .processing_steermoe import SteerMoEProcessor, load_audio
except ImportError:
    from configuration_steermoe import SteerMoEConfig
    from modeling_steermoe import SteerMoEForConditionalGeneration
    from processing_steermoe import SteerMoEProcessor, load_audio


logger = logging.getLogger("steermoe")

DEFAULT_AUDIO_MODEL = "openai/whisper-tiny.en"
DEFAULT_TEXT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_PROMPT = "Transcribe the audio."


def load_model_and_processor(args):
    dtype = getattr(torch, args.dtype)
    if args.adapter:
        model = SteerMoEForConditionalGeneration.from_pretrained(args.adapter, dtype=dtype, device_map=args.device)
        processor = SteerMoEProcessor.from_pretrained(args.adapter)
        return model, processor
    logger.warning("No --adapter given: the aligner is freshly initialised, so the output is not a transcript yet.")
    processor = SteerMoEProcessor(
        AutoFeatureExtractor.from_pretrained(args.audio_model), AutoTokenizer.from_pretrained(args.text_model)
    )
    config = SteerMoEConfig(
        audio_model_id=args.audio_model, text_model_id=args.text_model, audio_token_id=processor.audio_token_id
    )
    model = SteerMoEForConditionalGeneration(config, dtype=dtype, device_map=args.device)
    return model, processor


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("audio", nargs="+", help="Audio files (WAV, FLAC, OGG, MP3; any rate, mono or stereo).")
    parser.add_argument("--adapter", help="Saved SteerMoE adapter (folder or Hub id); overrides the backbone flags.")
    parser.add_argument("--audio-model", default=DEFAULT_AUDIO_MODEL, help="Audio encoder id or folder.")
    parser.add_argument("--text-model", default=DEFAULT_TEXT_MODEL, help="LLM id or folder.")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    model, processor = load_model_and_processor(args)
    prompt = processor.build_prompt(args.prompt)
    failed = 0
    for path in args.audio:
        try:
            samples, sampling_rate = load_audio(path)
            inputs = processor(text=prompt, audio=samples, sampling_rate=sampling_rate).to(model.device)
        except (OSError, ValueError, RuntimeError) as error:
            logger.error("%s: %s", path, error)
            failed += 1
            continue
        output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
        text = processor.decode(output[0], skip_special_tokens=True)
        sys.stdout.write(f"{path}\t{text.strip()}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
