"""Variable-length encoding: encoder cost on real-length clips (batched by length, padding masked) vs padding every
clip to 30 s, on a LibriSpeech-like length distribution (mean ~12 s), and how far the outputs move.

    python bench/variable_length.py --size small --clips 16
"""

import sys

import numpy as np
import torch
from common import build_model, measure, parser, report, resolve_dtype


def librispeech_like_seconds(count: int, seed: int = 0) -> list[float]:
    """Clip lengths with LibriSpeech train-clean-100's shape: mean ~12.7 s, most between 2 and 17 s, at most 30 s."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(12.7, 3.8, count), 1.5, 29.5).round(2).tolist()


def main():
    p = parser(__doc__)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()
    dtype = resolve_dtype(args)
    model = build_model(args.size, args.device, dtype)
    mels = model.config.audio_config.num_mel_bins
    seconds = sorted(librispeech_like_seconds(args.clips))
    torch.manual_seed(0)
    clips = [torch.randn(mels, int(s * 100), device=args.device) for s in seconds]

    def batches(pad_to: int | None):
        for start in range(0, len(clips), args.batch):
            group = clips[start : start + args.batch]
            frames = pad_to or max(c.shape[-1] for c in group)
            features = torch.zeros(len(group), mels, frames, device=args.device)
            mask = torch.zeros(len(group), frames, device=args.device)
            for i, clip in enumerate(group):
                features[i, :, : clip.shape[-1]] = clip
                mask[i, : clip.shape[-1]] = 1
            yield features, mask

    def encode(pad_to):
        return [model.get_audio_features(f, m) for f, m in batches(pad_to)]

    with torch.no_grad():
        real = measure(lambda: encode(None), args.device, args.repeats, args.warmup)
        padded = measure(lambda: encode(3000), args.device, args.repeats, args.warmup)
        real_out, padded_out = encode(None), encode(3000)
        alone = [model.get_audio_features(c[None], torch.ones(1, c.shape[-1], device=args.device))[0] for c in clips]
    diff_padded = max((a[:, : r.shape[1]] - r[:, : r.shape[1]]).abs().max().item() for a, r in zip(padded_out, real_out))
    per_clip = torch.cat([r[i % args.batch, : alone[i].shape[0]] - alone[i] for i, r in
                          ((i, real_out[i // args.batch]) for i in range(len(clips)))])  # fmt: skip
    rows = [
        {"encoding": "real length (masked padding)", "seconds": real, "speedup_vs_30s": padded / real},
        {"encoding": "padded to 30 s (masked)", "seconds": padded, "speedup_vs_30s": 1.0},
    ]
    extra = {
        "clip_seconds": seconds,
        "mean_clip_seconds": float(np.mean(seconds)),
        "max_abs_diff_real_vs_30s_padding": diff_padded,
        "max_abs_diff_batched_vs_alone": per_clip.abs().max().item(),
    }
    report("variable_length", args, rows, extra)
    sys.stdout.write(f"mean clip {np.mean(seconds):.1f} s; max |diff| real vs 30 s padding {diff_padded:.2e}; "
          f"batched vs alone {extra['max_abs_diff_batched_vs_alone']:.2e}\n")  # fmt: skip


if __name__ == "__main__":
    main()
