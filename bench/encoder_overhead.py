"""Aligner overhead in the encoder: steered encoder forward vs the plain frozen encoder on the same input, and the
single router slice per layer vs computing all L*E router logits at every layer (the published code's way).

    python bench/encoder_overhead.py --size large --seconds 10    # whisper-large-v3 shapes (the LLM is not built)
"""

import torch
from common import build_model, measure, parser, report, resolve_dtype


def main():
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="Audio length per clip.")
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()
    dtype = resolve_dtype(args)
    model = build_model(args.size, args.device, dtype, text_size="tiny")  # only the encoder is timed
    frames = int(args.seconds * 100)
    features = torch.randn(args.batch, model.config.audio_config.num_mel_bins, frames, device=args.device)
    mask = torch.ones(args.batch, frames, device=args.device)
    aligner = model.aligner
    slice_logits = aligner.router_logits

    def all_logits(hidden, slot):
        experts = aligner.num_experts
        return aligner.router(hidden)[..., slot * experts : (slot + 1) * experts]

    def steered():
        model._whisper_encoder_pass(features, mask)

    def plain():
        aligner.steer = lambda hidden, layer_idx: (hidden, None)
        try:
            model._whisper_encoder_pass(features, mask)
        finally:
            del aligner.steer

    def steered_all_logits():
        aligner.router_logits = all_logits
        try:
            model._whisper_encoder_pass(features, mask)
        finally:
            aligner.router_logits = slice_logits

    with torch.no_grad():
        times = {name: measure(fn, args.device, args.repeats, args.warmup)
                 for name, fn in (("plain", plain), ("steered", steered), ("steered_all_logits", steered_all_logits))}  # fmt: skip
    rows = [
        {"pass": "plain frozen encoder", "seconds": times["plain"], "ratio_to_plain": 1.0},
        {"pass": "SteerMoE (layer slice of the router)", "seconds": times["steered"],
         "ratio_to_plain": times["steered"] / times["plain"]},
        {"pass": "SteerMoE, all L*E logits per layer", "seconds": times["steered_all_logits"],
         "ratio_to_plain": times["steered_all_logits"] / times["plain"]},
    ]  # fmt: skip
    report("encoder_overhead", args, rows, {"dtype": str(dtype), "frames": frames})


if __name__ == "__main__":
    main()
