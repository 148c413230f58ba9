"""Aligner overhead in the encoder: the steered encoder forward vs the plain frozen encoder on the same input, and
the single router slice per layer vs computing all L*E router logits at every layer (the published code's way).

The three passes are the same code, `_whisper_encoder_pass` (same stem, attention kernel, attention mask and real
length handling, on the same input); only the step after each layer differs: nothing (plain), the layer's steering
step, or the steering step with all L*E logits computed and sliced. They are timed in turns (see
`measure_interleaved`) so that no pass gains from being timed after the others.

    python bench/encoder_overhead.py --size large --seconds 10    # whisper-large-v3 shapes (the LLM is not built)
    python bench/encoder_overhead.py --size large --device cuda --seconds 30 --batch 8
"""

import contextlib
import sys

import torch
from common import build_model, measure_interleaved, parser, report, resolve_dtype
from torch import nn
from torch.profiler import profile

# The aten ops of the steering step (`SteerMoEAligner.steer`: router slice and casts, softmax, scaled vectors, addmm).
STEERING_OPS = {"aten::slice", "aten::to", "aten::linear", "aten::softmax", "aten::select", "aten::mul",
                "aten::reshape", "aten::addmm", "aten::view_as"}  # fmt: skip


@contextlib.contextmanager
def _replaced(module: nn.Module, name: str, value):
    """`module.<name>` set to `value` for the duration, then restored (a class attribute such as a method is
    shadowed by an instance attribute, which is removed afterwards)."""
    missing = object()
    saved = module.__dict__.get(name, missing)
    setattr(module, name, value)
    try:
        yield
    finally:
        if saved is missing:
            delattr(module, name)
        else:
            setattr(module, name, saved)


def encoder_passes(model, features: torch.Tensor, mask: torch.Tensor) -> dict:
    """The timed passes over `features` `(batch, mels, frames)` with `mask` `(batch, frames)`, as callables returning
    the encoder's hidden states: "plain" (no layer steered), "steered" (SteerMoE), "steered_all_logits" (every layer
    computes all L*E router logits, in the hidden states' dtype as `router_logits` does, and keeps its slice)."""
    aligner = model.aligner

    def all_logits(hidden_states, slot):
        dtype, experts = hidden_states.dtype, aligner.num_experts
        logits = nn.functional.linear(hidden_states, aligner.router.weight.to(dtype), aligner.router.bias.to(dtype))
        return logits[..., slot * experts : (slot + 1) * experts]

    def plain():
        with _replaced(aligner, "_slots", {}):  # no layer is steered: `steer` passes every layer's output through
            return model._whisper_encoder_pass(features, mask)[0]

    def steered():
        return model._whisper_encoder_pass(features, mask)[0]

    def steered_all_logits():
        with _replaced(aligner, "router_logits", all_logits):
            return model._whisper_encoder_pass(features, mask)[0]

    return {"plain": plain, "steered": steered, "steered_all_logits": steered_all_logits}


def aten_ops(fn) -> list[tuple[str, str]]:
    """The aten ops `fn()` runs, in order, as torch's profiler records them, each as `(op, the aten op it was called
    from at the top level)`: the attention kernel chosen, the mask's and the stem's ops are among them."""
    with profile() as prof:
        fn()
    ops = []
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        root = event
        while root.cpu_parent is not None and root.cpu_parent.name.startswith("aten::"):
            root = root.cpu_parent
        ops.append((event.name, root.name))
    return ops


def same_work_but_steering(ops: dict) -> bool:
    """Whether the passes' op lists (`aten_ops` of each) hold the same aten ops in the same order once the steering
    step's ops (and the ops they call) are left out."""
    sequences = [[op for op, root in pass_ops if root not in STEERING_OPS] for pass_ops in ops.values()]
    return all(sequence == sequences[0] for sequence in sequences)


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
    passes = encoder_passes(model, features, mask)
    with torch.no_grad():
        times = measure_interleaved(passes, args.device, args.repeats, args.warmup)
        ops = {name: aten_ops(fn) for name, fn in passes.items()}
    same_work = same_work_but_steering(ops)
    attention = sorted({op for op, _ in ops["plain"] if "attention" in op})
    labels = {
        "plain": "plain frozen encoder",
        "steered": "SteerMoE (layer slice of the router)",
        "steered_all_logits": "SteerMoE, all L*E logits per layer",
    }
    rows = [
        {"pass": labels[name], "seconds": seconds, "ratio_to_plain": seconds / times["plain"]}
        for name, seconds in times.items()
    ]
    extra = {"dtype": str(dtype), "frames": frames, "attention_ops": attention,
             "same_ops_but_steering": same_work}  # fmt: skip
    report("encoder_overhead", args, rows, extra)
    sys.stdout.write(f"attention: {', '.join(attention)}; the passes call the same ops apart from the steering step: "
                     f"{same_work}\n")  # fmt: skip


if __name__ == "__main__":
    main()
