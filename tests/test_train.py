import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import evaluate
import pytest
import soundfile
import torch
from conftest import ROOT, launch_two_processes, speechlike
from safetensors import safe_open
from safetensors.torch import load_file

import modeling_steermoe
import train
from modeling_steermoe import SteerMoEForConditionalGeneration
from processing_steermoe import SteerMoEProcessor

WORDS = ["the quick fox", "a lazy dog", "my fellow americans", "the first great sorrow"]


@pytest.fixture
def manifest(tmp_path):
    """A JSONL manifest of short synthetic clips (one per target, different sounds) at mixed rates and formats."""
    rows = []
    for index, text in enumerate(WORDS):
        rate = (16000, 22050, 44100, 8000)[index]
        suffix = (".wav", ".flac", ".ogg", ".wav")[index]
        path = tmp_path / f"clip{index}{suffix}"
        soundfile.write(path, speechlike(0.6 + 0.2 * index, sampling_rate=rate, seed=index, noise=0.2), rate)
        rows.append({"audio": path.name, "text": text})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_args(backbone_dirs, manifest, output_dir, *extra):
    audio_dir, text_dir = backbone_dirs
    return [
        "--audio_model_id", str(audio_dir), "--text_model_id", str(text_dir), "--backbone_dtype", "float32",
        "--train_files", str(manifest), "--eval_files", str(manifest), "--output_dir", str(output_dir),
        "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4", "--logging_steps", "1",
        "--num_experts", "4", "--report_to", "none", "--seed", "0", "--generation_max_new_tokens", "4",
        *extra,
    ]  # fmt: skip


