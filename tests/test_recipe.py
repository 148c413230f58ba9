"""The training recipe lives in the model: `forward` computes every loss term from config fields, so a stock
`Trainer`, `train.py` and several processes all train the same way."""

import json

import pytest
import soundfile
import torch
from conftest import ROOT, launch_two_processes, speechlike
from safetensors.torch import load_file
from transformers import Trainer, TrainingArguments, set_seed

import train
from configuration_steermoe import SteerMoEConfig
from modeling_steermoe import SteerMoEForConditionalGeneration

RECIPE = {  # the demo's recipe (configs/demo.yaml), with a short warm-up
    "ctc_loss_coef": 1.0, "ctc_logit_scale": 30.0, "frame_norm_loss_coef": 1.0, "llm_loss_start_step": 2,
    "target_logits_only": True, "cache_prompt_prefix": True, "router_balance_loss_coef": 0.01,
}  # fmt: skip


def recipe_argv(recipe: dict) -> list[str]:
    return [item for key, value in recipe.items() for item in (f"--{key}", str(value).lower())]


@pytest.fixture
def equal_rows(tmp_path):
    """Four clips of one length with one transcript: every row has as many frames and target tokens, so a mean over
    one process's batch of four equals the mean of two processes' means over two."""
    rows = []
    for index in range(4):
        soundfile.write(tmp_path / f"e{index}.wav", speechlike(2.0, seed=10 + index, noise=0.2), 16000)
        rows.append({"audio": f"e{index}.wav", "text": "the quick brown fox"})
    path = tmp_path / "equal.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def manifest(tmp_path):
    """Four clips of different lengths and transcripts, each with more frames than transcript tokens (CTC)."""
    texts = ["the quick fox", "a lazy dog", "my fellow americans", "the first great sorrow"]
    for index in range(4):
        soundfile.write(tmp_path / f"v{index}.wav", speechlike(1.5 + 0.3 * index, seed=index, noise=0.2), 16000)
    path = tmp_path / "varied.jsonl"
    path.write_text("".join(json.dumps({"audio": f"v{i}.wav", "text": text}) + "\n" for i, text in enumerate(texts)))
    return path


def common_args(backbone_dirs, manifest, output_dir, batch_size: int, *extra) -> list[str]:
    audio_dir, text_dir = backbone_dirs
    return [
        "--audio_model_id", str(audio_dir), "--text_model_id", str(text_dir), "--backbone_dtype", "float32",
        "--train_files", str(manifest), "--output_dir", str(output_dir), "--do_train",
        "--per_device_train_batch_size", str(batch_size), "--logging_steps", "1", "--num_experts", "4",
        "--report_to", "none", "--seed", "0", "--train_sampling_strategy", "sequential", "--save_strategy", "no",
        "--use_cpu", "true", *extra,
    ]  # fmt: skip


def logged(history: list[dict], key: str) -> dict[int, float]:
    return {entry["step"]: entry[key] for entry in history if key in entry}


def test_forward_returns_the_weighted_sum_of_its_parts(make_model, processor):
    model = make_model(**{**RECIPE, "llm_loss_start_step": 0, "kl_loss_coef": 0.5})
    model.train()
    prompt = processor.build_prompt("Transcribe the audio.")
    batch = processor(
        text=[prompt] * 2, audio=[speechlike(1.0, seed=1), speechlike(1.4, seed=2)], sampling_rate=16000,
        text_target=["the quick brown fox", "a lazy dog"],
    )  # fmt: skip
    with pytest.raises(ValueError, match="teacher_input_ids"):
        model(**batch)
    from train import oracle_inputs

    teacher = oracle_inputs(processor, [prompt] * 2, ["the quick brown fox", "a lazy dog"], ["the quick brown fox", "a lazy dog"])
    output = model(**batch, **{f"teacher_{key}": value for key, value in teacher.items()})
    config = model.config
    expected = (
        config.ce_loss_coef * output.llm_loss + config.kl_loss_coef * output.kl_loss
        + config.ctc_loss_coef * output.ctc_loss + config.frame_norm_loss_coef * output.frame_norm_loss
        + config.router_balance_loss_coef * output.router_balance_loss
    )  # fmt: skip
    assert all(float(part) > 0 for part in (output.llm_loss, output.kl_loss, output.ctc_loss, output.frame_norm_loss))
    assert float(output.loss) == pytest.approx(float(expected), rel=1e-6)
    targets = int((batch["labels"] != -100).sum())
    assert output.logits.shape == (targets, model.config.text_config.vocab_size)  # target_logits_only
    output.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aligner.parameters())


