"""Inference: time to first token and decode tokens/s of audio -> text generation against the bare LLM generating
the same number of tokens from a text prompt of the same total length, both against the memory-bandwidth ceiling
(bytes of LLM weights read per token / this machine's bandwidth, measured in the same run), with peak memory; and
`from_pretrained` time and resident memory of the encoder-only load against loading the full Whisper checkpoint
(each weight read once after loading: safetensors are memory-mapped, so an untouched weight costs nothing yet).

    python bench/inference.py --size small --seconds 10 --new_tokens 64
    python bench/inference.py --size large --device cuda --new_tokens 128    # Qwen2.5-7B in bf16
    python bench/inference.py --size large --device cuda --new_tokens 128 --cache_implementation static

`--cache_implementation static` gives both sides transformers' static KV cache, with which `generate` compiles the
decoding step on CUDA by itself (on CPU it runs uncompiled).
"""

import copy
import subprocess
import sys
import tempfile

import torch
from common import (ROOT, SIZES, build_model, measure, memory_bytes_per_second, parser, peak_memory_mb, report,
                    reset_peak_memory, resolve_dtype)  # fmt: skip
from transformers import WhisperConfig, WhisperForConditionalGeneration

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


def main():
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--cache_implementation", default=None, help="KV cache for both sides, e.g. static (default: dynamic)")
    p.add_argument("--skip_load", action="store_true", help="Only time generation (the load test saves a full Whisper).")
    args = p.parse_args()
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

    def run(inputs, new_tokens, audio):
        """Greedy, exactly `new_tokens` tokens, with the same generation config (and so the same logits
        processors) on both sides."""
        config = copy.deepcopy(model.generation_config)
        config.update(max_new_tokens=new_tokens, min_new_tokens=new_tokens, cache_implementation=args.cache_implementation)
        return model.generate(**inputs, generation_config=config) if audio else llm.generate(**inputs, generation_config=config)

    # Per decoded token the LLM reads every weight once, except the input embedding table when it is not tied.
    weights = sum(p.numel() * p.element_size() for p in llm.parameters())
    if not llm.config.tie_word_embeddings:
        embedding = llm.get_input_embeddings().weight
        weights -= embedding.numel() * embedding.element_size()
    rows = []
    with torch.no_grad():
        for name, inputs, audio in (("bare LLM, text prompt", text_inputs, False), ("SteerMoE, audio + prompt", audio_inputs, True)):
            reset_peak_memory(args.device)
            first = measure(lambda inputs=inputs, audio=audio: run(inputs, 1, audio), args.device, args.repeats, args.warmup)
            full = measure(lambda inputs=inputs, audio=audio: run(inputs, args.new_tokens, audio), args.device, args.repeats, args.warmup)
            rows.append({"generation": name, "time_to_first_token_s": first,
                         "decode_tokens_per_s": (args.new_tokens - 1) / (full - first),
                         "peak_memory_mb": peak_memory_mb(args.device)})  # fmt: skip
    bandwidth = memory_bytes_per_second(args.device)  # after the peaks: its 2 GiB of buffers would count on CPU
    ceiling = bandwidth / weights
    for row in rows:
        row["fraction_of_bandwidth_ceiling"] = row["decode_tokens_per_s"] / ceiling
        row["tokens_per_s_vs_bare_llm"] = row["decode_tokens_per_s"] / rows[0]["decode_tokens_per_s"]
        row["ttft_vs_bare_llm"] = row["time_to_first_token_s"] / rows[0]["time_to_first_token_s"]
    extra = {"audio_tokens": audio_tokens, "prompt_tokens": int(input_ids.shape[1]), "llm_bytes_per_token": weights,
             "bandwidth_gb_per_s": bandwidth / 1e9, "ceiling_tokens_per_s": ceiling}  # fmt: skip
    report("inference", args, rows, extra)
    sys.stdout.write(f"bandwidth {bandwidth / 1e9:.1f} GB/s measured; LLM reads {weights / 1e9:.2f} GB per token; "
                     f"ceiling {ceiling:.1f} tokens/s\n")  # fmt: skip


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
