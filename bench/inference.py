"""Inference: time to first token and decode tokens/s of audio -> text generation against the bare LLM generating
the same number of tokens from a text prompt of the same total length, both against the memory-bandwidth ceiling
(bytes of LLM weights read per token / this machine's bandwidth, measured in the same run), the two sides timed in
turns, with each side's peak memory in a call of its own; and
`from_pretrained` time and resident memory of the encoder-only load against loading the full Whisper checkpoint
(each weight read once after loading: safetensors are memory-mapped, so an untouched weight costs nothing yet).

    python bench/inference.py --size small --seconds 10 --new_tokens 64
    python bench/inference.py --size large --device cuda --new_tokens 128    # Qwen2.5-7B in bf16
    python bench/inference.py --size large --device cuda --new_tokens 128 --cache_implementation static
    python bench/inference.py --size large --device cuda --new_tokens 128 --cache_implementation static \
        --compile_mode reduce-overhead --reuse_cache --ignore_eos --profile_tokens --skip_load

The decoding setup is the same on both sides and goes through `generate` unchanged: `--cache_implementation static`
gives transformers' static KV cache, with which `generate` compiles the decoding step on CUDA by itself (on CPU it
runs uncompiled); `--compile_mode` sets that compilation (transformers' `CompileConfig` with one graph and static
shapes; `reduce-overhead` replays each decoding step as a CUDA graph); `--reuse_cache` passes one static cache,
allocated once and reset before each call, so its tensors keep their addresses from call to call (a CUDA graph
records them); `--ignore_eos` removes the EOS token from the (random) model's generation configs, so no EOS check or
minimum-length logits processor runs per token (otherwise `min_new_tokens` forces the count). `--profile_tokens`
counts, with torch's profiler, the ops run per decoded token on each side: SteerMoE adds nothing per token to the
base LLM's own work.
"""

import collections
import copy
import subprocess
import sys
import tempfile

import torch
from common import (ROOT, SIZES, build_model, measure_interleaved, memory_bytes_per_second, parser, peak_memory_mb,
                    report, reset_peak_memory, resolve_dtype)  # fmt: skip
from torch.profiler import ProfilerActivity, profile
from transformers import CompileConfig, StaticCache, WhisperConfig, WhisperForConditionalGeneration

LOAD = """
import sys, time
sys.path.insert(0, {root!r})
from transformers import WhisperForConditionalGeneration
from modeling_steermoe import SteerMoEWhisperEncoder
def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
before = rss_mb()
start = time.perf_counter()
if sys.argv[1] == "encoder":
    model = SteerMoEWhisperEncoder.from_pretrained(sys.argv[2], key_mapping=SteerMoEWhisperEncoder._checkpoint_key_mapping)
else:
    model = WhisperForConditionalGeneration.from_pretrained(sys.argv[2])
for parameter in model.parameters():  # weights may be memory-mapped: read each once, as moving to a GPU would
    parameter.data.sum()
print(time.perf_counter() - start, rss_mb() - before)
"""


def ops_per_decoded_token(generate, inputs: dict, generation_config, short: int = 2, long: int = 6) -> dict:
    """What one decoded token costs in ops: the count of each event torch's profiler records at the top level (the
    ops `generate`'s own code calls, compiled graphs; on CUDA also each kernel) when generating `long` tokens minus
    when generating `short`, divided by `long - short`. `generation_config(n)` must make `generate` emit exactly `n`
    new tokens; the first call, unprofiled, warms up."""

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])

    def counts(new_tokens):
        with profile(activities=activities) as prof:
            generate(**inputs, generation_config=generation_config(new_tokens))
        return collections.Counter(
            event.name for event in prof.events() if event.cpu_parent is None or event.device_type.name == "CUDA"
        )

    generate(**inputs, generation_config=generation_config(long))
    few, many = counts(short), counts(long)
    names = sorted(set(few) | set(many))
    return {name: (many[name] - few[name]) / (long - short) for name in names if many[name] != few[name]}