def test_default_config_loss_is_the_llms_own_cross_entropy(model, processor):
    batch = processor(
        text=[processor.build_prompt("Transcribe the audio.")] * 2, audio=[speechlike(1.0), speechlike(0.7, seed=3)],
        sampling_rate=16000, text_target=["the quick brown fox", "a lazy dog"],
    )  # fmt: skip
    output = model(**batch)
    embeds, _ = model._merge_audio_into_embeddings(batch["input_ids"], batch["input_features"], batch["feature_attention_mask"])
    reference = model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert float(output.loss) == pytest.approx(float(reference.loss), rel=1e-6)
    assert output.logits.shape == reference.logits.shape and output.ctc_loss is None


def test_ctc_warmup_does_not_run_the_llm_in_training(make_model, processor, monkeypatch):
    model = make_model(ctc_loss_coef=1.0, llm_loss_start_step=2)
    calls = []
    forward = model.language_model.forward
    monkeypatch.setattr(model.language_model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    batch = processor(
        text=processor.build_prompt("Transcribe the audio."), audio=speechlike(1.0), sampling_rate=16000,
        text_target="the quick brown fox",
    )  # fmt: skip
    model.train()
    warmup = [model(**batch) for _ in range(2)]
    assert not calls and all(o.llm_loss is None and o.logits is None and o.ctc_loss is not None for o in warmup)
    assert float(warmup[0].loss) == pytest.approx(float(warmup[0].ctc_loss))
    joint = model(**batch)
    assert calls and joint.llm_loss is not None and model.recipe_step == 3
    model.eval()  # evaluation always scores the LLM, and does not advance the warm-up
    model.recipe_step = 0
    assert model(**batch).llm_loss is not None and model.recipe_step == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"llm_loss_start_step": 10}, "needs ctc_loss_coef > 0"),
        ({"cache_prompt_prefix": True, "lora_rank": 2}, "with lora_rank > 0"),
        ({"ce_loss_coef": 0.0}, "Every loss coefficient is 0"),
        ({"ctc_loss_coef": -1.0}, "must be >= 0"),
        ({"kl_temperature": 0.0}, "kl_temperature must be > 0"),
    ],
)
def test_bad_recipes_are_refused(backbone_dirs, fields, message):
    audio_dir, text_dir = backbone_dirs
    with pytest.raises(ValueError, match=message):
        SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir), **fields)


def test_the_recipe_is_saved_with_the_adapter_and_the_blank_resolved(make_model, processor, tmp_path):
    model = make_model(**RECIPE)
    space = processor.tokenizer(" ", add_special_tokens=False)["input_ids"]
    assert len(space) == 1 and model.config.ctc_blank_token_id == space[0]
    model.save_pretrained(tmp_path / "adapter")
    reloaded = SteerMoEForConditionalGeneration.from_pretrained(tmp_path / "adapter", dtype=torch.float32)
    for key, value in RECIPE.items():
        assert getattr(reloaded.config, key) == value, key
    assert reloaded.config.ctc_blank_token_id == space[0]


def test_stock_trainer_reproduces_train_py_step_for_step(backbone_dirs, manifest, tmp_path):
    """A stock `transformers.Trainer` with the model, the processor and train.py's collator trains with the same
    losses as `train.py` (one learning rate for both, so the optimizers agree)."""
    steps = 5
    out = tmp_path / "train_py"
    lr = ("--learning_rate", "5e-3", "--steering_learning_rate", "5e-3", "--max_steps", str(steps))
    train.main(common_args(backbone_dirs, manifest, out, 2, *lr, *recipe_argv(RECIPE)))
    expected = logged(json.loads((out / "trainer_state.json").read_text())["log_history"], "loss")

    audio_dir, text_dir = backbone_dirs
    set_seed(0)
    config = SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir), num_experts=4, **RECIPE)
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32)
    processor = train.SteerMoEProcessor.from_config(config)
    data_args = train.DataArguments(train_files=[str(manifest)])
    dataset, base_dir = train.load_split(data_args, "train", data_args.train_files)
    args = TrainingArguments(
        str(tmp_path / "stock"), max_steps=steps, per_device_train_batch_size=2, learning_rate=5e-3,
        logging_steps=1, report_to="none", seed=0, train_sampling_strategy="sequential", save_strategy="no",
        remove_unused_columns=False, use_cpu=True,
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, processing_class=processor,
        data_collator=train.SteerMoEDataCollator(processor, data_args, base_dir),
    )  # fmt: skip
    trainer.train()
    got = logged(trainer.state.log_history, "loss")
    ctc = logged(json.loads((out / "trainer_state.json").read_text())["log_history"], "ctc_loss")
    assert len(ctc) == steps and all(value > 0.1 for value in ctc.values())
    assert sorted(got) == sorted(expected) == list(range(1, steps + 1))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-5), (step, got, expected)
    assert expected[3] != pytest.approx(expected[2], rel=1e-3)  # the LLM's loss joins at step 3
    saved = load_file(out / "model.safetensors")
    for key, value in model.state_dict().items():
        if key in saved:
            torch.testing.assert_close(value, saved[key], rtol=1e-4, atol=1e-6)


