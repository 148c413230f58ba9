"""ONNX export and the ONNX Runtime backend: exported audio embeddings equal PyTorch's within 1e-4, generation equals
PyTorch's token for token (greedy, beams, batches, text only, the pipeline and the CLI), unsupported models and
options are refused by name. One export of the tiny pair per module, and one of the real pair (skipped where absent)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from conftest import ROOT, SHARED, speechlike
from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer, pipeline

import steermoe_cli
from backbones import save_wav2vec2_family
from configuration_steermoe import SteerMoEConfig
from modeling_steermoe import SteerMoEForConditionalGeneration
from processing_steermoe import SteerMoEProcessor


pytest.importorskip("onnxruntime", reason="the ONNX backend needs pip install 'steermoe[onnx]'")
pytest.importorskip("onnxscript", reason="the ONNX export needs pip install 'steermoe[onnx]'")

from steermoe_onnx import SteerMoEOnnxForConditionalGeneration, check_exportable, export_onnx, onnx_pipeline  # noqa: E402
from steermoe_onnx.__main__ import main as steermoe_onnx_main  # noqa: E402
from steermoe_onnx.export import INT8_GRAPHS, MANIFEST_NAME, _export_graph, _sample_inputs  # noqa: E402
from steermoe_onnx.modeling_onnx import open_session  # noqa: E402


GREEDY = {"max_new_tokens": 8, "min_new_tokens": 8}


@pytest.fixture(scope="module")
def exported(backbone_dirs, tmp_path_factory):
    """A tiny adapter (aligner weights made large enough to matter) saved with its processor and exported, the int8
    copies of both the audio graph and the LLM included: `(adapter folder, PyTorch model, processor)`."""
    audio_dir, text_dir = backbone_dirs
    processor = SteerMoEProcessor(AutoFeatureExtractor.from_pretrained(audio_dir), AutoTokenizer.from_pretrained(text_dir))
    torch.manual_seed(0)
    config = SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir))
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32)
    with torch.no_grad():
        model.aligner.steering_vectors.normal_(std=0.5)
        model.aligner.projector.weight.normal_(std=0.5)
    adapter = tmp_path_factory.mktemp("onnx") / "adapter"
    model.save_pretrained(adapter)
    processor.save_pretrained(adapter)
    export_onnx(model, processor, adapter / "onnx", int8=list(INT8_GRAPHS), source=str(adapter))
    return adapter, model.eval(), processor


@pytest.fixture(scope="module")
def onnx_model(exported):
    return SteerMoEOnnxForConditionalGeneration.from_pretrained(exported[0])


def clips():
    """A padded batch of real-length clips, one of them longer than a 30 s window."""
    return [speechlike(2.3, seed=1), speechlike(0.6, seed=2), speechlike(41.0, seed=3)]


def test_export_writes_graphs_configs_processor_and_manifest(exported):
    adapter, model, _ = exported
    folder = adapter / "onnx"
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["audio_encoder"] == {"id": model.config.audio_model_id, "revision": None, "model_type": "whisper"}
    assert manifest["language_model"]["id"] == model.config.text_model_id
    assert manifest["source_adapter"] == str(adapter) and manifest["audio_token_id"] == model.config.audio_token_id
    for name, graph in manifest["graphs"].items():
        assert set(graph["files"]) == ({"fp32", "int8"} if name in INT8_GRAPHS else {"fp32"})
        assert all((folder / file).is_file() for file in graph["files"].values())
    assert manifest["graphs"]["decoder_model"]["int8"]["bits"] == 8 and manifest["format_version"] == 2
    decoder = manifest["graphs"]["decoder_model"]
    layers = model.config.text_config.num_hidden_layers
    assert set(decoder["inputs"]) == {"inputs_embeds", "attention_mask", "position_ids"} | {
        f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")
    }
    assert decoder["inputs"]["past_key_values.0.key"][2] == "past_length"
    assert decoder["outputs"]["present.0.key"][2] == "total_length" and "logits" in decoder["outputs"]
    assert manifest["graphs"]["audio_encoder"]["outputs"]["audio_embeds"][:2] == ["windows", "tokens"]
    assert manifest["check"]["audio_embeds_max_abs_diff"] < 1e-4 and manifest["packages"]["onnxruntime"]
    config = json.loads((folder / "config.json").read_text())
    assert config["audio_model_id"] is None and config["audio_config"]["model_type"] == "whisper"
    assert "AutoModel" not in config["auto_map"] and "custom_pipelines" not in config
    for name in ("generation_config.json", "llm_generation_config.json", "processor_config.json", "tokenizer.json"):
        assert (folder / name).is_file()
    assert not list(folder.glob("*.safetensors"))


def test_audio_embeddings_equal_pytorch_within_1e4(exported, onnx_model):
    adapter, model, processor = exported
    int8 = SteerMoEOnnxForConditionalGeneration.from_pretrained(adapter / "onnx", precision="int8")
    for batch in (clips(), [speechlike(0.3, seed=4)], [speechlike(30.0, seed=5)]):
        inputs = processor(text=[processor.audio_token] * len(batch), audio=batch, sampling_rate=16000)
        features = inputs["input_features"], inputs["feature_attention_mask"]
        with torch.no_grad():
            expected = model.get_audio_features(*features)
        got = onnx_model.get_audio_features(*features)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() < 1e-4
        quantized = int8.get_audio_features(*features)
        assert 0 < (quantized - expected).abs().max() < 0.2 * expected.abs().max()


def test_generation_equals_pytorch(exported, onnx_model):
    _, model, processor = exported
    inputs = processor.apply_transcription_request(clips(), sampling_rate=16000)
    assert int(inputs["attention_mask"].sum(-1).min()) < inputs["input_ids"].shape[1]  # right-padded batch
    expected = model.generate(**inputs, **GREEDY)
    assert torch.equal(onnx_model.generate(**inputs, **GREEDY), expected)
    beams = {"max_new_tokens": 5, "num_beams": 3}
    assert torch.equal(onnx_model.generate(**inputs, **beams), model.generate(**inputs, **beams))
    with torch.no_grad():
        logits = model(**inputs).logits
    last = inputs["attention_mask"].sum(-1) - 1
    onnx_logits = onnx_model(**{**inputs, "attention_mask": None}).logits  # right padding: compare real rows only
    row = int(last.argmax())
    assert (onnx_logits[row, -1] - logits[row, last[row]]).abs().max() < 1e-4
    text = processor.tokenizer(["transcribe the audio please", "the quick brown fox"], return_tensors="pt", padding=True)
    assert torch.equal(onnx_model.generate(**text, **GREEDY), model.generate(**text, **GREEDY))


def test_pipeline_and_cli_backend_onnx_equal_pytorch(exported, tmp_path, capsys):
    adapter, _, _ = exported
    for index, clip in enumerate(clips()):
        soundfile.write(tmp_path / f"{index}.wav", clip, 16000)
    soundfile.write(tmp_path / "silence.wav", np.zeros(16000, dtype=np.float32), 16000)
    outputs = {}
    for backend in ("pytorch", "onnx"):
        code = steermoe_cli.main(
            [str(tmp_path / "*.wav"), "--model", str(adapter), "--backend", backend, "--batch-size", "2",
             "--max-new-tokens", "6", "--format", "jsonl"]
        )  # fmt: skip
        assert code == 0
        outputs[backend] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    texts = {backend: [(r["file"], r["text"]) for r in records] for backend, records in outputs.items()}
    assert texts["onnx"] == texts["pytorch"] and len(texts["onnx"]) == 4
    assert dict(texts["onnx"])[str(tmp_path / "silence.wav")] == ""
    asr = onnx_pipeline(str(adapter), precision="int8")
    assert type(asr.model).__name__ == "SteerMoEOnnxForConditionalGeneration"
    stale = tmp_path / "stale"  # an adapter saved by an older version: its root remote code is not this pipeline's
    shutil.copytree(adapter, stale)
    with open(stale / "processing_steermoe.py", "a") as handle:
        handle.write("\nraise ImportError('stale remote code')\n")
    files = [str(tmp_path / f"{index}.wav") for index in range(2)]
    assert [out["text"] for out in onnx_pipeline(str(stale))(files, max_new_tokens=6)] == [
        dict(texts["onnx"])[file] for file in files
    ]
    assert isinstance(asr({"array": speechlike(1.0, 44100), "sampling_rate": 44100}, max_new_tokens=3)["text"], str)


def test_unsupported_models_and_options_are_refused(exported, backbone_dirs, tmp_path):
    adapter, _, processor = exported
    audio_dir, text_dir = backbone_dirs
    hubert = SteerMoEForConditionalGeneration(
        SteerMoEConfig(audio_model_id=str(save_wav2vec2_family(tmp_path / "hubert", "hubert")), text_model_id=str(text_dir))
    )
    with pytest.raises(ValueError, match="'hubert'"):
        check_exportable(hubert)
    lora = SteerMoEForConditionalGeneration(
        SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir), lora_rank=2), dtype=torch.float32
    )
    with pytest.raises(ValueError, match="LoRA on the LLM"):
        export_onnx(lora, processor, tmp_path / "lora")
    compressed = SteerMoEForConditionalGeneration(
        SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir), ctc_loss_coef=1.0,
                       frame_compression="ctc_threshold"), dtype=torch.float32,
    )  # fmt: skip
    with pytest.raises(ValueError, match="frame_compression='ctc_threshold'"):
        export_onnx(compressed, processor, tmp_path / "compressed")
    bf16 = SteerMoEForConditionalGeneration(
        SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir)), dtype=torch.bfloat16
    )
    with pytest.raises(ValueError, match="float32"):
        check_exportable(bf16)
    with pytest.raises(FileNotFoundError, match="python -m steermoe_onnx export"):
        SteerMoEOnnxForConditionalGeneration.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="precision"):
        SteerMoEOnnxForConditionalGeneration.from_pretrained(adapter, precision="int4")
    for argv in (["--backend", "onnx", "--device", "cuda"], ["--backend", "onnx", "--dtype", "bfloat16"],
                 ["--onnx-precision", "int8"]):  # fmt: skip
        with pytest.raises(SystemExit):
            steermoe_cli.parse_args(["a.wav", "--model", str(adapter), *argv])


def test_aligner_variants_and_encoder_lora_export(backbone_dirs, processor, tmp_path):
    """The audio graph of the other aligner code paths (one router per layer, average pooling, MLP projector, LoRA in
    the encoder) equals PyTorch's too."""
    audio_dir, text_dir = backbone_dirs
    config = SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir), aligner_type="per_layer_router",
                            pooling_type="avg", projector_type="mlp", encoder_lora_rank=2)  # fmt: skip
    torch.manual_seed(0)
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name or "steering_vectors" in name:
                parameter.normal_(std=0.5)
    entry = _export_graph("audio_encoder", model, _sample_inputs(model, processor)["audio_encoder"], tmp_path)
    session = open_session(tmp_path / entry["files"]["fp32"])
    inputs = processor(text=[processor.audio_token] * 2, audio=clips()[:2], sampling_rate=16000)
    features = inputs["input_features"], inputs["feature_attention_mask"]
    with torch.no_grad():
        expected = model.get_audio_features(*features).numpy()
    got = session.run(None, {"input_features": features[0].numpy(), "feature_attention_mask": features[1].numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_export_folder_alone_loads_and_refuses_missing_int8(exported, tmp_path):
    adapter, model, _ = exported
    folder = tmp_path / "export"
    shutil.copytree(adapter / "onnx", folder, ignore=shutil.ignore_patterns("*.int8.onnx*"))
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for graph in manifest["graphs"].values():
        graph["files"].pop("int8", None)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="--int8"):
        SteerMoEOnnxForConditionalGeneration.from_pretrained(folder, precision="int8")
    onnx_model = SteerMoEOnnxForConditionalGeneration.from_pretrained(folder)
    loaded = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = loaded.apply_transcription_request(speechlike(1.5), sampling_rate=16000)
    assert torch.equal(onnx_model.generate(**inputs, **GREEDY), model.generate(**inputs, **GREEDY))


def test_bench_runs_on_the_export(exported, tmp_path):
    adapter, _, _ = exported
    soundfile.write(tmp_path / "clip.wav", speechlike(1.5), 16000)
    command = [sys.executable, str(ROOT / "bench" / "onnx_runtime.py"), "--adapter", str(adapter), "--audio",
               str(tmp_path / "clip.wav"), "--repeats", "1", "--warmup", "0", "--new_tokens", "4", "--output_dir",
               str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(next(tmp_path.glob("onnx_runtime-*.json")).read_text())
    backends = [row["backend"] for row in payload["rows"]]
    assert backends == ["pytorch", "onnx fp32", "onnx int8", "onnx int8 audio only", "onnx int8 llm only"]
    assert all(row["peak_rss_mb"] > 0 and "decode_tokens_per_s" in row and row["rtf"] > 0 for row in payload["rows"])
    assert payload["rows"][1]["identical_to_pytorch"] == 1.0  # fp32 ONNX transcribes as PyTorch does
    assert payload["rows"][1]["identical_clips"] == "1/1"
    sizes = {row["backend"]: row["graphs_mb"] for row in payload["rows"]}
    assert sizes["onnx int8 llm only"] < sizes["onnx fp32"] and sizes["onnx int8 audio only"] < sizes["onnx fp32"]
    assert sizes["onnx int8"] < min(sizes["onnx int8 llm only"], sizes["onnx int8 audio only"])
    assert "|" in result.stdout


@pytest.fixture(scope="module")
def real_export(tmp_path_factory):
    """The real pair (Whisper tiny.en encoder + stories260K) with a seeded aligner, saved with the demo's stop string
    and exported with `python -m steermoe_onnx export` (fp32)."""
    audio_dir, text_dir = SHARED / "models" / "whisper-tiny.en-encoder", SHARED / "models" / "stories260K"
    if not (audio_dir.is_dir() and text_dir.is_dir()):
        pytest.skip(f"real backbones not found under {SHARED / 'models'} (only on developer machines and CI)")
    processor = SteerMoEProcessor(AutoFeatureExtractor.from_pretrained(audio_dir), AutoTokenizer.from_pretrained(text_dir))
    torch.manual_seed(0)
    config = SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir), audio_token_id=processor.audio_token_id)
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32)
    with torch.no_grad():
        model.aligner.projector.weight.normal_(std=0.1)
    model.generation_config.stop_strings = ["."]
    adapter = tmp_path_factory.mktemp("real") / "adapter"
    model.save_pretrained(adapter)
    processor.save_pretrained(adapter)
    assert steermoe_onnx_main(["export", str(adapter)]) == 0
    return adapter, model.eval(), processor


