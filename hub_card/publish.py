# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Render the SteerMoE model card and upload an adapter to the Hub: exactly config.json, the aligner weights, the
code files, the processor files, generation_config.json and README.md.

    python -m hub_card.publish outputs/demo my-org/steermoe-demo [--private] [--license apache-2.0]
"""

import argparse
import json
import re
import tempfile
from pathlib import Path

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData


TEMPLATE = Path(__file__).with_name("README.md.jinja")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
RECIPE_KEYS = (
    "dataset_name", "dataset_config", "train_split", "eval_split", "task", "prompt", "language", "max_steps",
    "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "steering_learning_rate",
    "learning_rate", "lr_scheduler_type", "warmup_steps", "router_balance_loss_coef", "bf16", "seed",
)  # fmt: skip


def _hub_id(name: str | None) -> str | None:
    """`name` if it is a Hub id (not a local folder), else None."""
    return name if name and HUB_ID.match(name) and not Path(name).exists() else None


def render_model_card(model, repo_id: str, results: dict | None = None, license: str = "apache-2.0",
                      language: list[str] | None = None, datasets: list[str] | None = None) -> ModelCard:  # fmt: skip
    """The model card for `model` published as `repo_id`; `results` is the `results.json` written by train.py."""
    config = model.config
    results = results or {}
    recipe = {
        **results.get("recipe", {}).get("data", {}), **results.get("training_args", {}),
        "router_balance_loss_coef": config.router_balance_loss_coef,
    }  # fmt: skip
    language = language or ([recipe["language"]] if recipe.get("language") else None)
    dataset_name = recipe.get("dataset_name") or ", ".join(Path(f).name for f in recipe.get("eval_files") or []) or "evaluation set"
    datasets = datasets or ([recipe["dataset_name"]] if _hub_id(recipe.get("dataset_name")) else None)
    rows, eval_results = [], []
    if "eval" in results:
        scores = results["eval"]
        split = recipe.get("eval_split", "test")
        rows.append({"dataset": dataset_name, "split": split, "wer": scores["eval_wer"], "cer": scores["eval_cer"],
                     "samples": scores.get("eval_num_samples")})  # fmt: skip
        for metric in ("wer", "cer"):
            eval_results.append(EvalResult(
                task_type="automatic-speech-recognition", dataset_type=recipe.get("dataset_name") or "custom",
                dataset_name=dataset_name, dataset_split=split, metric_type=metric, metric_name=metric.upper(),
                metric_value=round(scores[f"eval_{metric}"], 4),
            ))  # fmt: skip
    audio_original = config.audio_model_hub_id or _hub_id(config.audio_model_id)  # a local copy's Hub original
    text_original = config.text_model_hub_id or _hub_id(config.text_model_id)
    base_models = [m for m in (audio_original, text_original) if m]
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="automatic-speech-recognition", license=license,
        language=language, datasets=datasets, base_model=base_models or None,
        tags=["steermoe", "audio", "speech", "automatic-speech-recognition", "adapter", "custom_code"],
        model_name=repo_id.split("/")[-1], eval_results=eval_results or None,
    )  # fmt: skip
    report = model.get_parameter_report()
    aligner = report["aligner"]["trainable"] + report["aligner"]["frozen"]
    pooling = f"{config.pooling_type}-pooling over {config.pooling_kernel_size} frames" if config.pooling_type else "no pooling"
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATE), repo_id=repo_id, model_name=repo_id.split("/")[-1],
        audio_model_id=audio_original or config.audio_model_id, text_model_id=text_original or config.text_model_id,
        audio_model_revision=config.audio_model_revision, text_model_revision=config.text_model_revision,
        num_experts=config.num_experts, steering_scale=config.steering_scale, pooling=pooling,
        projector_type=config.projector_type, parameters=report, aligner_parameters=f"{aligner:,}",
        adapter_megabytes=f"{aligner * 4 / 1e6:.1f}", results=rows,
        recipe={k: recipe[k] for k in RECIPE_KEYS if recipe.get(k) is not None},
    )  # fmt: skip


def push_adapter(model, processor, repo_id: str, results: dict | None = None, private: bool | None = None,
                 token: str | None = None, commit_message: str = "Upload SteerMoE adapter", **card_kwargs):  # fmt: skip
    """Save the adapter, processor and rendered card to a staging folder and upload exactly those files."""
    if processor is None:
        raise ValueError("Pass the SteerMoEProcessor: the Hub repo needs its tokenizer and feature extractor files.")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        render_model_card(model, repo_id, results, **card_kwargs).save(Path(staging) / "README.md")
        operations = [
            CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path))
            for path in sorted(Path(staging).iterdir())
            if path.is_file()
        ]
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter", help="A folder written by train.py (or save_pretrained + processor).")
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--language", nargs="*")
    parser.add_argument("--datasets", nargs="*")
    args = parser.parse_args(argv)
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(args.adapter, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(args.adapter, trust_remote_code=True)
    results_file = Path(args.adapter) / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else None
    commit = push_adapter(model, processor, args.repo_id, results=results, private=args.private or None,
                          license=args.license, language=args.language, datasets=args.datasets)  # fmt: skip
    print(commit.commit_url if hasattr(commit, "commit_url") else commit)


if __name__ == "__main__":
    main()
