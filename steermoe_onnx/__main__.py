# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""python -m steermoe_onnx export <adapter folder or Hub id> [--output DIR] [--int8]

Writes the ONNX export of a saved SteerMoE adapter to <adapter>/onnx/ (or --output): the audio graph, the LLM's
embedding and decoder graphs, the configs, the processor files and steermoe_onnx.json, the manifest.
"""

import argparse
import logging
import sys
from pathlib import Path

import torch

from modeling_steermoe import SteerMoEForConditionalGeneration
from processing_steermoe import SteerMoEProcessor

from .export import EXPORT_SUBFOLDER, export_onnx


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m steermoe_onnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="Export a saved adapter (with its backbones) to ONNX.")
    export.add_argument("adapter", help="A saved SteerMoE adapter: folder or Hub id.")
    export.add_argument("--output", help=f"Output folder (default: <adapter>/{EXPORT_SUBFOLDER}; required for a Hub id).")
    export.add_argument("--int8", action="store_true", help="Also write dynamically int8-quantized graphs.")
    args = parser.parse_args(argv)
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
    export_onnx(model, processor, args.output, int8=args.int8, source=args.adapter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
