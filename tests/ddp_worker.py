"""Runs train.main under `accelerate launch`, recording each rank's steps and final adapter weights."""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402


class RecordRank(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1

    def on_train_end(self, args, state, control, model=None, **kwargs):
        rank = args.process_index
        aligner = {k: v.detach().cpu().contiguous() for k, v in model._adapter_state_dict().items()}
        save_file(aligner, f"{args.output_dir}/rank{rank}-aligner.safetensors")
        Path(f"{args.output_dir}/rank{rank}.json").write_text(json.dumps({"steps": self.steps, "world": args.world_size}))


if __name__ == "__main__":
    train.main(sys.argv[1:], callbacks=[RecordRank()])
