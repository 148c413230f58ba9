"""Helpers of the serving tests: a vLLM server on 127.0.0.1 for one test module, the transformers reference (run in
the project's environment), and audio files."""

import base64
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import ROOT

SERVER_START_TIMEOUT_S = 900  # the first start on a fresh environment compiles every import
REQUEST_TIMEOUT_S = 120


def require_vllm():
    """Skip (with the reason) outside the serving environment; return the `openai` module."""
    pytest.importorskip(
        "vllm", reason="vLLM is not installed here: the serving tests run in .venv-serving (bash scripts/setup_serving.sh)"
    )
    return pytest.importorskip("openai")


def reference_python() -> str:
    """The project's environment (transformers >= 5.23): `STEERMOE_REFERENCE_PYTHON`, else `.venv` beside the code."""
    python = os.environ.get("STEERMOE_REFERENCE_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
    if not Path(python).is_file():
        pytest.fail(
            f"No project environment at {python} to compute the transformers reference: run bash scripts/setup.sh or "
            "set STEERMOE_REFERENCE_PYTHON"
        )
    return python


def build_and_answer(out_dir: Path, requests: list[dict], *options) -> tuple[str, list[str]]:
    """Run tests/serving_reference.py in the project's environment: builds an adapter in `out_dir` (or uses
    `--adapter DIR` from `options`) and returns its path and what the transformers pipeline / `model.generate`
    answer to `requests`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    request_file = out_dir / "requests.json"
    request_file.write_text(json.dumps(requests))
    command = [reference_python(), str(ROOT / "tests" / "serving_reference.py"), str(out_dir), str(request_file), *map(str, options)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1], json.loads((out_dir / "reference.json").read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def vllm_server(adapter: Path, log_path: Path, *extra: str, env: dict | None = None):
    """`python -m serving ADAPTER` on 127.0.0.1 (fp32, eager, 1 GiB of KV cache); yields its base URL."""
    port = _free_port()
    command = [
        sys.executable, "-m", "serving", str(adapter), "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", *extra,
    ]  # fmt: skip
    environment = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{log_path.read_text()[-6000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-6000:]}")
            time.sleep(2)
        yield f"{base_url}/v1"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wav_bytes(samples: np.ndarray, sampling_rate: int = 16000, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sampling_rate, format=fmt)
    return buffer.getvalue()


def input_audio(path: Path) -> dict:
    """A chat content part carrying the file, as OpenAI clients send audio."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": Path(path).suffix.lstrip(".")}}
