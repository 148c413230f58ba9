"""The benchmark scripts run at the tiny size and write their JSON (figures are not asserted: they are timings)."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

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