def test_real_pair_embeddings_and_greedy_transcripts_equal_pytorch(real_export):
    adapter, model, processor = real_export
    files = sorted(str(path) for path in (SHARED / "audio").iterdir())
    onnx_model = SteerMoEOnnxForConditionalGeneration.from_pretrained(adapter)
    inputs = processor.apply_transcription_request(files)
    assert len(set(inputs["feature_attention_mask"].sum(-1).tolist())) == len(files)  # real lengths, padded batch
    with torch.no_grad():
        expected = model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"])
    got = onnx_model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"])
    assert (got - expected).abs().max() < 1e-4
    asr_pytorch = pipeline("automatic-speech-recognition", model=str(adapter), trust_remote_code=True, dtype=torch.float32)
    asr_onnx = onnx_pipeline(str(adapter))
    expected_texts = [out["text"] for out in asr_pytorch(files, max_new_tokens=24)]
    assert [out["text"] for out in asr_onnx(files, max_new_tokens=24)] == expected_texts
    assert all(text.strip() for text in expected_texts)
    assert [out["text"] for out in asr_onnx(files, max_new_tokens=24, batch_size=3)] == expected_texts
    unstopped = {"max_new_tokens": 12, "generate_kwargs": {"stop_strings": None}}  # overrides the saved stop string
    assert [out["text"] for out in asr_onnx(files[:1], **unstopped)] == [out["text"] for out in asr_pytorch(files[:1], **unstopped)]


