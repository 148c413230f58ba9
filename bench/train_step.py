"""Training step: time and peak memory per step for SteerMoE, the linear baseline, and the floor (the frozen
backbones' forward plus the backward pass down to the encoder's first layer: one steered layer, one expert, at
layer 0). Each variant runs in its own process so its peak memory is its own; ratios are to the floor.

Also, per variant: the step's FLOPs (torch's FlopCounterMode) against this machine's dense matmul rate measured in
the same run, and the hours one epoch of LibriSpeech-100h (28,539 clips, mean 12.7 s, ~210 LLM tokens each: the
defaults) would take at the measured samples/s.

    python bench/train_step.py --size small --batch 4
    python bench/train_step.py --size large --device cuda --batch 8    # whisper-large-v3 + Qwen2.5-7B, bf16
"""

import json
import subprocess
import sys

import torch
from common import (build_model, count_flops, matmul_flops_per_second, measure, parser, peak_memory_mb, report,
                    reset_peak_memory, resolve_dtype)  # fmt: skip

LIBRISPEECH_100H_CLIPS = 28539
VARIANTS = {
    "floor": {"steered_layers": [0], "num_experts": 1},
    "linear": {"aligner_type": "linear"},
    "steermoe": {},
}


def one_variant(args) -> dict:
    dtype = resolve_dtype(args)
    model = build_model(args.size, args.device, dtype, **VARIANTS[args.variant])
    config = model.config
    frames = int(args.seconds * 100)
    tokens = -(-((frames - 1) // 2 + 1) // config.audio_frames_per_token)
    prompt, target = 8, args.target_tokens
    vocab = config.text_config.vocab_size
    input_ids = torch.randint(2, vocab - 1, (args.batch, prompt + tokens + target), device=args.device)
    input_ids[:, prompt : prompt + tokens] = config.audio_token_id
    labels = input_ids.clone()
    labels[:, : prompt + tokens] = -100
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "input_features": torch.randn(args.batch, config.audio_config.num_mel_bins, frames, device=args.device),
        "feature_attention_mask": torch.ones(args.batch, frames, device=args.device),
    }
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak_memory(args.device)
    seconds = measure(step, args.device, args.repeats, args.warmup)
    peak = peak_memory_mb(args.device)
    flops = count_flops(step)
    state = sum(t.numel() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
    return {
        "variant": args.variant,
        "seconds_per_step": seconds,
        "samples_per_second": args.batch / seconds,
        "epoch_hours_librispeech_100h": LIBRISPEECH_100H_CLIPS * seconds / args.batch / 3600,
        "tflop_per_sample": flops / args.batch / 1e12,
        "fraction_of_matmul_peak": flops / seconds / matmul_flops_per_second(args.device, dtype),
        "peak_memory_mb": peak,
        "trainable_parameters": model.get_parameter_report()["total"]["trainable"],
        "optimizer_state_values": state,
    }


def main():
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=12.7)
    p.add_argument("--target_tokens", type=int, default=40)
    p.add_argument("--variant", choices=list(VARIANTS), help="run one variant only (used internally)")
    args = p.parse_args()
    if args.variant:
        sys.stdout.write(json.dumps(one_variant(args)) + "\n")
        return
    rows = []
    for variant in VARIANTS:
        command = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    floor = rows[0]
    for row in rows:
        row["time_vs_floor"] = row["seconds_per_step"] / floor["seconds_per_step"]
        row["memory_vs_floor"] = row["peak_memory_mb"] / floor["peak_memory_mb"]
        row["optimizer_holds_only_trainable"] = row["optimizer_state_values"] == 2 * row["trainable_parameters"]
    report("train_step", args, rows, {"clip_seconds": args.seconds, "batch": args.batch})


if __name__ == "__main__":
    main()
