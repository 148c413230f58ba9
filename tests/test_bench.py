"""The benchmark scripts run at the tiny size and write their JSON (figures are not asserted: they are timings)."""

import json
import os
import subprocess
import sys

import pytest
import soundfile
import torch
from conftest import ROOT, speechlike

SCRIPTS = {
    "encoder_overhead": ["--seconds", "2"],
    "train_step": ["--seconds", "2", "--batch", "2", "--target_tokens", "4"],
    "variable_length": ["--clips", "4", "--batch", "2"],
    "inference": ["--seconds", "2", "--new_tokens", "4"],
    "pipeline_rtf": ["--clips", "3", "--batch_sizes", "1", "2", "--new_tokens", "2"],
    "ctc_drafts": ["--new_tokens", "6"],
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs_at_tiny_size(name, tmp_path):
    command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--size", "tiny", "--device", "cpu",
               "--repeats", "1", "--warmup", "0", "--output_dir", str(tmp_path), *SCRIPTS[name]]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    payloads = [json.loads(path.read_text()) for path in tmp_path.glob("*-tiny-cpu.json")]
    assert payloads and all(p["rows"] and p["machine"] for p in payloads)
    assert any(p["benchmark"] == name for p in payloads)
    assert "|" in result.stdout


def _bench_common():
    sys.path.insert(0, str(ROOT / "bench"))
    import common

    return common


def test_flop_count_covers_matmuls_and_cpu_attention():
    count_flops = _bench_common().count_flops
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert count_flops(lambda: a @ b) == 2 * 3 * 5 * 7
    batch, heads, length, dim = 1, 2, 8, 4
    q = torch.randn(batch, heads, length, dim)
    attention = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert attention == 2 * (2 * batch * heads * length * length * dim)  # Q·Kᵀ and weights·V


def _equal_heads_only(query, key, value, *rest):
    """torch < 2.13's attention FLOP formulas (the H200 run's torch 2.11): equal query and key/value heads only."""
    assert query[1] == key[1] == value[1], "query/key/value shapes are incompatible"
    return 1


@pytest.mark.parametrize("kernel", ["flash", "efficient", "cudnn", "cpu"])
def test_flop_count_of_grouped_query_attention(kernel, monkeypatch):
    """Qwen2.5-7B attends with 28 query heads over 4 key/value heads. The CUDA kernels receive the key/value heads
    unexpanded, which torch < 2.13's formulas refused (`train_step --device cuda` failed); meta tensors run the CUDA
    kernels' shapes here, forward and backward, with torch's formulas replaced by those strict ones."""
    from torch.utils import flop_counter

    monkeypatch.setattr(flop_counter, "sdpa_flop_count", _equal_heads_only)
    monkeypatch.setattr(flop_counter, "sdpa_backward_flop_count", lambda grad, *shapes: _equal_heads_only(*shapes))
    count_flops = _bench_common().count_flops
    batch, heads, kv_heads, queries, keys, dim = 2, 28, 4, 6, 5, 8
    device = "cpu" if kernel == "cpu" else "meta"
    q = torch.randn(batch, heads, queries, dim, device=device, requires_grad=kernel == "cpu")
    k = torch.randn(batch, kv_heads, keys, dim, device=device, requires_grad=kernel == "cpu")
    forward = 2 * batch * heads * queries * keys * (dim + dim)
    backward = 2 * batch * heads * queries * keys * (3 * dim + 2 * dim)

    if kernel == "cpu":  # the CPU kernel via scaled_dot_product_attention, with its backward
        step = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k, enable_gqa=True).sum().backward()  # noqa: E731
        assert count_flops(step) == forward + backward
        return
    call, backward_call = _cuda_attention_kernel(kernel, q, k)
    assert count_flops(call) == forward
    assert count_flops(backward_call) == backward


