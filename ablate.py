# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Train and evaluate several aligner variants with the same recipe, data, seed and step budget, side by side.

    python ablate.py configs/demo.yaml --variants layerwise linear post_encoder --output_dir outputs/ablation \\
        -- --audio_model_id ../shared/models/whisper-tiny.en-encoder --text_model_id ../shared/models/stories260K

Each variant runs `train.py` in its own process (so peak memory is its own) and the results go to one table:
`ablation.md`, `ablation.csv` and `ablation.png` in `--output_dir`.
"""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "layerwise": [],
    "per_layer_router": ["--aligner_type", "per_layer_router"],
    "post_encoder": ["--aligner_type", "post_encoder"],
    "linear": ["--aligner_type", "linear"],
    "encoder_lora": ["--aligner_type", "linear", "--encoder_lora_rank", "8"],
    "experts_2": ["--num_experts", "2"],
    "experts_4": ["--num_experts", "4"],
    "experts_16": ["--num_experts", "16"],
}
COLUMNS = ["variant", "trainable_parameters", "wer", "ctc_readout_wer", "cer", "train_minutes", "peak_rss_mb"]


def run_variant(name: str, recipe: str, output_dir: Path, overrides: list[str]) -> dict:
    out = output_dir / name
    command = [sys.executable, str(Path(__file__).with_name("train.py")), recipe, *overrides, *VARIANTS[name],
               "--output_dir", str(out), "--save_strategy", "no"]  # fmt: skip
    subprocess.run(command, check=True)
    results = json.loads((out / "results.json").read_text())
    return {
        "variant": name,
        "trainable_parameters": results["parameters"]["total"]["trainable"],
        "wer": round(results["eval"]["eval_wer"], 4),
        "ctc_readout_wer": round(results["eval"]["eval_ctc_wer"], 4) if "eval_ctc_wer" in results["eval"] else "-",
        "cer": round(results["eval"]["eval_cer"], 4),
        "train_minutes": results["train"]["minutes"],
        "peak_rss_mb": results["peak_memory_mb"]["cpu_rss"],
    }


def write_table(rows: list[dict], output_dir: Path, budget: str) -> None:
    with open(output_dir / "ablation.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"Budget: {budget}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in COLUMNS) + " |" for row in rows]
    (output_dir / "ablation.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.5))
    axis.bar([row["variant"] for row in rows], [row["wer"] for row in rows], color="tab:blue")
    axis.set_ylabel("held-out WER")
    axis.set_title("Aligner variants, same data, seed and steps")
    axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    figure.savefig(output_dir / "ablation.png", dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="A train.py YAML recipe (data, backbones, steps).")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--output_dir", default="outputs/ablation")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = [run_variant(name, args.recipe, output_dir, overrides) for name in args.variants]
    budget = f"recipe {args.recipe}, overrides {' '.join(overrides) or 'none'}"
    write_table(rows, output_dir, budget)
    sys.stdout.write((output_dir / "ablation.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
