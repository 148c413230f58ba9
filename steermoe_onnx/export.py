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
onnxscript). int8 copies (`*.int8.onnx`) are made per graph, each its own way (`INT8_METHODS`): the LLM weight-only
(block-wise int8 weights, `MatMulNBits`), the audio graph with ONNX Runtime's dynamic quantization (int8 weights,
activations quantized at run time). `int8=True` quantizes the LLM only (`DEFAULT_INT8_GRAPHS`), `int8=[names]` the
graphs named. The LLM's dynamic quantization is not offered: on the demo adapter it turned transcripts into loops
(held-out WER 0.77 -> 1.58). The export then decodes its check clips greedily with the fp32 graphs and with each
quantized set, writes the agreement into the manifest and warns when the tokens differ (`strict=True` refuses).
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
FORMAT_VERSION = 2  # 2: per-graph int8 methods (weight-only LLM) and the int8 greedy check
GRAPHS = ("audio_encoder", "embed_tokens", "decoder_model")
PRECISIONS = ("fp32", "int8")
SUPPORTED_AUDIO_ENCODERS = ("whisper",)
# How each graph's int8 copy is made (measured on the demo adapter, 60 held-out clips, README "ONNX Runtime"). The
# audio graph: dynamic quantization of its MatMuls. The LLM: weight-only, int8 blocks of 32 weights along the input
# axis with one scale each, int8 compute (`accuracy_level` 4); 4-bit blocks ruined transcripts (WER 0.66 -> 1.73).
INT8_METHODS = {
    "audio_encoder": {
        "tool": "onnxruntime.quantization.quantize_dynamic",
        "op_types": ["MatMul"],
        "weight_type": "QInt8",
        "per_channel": True,
    },
    "decoder_model": {
        "tool": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
        "op_types": ["MatMul"],
        "bits": 8,
        "block_size": 32,
        "is_symmetric": True,
        "accuracy_level": 4,
    },
}
INT8_GRAPHS = tuple(INT8_METHODS)
# What `int8=True` (`--int8`) quantizes: the LLM alone. On the demo adapter's held-out clips the LLM's weight-only
# int8 kept WER (0.662 -> 0.659) and decoded 1.9x faster than fp32; adding the audio graph's int8 raised it to 0.735.
DEFAULT_INT8_GRAPHS = ("decoder_model",)
# The quantized graphs' check: greedy tokens at most this many per clip, fp32 graphs against each quantized set.
CHECK_MAX_NEW_TOKENS = 32
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


