"""Shared pieces of the benchmarks: model shapes with random weights, a timer, and table/JSON output."""

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen2Config, WhisperConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configuration_steermoe import SteerMoEConfig  # noqa: E402
from modeling_steermoe import SteerMoEForConditionalGeneration  # noqa: E402

SIZES = {
    # name: (whisper d_model, layers, heads, ffn, mel bins), (LLM hidden, layers, heads, kv heads, ffn, vocab)
    "tiny": ((64, 2, 2, 256, 80), (64, 2, 4, 2, 256, 1000)),
    "small": ((512, 6, 8, 2048, 80), (512, 8, 8, 2, 1536, 32000)),
    "large": ((1280, 32, 20, 5120, 128), (3584, 28, 28, 4, 18944, 152064)),  # whisper-large-v3 + Qwen2.5-7B
}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", choices=list(SIZES), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--output_dir", default=str(ROOT / "bench" / "results"),
                   help="Where each table's JSON goes, as <name>-<size>-<device>.json")  # fmt: skip
    return p


def is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def resolve_dtype(args) -> torch.dtype:
    if args.dtype:
        return getattr(torch, args.dtype)
    return torch.bfloat16 if is_cuda(args.device) else torch.float32


def model_config(size: str, text_size: str | None = None, **aligner_kwargs) -> SteerMoEConfig:
    (d, layers, heads, ffn, mels), _ = SIZES[size]
    _, (hidden, llm_layers, llm_heads, kv, llm_ffn, vocab) = SIZES[text_size or size]
    audio = WhisperConfig(d_model=d, encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=ffn,
                          num_mel_bins=mels, decoder_layers=1, decoder_attention_heads=heads, decoder_ffn_dim=ffn)  # fmt: skip
    text = Qwen2Config(hidden_size=hidden, num_hidden_layers=llm_layers, num_attention_heads=llm_heads,
                       num_key_value_heads=kv, intermediate_size=llm_ffn, vocab_size=vocab,
                       max_position_embeddings=32768, eos_token_id=1, pad_token_id=0)  # fmt: skip
    return SteerMoEConfig(audio_config=audio.to_dict(), text_config=text.to_dict(), audio_token_id=vocab - 1,
                          **aligner_kwargs)  # fmt: skip


def build_model(size: str, device, dtype: torch.dtype, text_size: str | None = None, **aligner_kwargs):
    """Random backbones in `dtype` on `device` (the LLM of `text_size` if given), the aligner in fp32, as a loaded
    model would be."""
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in `dtype` directly: a 7B LLM never exists in fp32
    try:
        with torch.device(device):
            model = SteerMoEForConditionalGeneration(model_config(size, text_size, **aligner_kwargs))
    finally:
        torch.set_default_dtype(default_dtype)
    model.aligner.float()
    return model.eval()


def synchronize(device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize()


def measure(fn, device, repeats: int, warmup: int) -> float:
    """Median wall time of `fn()` in seconds, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_interleaved(fns: dict, device, repeats: int, warmup: int) -> dict[str, float]:
    """Median wall time in seconds of each of `fns` (name -> callable), the callables taking turns in every round,
    each round starting with the next one, so that drift during the run (clocks ramping up, caches and allocators
    warming) falls on all of them alike rather than on whichever was timed first; each is warmed up `warmup` times."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times = {name: [] for name in names}
    for round_idx in range(repeats):
        for name in names[round_idx % len(names) :] + names[: round_idx % len(names)]:
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def attention_flops(query, key, value) -> int:
    """FLOPs of one attention kernel call from the shapes `(batch, heads, length, head_dim)` of its query, key and
    value: Q·Kᵀ and weights·V for every query head. Keys and values may have fewer heads than the queries (grouped-
    query attention: the CUDA kernels receive them unexpanded); each query head still attends to every key."""
    batch, heads, queries, head_dim = query
    keys, value_dim = key[-2], value[-1]
    return 2 * batch * heads * queries * keys * (head_dim + value_dim)


def attention_backward_flops(query, key, value) -> int:
    """FLOPs of one attention backward kernel call (same shapes as `attention_flops`): Q·Kᵀ recomputed, then the
    gradients of the weights (dO·Vᵀ), of V (Pᵀ·dO), of Q (dS·K) and of K (dSᵀ·Q)."""
    batch, heads, queries, head_dim = query
    keys, value_dim = key[-2], value[-1]
    return 2 * batch * heads * queries * keys * (3 * head_dim + 2 * value_dim)


_ATTENTION_KERNELS = (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
)


def count_flops(fn) -> int:
    """FLOPs of one `fn()` call as torch's `FlopCounterMode` counts them (matmuls, convolutions), with this module's
    formulas for every scaled-dot-product attention kernel, forward and backward, CPU and CUDA: torch's own assert
    equal query and key/value head counts before 2.13, which grouped-query attention on CUDA does not have."""
    mapping = {}
    for name in _ATTENTION_KERNELS:
        if not hasattr(torch.ops.aten, f"{name}_backward"):  # kernels this torch does not have
            continue
        forward, backward = getattr(torch.ops.aten, name), getattr(torch.ops.aten, f"{name}_backward")
        mapping[forward] = lambda query, key, value, *_, out_shape=None, **__: attention_flops(query, key, value)
        mapping[backward] = lambda grad, query, key, value, *_, out_shape=None, **__: attention_backward_flops(
            query, key, value
        )
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def matmul_flops_per_second(device, dtype: torch.dtype, repeats: int = 5) -> float:
    """This machine's dense matmul rate in `dtype`, measured now: the ceiling for compute-bound work."""
    n = 8192 if is_cuda(device) else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / measure(lambda: a @ b, device, repeats, warmup=2)


def memory_bytes_per_second(device, repeats: int = 5) -> float:
    """This machine's memory bandwidth, measured now as a 1 GiB device-to-device copy (bytes read + written): the
    ceiling for bandwidth-bound work such as single-stream decoding."""
    source = torch.empty(2**30, dtype=torch.uint8, device=device).fill_(1)
    target = torch.empty_like(source)
    return 2 * source.numel() / measure(lambda: target.copy_(source), device, repeats, warmup=2)


def reset_peak_memory(device) -> None:
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device) -> float:
    """Peak allocated GPU memory since the last reset, or the process's peak resident memory on CPU."""
    if is_cuda(device):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def machine(device) -> str:
    if is_cuda(device):
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def report(name: str, args, rows: list[dict], extra: dict | None = None) -> None:
    """Print `rows` as a Markdown table and write them (with the machine and settings) as JSON."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v) for v in row.values())
        lines.append("| " + " | ".join(cells) + " |")
    header = f"{name}: size={args.size}, device={args.device} ({machine(args.device)}), median of {args.repeats}"
    sys.stdout.write(header + "\n" + "\n".join(lines) + "\n")
    output = Path(args.output_dir) / f"{name}-{args.size}-{str(args.device).split(':')[0]}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(args.device), "args": vars(args), "rows": rows, **(extra or {})}
    output.write_text(json.dumps(payload, indent=2, default=str))