def test_two_processes_train_the_recipe_as_one_process_on_the_same_global_batch(backbone_dirs, equal_rows, tmp_path):
    """`accelerate launch --num_processes 2` (gloo) with the recipe's losses, CTC-only warm-up then joint: both
    ranks end with the same aligner, equal to one process on the same global batch of four."""
    recipe = {**RECIPE, "router_balance_loss_coef": 0.0, "kl_loss_coef": 0.5}  # balance is a per-batch statistic
    extra = ("--max_steps", "4", "--optim", "sgd", "--learning_rate", "0.05", "--steering_learning_rate", "0.05",
             *recipe_argv(recipe))  # fmt: skip
    ddp = tmp_path / "ddp"
    result = launch_two_processes(common_args(backbone_dirs, equal_rows, ddp, 2, *extra), tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert [json.loads((ddp / f"rank{rank}.json").read_text()) for rank in (0, 1)] == [{"steps": 4, "world": 2}] * 2
    rank0, rank1 = (load_file(ddp / f"rank{rank}-aligner.safetensors") for rank in (0, 1))
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)

    single = tmp_path / "single"
    train.main(common_args(backbone_dirs, equal_rows, single, 4, *extra))
    reference = load_file(single / "model.safetensors")
    set_seed(0)
    initial = SteerMoEForConditionalGeneration(
        SteerMoEConfig(audio_model_id=str(backbone_dirs[0]), text_model_id=str(backbone_dirs[1]), num_experts=4)
    )
    moved = 0.0
    for key, value in rank0.items():
        torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=1e-6)
        moved = max(moved, float((reference[key] - initial.state_dict()[key]).abs().max()))
    assert moved > 1e-3  # the four steps trained the aligner
    history = json.loads((single / "trainer_state.json").read_text())["log_history"]
    assert sorted(logged(history, "llm_loss")) == [3, 4] and sorted(logged(history, "ctc_loss")) == [1, 2, 3, 4]
    assert all(value > 0.1 for value in logged(history, "ctc_loss").values())  # feasible: frames > tokens


def test_two_processes_with_llm_lora_through_the_warmup(backbone_dirs, equal_rows, tmp_path):
    """The LLM's LoRA takes no part in the CTC-only warm-up; DDP (find_unused_parameters off) must still finish and
    keep the ranks equal."""
    extra = ("--max_steps", "3", "--lora_rank", "2", "--ctc_loss_coef", "1", "--llm_loss_start_step", "2")
    out = tmp_path / "lora"
    result = launch_two_processes(common_args(backbone_dirs, equal_rows, out, 2, *extra), tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    rank0, rank1 = (load_file(out / f"rank{rank}-aligner.safetensors") for rank in (0, 1))
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    saved = load_file(out / "model.safetensors")
    assert any("lora_" in key for key in saved)


def test_parameter_groups_hold_each_trainable_parameter_once(make_model, tmp_path):
    """DeepSpeed ZeRO flattens the Trainer's parameter groups (the shipped config names no optimizer of its own):
    every trainable parameter in exactly one group, nothing frozen, no empty group."""
    import yaml

    model = make_model(lora_rank=2, encoder_lora_rank=2)
    args = train.SteerMoETrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, projector_learning_rate=1e-3
    )
    optimizer = train.SteerMoETrainer(model=model, args=args).create_optimizer()
    grouped = [id(param) for group in optimizer.param_groups for param in group["params"]]
    trainable = {id(param) for param in model.parameters() if param.requires_grad}
    assert len(grouped) == len(set(grouped)) and set(grouped) == trainable
    assert len(optimizer.param_groups) == 3 and all(group["params"] for group in optimizer.param_groups)
    deepspeed = yaml.safe_load((ROOT / "configs" / "accelerate" / "deepspeed_zero2.yaml").read_text())
    assert not {"optimizer", "scheduler"} & set(deepspeed["deepspeed_config"])


