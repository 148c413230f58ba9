# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Export a SteerMoE model to ONNX: three graphs, written next to the adapter (`<adapter>/onnx/`) with the config,
generation config, processor files and a manifest, so the folder runs with ONNX Runtime alone.

- `audio_encoder.onnx`: log-mel features `(windows, mels, frames)` and their mask `(windows, frames)` -> LLM input
  embeddings `(windows, tokens, text_hidden)`: the frozen encoder with the steering after each layer, the pooling,
  the final layer norm and the projection, on the real length (dynamic windows and frames).
- `embed_tokens.onnx`: the LLM's token embedding, `input_ids (batch, length)` -> `(batch, length, text_hidden)`.
- `decoder_model.onnx`: the frozen LLM from `inputs_embeds` with its KV cache (`past_key_values.{i}.key/value` in,
  `present.{i}.key/value` out, the past length may be 0), returning the logits of the last position.

Graphs are traced with transformers' `OnnxExporter` (`torch.export` then `torch.onnx.export`, dynamo-based, with
onnxscript). `int8=True` adds `*.int8.onnx` copies quantized with ONNX Runtime's dynamic quantization (int8 weights
of the MatMuls, activations quantized at run time).
"""

import copy
import datetime
import json
import logging
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import get_layer_types_and_kwargs


logger = logging.getLogger(__name__)

MANIFEST_NAME = "steermoe_onnx.json"
LLM_GENERATION_CONFIG_NAME = "llm_generation_config.json"  # the LLM's own, under the adapter's generation_config.json
EXPORT_SUBFOLDER = "onnx"
FORMAT_NAME = "steermoe-onnx"
FORMAT_VERSION = 1
GRAPHS = ("audio_encoder", "embed_tokens", "decoder_model")
INT8_GRAPHS = ("audio_encoder", "decoder_model")
PRECISIONS = ("fp32", "int8")
SUPPORTED_AUDIO_ENCODERS = ("whisper",)
INT8_OP_TYPES = ["MatMul"]
# The largest difference between ONNX Runtime and PyTorch the export accepts on its own check inputs, times
# max(1, the largest PyTorch value).
TOLERANCE = 1e-4
_CACHE_NAME = re.compile(r"^(input\.|output\.)?cache\.layers\.(\d+)\.(keys|values)$")
PACKAGES = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime")


class SteerMoEAudioGraph(nn.Module):
    """The audio side of a SteerMoE model as one module, what `audio_encoder.onnx` holds.

    `forward(input_features (windows, num_mel_bins, frames), feature_attention_mask (windows, frames))` returns
    `{"audio_embeds": (windows, tokens, text_hidden_size)}`, zero past each window's real length (a window of `n`
    real frames has `get_num_audio_tokens(n, ...)` tokens), exactly `model.get_audio_features`.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor) -> dict:
        return {"audio_embeds": self.model.get_audio_features(input_features, feature_attention_mask)}


def check_exportable(model) -> None:
    """Raise a `ValueError` saying why `model` cannot be exported, if it cannot."""
    config = model.config
    encoder_type = config.audio_config.model_type
    if encoder_type not in SUPPORTED_AUDIO_ENCODERS:
        raise ValueError(
            f"ONNX export supports {SUPPORTED_AUDIO_ENCODERS} audio encoders; this model's is {encoder_type!r} (its "
            "encoder pass hooks the library's forward and branches on the padding, which torch.export cannot trace). "
            "Run it with the PyTorch backend."
        )
    if config.lora_rank:
        raise ValueError(
            "ONNX export does not support LoRA on the LLM (lora_rank > 0): the exported LLM graph is the frozen base "
            "LLM, while this model runs its LLM with LoRA on audio prompts and without it on text. Run it with the "
            "PyTorch backend."
        )
    if config.frame_compression is not None:
        raise ValueError(
            f"ONNX export does not support frame_compression={config.frame_compression!r}: the exported graphs give "
            "the LLM every audio frame, while this adapter's LLM reads the CTC-compressed frames only. Run it with "
            "the PyTorch backend."
        )
    layer_types, _ = get_layer_types_and_kwargs(config.text_config.get_text_config(decoder=True))
    if any(layer_type != "full_attention" for layer_type in layer_types):
        raise ValueError(
            f"ONNX export supports LLMs with full attention in every layer; this one has layer types "
            f"{sorted(set(layer_types))} (sliding-window or linear attention caches are not exported)."
        )
    devices = {parameter.device.type for parameter in model.parameters()}
    if devices != {"cpu"}:
        raise ValueError(f"Export a model on the CPU (it has weights on {sorted(devices)}).")
    dtypes = {parameter.dtype for parameter in model.parameters()}
    if dtypes != {torch.float32}:
        raise ValueError(
            f"Export a float32 model (it has {sorted(map(str, dtypes))} weights): load it with "
            "dtype=torch.float32; int8=True quantizes the exported graphs."
        )
    if model.config.audio_token_id is None:
        raise ValueError("The model has no audio_token_id; build it with audio_token_id=processor.audio_token_id.")


