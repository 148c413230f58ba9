# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""Train and/or evaluate a SteerMoE aligner with the `Trainer` (Accelerate underneath).

    python train.py configs/demo.yaml [--any_argument value ...]        # a YAML recipe, overridden from the CLI
    accelerate launch --num_processes 8 train.py configs/librispeech.yaml

Arguments are transformers' own `Seq2SeqTrainingArguments` plus the `ModelArguments` and `DataArguments` below.
`--do_train` / `--do_eval` choose train, evaluate-only (with `--adapter`) or both.
"""

import io
import json
import logging
import math
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import evaluate
import numpy as np
import torch
import torch.distributed as dist
import yaml
from datasets import Audio, Dataset, IterableDataset, load_dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    HfArgumentParser,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainerCallback,
    set_seed,
)
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices


try:
    from .configuration_steermoe import LOSS_FIELDS, SteerMoEConfig
    from .modeling_steermoe import LOSS_PARTS, SteerMoEForConditionalGeneration
    from .processing_steermoe import SteerMoEProcessor, load_audio
except ImportError:
    from configuration_steermoe import LOSS_FIELDS, SteerMoEConfig
    from modeling_steermoe import LOSS_PARTS, SteerMoEForConditionalGeneration
    from processing_steermoe import SteerMoEProcessor, load_audio

try:
    import soundfile
except ImportError:
    soundfile = None


logger = logging.getLogger("steermoe.train")

METRIC_PATH = str(Path(__file__).resolve().parent / "metrics" / "asr_error_rate")
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
STEERING_PARAMETERS = ("aligner.steering_vectors", "aligner.layer_scales")
PROJECTOR_PARAMETERS = ("aligner.projector",)
RECORDED_TRAINING_ARGS = (
    "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
    "steering_learning_rate", "learning_rate", "projector_learning_rate", "lr_scheduler_type", "warmup_steps",
    "llm_dtype", "bf16", "seed",
)  # fmt: skip


@dataclass
class ModelArguments:
    audio_model_id: str = field(default="openai/whisper-tiny.en", metadata={"help": "Audio encoder id or folder."})
    text_model_id: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "LLM id or folder."})
    audio_model_revision: str | None = field(default=None)
    text_model_revision: str | None = field(default=None)
    adapter: str | None = field(
        default=None, metadata={"help": "A saved SteerMoE adapter (folder or Hub id) to evaluate or continue from."}
    )
    aligner_type: str = field(
        default="layerwise", metadata={"help": "layerwise, per_layer_router, post_encoder or linear."}
    )
    steered_layers: list[int] | None = field(default=None, metadata={"help": "Encoder layers to steer (default all)."})
    num_experts: int = field(default=8)
    encoder_lora_rank: int = field(default=0, metadata={"help": "LoRA rank on the encoder (baseline); 0 is off."})
    lora_rank: int = field(default=0, metadata={"help": "LoRA rank on the LLM; 0 (off) keeps the LLM exactly frozen."})
    lora_alpha: float = field(default=16.0)
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "LLM modules for LoRA."})
    steering_scale: float = field(default=0.1)
    pooling_type: str = field(default="max", metadata={"help": "max, avg or none."})
    pooling_kernel_size: int = field(default=4)
    projector_type: str = field(default="linear", metadata={"help": "linear or mlp."})
    frame_compression: str | None = field(
        default=None,
        metadata={
            "help": "CTC compression of the frames before the LLM: ctc_argmax (drop best-label-blank frames) or "
            "ctc_threshold (drop frames whose blank probability exceeds --ctc_blank_threshold), runs of one label "
            "averaged; none turns it off. Needs the CTC loss. With --adapter, None keeps the adapter's."
        },
    )
    ctc_blank_threshold: float | None = field(
        default=None, metadata={"help": "ctc_threshold's blank probability (config default 0.95)."}
    )
    soft_token_temperature: str | None = field(
        default=None,
        metadata={
            "help": "With --frame_compression, the LLM reads each kept frame as the mean of its input embeddings "
            "under the CTC head's distribution (blank excluded) at this temperature; none reads the frames "
            "themselves. With --adapter, None keeps the adapter's."
        },
    )
    backbone_dtype: str = field(
        default="auto", metadata={"help": "dtype of the frozen backbones: auto, float32, bfloat16 or float16."}
    )
    # The training loss: SteerMoEConfig fields, saved with the adapter. None keeps the config's default (the paper's
    # plain LLM cross-entropy) or, with --adapter, the value the adapter was trained with.
    ce_loss_coef: float | None = field(
        default=None, metadata={"help": "Weight of the LLM's cross-entropy on the target tokens (llm_loss)."}
    )
    ctc_loss_coef: float | None = field(
        default=None,
        metadata={
            "help": "Weight of an auxiliary CTC loss over the LLM's vocabulary on the projected audio frames (logits = "
            "frames @ input-embedding matrix^T, targets = the transcript's token ids): a direct signal for every "
            "frame. 0 (default) trains with the LLM's loss alone, as the paper does."
        },
    )
    ctc_logit_scale: float | None = field(
        default=None,
        metadata={
            "help": "0: CTC logits are frames @ embeddings^T (this pushes frame norms far above the token embeddings'); "
            "> 0: cosine logits times this scale (direction only), with --frame_norm_loss_coef keeping the norms near "
            "the embeddings' mean norm."
        },
    )
    ctc_blank_token_id: int | None = field(
        default=None, metadata={"help": "The CTC blank (default: the LLM's single-space token, else its pad token)."}
    )
    frame_norm_loss_coef: float | None = field(
        default=None,
        metadata={"help": "Weight of mean((|frame| / mean |token embedding| - 1)^2) on the projected audio frames."},
    )
    router_balance_loss_coef: float | None = field(default=None, metadata={"help": "Router load-balancing loss weight."})
    llm_loss_start_step: int | None = field(
        default=None,
        metadata={
            "help": "CTC-only warm-up: the first this many training forward passes (optimizer steps times gradient "
            "accumulation) train the CTC (and auxiliary) losses alone without running the LLM (cheap steps); needs "
            "--ctc_loss_coef > 0."
        },
    )
    target_logits_only: bool | None = field(
        default=None,
        metadata={"help": "Compute the LLM's output logits only at target positions (same loss, less compute)."},
    )
    cache_prompt_prefix: bool | None = field(
        default=None,
        metadata={
            "help": "Run the frozen LLM once on the prompt text before the first audio token (the same for every "
            "example, e.g. the chat template's system turn) and reuse its key/value cache in every training step: "
            "same loss, fewer positions in each forward and backward."
        },
    )
    kl_loss_coef: float | None = field(
        default=None,
        metadata={
            "help": "Weight of KL(teacher || student) over the next-token distributions at the target positions "
            "(kl_loss), the teacher being the same frozen LLM given the transcript's own tokens where the audio goes "
            "(same prompt and target; Ultravox's distillation). KL alone: --ce_loss_coef 0 --kl_loss_coef 1."
        },
    )
    kl_temperature: float | None = field(
        default=None, metadata={"help": "Softmax temperature of both distributions in the KL loss (not rescaled)."}
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A Hub dataset, or a builder (csv, json, parquet, audiofolder) for local files."},
    )
    dataset_config: str | None = field(default=None)
    train_split: str = field(default="train")
    eval_split: str = field(default="test")
    train_files: list[str] | None = field(default=None, metadata={"help": "Local manifests (CSV/JSONL/Parquet)."})
    eval_files: list[str] | None = field(default=None)
    extra_eval_files: list[str] | None = field(
        default=None,
        metadata={"help": "More manifests scored after training, each on its own (reported under its file stem)."},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "An audiofolder: [split/]metadata.csv|jsonl|parquet with a file_name column."}
    )
    streaming: bool = field(default=False)
    audio_column: str = field(default="audio", metadata={"help": "Audio (a datasets Audio column or file paths)."})
    text_column: str = field(default="text", metadata={"help": "Target text (transcript, or answer for qa)."})
    question_column: str | None = field(default=None, metadata={"help": "Question column for task=qa."})
    transcript_column: str | None = field(
        default=None,
        metadata={
            "help": "The audio's transcript when the target is something else (task chat: the typed question whose "
            "answer is the target). The KL teacher reads it where the audio goes and the CTC loss aligns the frames "
            "to it. Default: --text_column."
        },
    )
    prompt_column: str | None = field(
        default=None,
        metadata={
            "help": "Task chat: a column of text that follows the audio in the user turn (an instruction such as "
            "'Repeat the text above exactly.'); rows where it is empty keep the audio as the whole turn. Mixes "
            "transcription and chat rows in one manifest (scripts/make_chat_targets.py --repeat_fraction); the most "
            "frequent instruction is saved as the adapter's transcription prompt."
        },
    )
    task: str = field(
        default="asr",
        metadata={
            "help": "asr (transcribe with --prompt), qa (answer the question column) or chat (the audio is the whole "
            "user turn of the chat template, as the CLI's --task chat and pipeline('any-to-any') ask)."
        },
    )
    prompt: str = field(default="Transcribe the audio.")
    transcription_examples: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Sentences shown before each transcription request as earlier turns (user: sentence + "
            "--prompt; assistant: the sentence): in-context examples of verbatim copying. Saved in the processor."
        },
    )
    language: str = field(default="en", metadata={"help": "Normalisation for WER/CER: en, zh or other."})
    use_chat_template: bool = field(default=True)
    min_audio_seconds: float = field(default=0.1)
    max_audio_seconds: float = field(default=120.0)
    max_target_tokens: int = field(default=256)
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)


@dataclass
class SteerMoETrainingArguments(Seq2SeqTrainingArguments):
    steering_learning_rate: float = field(
        default=1e-2, metadata={"help": "Learning rate of the steering vectors and layer scales."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the router and projector."})
    projector_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the projector (default: --learning_rate)."}
    )
    llm_dtype: str | None = field(
        default=None, metadata={"help": "Cast the frozen LLM to this dtype after loading (e.g. bfloat16 on AMX CPUs)."}
    )
    oracle_eval: bool = field(
        default=False,
        metadata={
            "help": "Also score the ORACLE: the transcript's own tokens where the audio goes, same prompt, greedy "
            "decoding with the same stop rule (an upper bound for what the frozen LLM can do with perfect frames)."
        },
    )
    generation_max_new_tokens: int = field(default=128)
    generation_stop_strings: list[str] | None = field(
        default=None,
        metadata={
            "help": "Also stop generating at these strings (for LLMs that never emit their EOS token); saved in the "
            "adapter's generation_config.json, so the pipeline and CLI stop there too."
        },
    )
    remove_unused_columns: bool = field(default=False)
    ddp_find_unused_parameters: bool = field(default=False)
    train_sampling_strategy: str = field(default="group_by_length")
    length_column_name: str = field(default="duration")


def parse_args(argv: list[str] | None = None):
    """`[recipe.yaml] [--key value ...]`: the recipe's keys become arguments, the command line overrides them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe = yaml.safe_load(Path(argv.pop(0)).read_text()) or {}
        argv = _recipe_to_argv(recipe) + argv
    parser = HfArgumentParser((ModelArguments, DataArguments, SteerMoETrainingArguments))
    return parser.parse_args_into_dataclasses(args=argv)