def test_kl_teacher_is_the_base_llm_when_the_llm_has_lora(make_model, processor):
    model = make_model(lora_rank=2, kl_loss_coef=1.0)
    with torch.no_grad():
        for name, param in model.language_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # a trained LoRA: B is zero at init
    prompt = processor.build_prompt("Transcribe the audio.")
    teacher = train.oracle_inputs(processor, [prompt], ["the quick brown fox"], ["the quick brown fox"])
    input_ids = processor(text=prompt, audio=speechlike(2.0), sampling_rate=16000)["input_ids"]
    logits = model._teacher_logits(input_ids, teacher["input_ids"], teacher["attention_mask"], teacher["labels"])
    positions = teacher["labels"][:, 1:] != -100
    with model._llm_lora_enabled(False), torch.no_grad():
        base = model.language_model(**{k: teacher[k] for k in ("input_ids", "attention_mask")}).logits[:, :-1][positions]
    with torch.no_grad():
        adapted = model.language_model(**{k: teacher[k] for k in ("input_ids", "attention_mask")}).logits[:, :-1][positions]
    torch.testing.assert_close(logits, base)
    assert not torch.allclose(adapted, base, atol=1e-3)


def test_ctc_readout_reads_frames_that_are_token_embeddings(make_model, processor, monkeypatch):
    """Frames equal to the embeddings of `blank a a blank b b blank ...` read out as `a b ...`, row by row."""
    model = make_model(ctc_loss_coef=1.0, ctc_logit_scale=30.0)
    blank = model.config.ctc_blank_token_id
    batch = processor(
        text=[processor.build_prompt("Transcribe the audio.")] * 2, audio=[speechlike(3.0), speechlike(2.0, seed=1)],
        sampling_rate=16000,
    )  # fmt: skip
    counts = model.get_placeholder_mask(batch["input_ids"]).sum(1).tolist()
    words = [processor.tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("the quick", "a dog")]
    labels = []
    for row, count in zip(words, counts):
        frames = [blank] + [token for token in row for token in (token, token, blank)]
        assert len(frames) <= count
        labels += frames + [blank] * (count - len(frames))
    merge = model._merge_audio_into_embeddings

    def token_frames(input_ids, *args, **kwargs):
        embeds, router_logits = merge(input_ids, *args, **kwargs)
        placeholders = model.get_placeholder_mask(input_ids)[..., None]
        frames = model.get_input_embeddings().weight[torch.tensor(labels)]
        return embeds.masked_scatter(placeholders, frames), router_logits

    monkeypatch.setattr(model, "_merge_audio_into_embeddings", token_frames)
    expected = [[token for token in row if token != blank] for row in words]  # the blank is the LLM's space token
    assert model.ctc_readout(batch["input_ids"], batch["input_features"], batch["feature_attention_mask"]) == expected


def test_evaluation_reports_the_ctc_readout_beside_the_llm(backbone_dirs, manifest, tmp_path):
    out = tmp_path / "run"
    args = common_args(backbone_dirs, manifest, out, 2, "--max_steps", "1", "--do_eval", "--eval_files", str(manifest),
                       "--generation_max_new_tokens", "4", "--ctc_loss_coef", "1", "--ctc_logit_scale", "30")  # fmt: skip
    report = train.main(args)
    assert 0 <= report["eval"]["eval_ctc_wer"] and "eval_wer" in report["eval"]
    assert report["eval"]["eval_llm_frames_per_second"] == pytest.approx(12.5)  # every frame: Whisper's 50 Hz / 4
    rows = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all({"reference", "prediction", "ctc_readout"} <= row.keys() for row in rows)
    plain = train.main(common_args(backbone_dirs, manifest, tmp_path / "plain", 2, "--max_steps", "1", "--do_eval",
                                   "--eval_files", str(manifest), "--generation_max_new_tokens", "4"))  # fmt: skip
    assert "eval_ctc_wer" not in plain["eval"]  # no trained CTC head, no readout
