# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of SteerMoE models and their ONNX Runtime backend.

    python -m steermoe_onnx export my-adapter [--int8]            # writes my-adapter/onnx/
    steermoe-transcribe --model my-adapter --backend onnx speech.flac
"""

from .export import SteerMoEAudioGraph, check_exportable, export_onnx
from .modeling_onnx import SteerMoEOnnxForConditionalGeneration, onnx_pipeline


__all__ = ["SteerMoEAudioGraph", "SteerMoEOnnxForConditionalGeneration", "check_exportable", "export_onnx", "onnx_pipeline"]