def _cuda_attention_kernel(kernel: str, q, k):
    """The CUDA attention kernel `kernel` on (meta) query `q` and key = value `k`, and its backward, as callables."""
    aten = torch.ops.aten
    queries, keys = q.shape[2], k.shape[2]
    if kernel == "flash":
        forward = aten._scaled_dot_product_flash_attention
        out, lse, _, _, _, _, seed, offset, _ = forward(q, k, k)
        return lambda: forward(q, k, k), lambda: aten._scaled_dot_product_flash_attention_backward(
            out, q, k, k, out, lse, None, None, queries, keys, 0.0, False, seed, offset
        )
    if kernel == "efficient":
        forward = aten._scaled_dot_product_efficient_attention
        out, lse, seed, offset = forward(q, k, k, None, True)
        return lambda: forward(q, k, k, None, True), lambda: aten._scaled_dot_product_efficient_attention_backward(
            out, q, k, k, None, out, lse, seed, offset, 0.0, [True, True, True, False]
        )
    forward = aten._scaled_dot_product_cudnn_attention
    out, lse, _, _, _, _, seed, offset, _ = forward(q, k, k, None, True)
    return lambda: forward(q, k, k, None, True), lambda: aten._scaled_dot_product_cudnn_attention_backward(
        out, q, k, k, out, lse, seed, offset, None, None, None, queries, keys, 0.0, False
    )


def test_encoder_overhead_passes_in_bfloat16_do_the_same_work_but_steering():
    """The "all L·E logits" pass failed on bf16 hidden states (the fp32 router called on them; CUDA runs in bf16).
    Plain and steered passes must differ only by the steering step: the plain pass carried the stem's transposed
    layout through every layer (a copy in each layer norm), the steered one lost it at the first steering step."""
    common = _bench_common()
    from encoder_overhead import aten_ops, encoder_passes, same_work_but_steering

    model = common.build_model("tiny", "cpu", torch.bfloat16, text_size="tiny")
    features, mask = torch.randn(2, 80, 300), torch.ones(2, 300)
    mask[1, 250:] = 0
    passes = encoder_passes(model, features, mask)
    with torch.no_grad():
        outputs = {name: fn() for name, fn in passes.items()}
        assert same_work_but_steering({name: aten_ops(fn) for name, fn in passes.items()})
    assert all(output.dtype == torch.bfloat16 and output.shape == (2, 150, 64) for output in outputs.values())
    assert not torch.equal(outputs["plain"], outputs["steered"])
    torch.testing.assert_close(outputs["steered_all_logits"], outputs["steered"])


def test_encoder_overhead_plain_pass_is_the_frozen_whisper_encoder():
    """On a full 30 s window (the only length Whisper's own forward takes) the plain pass, with the final layer norm,
    gives the library encoder's output: the baseline is the frozen encoder, not something cheaper."""
    common = _bench_common()
    from encoder_overhead import encoder_passes

    model = common.build_model("tiny", "cpu", torch.float32, text_size="tiny")
    features = torch.randn(1, 80, 3000)
    with torch.no_grad():
        plain = encoder_passes(model, features, torch.ones(1, 3000))["plain"]()
        library = model.audio_encoder(features).last_hidden_state
    torch.testing.assert_close(model.audio_encoder.layer_norm(plain), library, rtol=1e-4, atol=1e-4)


def test_streaming_benchmark_measures_first_token_and_live_mode(backbone_dirs, tmp_path):
    from adapters import save_readable_adapter

    adapter = save_readable_adapter(tmp_path / "adapter", backbone_dirs)
    soundfile.write(tmp_path / "clip.wav", speechlike(4.0, seed=1), 16000)
    command = [sys.executable, str(ROOT / "bench" / "streaming.py"), "--size", "tiny", "--device", "cpu",
               "--repeats", "1", "--warmup", "0", "--seconds", "2", "--new_tokens", "4", "--output_dir", str(tmp_path),
               "--adapter", str(adapter), "--audio", str(tmp_path / "clip.wav"), "--synthesize", "false",
               "--max_new_tokens", "8"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    first = json.loads((tmp_path / "streaming-tiny-cpu.json").read_text())
    assert [row["path"] for row in first["rows"]][1] == "streamed: first token"
    assert 0 < first["rows"][1]["vs_offline"] < first["rows"][2]["vs_offline"]  # the first token comes before the last
    (live,) = json.loads((tmp_path / "live-tiny-cpu.json").read_text())["rows"]
    assert live["clip"] == "clip.wav" and live["decodings"] >= 2 and 0 <= live["wer_vs_offline"]
    assert live["after_stop_s"] > 0 and live["compute_vs_offline"] > 0 and "adapter" in result.stdout