def export_onnx(model, processor, output_dir, int8: bool = False, source: str | None = None) -> Path:
    """Export `model` (a float32 `SteerMoEForConditionalGeneration`) to `output_dir` for ONNX Runtime.

    Writes the three graphs (and with `int8` their quantized copies), `config.json` (with the full backbone configs,
    so no backbone needs to be reachable), `generation_config.json`, the processor files and `steermoe_onnx.json`,
    the manifest: which backbones (ids, revisions) and adapter (`source`) the graphs come from, their inputs and
    outputs, the package versions, and the largest difference between ONNX Runtime and PyTorch on the export's
    check inputs (the export fails if the audio embeddings or the logits differ by more than 1e-4 times
    max(1, their largest magnitude)).

    Returns the output folder.
    """
    check_exportable(model)
    if processor.audio_token_id != model.config.audio_token_id:
        raise ValueError(
            f"The processor's audio token id ({processor.audio_token_id}) is not the model's "
            f"({model.config.audio_token_id}): export the processor saved with this model."
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    samples = _sample_inputs(model, processor)
    quantized = INT8_GRAPHS if int8 else ()
    progress = tqdm(total=len(GRAPHS) + len(quantized) + 1, desc="ONNX export", unit="step", disable=None)
    graphs = {}
    for name in GRAPHS:
        progress.set_postfix_str(name)
        graphs[name] = _export_graph(name, model, samples[name], output_dir)
        progress.update()
    for name in quantized:
        progress.set_postfix_str(f"{name} int8")
        graphs[name]["files"]["int8"] = _quantize_graph(output_dir / graphs[name]["files"]["fp32"])
        progress.update()
    if int8:  # the embedding table is looked up, not multiplied: both precisions share the fp32 graph
        graphs["embed_tokens"]["files"]["int8"] = graphs["embed_tokens"]["files"]["fp32"]
    progress.set_postfix_str("check against PyTorch")
    check = _check_against_pytorch(model, samples, output_dir)
    progress.close()
    _save_runtime_files(model, processor, output_dir)
    manifest = _manifest(model, graphs, check, int8, source)
    (output_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info("Wrote the ONNX export to %s", output_dir)
    return output_dir


def _sample_inputs(model, processor) -> dict[str, dict]:
    """Trace inputs of each graph. Every dynamic axis has a size above 1 and sizes differ between axes, so that
    `torch.export` keeps them symbolic (it specializes sizes 0 and 1, and merges axes of equal size it sees used
    together)."""
    generator = np.random.default_rng(0)
    rate = processor.feature_extractor.sampling_rate
    clips = [0.05 * generator.standard_normal(int(seconds * rate)).astype(np.float32) for seconds in (1.3, 0.7)]
    features = processor(text=[processor.audio_token] * 2, audio=clips, sampling_rate=rate)
    text_config = model.config.text_config
    batch, past, new = 2, 5, 3
    generator = torch.Generator().manual_seed(0)
    cache = DynamicCache(config=text_config)
    with torch.no_grad():
        model.language_model(
            inputs_embeds=torch.randn(batch, past, text_config.hidden_size, generator=generator), cache=cache
        )
    return {
        "audio_encoder": {
            "input_features": features["input_features"],
            "feature_attention_mask": features["feature_attention_mask"],
        },
        "embed_tokens": {"input": torch.randint(0, text_config.vocab_size, (batch, new + 4), generator=generator)},
        "decoder_model": {
            "inputs_embeds": torch.randn(batch, new, text_config.hidden_size, generator=generator),
            "attention_mask": torch.ones(batch, past + new, dtype=torch.long),
            "position_ids": torch.arange(past, past + new).expand(batch, -1).contiguous(),
            "cache": cache,
            "use_cache": True,
            "logits_to_keep": 1,
        },
    }


def _export_graph(name: str, model, inputs: dict, output_dir: Path) -> dict:
    """Trace one graph, give its inputs, outputs and dynamic axes their documented names, save it; returns its
    manifest entry."""
    from transformers.exporters import OnnxConfig, OnnxExporter

    module = {
        "audio_encoder": lambda: SteerMoEAudioGraph(model),
        "embed_tokens": model.get_input_embeddings,
        "decoder_model": lambda: model.language_model,
    }[name]()
    inputs = copy.deepcopy(inputs)
    with torch.no_grad():
        program = OnnxExporter().export(module, inputs, OnnxConfig(dynamic=True)).program
    _name_io(program, name, model.config)
    path = output_dir / f"{name}.onnx"
    _remove_graph(path)
    OnnxExporter.save_program(program, path)
    return {"files": {"fp32": path.name}, **_io_spec(program)}


def _io_shapes(config) -> dict[str, dict[str, tuple]]:
    """Each graph's inputs and outputs with their axes: a name for a dynamic axis, a size for a fixed one."""
    text = config.text_config
    width = text.hidden_size
    kv = (text.num_key_value_heads, getattr(text, "head_dim", None) or width // text.num_attention_heads)
    return {
        "audio_encoder": {
            "input_features": ("windows", config.audio_config.num_mel_bins, "frames"),
            "feature_attention_mask": ("windows", "frames"),
            "audio_embeds": ("windows", "tokens", width),
        },
        "embed_tokens": {"input_ids": ("batch", "length"), "inputs_embeds": ("batch", "length", width)},
        "decoder_model": {
            "inputs_embeds": ("batch", "length", width),
            "attention_mask": ("batch", "total_length"),
            "position_ids": ("batch", "length"),
            "past_key_values": ("batch", kv[0], "past_length", kv[1]),
            "logits": ("batch", 1, text.vocab_size),
            "present": ("batch", kv[0], "total_length", kv[1]),
        },
    }


def _name_io(program, name: str, config) -> None:
    """The names ONNX Runtime loops and other tools expect (`input_ids`, `inputs_embeds`, `audio_embeds`,
    `past_key_values.{i}.key|value` in, `present.{i}.key|value` out, `logits`) and named dynamic axes."""
    import onnx_ir

    graph = program.graph
    renames = {"input": "input_ids", "output": "inputs_embeds"} if name == "embed_tokens" else {}
    shapes = _io_shapes(config)[name]
    for value in [*graph.inputs, *graph.outputs]:
        match = _CACHE_NAME.match(value.name)
        if match:
            direction, layer, kind = match.groups()
            prefix = "present" if direction == "output." else "past_key_values"
            value.name = f"{prefix}.{layer}.{kind[:-1]}"
        else:
            value.name = renames.get(value.name, value.name)
        value.shape = onnx_ir.Shape(shapes[value.name.split(".")[0]])


def _io_spec(program) -> dict:
    """`{"inputs": {name: axes}, "outputs": {...}}` for the manifest."""

    def axes(value):
        return [dim if isinstance(dim, int) else str(dim) for dim in value.shape]

    return {
        "inputs": {value.name: axes(value) for value in program.graph.inputs},
        "outputs": {value.name: axes(value) for value in program.graph.outputs},
    }


def _quantize_graph(path: Path) -> str:
    """Dynamic int8 quantization of one saved graph with ONNX Runtime's tool; returns the new file's name."""
    from transformers.exporters import OnnxExporter, OnnxRuntimeDynamicConfig, OnnxRuntimeQuantizer
    from transformers.exporters.configs import ExportFormat

    program = OnnxExporter.load_program(path)
    quantizer = OnnxRuntimeQuantizer(OnnxRuntimeDynamicConfig(op_types_to_quantize=INT8_OP_TYPES, per_channel=True))
    quantized = quantizer.quantize(program, {}, ExportFormat.ONNX)
    target = path.with_name(path.name.replace(".onnx", ".int8.onnx"))
    _remove_graph(target)
    OnnxExporter.save_program(quantized, target)
    return target.name


def _remove_graph(path: Path) -> None:
    """Delete a graph and its weights file before rewriting them (a new save must not append to old weights)."""
    for file in (path, path.with_name(path.name + ".data")):
        file.unlink(missing_ok=True)


def _check_against_pytorch(model, samples: dict, output_dir: Path) -> dict:
    """Run the fp32 graphs in ONNX Runtime on the trace inputs and compare with PyTorch; raise past the tolerances."""
    from .modeling_onnx import open_session

    audio = samples["audio_encoder"]
    with torch.no_grad():
        expected = model.get_audio_features(**audio).numpy()
    session = open_session(output_dir / "audio_encoder.onnx")
    got = session.run(None, {key: value.numpy() for key, value in audio.items()})[0]
    audio_diff, audio_scale = float(np.abs(got - expected).max()), max(1.0, float(np.abs(expected).max()))

    decoder = copy.deepcopy(samples["decoder_model"])
    feed = {key: decoder[key].numpy() for key in ("inputs_embeds", "attention_mask", "position_ids")}
    for layer, (keys, values, *_) in enumerate(decoder["cache"]):
        feed[f"past_key_values.{layer}.key"], feed[f"past_key_values.{layer}.value"] = keys.numpy(), values.numpy()
    session = open_session(output_dir / "decoder_model.onnx")
    got = session.run(["logits"], feed)[0]
    with torch.no_grad():
        expected = model.language_model(**decoder).logits.numpy()
    logits_diff, logits_scale = float(np.abs(got - expected).max()), max(1.0, float(np.abs(expected).max()))
    if not (audio_diff <= TOLERANCE * audio_scale and logits_diff <= TOLERANCE * logits_scale):
        raise RuntimeError(
            f"The exported graphs disagree with PyTorch: audio embeddings by {audio_diff:.3g} (largest value "
            f"{audio_scale:.3g}), last logits by {logits_diff:.3g} (largest value {logits_scale:.3g}); the relative "
            f"tolerance is {TOLERANCE:g}."
        )
    return {"audio_embeds_max_abs_diff": audio_diff, "logits_max_abs_diff": logits_diff}


def _save_runtime_files(model, processor, output_dir: Path) -> None:
    """The config with the full backbone configs (ids dropped, kept in the manifest), the generation configs (the
    adapter's, and the LLM's own, which generation falls back on as PyTorch's LLM does) and the processor files."""
    config = copy.deepcopy(model.config)
    for key in ("audio_model_id", "audio_model_revision", "text_model_id", "text_model_revision"):
        setattr(config, key, None)
    for key in ("auto_map", "custom_pipelines"):
        if hasattr(config, key):
            delattr(config, key)
    config.architectures = ["SteerMoEOnnxForConditionalGeneration"]
    config.save_pretrained(output_dir)
    model.generation_config.save_pretrained(output_dir)
    model.language_model.generation_config.save_pretrained(output_dir, config_file_name=LLM_GENERATION_CONFIG_NAME)
    processor.save_pretrained(output_dir)


def _manifest(model, graphs: dict, check: dict, int8: bool, source: str | None) -> dict:
    config = model.config
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_adapter": source or getattr(config, "_name_or_path", None) or None,
        "audio_encoder": {
            "id": config.audio_model_id,
            "revision": config.audio_model_revision,
            "model_type": config.audio_config.model_type,
        },
        "language_model": {
            "id": config.text_model_id,
            "revision": config.text_model_revision,
            "model_type": config.text_config.model_type,
            "num_layers": config.text_config.num_hidden_layers,
        },
        "aligner": {
            key: getattr(config, key)
            for key in ("aligner_type", "num_experts", "steered_layers", "pooling_type", "pooling_kernel_size",
                        "projector_type", "encoder_lora_rank")
        },  # fmt: skip
        "audio_token_id": config.audio_token_id,
        "dtype": "float32",
        "graphs": graphs,
        "int8": {
            "tool": "onnxruntime.quantization.quantize_dynamic",
            "graphs": list(INT8_GRAPHS),
            "weight_type": "QInt8",
            "per_channel": True,
            "op_types": INT8_OP_TYPES,
        }
        if int8
        else None,
        "check": check,
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