def export_onnx(
    model, processor, output_dir, int8=False, source: str | None = None, check_audio=None, strict: bool = False
) -> Path:
    """Export `model` (a float32 `SteerMoEForConditionalGeneration`) to `output_dir` for ONNX Runtime.

    Writes the three graphs, `config.json` (with the full backbone configs, so no backbone needs to be reachable),
    `generation_config.json`, the processor files and `steermoe_onnx.json`, the manifest: which backbones (ids,
    revisions) and adapter (`source`) the graphs come from, their inputs and outputs, the package versions, and the
    largest difference between ONNX Runtime and PyTorch on the export's check inputs (the export fails if the audio
    embeddings or the logits differ by more than 1e-4 times max(1, their largest magnitude)).

    Args:
        int8 (`bool` or list of graph names): `True` also writes the int8 copy of the LLM (`DEFAULT_INT8_GRAPHS`;
            the audio graph stays fp32, which the log says); a list of names from `INT8_GRAPHS`, of those graphs.
            Each quantized set (each graph alone, and all of them) then transcribes the check clips greedily beside
            the fp32 graphs; the agreement goes into the manifest (`int8.check`), and a warning names the sets whose
            tokens differ.
        check_audio (list, *optional*): the clips of that check (paths, or `(samples, sampling_rate)` pairs): a few
            real clips of the adapter's domain make it a check of transcripts; by default the two noise clips the
            graphs are traced with.
        strict (`bool`, defaults to `False`): refuse quantized graphs whose greedy tokens differ from fp32's: they
            are removed (the fp32 export stays complete) and a `RuntimeError` says by how much they differed.

    Returns the output folder.
    """
    check_exportable(model)
    quantized = _int8_graphs(int8)
    if processor.audio_token_id != model.config.audio_token_id:
        raise ValueError(
            f"The processor's audio token id ({processor.audio_token_id}) is not the model's "
            f"({model.config.audio_token_id}): export the processor saved with this model."
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    samples = _sample_inputs(model, processor)
    progress = tqdm(total=len(GRAPHS) + len(quantized) + 1, desc="ONNX export", unit="step", disable=None)
    graphs = {}
    for name in GRAPHS:
        progress.set_postfix_str(name)
        graphs[name] = _export_graph(name, model, samples[name], output_dir)
        progress.update()
    for name in quantized:
        progress.set_postfix_str(f"{name} int8")
        graphs[name]["files"]["int8"] = _quantize_graph(output_dir / graphs[name]["files"]["fp32"], name)
        graphs[name]["int8"] = INT8_METHODS[name]
        progress.update()
    progress.set_postfix_str("check against PyTorch")
    check = _check_against_pytorch(model, samples, output_dir)
    progress.close()
    _save_runtime_files(model, processor, output_dir)
    manifest = _manifest(model, graphs, check, quantized, source)
    _write_manifest(output_dir, manifest)
    if quantized:
        clips = _check_clips(processor, check_audio, samples)
        manifest["int8"]["check"] = _check_quantized(output_dir, processor, clips, quantized)
        _write_manifest(output_dir, manifest)
        _report_quantized(output_dir, manifest, strict)
    logger.info("Wrote the ONNX export to %s", output_dir)
    return output_dir


def _int8_graphs(int8) -> tuple[str, ...]:
    """The graphs `int8` asks to quantize: `DEFAULT_INT8_GRAPHS` for `True`, none for `False`/`None`, else those
    named (from `INT8_GRAPHS`)."""
    if int8 is True:
        left = [name for name in INT8_GRAPHS if name not in DEFAULT_INT8_GRAPHS]
        logger.info(
            "int8: quantizing %s; %s stays fp32 (its int8 beside the LLM's raised the demo adapter's held-out WER "
            "0.66 -> 0.74; name it to quantize it too: --int8 %s)",
            ", ".join(DEFAULT_INT8_GRAPHS), ", ".join(left), " ".join(INT8_GRAPHS),
        )  # fmt: skip
        return DEFAULT_INT8_GRAPHS
    if not int8:
        return ()
    names = [int8] if isinstance(int8, str) else list(int8)
    unknown = [name for name in names if name not in INT8_GRAPHS]
    if unknown:
        raise ValueError(f"int8 names graphs to quantize, from {INT8_GRAPHS}; got {unknown}.")
    return tuple(name for name in INT8_GRAPHS if name in names)


def _write_manifest(output_dir: Path, manifest: dict) -> None:
    (output_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _check_clips(processor, check_audio, samples: dict) -> list[tuple[np.ndarray, int]]:
    """The quantization check's clips as `(samples, sampling_rate)`: `check_audio` decoded, else the trace clips."""
    from processing_steermoe import decode_audio_input  # the repo's root module (py_modules)

    if check_audio:
        rate = processor.feature_extractor.sampling_rate
        return [
            decode_audio_input(clip[0], clip[1]) if isinstance(clip, tuple) else decode_audio_input(clip, default_rate=rate)
            for clip in check_audio
        ]
    return samples["check_clips"]


def _check_quantized(output_dir: Path, processor, clips: list, quantized: tuple[str, ...]) -> dict:
    """Greedy transcripts of `clips` (one at a time, the saved generation config, at most `CHECK_MAX_NEW_TOKENS`
    tokens) by the fp32 graphs and by each quantized set: each quantized graph alone, then all of them. Per set:
    how many clips got fp32's exact tokens and the mean share of fp32's tokens before the first difference."""
    from .modeling_onnx import SteerMoEOnnxForConditionalGeneration

    def transcribe(precision: dict) -> list[list[int]]:
        model = SteerMoEOnnxForConditionalGeneration.from_pretrained(output_dir, precision=precision)
        tokens = []
        for samples, rate in clips:
            inputs = processor.apply_transcription_request(samples, sampling_rate=rate)
            out = model.generate(**inputs, max_new_tokens=CHECK_MAX_NEW_TOKENS, do_sample=False, num_beams=1)
            tokens.append(out[0, inputs["input_ids"].shape[1] :].tolist())
        return tokens

    reference = transcribe({})
    sets = [(name,) for name in quantized] + ([quantized] if len(quantized) > 1 else [])
    report = {"clips": len(clips), "max_new_tokens": CHECK_MAX_NEW_TOKENS, "sets": []}
    for graphs in sets:
        got = transcribe(dict.fromkeys(graphs, "int8"))
        prefixes = [_common_prefix(ours, theirs) / max(len(theirs), 1) for ours, theirs in zip(got, reference)]
        report["sets"].append({
            "int8_graphs": list(graphs),
            "identical": sum(a == b for a, b in zip(got, reference)),
            "mean_agreeing_prefix": round(sum(prefixes) / len(prefixes), 4),
        })  # fmt: skip
    return report


def _common_prefix(a: list, b: list) -> int:
    """How many leading items `a` and `b` share."""
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return min(len(a), len(b))


def _report_quantized(output_dir: Path, manifest: dict, strict: bool) -> None:
    """Log the quantized graphs' agreement with fp32; warn when tokens differ, or with `strict` remove the quantized
    graphs from the export and raise."""
    check = manifest["int8"]["check"]
    differing = [s for s in check["sets"] if s["identical"] < check["clips"]]
    for entry in check["sets"]:
        logger.info(
            "int8 %s: %d of %d check clips decode to fp32's tokens (mean agreeing prefix %.2f)",
            "+".join(entry["int8_graphs"]), entry["identical"], check["clips"], entry["mean_agreeing_prefix"],
        )  # fmt: skip
    if not differing:
        return
    summary = "; ".join(
        f"int8 {'+'.join(s['int8_graphs'])}: {s['identical']}/{check['clips']} clips identical, agreeing prefix "
        f"{s['mean_agreeing_prefix']:.2f}"
        for s in differing
    )
    if not strict:
        logger.warning(
            "The int8 graphs change greedy transcripts of the check clips (%s). fp32 (the default precision) is exact; "
            "measure int8 on your held-out clips before serving it (bench/onnx_runtime.py).", summary
        )
        return
    for name in manifest["int8"]["graphs"]:
        _remove_graph(output_dir / manifest["graphs"][name]["files"].pop("int8"))
        manifest["graphs"][name].pop("int8")
    manifest["int8"] = None
    _write_manifest(output_dir, manifest)
    raise RuntimeError(
        f"strict: the int8 graphs change greedy transcripts of the check clips ({summary}); they were removed, the "
        f"fp32 export in {output_dir} is complete."
    )


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
        "check_clips": [(clip, rate) for clip in clips],
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


def _quantize_graph(path: Path, name: str) -> str:
    """The int8 copy of one saved graph, made as `INT8_METHODS[name]` says; returns the new file's name."""
    target = path.with_name(path.name.replace(".onnx", ".int8.onnx"))
    _remove_graph(target)
    method = INT8_METHODS[name]
    if method["tool"].endswith("MatMulNBitsQuantizer"):
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        options = {key: method[key] for key in ("bits", "block_size", "is_symmetric", "accuracy_level")}
        quantizer = MatMulNBitsQuantizer(onnx.load(str(path)), op_types_to_quantize=tuple(method["op_types"]), **options)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=True)
        for suffix in ("", ".data"):  # the quantizer writes its weights file owner-only: give it the fp32 graph's mode
            written, source = target.with_name(target.name + suffix), path.with_name(path.name + suffix)
            if written.exists() and source.exists():
                written.chmod(source.stat().st_mode & 0o777)
        return target.name
    from transformers.exporters import OnnxExporter, OnnxRuntimeDynamicConfig, OnnxRuntimeQuantizer
    from transformers.exporters.configs import ExportFormat

    config = OnnxRuntimeDynamicConfig(op_types_to_quantize=method["op_types"], per_channel=method["per_channel"])
    quantized = OnnxRuntimeQuantizer(config).quantize(OnnxExporter.load_program(path), {}, ExportFormat.ONNX)
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


def _manifest(model, graphs: dict, check: dict, quantized: tuple[str, ...], source: str | None) -> dict:
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
        "int8": {"graphs": list(quantized), "check": None} if quantized else None,
        "check": check,
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