def _recipe_to_argv(recipe: dict) -> list[str]:
    argv = []
    for key, value in recipe.items():
        if value is None:
            continue
        if isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        elif isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def _audio_source(value, base_dir: str | None):
    """The bytes or file path behind a dataset audio value: `{"bytes", "path"}` (an undecoded `Audio` column) or a
    path, relative ones taken from `base_dir`."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if not value:
        raise ValueError("no audio")
    path = Path(value)
    return str(Path(base_dir) / path if base_dir and not path.is_absolute() else path)


def read_audio(value, base_dir: str | None = None) -> tuple[np.ndarray, int]:
    """Decode a dataset audio value (see `_audio_source`)."""
    return load_audio(_audio_source(value, base_dir))


def audio_seconds(value, base_dir: str | None = None) -> float:
    """Duration from the file header (cheap; raises if the file is missing or undecodable)."""
    source = _audio_source(value, base_dir)
    name = source if isinstance(source, str) else "<bytes audio input>"
    if isinstance(source, str) and not Path(source).is_file():
        raise FileNotFoundError(f"Audio file not found: {source}")
    try:
        info = soundfile.info(io.BytesIO(source) if isinstance(source, bytes) else source)
    except RuntimeError as error:
        raise ValueError(f"{name}: not a decodable audio file (WAV, FLAC, OGG or MP3): {error}") from error
    if info.frames <= 0:
        raise ValueError(f"{name}: the file holds no audio samples.")
    return info.frames / info.samplerate


def load_split(data_args: DataArguments, split: str, files: list[str] | None):
    """One split as a `datasets` dataset with an undecoded audio column, plus the base folder of relative paths."""
    base_dir = None
    if files:
        builder = data_args.dataset_name or FILE_BUILDERS.get(Path(files[0]).suffix.lower())
        if builder is None:
            raise ValueError(f"Cannot tell the format of {files[0]}; set --dataset_name csv, json or parquet.")
        kwargs = {"delimiter": "\t"} if Path(files[0]).suffix.lower() == ".tsv" else {}
        dataset = load_dataset(builder, data_files=files, split="train", streaming=data_args.streaming, **kwargs)
        base_dir = str(Path(files[0]).resolve().parent)
    elif data_args.data_dir:
        dataset, base_dir = load_audiofolder(data_args, split)
    elif data_args.dataset_name:
        dataset = load_dataset(
            data_args.dataset_name, data_args.dataset_config, split=split, streaming=data_args.streaming
        )
    else:
        raise ValueError("Give --dataset_name, --train_files/--eval_files or --data_dir.")
    features = dataset.features or {}
    if isinstance(features.get(data_args.audio_column), Audio):
        dataset = dataset.cast_column(data_args.audio_column, Audio(decode=False))
    return dataset, base_dir


def load_audiofolder(data_args: DataArguments, split: str):
    """An `audiofolder` layout (`[split/]metadata.{csv,jsonl,parquet}` with a `file_name` column next to the audio),
    read as a manifest so that no audio is decoded or re-encoded at load time (datasets' own audiofolder builder
    encodes every file and needs torchcodec)."""
    folder = Path(data_args.data_dir)
    folder = folder / split if (folder / split).is_dir() else folder
    names = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
    metadata = next((folder / name for name in names if (folder / name).exists()), None)
    if metadata is None:
        raise ValueError(f"{folder} is not an audiofolder: it has none of {names}.")
    dataset = load_dataset(
        FILE_BUILDERS[metadata.suffix], data_files=str(metadata), split="train", streaming=data_args.streaming
    )
    if "file_name" in dataset.column_names and data_args.audio_column not in dataset.column_names:
        dataset = dataset.rename_column("file_name", data_args.audio_column)
    return dataset, str(folder)


def filter_split(dataset, data_args: DataArguments, tokenizer, base_dir, max_samples: int | None, name: str):
    """Drop too short/long audio, too long targets and unreadable files; returns the dataset and the counts."""
    if max_samples is not None:
        dataset = dataset.take(max_samples) if isinstance(dataset, IterableDataset) else dataset.select(
            range(min(max_samples, len(dataset)))
        )

    def probe(example):
        try:
            duration = audio_seconds(example[data_args.audio_column], base_dir)
        except Exception:  # noqa: BLE001 - any decoding failure means the example is skipped and counted
            return {"duration": 0.0, "skip_reason": "undecodable"}
        target = example[data_args.text_column] or ""
        if duration < data_args.min_audio_seconds:
            reason = "too_short_audio"
        elif duration > data_args.max_audio_seconds:
            reason = "too_long_audio"
        elif not target.strip():
            reason = "empty_target"
        elif len(tokenizer(target, add_special_tokens=False)["input_ids"]) > data_args.max_target_tokens:
            reason = "too_long_target"
        else:
            reason = ""
        return {"duration": duration, "skip_reason": reason}

    if isinstance(dataset, IterableDataset):
        return dataset.map(probe).filter(lambda example: not example["skip_reason"]), {}
    dataset = dataset.map(probe, desc=f"Probing {name} audio")
    counts = Counter(dataset["skip_reason"])
    kept = counts.pop("", 0)
    for reason, count in sorted(counts.items()):
        logger.warning("%s: skipped %d examples: %s", name, count, reason)
    logger.info("%s: kept %d of %d examples", name, kept, kept + sum(counts.values()))
    dataset = dataset.filter(lambda reason: not reason, input_columns="skip_reason", desc=f"Filtering {name}")
    return dataset, {"kept": kept, **counts}


@dataclass
class SteerMoEDataCollator:
    """Decodes audio, builds prompts and runs the processor per batch (dynamic padding, features on the fly).

    With `with_targets`, prompts are followed by the target and `labels` mark it; otherwise the batch is
    prompt-only and carries the `references`. With `teacher_inputs` the batch also holds the KL teacher's inputs
    `teacher_input_ids`, `teacher_attention_mask` and `teacher_labels` `(batch, teacher_seq)`: the same prompt and
    target with the transcript's tokens where the audio goes (`oracle_inputs`). With `transcript_labels` it holds the
    transcripts' token ids `(batch, longest transcript)`, -100 padded, as `transcript_labels` (the CTC targets when
    the target is not the transcript). Examples that fail to decode are dropped and counted in `skipped`.
    """

    processor: SteerMoEProcessor
    data_args: DataArguments
    base_dir: str | None = None
    with_targets: bool = True
    teacher_inputs: bool = False
    transcript_labels: bool = False
    skipped: Counter = field(default_factory=Counter)

    def prompt_for(self, example) -> str:
        args = self.data_args
        if args.task == "chat":
            content = [{"type": "audio"}]
            if args.prompt_column and example.get(args.prompt_column):
                content.append({"type": "text", "text": example[args.prompt_column]})
            conversation = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        instruction = example[args.question_column] if args.task == "qa" else args.prompt
        return self.processor.build_prompt(instruction, use_chat_template=args.use_chat_template)

    def transcript_for(self, example) -> str:
        return example[self.data_args.transcript_column or self.data_args.text_column]

    def __call__(self, examples):
        clips, rates, prompts, targets, transcripts = [], [], [], [], []
        for example in examples:
            try:
                samples, rate = read_audio(example[self.data_args.audio_column], self.base_dir)
            except Exception:  # noqa: BLE001 - count and skip, never crash a long run
                self.skipped["undecodable"] += 1
                continue
            clips.append(samples)
            rates.append(rate)
            prompts.append(self.prompt_for(example))
            targets.append(example[self.data_args.text_column])
            if self.teacher_inputs or self.transcript_labels:
                transcripts.append(self.transcript_for(example))
        if not clips:
            raise RuntimeError("Every example of a batch failed to decode; check the dataset's audio column.")
        batch = self.processor(
            text=prompts, audio=clips, sampling_rate=rates, text_target=targets if self.with_targets else None
        )
        if not self.with_targets:
            batch["references"] = targets
        if self.teacher_inputs:
            teacher = oracle_inputs(self.processor, prompts, transcripts, targets)
            batch.update({f"teacher_{key}": value for key, value in teacher.items()})
        if self.transcript_labels:
            ids = self.processor.tokenizer(transcripts, add_special_tokens=False)["input_ids"]
            longest = max(len(row) for row in ids)
            batch["transcript_labels"] = torch.tensor([row + [-100] * (longest - len(row)) for row in ids])
        return batch


class GracefulStopCallback(TrainerCallback):
    """On SIGTERM or a first Ctrl-C, finish the current step, save a checkpoint and stop (on every rank)."""

    def __init__(self):
        self.requested = False
        self._previous_handlers = {}

    def on_train_begin(self, args, state, control, **kwargs):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[signum] = signal.signal(signum, self._request)

    def on_train_end(self, args, state, control, **kwargs):
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)

    def _request(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        logger.warning("Signal %d: saving a checkpoint after this step, then stopping.", signum)
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        requested = torch.tensor(float(self.requested))
        if dist.is_available() and dist.is_initialized():
            requested = requested.to(args.device)
            dist.all_reduce(requested, op=dist.ReduceOp.MAX)
        if requested.item() > 0:
            self.requested = True
            control.should_save = True
            control.should_training_stop = True
        return control


class SeedableLengthGroupedSampler(LengthGroupedSampler):
    """Batches of similar length whose order depends only on `(seed, epoch)`, so a resumed run sees exactly the
    batches an uninterrupted one would (the stock sampler draws from the global RNG)."""

    def __init__(self, batch_size: int, lengths: list[float], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class RecipeStepCallback(TrainerCallback):
    """At the start of training (and on resume), sets the model's count of training forwards, which times the
    CTC-only warm-up (`llm_loss_start_step`), from the steps already done."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            model.recipe_step = state.global_step * args.gradient_accumulation_steps


