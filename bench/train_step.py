"""Training step: time and peak memory per step for SteerMoE, the linear baseline, and the floor (the frozen
backbones' forward plus the backward pass down to the encoder's first layer: one steered layer, one expert, at
layer 0). Each variant runs in its own process so its peak memory is its own; ratios are to the floor.

    python bench/train_step.py --size small --batch 4 --seconds 12 --target_tokens 40
"""

import json
import resource
import subprocess
import sys

import torch
from common import build_model, measure, parser, report, resolve_dtype

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

    if str(args.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds = measure(step, args.device, args.repeats, args.warmup)
    state = sum(t.numel() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
    peak = (torch.cuda.max_memory_allocated() if str(args.device).startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # fmt: skip
    return {
        "variant": args.variant,
        "seconds_per_step": seconds,
        "samples_per_second": args.batch / seconds,
        "peak_memory_mb": peak / 2**20,
        "trainable_parameters": model.get_parameter_report()["total"]["trainable"],
        "optimizer_state_values": state,
    }


def main():
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=12.0)
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