def main():
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--cache_implementation", default=None, help="KV cache for both sides, e.g. static (default: dynamic)")
    p.add_argument("--compile_mode", default=None,
                   help="torch.compile mode of the static-cache decoding step, e.g. reduce-overhead (CUDA graphs) or "
                        "max-autotune; one graph, static shapes (default: transformers' CompileConfig)")  # fmt: skip
    p.add_argument("--reuse_cache", action="store_true",
                   help="One static cache for every call (allocated once, reset before each call)")  # fmt: skip
    p.add_argument("--ignore_eos", action="store_true", help="No EOS token: no EOS check per token")
    p.add_argument("--profile_tokens", action="store_true", help="Also count the ops run per decoded token, each side")
    p.add_argument("--skip_load", action="store_true", help="Only time generation (the load test saves a full Whisper).")
    args = p.parse_args()
    if args.reuse_cache and args.cache_implementation != "static":
        p.error("--reuse_cache reuses a static cache: add --cache_implementation static")
    if not args.skip_load:  # first, so that the model below is not resident while the full Whisper loads
        report("load", args, load_rows(args))
    dtype = resolve_dtype(args)
    model = build_model(args.size, args.device, dtype)
    config = model.config
    frames = int(args.seconds * 100)
    audio_tokens = -(-((frames - 1) // 2 + 1) // config.audio_frames_per_token)
    prompt = 16
    vocab = config.text_config.vocab_size
    input_ids = torch.randint(2, vocab - 1, (1, prompt + audio_tokens), device=args.device)
    input_ids[:, 4 : 4 + audio_tokens] = config.audio_token_id
    audio_inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "input_features": torch.randn(1, config.audio_config.num_mel_bins, frames, device=args.device),
    }
    text_inputs = {"input_ids": torch.randint(2, vocab - 1, input_ids.shape, device=args.device)}
    text_inputs["attention_mask"] = torch.ones_like(text_inputs["input_ids"])
    llm = model.language_model
    if args.ignore_eos:  # on both generation configs: `generate` fills a config's unset values from the LLM's
        model.generation_config.eos_token_id = llm.generation_config.eos_token_id = None
    cache = None
    if args.reuse_cache:
        cache = StaticCache(config=llm.config, max_cache_len=input_ids.shape[1] + args.new_tokens)

    def generation_config(new_tokens):
        """Greedy, exactly `new_tokens` tokens (`min_new_tokens` has no effect without an EOS token), the same
        generation config (and so the same logits processors and compilation) on both sides."""
        generation = copy.deepcopy(model.generation_config)
        implementation = None if cache is not None else args.cache_implementation  # a passed cache is the static one
        generation.update(max_new_tokens=new_tokens, min_new_tokens=new_tokens, cache_implementation=implementation)
        if args.compile_mode:
            generation.compile_config = CompileConfig(fullgraph=True, dynamic=False, mode=args.compile_mode)
        return generation

    def generate(audio):
        """One side's `generate` (SteerMoE's with audio, the bare LLM's otherwise), given the reused cache if any."""
        side = model.generate if audio else llm.generate

        def call(generation_config, **inputs):
            if cache is not None:
                cache.reset()
                inputs["cache"] = cache
            return side(**inputs, generation_config=generation_config)

        return call

    # Per decoded token the LLM reads every weight once, except the input embedding table when it is not tied.
    weights = sum(p.numel() * p.element_size() for p in llm.parameters())
    if not llm.config.tie_word_embeddings:
        embedding = llm.get_input_embeddings().weight
        weights -= embedding.numel() * embedding.element_size()
    sides = {"bare LLM, text prompt": (generate(False), text_inputs),
             "SteerMoE, audio + prompt": (generate(True), audio_inputs)}  # fmt: skip

    def timed(new_tokens):
        """Each side's median time for `new_tokens` tokens, the sides taking turns (neither gains from its place)."""
        calls = {name: lambda run=run, inputs=inputs: run(generation_config(new_tokens), **inputs)
                 for name, (run, inputs) in sides.items()}  # fmt: skip
        return measure_interleaved(calls, args.device, args.repeats, args.warmup)

    rows, per_token = [], {}
    with torch.no_grad():
        first, full = timed(1), timed(args.new_tokens)
        for name, (run, inputs) in sides.items():
            reset_peak_memory(args.device)
            run(generation_config(args.new_tokens), **inputs)
            rows.append({"generation": name, "time_to_first_token_s": first[name],
                         "decode_tokens_per_s": (args.new_tokens - 1) / (full[name] - first[name]),
                         "peak_memory_mb": peak_memory_mb(args.device)})  # fmt: skip
            if args.profile_tokens:
                per_token[name] = ops_per_decoded_token(run, inputs, generation_config)
    bandwidth = memory_bytes_per_second(args.device)  # after the peaks: its 2 GiB of buffers would count on CPU
    ceiling = bandwidth / weights
    for row in rows:
        row["fraction_of_bandwidth_ceiling"] = row["decode_tokens_per_s"] / ceiling
        row["tokens_per_s_vs_bare_llm"] = row["decode_tokens_per_s"] / rows[0]["decode_tokens_per_s"]
        row["ttft_vs_bare_llm"] = row["time_to_first_token_s"] / rows[0]["time_to_first_token_s"]
    extra = {"audio_tokens": audio_tokens, "prompt_tokens": int(input_ids.shape[1]), "llm_bytes_per_token": weights,
             "bandwidth_gb_per_s": bandwidth / 1e9, "ceiling_tokens_per_s": ceiling, "ops_per_decoded_token": per_token}  # fmt: skip
    report("inference", args, rows, extra)
    sys.stdout.write(f"bandwidth {bandwidth / 1e9:.1f} GB/s measured; LLM reads {weights / 1e9:.2f} GB per token; "
                     f"ceiling {ceiling:.1f} tokens/s\n")  # fmt: skip
    if per_token:
        bare, ours = per_token.values()
        sys.stdout.write(f"ops per decoded token (profiler): bare LLM {sum(bare.values()):g}, SteerMoE "
                         f"{sum(ours.values()):g}; identical: {bare == ours}\n")  # fmt: skip


def load_rows(args) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        (d, layers, heads, ffn, mels), _ = SIZES[args.size]
        whisper = WhisperConfig(d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                                decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
                                num_mel_bins=mels, vocab_size=51866)  # fmt: skip
        WhisperForConditionalGeneration(whisper).save_pretrained(folder)
        loads = {}
        for kind in ("encoder", "full"):
            out = subprocess.run([sys.executable, "-c", LOAD.format(root=str(ROOT)), kind, folder],
                                 check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
            loads[kind] = {"seconds": float(out[-2]), "peak_rss_mb": float(out[-1])}
    return [
        {"load": label, "seconds": loads[kind]["seconds"], "added_rss_mb": loads[kind]["peak_rss_mb"],
         "time_vs_full": loads[kind]["seconds"] / loads["full"]["seconds"]}
        for kind, label in (("encoder", "encoder only (SteerMoE)"), ("full", "full Whisper checkpoint"))
    ]  # fmt: skip


if __name__ == "__main__":
    main()