def losses(output_dir: Path) -> dict[int, float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def test_recipe_file_with_command_line_overrides(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "audio_model_id: a\ntext_model_id: b\noutput_dir: out\ntrain_files: [x.jsonl, y.jsonl]\n"
        "max_steps: 10\nsteering_learning_rate: 0.02\neval_on_start: true\n"
    )
    model_args, data_args, training_args = train.parse_args([str(recipe), "--max_steps", "3", "--text_model_id", "c"])
    assert (model_args.audio_model_id, model_args.text_model_id) == ("a", "c")
    assert data_args.train_files == ["x.jsonl", "y.jsonl"]
    assert training_args.max_steps == 3 and training_args.steering_learning_rate == 0.02
    assert training_args.eval_on_start and not training_args.remove_unused_columns


def test_training_reduces_the_loss_and_saves_the_aligner_only(backbone_dirs, manifest, tmp_path):
    out = tmp_path / "run"
    report = train.main(
        run_args(backbone_dirs, manifest, out, "--do_train", "--max_steps", "60", "--learning_rate", "5e-2", "--steering_learning_rate", "5e-2",
                 "--save_steps", "30", "--eval_on_start", "--do_eval")
    )  # fmt: skip
    curve = losses(out)
    first, last = sum(curve[s] for s in (1, 2, 3)) / 3, sum(curve[s] for s in (58, 59, 60)) / 3
    assert last < 0.8 * first, curve
    model = SteerMoEForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    aligner_keys = set(model.aligner.state_dict(prefix="aligner.").keys())
    for folder in (out, out / "checkpoint-60"):
        with safe_open(folder / "model.safetensors", "pt") as reader:
            assert set(reader.keys()) == aligner_keys
        assert (folder / "processor_config.json").exists() and (folder / "modeling_steermoe.py").exists()
    optimizer = torch.load(out / "checkpoint-60" / "optimizer.pt", weights_only=False)
    saved_numel = sum(t.numel() for state in optimizer["state"].values() for t in state.values() if t.dim() > 0)
    assert saved_numel == 2 * sum(p.numel() for p in model.aligner.parameters())
    lrs = sorted(group["lr"] for group in optimizer["param_groups"])
    assert len(lrs) == 2
    assert report["eval"]["eval_num_samples"] == len(WORDS) and "eval_wer" in report["eval"]
    assert "eval_before_wer" in report["eval_before"]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = next(entry for entry in history if "loss" in entry)
    assert {"steer/scale_l0", "steer/usage_entropy_l1", "steer/top_expert_l0"} <= logged.keys()
    assert (out / "expert_usage.png").stat().st_size > 0
    predictions = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert sorted(p["reference"] for p in predictions) == sorted(WORDS)
    results = json.loads((out / "results.json").read_text())
    assert results["parameters"]["aligner"]["trainable"] == sum(p.numel() for p in model.aligner.parameters())


def test_two_learning_rates(backbone_dirs, manifest, tmp_path):
    out = tmp_path / "run"
    train.main(
        run_args(backbone_dirs, manifest, out, "--do_train", "--max_steps", "1", "--save_steps", "1",
                 "--steering_learning_rate", "0.01", "--learning_rate", "0.0001", "--lr_scheduler_type", "constant")
    )  # fmt: skip
    optimizer = torch.load(out / "checkpoint-1" / "optimizer.pt", weights_only=False)
    groups = {len(group["params"]): group["lr"] for group in optimizer["param_groups"]}
    assert groups == {2: 0.01, 4: 0.0001}


def test_resume_continues_exactly(backbone_dirs, manifest, tmp_path):
    extra = ("--do_train", "--max_steps", "6", "--save_steps", "3", "--learning_rate", "3e-3")
    straight = tmp_path / "straight"
    train.main(run_args(backbone_dirs, manifest, straight, *extra))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-3", resumed / "checkpoint-3")
    train.main(run_args(backbone_dirs, manifest, resumed, *extra, "--resume_from_checkpoint", str(resumed / "checkpoint-3")))
    expected, got = losses(straight), losses(resumed)
    assert [got[s] for s in (4, 5, 6)] == [expected[s] for s in (4, 5, 6)]
    final_straight = load_file(straight / "model.safetensors")
    final_resumed = load_file(resumed / "model.safetensors")
    assert all(torch.equal(final_straight[k], final_resumed[k]) for k in final_straight)


def test_bad_files_are_skipped_and_counted(backbone_dirs, manifest, tmp_path):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    soundfile.write(tmp_path / "empty.wav", speechlike(0.0), 16000)
    soundfile.write(tmp_path / "long.wav", speechlike(3.0), 16000)
    rows = manifest.read_text().splitlines() + [
        json.dumps({"audio": "corrupt.wav", "text": "x"}),
        json.dumps({"audio": "missing.wav", "text": "x"}),
        json.dumps({"audio": "empty.wav", "text": "x"}),
        json.dumps({"audio": "long.wav", "text": "x"}),
        json.dumps({"audio": "clip0.wav", "text": ""}),
    ]
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    report = train.main(
        run_args(backbone_dirs, manifest, out, "--do_train", "--do_eval", "--max_steps", "2", "--max_audio_seconds", "2")
    )
    expected = {"kept": len(WORDS), "undecodable": 3, "too_long_audio": 1, "empty_target": 1}
    assert report["data"]["train"] == expected and report["data"]["eval"] == expected
    assert json.loads((out / "results.json").read_text())["data"]["train"] == expected


def test_evaluate_only_on_a_saved_adapter(backbone_dirs, manifest, tmp_path):
    out = tmp_path / "run"
    train.main(run_args(backbone_dirs, manifest, out, "--do_train", "--max_steps", "2"))
    evaluation = tmp_path / "eval"
    report = train.main(run_args(backbone_dirs, manifest, evaluation, "--do_eval", "--adapter", str(out)))
    assert report["eval"]["eval_num_samples"] == len(WORDS)
    assert (evaluation / "eval_predictions.jsonl").exists() and (evaluation / "results.json").exists()
    assert not (evaluation / "model.safetensors").exists()


def test_metric_matches_a_hand_check():
    metric = evaluate.load(train.METRIC_PATH)
    scores = metric.compute(
        predictions=["The cat sat.", "hello   world"], references=["the cat sat on the mat", "Hello, world!"]
    )
    assert scores["wer"] == pytest.approx(3 / 8)
    assert scores["cer"] == pytest.approx(11 / 33)
    chinese = metric.compute(predictions=["广州市房地产中介协会"], references=["广州市房地产中介协会分析。"], language="zh")
    assert chinese["cer"] == pytest.approx(2 / 12)


def test_sigterm_leaves_a_usable_checkpoint(backbone_dirs, manifest, tmp_path):
    out = tmp_path / "run"
    args = run_args(backbone_dirs, manifest, out, "--do_train", "--max_steps", "100000", "--save_steps", "100000")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    log = ""
    while time.time() < deadline and "'loss'" not in log:
        log += process.stdout.readline()
    assert "'loss'" in log, log[-3000:]
    process.send_signal(signal.SIGTERM)
    log += process.communicate(timeout=120)[0]
    assert process.returncode == 0, log[-3000:]
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1, log[-3000:]
    model = SteerMoEForConditionalGeneration.from_pretrained(checkpoints[0], dtype=torch.float32)
    assert model.aligner.steering_vectors.abs().sum() > 0
    assert json.loads((out / "results.json").read_text())["train"]["stopped_by_signal"] is True


def test_two_process_accelerate_launch_on_cpu(backbone_dirs, manifest, tmp_path):
    out = tmp_path / "ddp"
    args = run_args(backbone_dirs, manifest, out, "--do_train", "--max_steps", "4", "--learning_rate", "3e-3", "--use_cpu", "true")
    result = launch_two_processes(args, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks == [{"steps": 4, "world": 2}] * 2
    saved = load_file(out / "model.safetensors")
    rank0, rank1 = (load_file(out / f"rank{rank}-aligner.safetensors") for rank in (0, 1))
    assert saved.keys() == rank0.keys()
    assert all(torch.equal(saved[k], rank0[k]) and torch.equal(rank0[k], rank1[k]) for k in saved)
    initial = SteerMoEForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    assert torch.equal(initial.aligner.steering_vectors, saved["aligner.steering_vectors"])


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda path: path.stem)
def test_recipes_parse(recipe):
    model_args, data_args, training_args = train.parse_args([str(recipe), "--bf16", "false", "--use_cpu", "true"])
    assert (model_args.audio_model_id and model_args.text_model_id) or model_args.adapter  # new, or warm-started
    assert training_args.output_dir
    assert data_args.train_files or data_args.dataset_name
    assert training_args.do_train and training_args.do_eval


@pytest.mark.parametrize("name", ["deepspeed_zero2", "fsdp"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == {"deepspeed_zero2": "DEEPSPEED", "fsdp": "FSDP"}[name]
    assert config.num_processes == 8 and config.mixed_precision == "bf16"


def _hub_style_parquet(path: Path, rows: list[dict], folder: Path) -> Path:
    """A Parquet file laid out as Hub audio datasets are: an `Audio` column of embedded bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    audio = pa.array([{"bytes": (folder / r["audio"]).read_bytes(), "path": r["audio"]} for r in rows], type=audio_type)
    table = pa.table({"audio": audio, "text": [r["text"] for r in rows]})
    features = {"audio": {"_type": "Audio"}, "text": {"dtype": "string", "_type": "Value"}}
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})}), path)
    return path


@pytest.mark.parametrize("source", ["jsonl", "csv", "audiofolder", "parquet"])
def test_data_sources_give_the_same_batches(source, manifest, processor):
    folder = manifest.parent
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    data_args = train.DataArguments()
    files = None
    if source == "csv":
        files = [str(folder / "train.csv")]
        (folder / "train.csv").write_text("audio,text\n" + "".join(f"{r['audio']},{r['text']}\n" for r in rows))
    elif source == "audiofolder":
        (folder / "metadata.csv").write_text("file_name,text\n" + "".join(f"{r['audio']},{r['text']}\n" for r in rows))
        data_args.data_dir = str(folder)
    elif source == "parquet":
        files = [str(_hub_style_parquet(folder / "train.parquet", rows, folder))]
    else:
        files = [str(manifest)]
    dataset, base_dir = train.load_split(data_args, "train", files)
    dataset, counts = train.filter_split(dataset, data_args, processor.tokenizer, base_dir, None, source)
    assert counts == {"kept": len(rows)}
    batch = train.SteerMoEDataCollator(processor, data_args, base_dir)(list(dataset))
    reference = processor(
        text=[processor.build_prompt(data_args.prompt)] * len(rows),
        audio=[train.read_audio(r["audio"], str(folder))[0] for r in rows],
        sampling_rate=[train.read_audio(r["audio"], str(folder))[1] for r in rows],
        text_target=[r["text"] for r in rows],
    )
    assert batch.keys() == reference.keys()
    for key in reference:
        assert torch.equal(batch[key], reference[key]), key


def test_cached_prompt_prefix_gives_the_same_losses(backbone_dirs, manifest, tmp_path, monkeypatch):
    built = []

    class CountingCache(modeling_steermoe.DynamicCache):
        def __init__(self, *args, **kwargs):
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(modeling_steermoe, "DynamicCache", CountingCache)
    runs = {}
    for cached in ("false", "true"):
        out = tmp_path / cached
        train.main(run_args(
            backbone_dirs, manifest, out, "--do_train", "--max_steps", "3", "--save_strategy", "no",
            "--target_logits_only", "true", "--cache_prompt_prefix", cached,
        ))  # fmt: skip
        runs[cached] = losses(out)
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        minutes = [entry["train_minutes"] for entry in history if "loss" in entry]
        assert len(minutes) == 3 and minutes == sorted(minutes) and minutes[0] >= 0
        assert len(built) == (3 if cached == "true" else 0)
    assert runs["true"].keys() == runs["false"].keys() == {1, 2, 3}
    for step, loss in runs["false"].items():
        assert abs(runs["true"][step] - loss) < 1e-4 * max(1.0, abs(loss)), (step, runs)


def _clip_with_one_frame_per_token(processor, prompt: str, transcript: str, seed: int):
    """A clip whose audio placeholders are exactly as many as the transcript's tokens."""
    tokens = len(processor.tokenizer(transcript, add_special_tokens=False)["input_ids"])
    for hundredths in range(5, 400):
        clip = speechlike(hundredths / 100, seed=seed)
        ids = processor(text=prompt, audio=clip, sampling_rate=16000)["input_ids"]
        if int((ids == processor.audio_token_id).sum()) == tokens:
            return clip
    raise AssertionError(f"no clip length gives {tokens} audio tokens")


def _chat_rows(folder: Path, processor, data_args) -> list[dict]:
    """Training rows (transcript `text`, target `response`) whose clips give one frame per transcript token."""
    collator = train.SteerMoEDataCollator(processor, data_args, str(folder))
    rows = []
    for index, (text, response) in enumerate([("the quick brown fox", "a lazy dog"), ("my fellow americans", "ask not")]):
        prompt = collator.prompt_for({"text": text, "response": response})
        soundfile.write(folder / f"c{index}.wav", _clip_with_one_frame_per_token(processor, prompt, text, index), 16000)
        rows.append({"audio": f"c{index}.wav", "text": text, "response": response})
    return rows


@pytest.mark.parametrize("task", ["asr", "chat"])
@pytest.mark.parametrize("cache_prompt_prefix", [False, True])
def test_kl_is_zero_when_the_frames_are_the_transcripts_token_embeddings(
    task, cache_prompt_prefix, make_model, processor, tmp_path, monkeypatch
):
    model = make_model(
        ce_loss_coef=0.0, kl_loss_coef=1.0, target_logits_only=cache_prompt_prefix,
        cache_prompt_prefix=cache_prompt_prefix,
    )  # fmt: skip
    data_args = train.DataArguments(task=task)
    if task == "chat":
        data_args.text_column, data_args.transcript_column = "response", "text"
    rows = _chat_rows(tmp_path, processor, data_args)
    collator = train.SteerMoEDataCollator(processor, data_args, str(tmp_path), teacher_inputs=True)
    batch = collator(rows)

    def kl_loss():
        output = model(**batch)
        assert float(output.loss) == pytest.approx(float(output.kl_loss))
        return float(output.loss)

    assert kl_loss() > 1e-2  # the untrained aligner's frames
    merge = model._merge_audio_into_embeddings
    transcript_ids = processor.tokenizer([row["text"] for row in rows], add_special_tokens=False)["input_ids"]
    token_embeddings = model.get_input_embeddings()(torch.tensor(sum(transcript_ids, [])))

    def transcript_frames(input_ids, *args, **kwargs):
        embeds, router_logits = merge(input_ids, *args, **kwargs)
        placeholders = model.get_placeholder_mask(input_ids)[..., None]
        return embeds.masked_scatter(placeholders, token_embeddings.to(embeds.dtype)), router_logits

    monkeypatch.setattr(model, "_merge_audio_into_embeddings", transcript_frames)
    assert kl_loss() < 1e-5


def test_chat_task_prompts_hold_only_the_audio_and_the_teacher_the_typed_transcript(processor, tmp_path):
    data_args = train.DataArguments(task="chat", text_column="response", transcript_column="text")
    rows = _chat_rows(tmp_path, processor, data_args)
    collator = train.SteerMoEDataCollator(processor, data_args, str(tmp_path), teacher_inputs=True, transcript_labels=True)
    batch = collator(rows)
    tokenizer = processor.tokenizer
    audio_only = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}]}], add_generation_prompt=True
    )
    assert collator.prompt_for(rows[0]) == audio_only == processor.build_prompt("")  # the any-to-any / CLI chat prompt
    user_start = tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, ids, labels, teacher_ids, teacher_labels, transcript in zip(
        rows, batch["input_ids"].tolist(), batch["labels"].tolist(), batch["teacher_input_ids"].tolist(),
        batch["teacher_labels"].tolist(), batch["transcript_labels"].tolist(),
    ):  # fmt: skip
        user = ids[len(user_start) : ids.index(end)]
        assert ids[: len(user_start)] == user_start and user and set(user) == {processor.audio_token_id}
        response = tokenizer(row["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert [token for token in labels if token != -100] == response
        typed = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["text"]}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        assert teacher_ids[: len(typed) + len(response)] == typed + response
        assert teacher_labels[: len(typed) + len(response)] == [-100] * len(typed) + response
        text_ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        assert transcript[: len(text_ids)] == text_ids and set(transcript[len(text_ids) :]) <= {-100}


def test_prompt_column_mixes_transcription_rows_into_the_chat_task(processor, tmp_path):
    data_args = train.DataArguments(
        task="chat", text_column="response", transcript_column="text", prompt_column="prompt"
    )
    collator = train.SteerMoEDataCollator(processor, data_args, str(tmp_path), teacher_inputs=True)
    instruction = "Repeat the text above exactly."
    repeat = {"text": "the quick brown fox", "response": "the quick brown fox", "prompt": instruction}
    chat = {"text": "the quick brown fox", "response": "a lazy dog", "prompt": ""}
    assert collator.prompt_for(repeat) == processor.build_prompt(instruction)
    assert collator.prompt_for(chat) == processor.build_prompt("")
    soundfile.write(tmp_path / "a.wav", speechlike(1.0, seed=0), 16000)
    batch = collator([{**repeat, "audio": "a.wav"}, {**chat, "audio": "a.wav"}])
    teachers = processor.tokenizer.batch_decode(batch["teacher_input_ids"])
    user_turns = [teacher.split("<|im_start|>user\n")[1].split("<|im_end|>")[0] for teacher in teachers]
    assert user_turns[0] == "the quick brown fox" + "Repeat the text above exactly."  # token ids joined as the prompt's
    assert user_turns[1] == "the quick brown fox"


def test_training_asks_and_saves_the_transcription_examples(backbone_dirs, manifest, tmp_path):
    out = tmp_path / "run"
    examples = ["the two forms by friday the", "rain fell on the square"]
    args = run_args(backbone_dirs, manifest, out, "--do_train", "--max_steps", "1", "--save_strategy", "no")
    train.main([*args, "--prompt", "Say it again.", "--transcription_examples", *examples])
    saved = json.loads((out / "processor_config.json").read_text())
    assert saved["transcription_prompt"] == "Say it again." and saved["transcription_examples"] == examples
    processor = SteerMoEProcessor.from_pretrained(out)
    collator = train.SteerMoEDataCollator(processor, train.DataArguments(prompt="Say it again."))
    assert collator.prompt_for({"text": "x"}) == processor.build_prompt("Say it again.")
    assert "rain fell on the square" in collator.prompt_for({"text": "x"})


def test_soft_tokens_are_set_saved_and_turned_off_from_the_command_line(backbone_dirs, manifest, tmp_path):
    args = run_args(backbone_dirs, manifest, tmp_path / "soft", "--do_train", "--max_steps", "1", "--ctc_loss_coef", "1",
                    "--frame_compression", "ctc_argmax", "--soft_token_temperature", "0.25")  # fmt: skip
    train.main(args)
    saved = json.loads((tmp_path / "soft" / "config.json").read_text())
    assert saved["frame_compression"] == "ctc_argmax" and saved["soft_token_temperature"] == 0.25
    off = run_args(backbone_dirs, manifest, tmp_path / "off", "--do_train", "--max_steps", "1", "--adapter",
                   str(tmp_path / "soft"), "--frame_compression", "none", "--soft_token_temperature", "none")  # fmt: skip
    train.main(off)
    saved = json.loads((tmp_path / "off" / "config.json").read_text())
    assert saved["frame_compression"] is None and saved["soft_token_temperature"] is None
    with pytest.raises(ValueError, match="needs frame_compression"):
        train.main([*off[:-2]])  # the adapter's soft tokens without its compression


def test_training_saves_the_prompt_columns_instruction_as_the_transcription_prompt(backbone_dirs, manifest, tmp_path):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    mixed = manifest.parent / "mixed.jsonl"
    mixed.write_text("".join(
        json.dumps({**row, "prompt": "Say it again." if index % 3 else "", "response": row["text"]}) + "\n"
        for index, row in enumerate(rows)
    ))  # fmt: skip
    out = tmp_path / "run"
    args = run_args(backbone_dirs, mixed, out, "--do_train", "--max_steps", "1", "--save_strategy", "no")
    train.main([*args, "--task", "chat", "--text_column", "response", "--transcript_column", "text",
                "--prompt_column", "prompt"])  # fmt: skip
    saved = json.loads((out / "processor_config.json").read_text())
    assert saved["transcription_prompt"] == "Say it again."
    with pytest.raises(ValueError, match="'instruction' is not a column"):
        train.main([*args, "--task", "chat", "--text_column", "response", "--prompt_column", "instruction"])
    with pytest.raises(ValueError, match="--prompt_column is for --task chat"):
        train.main([*args, "--prompt_column", "prompt"])


def test_kl_only_training_reduces_the_kl(backbone_dirs, manifest, tmp_path):
    out = tmp_path / "run"
    train.main(run_args(
        backbone_dirs, manifest, out, "--do_train", "--max_steps", "30", "--save_strategy", "no",
        "--learning_rate", "5e-2", "--steering_learning_rate", "5e-2", "--ce_loss_coef", "0", "--kl_loss_coef", "1",
        "--target_logits_only", "true", "--cache_prompt_prefix", "true",
    ))  # fmt: skip
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    kl = {entry["step"]: entry["kl_loss"] for entry in history if "kl_loss" in entry}
    assert len(kl) == 30 and all(abs(e["loss"] - e["kl_loss"]) < 1e-3 for e in history if "kl_loss" in e)
    first, last = sum(kl[s] for s in (1, 2, 3, 4)) / 4, sum(kl[s] for s in (27, 28, 29, 30)) / 4  # 2 batches an epoch
    assert last < 0.7 * first, str(sorted(kl.items()))


def test_eval_tells_rows_that_ended_their_turn_from_rows_that_hit_the_limit():
    from types import SimpleNamespace

    from processing_steermoe import TranscriptLengthCriteria

    trainer = SimpleNamespace(args=SimpleNamespace(generation_max_new_tokens=6))
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[2, 7]))
    new_tokens = torch.tensor([
        [5, 5, 2, 2, 2, 2],  # ended its turn at 2, padded with EOS after
        [5, 5, 5, 2, 2, 2],  # cut by its bound of 3 tokens, then padded with the EOS id: not an end of turn
        [5, 5, 5, 5, 5, 5],  # ran to generation_max_new_tokens
        [7, 2, 2, 2, 2, 2],  # ended at once with the second EOS id
    ])  # fmt: skip
    bound = [TranscriptLengthCriteria(10, torch.tensor([8, 3, 8, 8]))]
    ended = train.SteerMoETrainer._ended_by_eos(trainer, model, new_tokens, bound)
    assert ended.tolist() == [True, False, False, True]
    assert train.SteerMoETrainer._ended_by_eos(trainer, model, new_tokens, []).tolist() == [True, True, False, True]


