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


def test_flop_count_covers_matmuls_and_cpu_attention():
    sys.path.insert(0, str(ROOT / "bench"))
    from common import count_flops

    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert count_flops(lambda: a @ b) == 2 * 3 * 5 * 7
    batch, heads, length, dim = 1, 2, 8, 4
    q = torch.randn(batch, heads, length, dim)
    attention = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert attention == 2 * (2 * batch * heads * length * length * dim)  # Q·Kᵀ and weights·V


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
