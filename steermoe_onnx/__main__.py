# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""python -m steermoe_onnx export <adapter folder or Hub id> [--output DIR] [--int8 [GRAPH ...]]
                                  [--check-audio FILE ...] [--strict]

Writes the ONNX export of a saved SteerMoE adapter to <adapter>/onnx/ (or --output): the audio graph, the LLM's
embedding and decoder graphs, the configs, the processor files and steermoe_onnx.json, the manifest.

--int8 adds the int8 copy of the LLM (weight-only int8 blocks); --int8 audio_encoder decoder_model also the audio
graph's (dynamic int8), --int8 audio_encoder only that one. The export then transcribes the check clips (--check-audio: a few clips
of your own held-out speech; by default two noise clips) greedily with fp32 and with each int8 set, writes the
agreement into the manifest and warns when the tokens differ; --strict removes such int8 graphs and fails.
"""

import argparse
import logging
import sys
from pathlib import Path

import torch

from modeling_steermoe import SteerMoEForConditionalGeneration
from processing_steermoe import SteerMoEProcessor

from .export import EXPORT_SUBFOLDER, INT8_GRAPHS, export_onnx


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m steermoe_onnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="Export a saved adapter (with its backbones) to ONNX.")
    export.add_argument("adapter", help="A saved SteerMoE adapter: folder or Hub id.")
    export.add_argument("--output", help=f"Output folder (default: <adapter>/{EXPORT_SUBFOLDER}; required for a Hub id).")
    export.add_argument("--int8", nargs="*", choices=INT8_GRAPHS, metavar="GRAPH",
                        help=f"Also write int8 graphs: the LLM's (decoder_model) alone, or those named from {', '.join(INT8_GRAPHS)}.")  # fmt: skip
    export.add_argument("--check-audio", nargs="+", metavar="FILE", help="Clips for the int8 check (default: noise).")
    export.add_argument("--strict", action="store_true", help="Fail (and drop them) when int8 graphs change tokens.")
    args = parser.parse_args(argv)
    if args.int8 == []:  # the bare flag: the default int8 graphs (export.DEFAULT_INT8_GRAPHS)
        args.int8 = True
    if (args.check_audio or args.strict) and not args.int8:
        parser.error("--check-audio and --strict check the int8 graphs: add --int8")
    if args.output is None:
        if not Path(args.adapter).is_dir():
            parser.error(f"{args.adapter} is not a local folder: pass --output")
        args.output = str(Path(args.adapter) / EXPORT_SUBFOLDER)
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("steermoe_onnx").setLevel(logging.INFO)
    args = parse_args(argv)
    model = SteerMoEForConditionalGeneration.from_pretrained(args.adapter, dtype=torch.float32)
    processor = SteerMoEProcessor.from_pretrained(args.adapter, trust_remote_code=True)
    export_onnx(model, processor, args.output, int8=args.int8, source=args.adapter, check_audio=args.check_audio,
                strict=args.strict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