def test_chat_training_warm_starts_from_a_saved_asr_adapter(backbone_dirs, manifest, tmp_path):
    """configs/demo_chat.yaml's path: `--adapter` + `--do_train` continues from the adapter's aligner (not a fresh
    one) on chat rows mixed with transcription rows, keeping its transcription prompt and loss settings."""
    from safetensors.torch import load_file

    asr = tmp_path / "asr"
    train.main(run_args(backbone_dirs, manifest, asr, "--do_train", "--max_steps", "2", "--save_strategy", "no",
                        "--ctc_loss_coef", "1.0", "--prompt", "Say it again."))  # fmt: skip
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    mixed = manifest.parent / "chat.jsonl"
    mixed.write_text("".join(
        json.dumps({**row, "prompt": "Say it again." if index % 2 else "", "response": f"An answer to {row['text']}"})
        + "\n" for index, row in enumerate(rows)
    ))  # fmt: skip
    chat = ["--task", "chat", "--text_column", "response", "--transcript_column", "text", "--prompt_column", "prompt",
            "--do_train", "--max_steps", "2", "--save_strategy", "no", "--adapter", str(asr)]  # fmt: skip
    frozen, moved = tmp_path / "frozen", tmp_path / "moved"
    train.main([*run_args(backbone_dirs, mixed, frozen, *chat), "--learning_rate", "0", "--steering_learning_rate", "0"])
    train.main(run_args(backbone_dirs, mixed, moved, *chat))
    start, same, trained = (load_file(folder / "model.safetensors") for folder in (asr, frozen, moved))
    assert start.keys() == same.keys() == trained.keys()
    assert all(torch.equal(start[key], same[key]) for key in start)  # it started from the adapter's weights
    assert any(not torch.equal(start[key], trained[key]) for key in start)
    saved = json.loads((moved / "config.json").read_text())
    assert saved["ctc_loss_coef"] == 1.0
    assert json.loads((moved / "processor_config.json").read_text())["transcription_prompt"] == "Say it again."