def test_int8_is_per_graph_the_llm_weight_only_and_checked_against_fp32(exported):
    """The LLM's int8 copy holds block-wise int8 weights (MatMulNBits), not dynamic int8 activations; each graph
    loads at its own precision; the export's greedy check in the manifest is what the graphs decode."""
    import onnx

    adapter, model, processor = exported
    folder = adapter / "onnx"
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    ops = {node.op_type for node in onnx.load(str(folder / "decoder_model.int8.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops and "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops
    mode = {name: (folder / f"decoder_model{name}.onnx.data").stat().st_mode & 0o777 for name in ("", ".int8")}
    assert mode[".int8"] == mode[""]  # as readable as the fp32 weights (the quantizer writes owner-only)
    audio_ops = {node.op_type for node in onnx.load(str(folder / "audio_encoder.int8.onnx"), load_external_data=False).graph.node}
    assert "DynamicQuantizeLinear" in audio_ops

    models = {
        "fp32": SteerMoEOnnxForConditionalGeneration.from_pretrained(folder),
        "int8": SteerMoEOnnxForConditionalGeneration.from_pretrained(folder, precision="int8"),
        "audio": SteerMoEOnnxForConditionalGeneration.from_pretrained(folder, precision={"audio_encoder": "int8"}),
        "llm": SteerMoEOnnxForConditionalGeneration.from_pretrained(folder, precision={"decoder_model": "int8"}),
    }
    assert models["int8"].precisions == {"audio_encoder": "int8", "embed_tokens": "fp32", "decoder_model": "int8"}
    assert models["audio"].precisions == {"audio_encoder": "int8", "embed_tokens": "fp32", "decoder_model": "fp32"}
    assert models["llm"].precisions == {"audio_encoder": "fp32", "embed_tokens": "fp32", "decoder_model": "int8"}
    inputs = processor.apply_transcription_request(clips()[:2], sampling_rate=16000)
    features = inputs["input_features"], inputs["feature_attention_mask"]
    assert torch.equal(models["audio"].get_audio_features(*features), models["int8"].get_audio_features(*features))
    assert torch.equal(models["llm"].get_audio_features(*features), models["fp32"].get_audio_features(*features))

    check = manifest["int8"]["check"]
    assert manifest["int8"]["graphs"] == list(INT8_GRAPHS) and check["clips"] == 2
    assert [entry["int8_graphs"] for entry in check["sets"]] == [["audio_encoder"], ["decoder_model"], list(INT8_GRAPHS)]
    samples = _sample_inputs(model, processor)  # the check's default clips: the trace clips
    tokens = {}
    for key in ("fp32", "audio", "llm", "int8"):
        tokens[key] = []
        for clip, rate in samples["check_clips"]:
            request = processor.apply_transcription_request(clip, sampling_rate=rate)
            out = models[key].generate(**request, max_new_tokens=check["max_new_tokens"], do_sample=False)
            tokens[key].append(out[0, request["input_ids"].shape[1] :].tolist())
    for entry, key in zip(check["sets"], ("audio", "llm", "int8")):
        assert entry["identical"] == sum(a == b for a, b in zip(tokens[key], tokens["fp32"]))
        shares = []
        for ours, theirs in zip(tokens[key], tokens["fp32"]):
            shared = next((i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y), min(len(ours), len(theirs)))
            shares.append(shared / max(len(theirs), 1))
        assert entry["mean_agreeing_prefix"] == round(sum(shares) / len(shares), 4)

    with pytest.raises(ValueError, match="precision per graph"):
        SteerMoEOnnxForConditionalGeneration.from_pretrained(folder, precision={"decoder": "int8"})
    with pytest.raises(ValueError, match="no .* copy of \\['embed_tokens'\\]"):
        SteerMoEOnnxForConditionalGeneration.from_pretrained(folder, precision={"embed_tokens": "int8"})


def test_int8_check_warns_or_strictly_refuses_graphs_that_change_transcripts(exported, tmp_path, monkeypatch, caplog):
    """With `strict`, quantized graphs whose greedy tokens differ from fp32's are removed and the export says so;
    without it, a warning names them. The check sees a real difference: an int8 LLM replaced by another model's."""
    import steermoe_onnx.export as export_module

    adapter, model, processor = exported
    other = SteerMoEForConditionalGeneration(model.config, dtype=torch.float32)
    with torch.no_grad():
        for parameter in other.language_model.parameters():
            parameter.normal_(std=0.5)
        other.aligner.load_state_dict(model.aligner.state_dict())
    other_dir = export_onnx(other, processor, tmp_path / "other")
    quantize = export_module._quantize_graph

    def swapped(path, name):  # the "int8" LLM is another LLM's fp32 graph: its greedy tokens differ
        file = quantize(path, name)
        if name == "decoder_model":
            for suffix in ("", ".data"):
                shutil.copyfile(other_dir / f"decoder_model.onnx{suffix}", path.parent / f"{file}{suffix}")
        return file

    monkeypatch.setattr(export_module, "_quantize_graph", swapped)
    with caplog.at_level("WARNING", logger="steermoe_onnx.export"):
        export_onnx(model, processor, tmp_path / "warned", int8=["decoder_model"])
    manifest = json.loads((tmp_path / "warned" / MANIFEST_NAME).read_text())
    assert manifest["int8"]["check"]["sets"][0]["identical"] < 2 and "change greedy transcripts" in caplog.text
    assert "int8" not in manifest["graphs"]["audio_encoder"]["files"]

    with caplog.at_level("INFO", logger="steermoe_onnx.export"), pytest.raises(RuntimeError, match="strict: .* removed"):
        export_onnx(model, processor, tmp_path / "strict", int8=True, strict=True)  # True: the LLM alone
    assert "audio_encoder stays fp32" in caplog.text
    manifest = json.loads((tmp_path / "strict" / MANIFEST_NAME).read_text())
    assert manifest["int8"] is None and not list((tmp_path / "strict").glob("*.int8.onnx*"))
    assert all(set(graph["files"]) == {"fp32"} for graph in manifest["graphs"].values())
    assert torch.equal(
        SteerMoEOnnxForConditionalGeneration.from_pretrained(tmp_path / "strict").generate(
            **processor.apply_transcription_request(speechlike(1.0), sampling_rate=16000), **GREEDY
        ),
        model.generate(**processor.apply_transcription_request(speechlike(1.0), sampling_rate=16000), **GREEDY),
    )
    with pytest.raises(ValueError, match="int8 names graphs"):
        export_onnx(model, processor, tmp_path / "bad", int8=["llm"])


def test_export_command_line_names_the_int8_graphs_and_the_check():
    from steermoe_onnx.__main__ import parse_args

    base = ["export", "adapter", "--output", "out"]
    assert parse_args(base).int8 is None
    assert parse_args([*base, "--int8"]).int8 is True
    assert parse_args([*base, "--int8", "decoder_model"]).int8 == ["decoder_model"]
    args = parse_args([*base, "--int8", "--check-audio", "a.wav", "b.wav", "--strict"])
    assert args.check_audio == ["a.wav", "b.wav"] and args.strict
    for argv in (["--int8", "llm"], ["--check-audio", "a.wav"], ["--strict"]):
        with pytest.raises(SystemExit):
            parse_args([*base, *argv])
