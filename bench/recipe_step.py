"""A joint training step of a recipe (train.py's YAML: its backbones, data, prompt and losses) with and without the
cached prompt prefix and logits at target positions only, and with each CTC frame compression (meaningful with a
trained CTC head: `--adapter`), timed interleaved in one run on the same real batches; also the CTC-only warm-up
step. Each row is forward + backward + optimizer step, and its ratio to the recipe as
written.

    python bench/recipe_step.py configs/demo.yaml --audio_model_id ../shared/models/whisper-tiny.en-encoder \
        --adapter outputs/demo
"""

import sys
from pathlib import Path

import torch
from common import ROOT, measure_interleaved, parser, report

sys.path.insert(0, str(ROOT))
import train  # noqa: E402

VARIANTS = {  # name -> config overrides of the recipe's loss fields
    "recipe as written": {},
    "no prefix cache": {"cache_prompt_prefix": False},
    "no prefix cache, all logits": {"cache_prompt_prefix": False, "target_logits_only": False},
    # with an adapter whose CTC head is trained (--adapter), what the frame compression saves per joint step
    "no CTC compression": {"frame_compression": None},
    "CTC compression, argmax": {"frame_compression": "ctc_argmax"},
    "CTC compression, blank probability > 0.95 dropped": {"frame_compression": "ctc_threshold"},
}


def main():
    p = parser(__doc__)
    p.add_argument("recipe", help="A train.py YAML recipe.")
    p.add_argument("--batches", type=int, default=4, help="Distinct training batches, cycled through.")
    args, rest = p.parse_known_args()
    model_args, data_args, training_args = train.parse_args([args.recipe, *rest, "--use_cpu", "true"])
    torch.manual_seed(0)
    model, processor = train.build_model_and_processor(model_args)
    if training_args.llm_dtype:
        model.language_model.to(getattr(torch, training_args.llm_dtype))
    model.to(args.device).train()
    dataset, base_dir = train.load_split(data_args, data_args.train_split, data_args.train_files)
    config = model.config
    collator = train.SteerMoEDataCollator(
        processor, data_args, base_dir, teacher_inputs=config.kl_loss_coef > 0,
        transcript_labels=config.ctc_loss_coef > 0 and data_args.transcript_column is not None,
    )  # fmt: skip
    size = training_args.per_device_train_batch_size
    batches = [
        {key: value.to(args.device) for key, value in collator([dataset[i] for i in range(b * size, (b + 1) * size)]).items()}
        for b in range(args.batches)
    ]  # fmt: skip
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    recipe = {key: getattr(config, key) for key in ("cache_prompt_prefix", "target_logits_only", "frame_compression")}
    counter = iter(range(10**9))

    def step(overrides: dict, joint: bool):
        def run():
            config.update({**recipe, **overrides})
            model.recipe_step = config.llm_loss_start_step if joint else 0
            model(**batches[next(counter) % len(batches)]).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return run

    fns = {name: step(overrides, joint=True) for name, overrides in VARIANTS.items()}
    if config.llm_loss_start_step > 0:
        fns["CTC-only warm-up step"] = step({}, joint=False)
    seconds = measure_interleaved(fns, args.device, args.repeats, args.warmup)
    config.update(recipe)
    base = seconds["recipe as written"]
    rows = [{"step": name, "seconds": round(value, 3), "ratio_to_recipe": round(value / base, 3)} for name, value in seconds.items()]
    args.size = Path(args.recipe).stem  # names the JSON: recipe_step-<recipe>-<device>.json
    report("recipe_step", args, rows, extra={"batch_size": size, **recipe})


if __name__ == "__main__":
    main()