class SteerMoETrainer(Trainer):
    """`Trainer` with what the stock one cannot do: the aligner's learning rates as parameter groups, the loss
    parts and steering diagnostics in the logs, and evaluation by generation scored with WER/CER. The loss is the
    model's own (`SteerMoEConfig`'s recipe)."""

    def __init__(self, *args, eval_collator=None, language="en", **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_collator = eval_collator
        self.language = language
        self.metric = evaluate.load(METRIC_PATH)
        self._usage = None
        self._usage_total = None
        self._loss_parts = {}
        self.add_callback(RecipeStepCallback())

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        column = self.args.length_column_name
        if self.args.train_sampling_strategy == "group_by_length" and column in getattr(dataset, "column_names", ()):
            batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return SeedableLengthGroupedSampler(batch_size, dataset[column], seed)
        return super()._get_train_sampler(train_dataset)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            steering, projector, rest = [], [], []
            separate_projector = self.args.projector_learning_rate is not None
            for name, param in model.named_parameters():
                if param.requires_grad:
                    if name.startswith(STEERING_PARAMETERS):
                        steering.append(param)
                    elif separate_projector and name.startswith(PROJECTOR_PARAMETERS):
                        projector.append(param)
                    else:
                        rest.append(param)
            groups = [
                {"params": steering, "lr": self.args.steering_learning_rate, "weight_decay": 0.0},
                {"params": rest, "lr": self.args.learning_rate, "weight_decay": self.args.weight_decay},
                {"params": projector, "lr": self.args.projector_learning_rate, "weight_decay": self.args.weight_decay},
            ]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls([g for g in groups if g["params"]], **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's own loss (its config's recipe, through the DDP/FSDP wrapper's forward); its parts and the
        router usage are kept for the logs."""
        outputs = model(**inputs, output_router_logits=True)
        for name in LOSS_PARTS:
            value = getattr(outputs, name, None)
            if value is not None:
                self._loss_parts.setdefault(name, []).append(value.detach())
        if outputs.router_logits:
            usage = torch.stack([logits.detach().float().softmax(-1).mean(0) for logits in outputs.router_logits])
            self._usage = usage if self._usage is None else self._usage + usage
            self._usage_total = usage if self._usage_total is None else self._usage_total + usage
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self.steering_diagnostics())
            if start_time is not None:  # wall-clock of this session's training so far, for WER-vs-minutes curves
                logs["train_minutes"] = round((time.time() - start_time) / 60, 3)
        super().log(logs, start_time)

    def steering_diagnostics(self) -> dict:
        """Per-layer scale, expert-usage entropy (nats; log E is uniform) and most-used expert since the last log."""
        aligner = self.accelerator.unwrap_model(self.model).aligner
        if not aligner.steered_layers:
            logs = {name: round(float(torch.stack(v).mean()), 4) for name, v in self._loss_parts.items() if v}
            self._loss_parts = {}
            return logs
        scales = aligner.layer_scales.detach().cpu().tolist()
        logs = {f"steer/scale_l{layer}": scale for layer, scale in zip(aligner.steered_layers, scales)}
        if self._usage is not None:
            usage = self._usage / self._usage.sum(-1, keepdim=True)
            entropy = -(usage * usage.clamp_min(1e-12).log()).sum(-1)
            for layer, value, top in zip(aligner.steered_layers, entropy.tolist(), usage.argmax(-1).tolist()):
                logs[f"steer/usage_entropy_l{layer}"] = round(value, 4)
                logs[f"steer/top_expert_l{layer}"] = top
            self._usage = None
        for name, values in self._loss_parts.items():
            if values:
                logs[name] = round(float(torch.stack(values).mean()), 4)
        self._loss_parts = {}
        return logs

    def save_expert_usage_plot(self, path: Path) -> Path | None:
        """A heatmap of each layer's share of routing mass per expert over the whole run."""
        if self._usage_total is None or not self.is_world_process_zero():
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        usage = (self._usage_total / self._usage_total.sum(-1, keepdim=True)).cpu().numpy()
        figure, axis = plt.subplots(figsize=(1 + 0.5 * usage.shape[1], 1 + 0.35 * usage.shape[0]))
        image = axis.imshow(usage, aspect="auto", cmap="viridis")
        axis.set_xlabel("expert")
        axis.set_ylabel("encoder layer")
        axis.set_title("Expert usage per layer (share of routing mass)")
        figure.colorbar(image, ax=axis)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path

    def push_to_hub(self, commit_message: str = "Upload SteerMoE adapter", token: str | None = None, **kwargs):
        """Publish the adapter, processor and model card (with `results.json`) to `--hub_model_id`."""
        results_file = Path(self.args.output_dir) / "results.json"
        results = json.loads(results_file.read_text()) if results_file.exists() else None
        return self.accelerator.unwrap_model(self.model).push_to_hub(
            self.args.hub_model_id or Path(self.args.output_dir).name,
            processor=self.processing_class,
            results=results,
            private=self.args.hub_private_repo,
            token=token or self.args.hub_token,
            commit_message=commit_message,
        )

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Generate for every eval example (sharded over processes), then score WER/CER on all of them."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        loader = DataLoader(
            dataset,
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=self.eval_collator,
            num_workers=self.args.dataloader_num_workers,
        )
        loader = self.accelerator.prepare(loader)
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        predictions, references, readouts = [], [], []
        read_ctc = model.config.ctc_loss_coef > 0 and self.eval_collator.data_args.task == "asr"
        stopped_by_eos = frames_read = placeholders = 0
        start = time.time()
        for batch in tqdm(loader, desc="Evaluating", disable=not self.is_local_process_zero()):
            refs = batch.pop("references")
            if read_ctc:  # the CTC head's own greedy transcript of the same frames, beside the LLM's
                tokens, read = model.ctc_readout(
                    batch["input_ids"], batch["input_features"], batch.get("feature_attention_mask"),
                    return_frames_read=True,
                )  # fmt: skip
                readouts += [text.strip() for text in self.processing_class.batch_decode(tokens, skip_special_tokens=True)]
                frames_read += int(read.sum())
                placeholders += int(model.get_placeholder_mask(batch["input_ids"]).sum())
            bound = []
            if self.eval_collator.data_args.task == "asr":  # the pipeline's transcript length bound
                bound = [self.processing_class.transcript_length_criteria(batch["input_ids"])]
            output = model.generate(
                **batch,
                max_new_tokens=self.args.generation_max_new_tokens,
                do_sample=False,
                tokenizer=self.processing_class.tokenizer,
                stopping_criteria=bound,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            texts = self.processing_class.batch_decode(new_tokens, skip_special_tokens=True)
            predictions += [text.strip() for text in texts]
            stopped_by_eos += int(self._ended_by_eos(model, new_tokens, bound).sum())
            references += refs
        predictions = self.accelerator.gather_for_metrics(predictions, use_gather_object=True)
        references = self.accelerator.gather_for_metrics(references, use_gather_object=True)
        model.train(was_training)
        scores = self.metric.compute(predictions=predictions, references=references, language=self.language)
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in scores.items()}
        stopped_by_eos = sum(self.accelerator.gather_for_metrics([stopped_by_eos], use_gather_object=True))
        metrics[f"{metric_key_prefix}_stopped_by_eos"] = round(stopped_by_eos / max(len(predictions), 1), 4)
        if read_ctc:
            readouts = self.accelerator.gather_for_metrics(readouts, use_gather_object=True)
            ctc = self.metric.compute(predictions=readouts, references=references, language=self.language)
            metrics.update({f"{metric_key_prefix}_ctc_{key}": value for key, value in ctc.items()})
            # audio frames the LLM reads per second of audio (the placeholders stand at a fixed rate)
            counts = self.accelerator.gather_for_metrics([(frames_read, placeholders)], use_gather_object=True)
            frames_read, placeholders = map(sum, zip(*counts))
            seconds = placeholders * self.processing_class.audio_token_seconds
            metrics[f"{metric_key_prefix}_llm_frames_per_second"] = round(frames_read / max(seconds, 1e-9), 3)
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 2)
        self.last_predictions = list(zip(references, predictions, readouts or [None] * len(predictions)))
        self.log(metrics)
        return metrics


    def _ended_by_eos(self, model, new_tokens: torch.Tensor, bound: list) -> torch.Tensor:
        """`(batch,)` whether each row ended its turn (an EOS token before its length limit) rather than hitting
        the limit; rows that finish early are padded, possibly with the EOS token, so only the first one counts."""
        limit = torch.full((len(new_tokens),), self.args.generation_max_new_tokens)
        if bound:
            limit = torch.minimum(limit, bound[0].max_new_tokens)
        eos = torch.tensor(model.generation_config.eos_token_id or [], device=new_tokens.device).reshape(-1)
        is_eos = torch.isin(new_tokens, eos)
        first = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), new_tokens.shape[1]).cpu()
        return first < limit

    def evaluate_oracle(self, dataset, collator, metric_key_prefix="oracle"):
        """WER/CER against the targets of the frozen LLM given the transcript's own tokens where the audio goes
        (`oracle_inputs`), with the same prompt, greedy decoding and stop rule as `evaluate`."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        predictions, references = [], []
        start = time.time()
        batch_size = self.args.per_device_eval_batch_size
        for first in tqdm(range(0, len(dataset), batch_size), desc="Oracle", disable=not self.is_local_process_zero()):
            examples = [dataset[i] for i in range(first, min(first + batch_size, len(dataset)))]
            targets = [example[collator.data_args.text_column] for example in examples]
            transcripts = [collator.transcript_for(example) for example in examples]
            inputs = oracle_inputs(self.processing_class, [collator.prompt_for(e) for e in examples], transcripts)
            inputs = {key: value.to(model.device) for key, value in inputs.items()}
            output = model.generate(
                **inputs,
                max_new_tokens=self.args.generation_max_new_tokens,
                do_sample=False,
                tokenizer=self.processing_class.tokenizer,
            )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            predictions += [t.strip() for t in self.processing_class.batch_decode(new_tokens, skip_special_tokens=True)]
            references += targets
        model.train(was_training)
        scores = self.metric.compute(predictions=predictions, references=references, language=self.language)
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in scores.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 2)
        self.last_oracle_predictions = list(zip(references, predictions))
        self.log(metrics)
        return metrics


def oracle_inputs(processor, prompts: list[str], transcripts: list[str], targets: list[str] | None = None) -> dict:
    """Text-only inputs for the ORACLE: each prompt with its audio token replaced by the transcript's own tokens
    (the transcript's token embeddings where the audio frames would go).

    Without `targets`: generation inputs `input_ids`, `attention_mask` `(batch, seq)`, left-padded. With `targets`:
    the KL teacher's training inputs, each target and the EOS token appended as the processor's `text_target` does,
    right-padded, plus `labels` (-100 off the targets)."""
    tokenizer = processor.tokenizer
    rows, label_rows = [], []
    for index, (prompt, transcript) in enumerate(zip(prompts, transcripts)):
        before, after = prompt.split(processor.audio_token)
        ids = tokenizer(before, add_special_tokens=False)["input_ids"]
        ids += tokenizer(transcript, add_special_tokens=False)["input_ids"]
        ids += tokenizer(after, add_special_tokens=False)["input_ids"]
        if targets is not None:
            target = tokenizer(targets[index], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            label_rows.append([-100] * len(ids) + target)
            ids += target
        rows.append(ids)
    length = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if targets is None:
        input_ids = torch.tensor([[pad] * (length - len(row)) + row for row in rows])
        attention_mask = torch.tensor([[0] * (length - len(row)) + [1] * len(row) for row in rows])
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    return {
        "input_ids": torch.tensor([row + [pad] * (length - len(row)) for row in rows]),
        "attention_mask": torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in rows]),
        "labels": torch.tensor([row + [-100] * (length - len(row)) for row in label_rows]),
    }


def build_model_and_processor(model_args: ModelArguments):
    dtype = model_args.backbone_dtype if model_args.backbone_dtype == "auto" else getattr(torch, model_args.backbone_dtype)
    # The recipe's config fields given on the command line (an --adapter run may change them, not the architecture).
    recipe_fields = {
        key: getattr(model_args, key)
        for key in (*LOSS_FIELDS, "frame_compression", "ctc_blank_threshold", "soft_token_temperature")
        if getattr(model_args, key) is not None
    }
    if recipe_fields.get("frame_compression") in ("none", ""):
        recipe_fields["frame_compression"] = None
    if "soft_token_temperature" in recipe_fields:
        temperature = recipe_fields["soft_token_temperature"]
        recipe_fields["soft_token_temperature"] = None if temperature in ("none", "") else float(temperature)
    if model_args.adapter:
        model = SteerMoEForConditionalGeneration.from_pretrained(model_args.adapter, dtype=dtype)
        model.config.update(recipe_fields)
        model.config.validate_loss()
        return model, SteerMoEProcessor.from_pretrained(model_args.adapter, trust_remote_code=True)
    pooling_type = None if model_args.pooling_type in ("none", "") else model_args.pooling_type
    config = SteerMoEConfig(
        audio_model_id=model_args.audio_model_id,
        audio_model_revision=model_args.audio_model_revision,
        text_model_id=model_args.text_model_id,
        text_model_revision=model_args.text_model_revision,
        aligner_type=model_args.aligner_type,
        steered_layers=model_args.steered_layers,
        num_experts=model_args.num_experts,
        encoder_lora_rank=model_args.encoder_lora_rank,
        lora_rank=model_args.lora_rank,
        lora_alpha=model_args.lora_alpha,
        lora_target_modules=model_args.lora_target_modules,
        steering_scale=model_args.steering_scale,
        pooling_type=pooling_type,
        pooling_kernel_size=model_args.pooling_kernel_size,
        projector_type=model_args.projector_type,
        **recipe_fields,
    )
    return SteerMoEForConditionalGeneration(config, dtype=dtype), SteerMoEProcessor.from_config(config)


def main(argv: list[str] | None = None, callbacks: list | None = None) -> dict:
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if training_args.should_log else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError("Nothing to do: pass --do_train and/or --do_eval.")
    set_seed(training_args.seed)
    model, processor = build_model_and_processor(model_args)
    config = model.config
    if data_args.task == "chat" and data_args.transcript_column is None and (
        config.kl_loss_coef > 0 or config.ctc_loss_coef > 0
    ):
        raise ValueError("--task chat with --kl_loss_coef or --ctc_loss_coef needs --transcript_column (the question).")
    if data_args.prompt_column and data_args.task != "chat":
        raise ValueError(
            f"--prompt_column is for --task chat (the instruction after the audio); got --task {data_args.task}."
        )
    if data_args.task == "asr":
        processor.transcription_prompt = data_args.prompt  # the pipeline, CLI and server ask as training did
        processor.transcription_examples = list(data_args.transcription_examples)
    if training_args.llm_dtype:
        model.language_model.to(getattr(torch, training_args.llm_dtype))
    if training_args.generation_stop_strings:
        model.generation_config.stop_strings = list(training_args.generation_stop_strings)
    report = {"parameters": model.get_parameter_report(), "data": {}}

    train_dataset = eval_dataset = None
    train_base = eval_base = None
    with training_args.main_process_first(desc="dataset preparation"):
        if training_args.do_train:
            train_dataset, train_base = load_split(data_args, data_args.train_split, data_args.train_files)
            train_dataset, report["data"]["train"] = filter_split(
                train_dataset, data_args, processor.tokenizer, train_base, data_args.max_train_samples, "train"
            )
        if training_args.do_eval:
            eval_dataset, eval_base = load_split(data_args, data_args.eval_split, data_args.eval_files)
            eval_dataset, report["data"]["eval"] = filter_split(
                eval_dataset, data_args, processor.tokenizer, eval_base, data_args.max_eval_samples, "eval"
            )
    if data_args.task == "chat" and data_args.prompt_column and isinstance(train_dataset, Dataset):
        if data_args.prompt_column not in train_dataset.column_names:
            raise ValueError(
                f"--prompt_column {data_args.prompt_column!r} is not a column of the training data "
                f"({', '.join(train_dataset.column_names)})."
            )
        instructions = Counter(text for text in train_dataset[data_args.prompt_column] if text)
        if instructions:  # the pipeline, CLI and server transcribe with the instruction training used
            processor.transcription_prompt = instructions.most_common(1)[0][0]
    if isinstance(train_dataset, Dataset) and len(train_dataset):
        # long-form transcription cuts audio into segments no longer than what the adapter was trained on (in whole
        # seconds, as vLLM's transcription endpoint takes the limit)
        longest = float(math.ceil(max(train_dataset["duration"])))
        processor.max_segment_seconds = max(longest, processor.max_segment_seconds or 0.0)
    if isinstance(train_dataset, IterableDataset) and training_args.train_sampling_strategy == "group_by_length":
        training_args.train_sampling_strategy = "random"

    train_collator = SteerMoEDataCollator(
        processor, data_args, train_base, with_targets=True, teacher_inputs=config.kl_loss_coef > 0,
        transcript_labels=config.ctc_loss_coef > 0 and data_args.transcript_column is not None,
    )  # fmt: skip
    eval_collator = SteerMoEDataCollator(processor, data_args, eval_base, with_targets=False)
    stopper = GracefulStopCallback()
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    trainer = SteerMoETrainer(
        model=model,
        args=training_args,
        data_collator=train_collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        eval_collator=eval_collator,
        language=data_args.language,
        callbacks=[stopper, *(callbacks or [])],
    )
    output_dir = Path(training_args.output_dir)
    if training_args.do_train:
        if training_args.do_eval and training_args.eval_on_start:
            report["eval_before"] = trainer.evaluate(metric_key_prefix="eval_before")
            trainer.args.eval_on_start = False
        start = time.time()
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        report["train"] = {**result.metrics, "minutes": round((time.time() - start) / 60, 2)}
        report["train"]["stopped_by_signal"] = stopper.requested
        trainer.save_model()
        trainer.save_state()
        plot = trainer.save_expert_usage_plot(output_dir / "expert_usage.png")
        report["expert_usage_plot"] = str(plot) if plot else None
        if stopper.requested:
            logger.warning("Stopped by a signal; resume with --resume_from_checkpoint true.")
    if training_args.do_eval and not stopper.requested:
        report["eval"] = trainer.evaluate()
        write_predictions(trainer, output_dir / "eval_predictions.jsonl", trainer.last_predictions)
        for extra_file in data_args.extra_eval_files or []:
            name = Path(extra_file).stem
            extra_dataset, extra_base = load_split(data_args, data_args.eval_split, [extra_file])
            extra_dataset, report["data"][name] = filter_split(
                extra_dataset, data_args, processor.tokenizer, extra_base, data_args.max_eval_samples, name
            )
            extra_collator = SteerMoEDataCollator(processor, data_args, extra_base, with_targets=False)
            trainer.eval_collator = extra_collator
            report.setdefault("extra_eval", {})[name] = trainer.evaluate(extra_dataset, metric_key_prefix=name)
            trainer.eval_collator = eval_collator
            write_predictions(trainer, output_dir / f"{name}_predictions.jsonl", trainer.last_predictions)
        if training_args.oracle_eval:
            report["oracle"] = trainer.evaluate_oracle(eval_dataset, eval_collator)
            write_predictions(trainer, output_dir / "oracle_predictions.jsonl", trainer.last_oracle_predictions)
    report["data"]["skipped_in_collator"] = dict(train_collator.skipped + eval_collator.skipped)
    report["recipe"] = {"model": asdict(model_args), "data": asdict(data_args)}
    report["loss"] = {key: getattr(config, key) for key in LOSS_FIELDS}  # the model's recipe, as saved
    report["training_args"] = {key: getattr(training_args, key) for key in RECORDED_TRAINING_ARGS}
    report["peak_memory_mb"] = peak_memory_mb()
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "results.json").write_text(json.dumps(report, indent=2, default=str))
        sys.stdout.write(summarize(report) + "\n")
        if push_to_hub:
            trainer.push_to_hub()
    if dist.is_available() and dist.is_initialized():  # ranks leave together; an open gloo group can abort the exit
        trainer.accelerator.wait_for_everyone()
        dist.destroy_process_group()
    return report


def write_predictions(trainer, path: Path, pairs) -> None:
    if trainer.is_world_process_zero():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            for reference, prediction, *readout in pairs:
                row = {"reference": reference, "prediction": prediction}
                if readout and readout[0] is not None:
                    row["ctc_readout"] = readout[0]
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def peak_memory_mb() -> dict:
    """Peak resident memory of this process and, on CUDA, peak allocated GPU memory, in MB."""
    import resource

    peaks = {"cpu_rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        peaks["cuda_allocated"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peaks


def summarize(report: dict) -> str:
    """One line for the console: error rates before/after training and the training time."""
    parts = []
    def scores(metrics: dict, prefix: str) -> str:
        text = f"WER {metrics[f'{prefix}_wer']:.3f}, CER {metrics[f'{prefix}_cer']:.3f}"
        if f"{prefix}_ctc_wer" in metrics:
            text += f" (the CTC head's own readout of the frames: WER {metrics[f'{prefix}_ctc_wer']:.3f}; the LLM reads "
            text += f"{metrics[f'{prefix}_llm_frames_per_second']:.2f} frames per second of audio)"
        return text

    for key, label in (("eval_before", "before training"), ("eval", "after training")):
        if key in report:
            parts.append(f"{label}: {scores(report[key], key)}")
    for name, metrics in report.get("extra_eval", {}).items():
        parts.append(f"{name}: {scores(metrics, name)}")
    if "oracle" in report:
        parts.append(f"oracle (transcript tokens as input): WER {report['oracle']['oracle_wer']:.3f}")
    if "train" in report:
        parts.append(f"training: {report['train']['minutes']} min, {report['train'].get('train_loss', float('nan')):.3f} mean loss")
    return "SteerMoE results: " + ("; ".join(parts) if parts else "nothing evaluated")


if __name__ == "__main__":
    main()
