# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""SteerMoE configuration: two frozen backbones (by Hub id or by config) and the aligner's settings."""

import json
import logging
import math
import os
import re
from pathlib import Path

from transformers import AutoConfig, PreTrainedConfig
from transformers.tokenization_utils_base import AddedToken


try:
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers < 5.20 (vLLM's pin, see serving/): sub-configs are built in __post_init__
    SubConfigSpec = None


logger = logging.getLogger(__name__)


ALIGNER_TYPES = ("layerwise", "per_layer_router", "post_encoder", "linear")
POOLING_TYPES = ("max", "avg", None)
PROJECTOR_TYPES = ("linear", "mlp")
FRAME_COMPRESSIONS = (None, "ctc_argmax", "ctc_threshold")


LOSS_COEFFICIENTS = {  # each part of the training loss (`forward`'s output) -> the config field that weighs it
    "llm_loss": "ce_loss_coef", "kl_loss": "kl_loss_coef", "ctc_loss": "ctc_loss_coef",
    "frame_norm_loss": "frame_norm_loss_coef", "router_balance_loss": "router_balance_loss_coef",
}  # fmt: skip
LOSS_FIELDS = (  # every config field of the training recipe
    *LOSS_COEFFICIENTS.values(), "ctc_logit_scale", "ctc_blank_token_id", "llm_loss_start_step", "target_logits_only",
    "cache_prompt_prefix", "kl_temperature",
)  # fmt: skip
AUDIO_ENCODER_TYPES = ("whisper", "hubert", "wavlm", "wav2vec2", "wav2vec2-conformer")
WHISPER_CONV_LAYERS = ((3, 1, 1), (3, 2, 1))


def get_num_audio_tokens(
    num_input_frames: int, pooling_kernel_size: int, conv_layers: tuple = WHISPER_CONV_LAYERS
) -> int:
    """Number of LLM audio tokens produced by one encoder window of `num_input_frames` inputs (mel frames for
    Whisper, samples for wav2vec2-style encoders).

    Each `(kernel, stride, padding)` of the encoder's conv stem maps `n -> (n + 2 * padding - kernel) // stride + 1`
    (Whisper: 100 mel frames/s -> 50 Hz), then pooling with `kernel = stride = pooling_kernel_size` (1 means no
    pooling) keeps partial last windows (`ceil`), so no audio is dropped. The processor writes this many placeholder
    tokens; the model produces exactly this many frames.
    """
    frames = num_input_frames
    for kernel, stride, padding in conv_layers:
        frames = (frames + 2 * padding - kernel) // stride + 1 if frames > 0 else 0
    return math.ceil(max(frames, 0) / pooling_kernel_size)


BACKBONE_FIELDS = {"audio_model_id": "audio_model_hub_id", "text_model_id": "text_model_hub_id"}
BACKBONE_OVERRIDES = ("audio_model_id", "text_model_id", "audio_model_revision", "text_model_revision")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_backbone(value: str, adapter_dir: str | os.PathLike | None = None, hub_id: str | None = None):
    """Where a backbone reference recorded in an adapter points, tried in this order: as given (a folder, absolute or
    from the working directory); relative to the adapter's own folder; the Hub original recorded with it
    (`*_model_hub_id`); the value itself as a Hub id.

    Returns `(location or None, every place looked)`; a Hub id is returned without contacting the Hub."""
    looked = []
    path = Path(value).expanduser()
    looked.append(str(path.resolve()))
    if path.is_dir():
        return str(path.resolve()), looked
    if adapter_dir is not None and not path.is_absolute():
        candidate = (Path(adapter_dir) / path).resolve()
        looked.append(str(candidate))
        if candidate.is_dir():
            return str(candidate), looked
    for name in (hub_id, value):
        if name and _HUB_ID.match(name) and not name.startswith("."):
            looked.append(f"the Hub: {name}")
            return name, looked
    return None, looked


def backbone_not_found_message(field: str, value: str, looked: list[str]) -> str:
    return (
        f"The backbone {field}={value!r} recorded in this adapter was not found; looked at: {'; '.join(looked)}. "
        f"Pass the backbone's folder or Hub id: from_pretrained(adapter, {field}=...) (AutoModel, AutoProcessor and "
        f"SteerMoEForConditionalGeneration alike), or pipeline(..., model_kwargs={{{field!r}: ...}})."
    )


def hub_original(folder: str) -> str | None:
    """The Hub id a local backbone folder was converted from, as its `conversion.json` records it
    (`scripts/setup_smollm2.py` writes one); None if it records none."""
    record = Path(folder) / "conversion.json"
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text()).get("original")
    except (OSError, ValueError):
        return None


def add_audio_token(tokenizer, audio_token: str) -> int:
    """Add `audio_token` to `tokenizer` as a special token unless it has it, and return its id.

    The one rule both sides use: the processor applies it to its tokenizer, and `SteerMoEConfig` to a fresh copy of
    the LLM's tokenizer to set `audio_token_id`, so a model and a processor built from the same LLM agree on the
    placeholder without any hand wiring.
    """
    if audio_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(audio_token, special=True, normalized=False)], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(audio_token)


def resolve_token_ids(text_model_id: str, revision: str | None, audio_token: str) -> tuple[int | None, int | None]:
    """From the tokenizer of `text_model_id`: the id `add_audio_token` gives `audio_token`, and the CTC blank (the
    token of a single space, else the pad token). `(None, None)` if the LLM has no tokenizer."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(text_model_id, revision=revision)
    except (OSError, ValueError) as error:
        logger.warning("No tokenizer for %s (%s); the audio token id stays unset.", text_model_id, error)
        return None, None
    space = tokenizer(" ", add_special_tokens=False)["input_ids"]
    blank = space[0] if len(space) == 1 else tokenizer.pad_token_id
    return add_audio_token(tokenizer, audio_token), blank


class SteerMoEConfig(PreTrainedConfig):
    r"""
    Configuration of a [`SteerMoEForConditionalGeneration`]: a frozen audio encoder, a frozen decoder-only LLM and the
    small trainable aligner between them.

    Backbones are named by id (`audio_model_id`, `text_model_id`: Hub ids or local folders, with optional revisions),
    whose weights are loaded; or given in full (`audio_config`, `text_config`) to build randomly initialised
    backbones, e.g. in tests. The backbone configs are saved with the adapter either way, so reading an adapter's
    config never needs the backbones. A local folder is recorded by its absolute path, with the Hub original it was
    converted from when its `conversion.json` says (`*_model_hub_id`); loading an adapter resolves each reference
    with `resolve_backbone` (as given, relative to the adapter's folder, the Hub original), and
    `from_pretrained(adapter, audio_model_id=..., text_model_id=...)` overrides them.

    Args:
        audio_model_id (`str`, *optional*): Hub id or folder of the audio encoder (a Whisper checkpoint).
        audio_model_revision (`str`, *optional*): Revision (branch, tag or commit) of `audio_model_id`.
        text_model_id (`str`, *optional*): Hub id or folder of the decoder-only LLM.
        text_model_revision (`str`, *optional*): Revision of `text_model_id`.
        audio_model_hub_id (`str`, *optional*): The Hub original of a local `audio_model_id`, tried when the folder
            is not found (e.g. on another machine).
        text_model_hub_id (`str`, *optional*): The same for `text_model_id`.
        audio_config (`dict` or `PreTrainedConfig`, *optional*): Full audio encoder config, used when no id is given.
        text_config (`dict` or `PreTrainedConfig`, *optional*): Full LLM config, used when no id is given.
        aligner_type (`str`, *optional*, defaults to `"layerwise"`): `"layerwise"` (steering after every steered
            layer, one shared router), `"per_layer_router"` (one small router per steered layer), `"post_encoder"`
            (a single steering step on the encoder's last layer output) or `"linear"` (no steering: pooling and
            projector only, the static-adapter baseline).
        steered_layers (`list[int]`, *optional*): Encoder layers steered by `layerwise` / `per_layer_router`;
            all by default.
        num_experts (`int`, *optional*, defaults to 8): Steering vectors per encoder layer.
        steering_scale (`float`, *optional*, defaults to 0.1): Initial value of every per-layer scale.
        pooling_type (`str`, *optional*, defaults to `"max"`): `"max"`, `"avg"` or `None` (no temporal pooling).
        pooling_kernel_size (`int`, *optional*, defaults to 4): Pooling kernel and stride (50 Hz -> 12.5 Hz).
        projector_type (`str`, *optional*, defaults to `"linear"`): `"linear"` or `"mlp"` (Linear-GELU-Linear).
        frame_compression (`str`, *optional*): CTC compression of the projected frames before the LLM reads them,
            decided by the CTC head (needs `ctc_loss_coef > 0`): `"ctc_argmax"` drops the frames whose best label is
            the blank, `"ctc_threshold"` those whose blank probability exceeds `ctc_blank_threshold`; each run of
            consecutive kept frames with the same best label becomes their mean. The processor still writes the
            fixed-rate placeholder count; the model removes the placeholders it does not fill. `None` (default):
            every frame.
        ctc_blank_threshold (`float`, *optional*, defaults to 0.95): The blank probability above which
            `"ctc_threshold"` drops a frame.
        soft_token_temperature (`float`, *optional*): With `frame_compression`, the LLM reads each compressed frame
            as a soft token: the mean of its input embeddings under the CTC head's distribution over tokens (blank
            excluded) at this temperature (lower is sharper; `ctc_soft_tokens`). Text-like input a frozen LLM reads
            as words, keeping the head's doubt between similar words; the LLM's loss trains through it. `None`
            (default): the frames themselves.
        encoder_lora_rank (`int`, *optional*, defaults to 0): LoRA rank on the encoder's attention and FFN (the
            paper's "LoRA-tuned encoder" baseline, through peft); 0 is off.
        encoder_lora_alpha (`float`, *optional*, defaults to 16): Its scaling numerator.
        encoder_lora_target_modules (`list[str]`, *optional*): Encoder modules it adapts.
        lora_rank (`int`, *optional*, defaults to 0): LoRA rank on the LLM; 0 (off) keeps the LLM exactly frozen.
            On, it breaks the promise that text-only use equals the base LLM, so text-only calls run with the LLM
            adapter disabled unless `lora_for_text_only` is set.
        lora_alpha (`float`, *optional*, defaults to 16): Its scaling numerator.
        lora_target_modules (`list[str]`, *optional*, defaults to `["q_proj", "v_proj"]`): LLM modules it adapts.
        lora_for_text_only (`bool`, *optional*, defaults to `False`): Keep the LLM adapter on without audio.
        audio_token (`str`, *optional*, defaults to `"<|audio|>"`): The audio placeholder token.
        audio_token_id (`int`, *optional*): Its id; by default resolved from the tokenizer of `text_model_id` with
            the processor's rule (`add_audio_token`), so it equals `processor.audio_token_id`.
        initializer_range (`float`, *optional*, defaults to 0.02): Std of the router and projector init.

        The training loss (`forward` with `labels` and audio) is `ce_loss_coef * llm_loss + kl_loss_coef * kl_loss +
        ctc_loss_coef * ctc_loss + frame_norm_loss_coef * frame_norm_loss + router_balance_loss_coef *
        router_balance_loss`; the defaults give the paper's plain LLM cross-entropy. These fields are saved with the
        adapter, so a reloaded adapter fine-tunes with the recipe it was trained with.

        ce_loss_coef (`float`, *optional*, defaults to 1.0): Weight of the LLM's cross-entropy on the target tokens.
        ctc_loss_coef (`float`, *optional*, defaults to 0.0): Weight of a CTC loss of the projected audio frames
            against the transcript's tokens over the LLM's vocabulary (each frame scored against the LLM's input
            embedding matrix): a direct signal for every frame.
        ctc_logit_scale (`float`, *optional*, defaults to 0.0): 0: CTC logits are `frames @ embeddings^T`; > 0:
            cosine similarities times this scale (direction only; pair with `frame_norm_loss_coef`).
        ctc_blank_token_id (`int`, *optional*): The CTC blank; by default the LLM's single-space token (else its pad
            token), resolved from the tokenizer of `text_model_id`.
        frame_norm_loss_coef (`float`, *optional*, defaults to 0.0): Weight of `mean((|frame| / mean |token
            embedding| - 1)^2)` over the projected audio frames.
        router_balance_loss_coef (`float`, *optional*, defaults to 0.0): Weight of the Switch-style router
            load-balancing loss, averaged over steered layers.
        llm_loss_start_step (`int`, *optional*, defaults to 0): CTC-only warm-up: the first this many training
            forward passes (optimizer steps times gradient accumulation) train the CTC and auxiliary losses alone and
            do not run the LLM. Needs `ctc_loss_coef > 0`.
        target_logits_only (`bool`, *optional*, defaults to `False`): Run the LLM's output layer only where the loss
            is (the output's `logits` are then `(targets, vocab)`); same loss, less compute.
        cache_prompt_prefix (`bool`, *optional*, defaults to `False`): Run the frozen LLM once on the prompt text
            before the first audio placeholder when every row shares it (e.g. a system turn) and reuse its key/value
            cache in later training forwards; same loss, fewer positions. Not with LLM LoRA.
        kl_loss_coef (`float`, *optional*, defaults to 0.0): Weight of KL(teacher || student) between next-token
            distributions at the target positions, the teacher being the frozen LLM (LoRA off) on the same prompt
            and target with the transcript's tokens where the audio goes (`teacher_input_ids` in `forward`).
        kl_temperature (`float`, *optional*, defaults to 1.0): Softmax temperature of both KL distributions.

    Example:

    ```python
    >>> from configuration_steermoe import SteerMoEConfig
    >>> config = SteerMoEConfig(audio_model_id="openai/whisper-large-v3", text_model_id="Qwen/Qwen2.5-7B-Instruct")
    ```
    """

    model_type = "steermoe"
    _sub_config_types = {"audio_config": "whisper", "text_config": "qwen2"}  # default model_type of each
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            key: SubConfigSpec(config_class=AutoConfig, model_type=default_type, optional=True)
            for key, default_type in _sub_config_types.items()
        }
    else:
        sub_configs = dict.fromkeys(_sub_config_types, AutoConfig)

    audio_model_id: str | None = None
    audio_model_revision: str | None = None
    text_model_id: str | None = None
    text_model_revision: str | None = None
    audio_model_hub_id: str | None = None
    text_model_hub_id: str | None = None
    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    aligner_type: str = "layerwise"
    steered_layers: list[int] | None = None
    num_experts: int = 8
    steering_scale: float = 0.1
    pooling_type: str | None = "max"
    pooling_kernel_size: int = 4
    projector_type: str = "linear"
    frame_compression: str | None = None
    ctc_blank_threshold: float = 0.95
    soft_token_temperature: float | None = None
    encoder_lora_rank: int = 0
    encoder_lora_alpha: float = 16.0
    encoder_lora_target_modules: list[str] | None = None
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_target_modules: list[str] | None = None
    lora_for_text_only: bool = False
    audio_token: str = "<|audio|>"
    audio_token_id: int | None = None
    initializer_range: float = 0.02
    ce_loss_coef: float = 1.0
    ctc_loss_coef: float = 0.0
    ctc_logit_scale: float = 0.0
    ctc_blank_token_id: int | None = None
    frame_norm_loss_coef: float = 0.0
    router_balance_loss_coef: float = 0.0
    llm_loss_start_step: int = 0
    target_logits_only: bool = False
    cache_prompt_prefix: bool = False
    kl_loss_coef: float = 0.0
    kl_temperature: float = 1.0

    def __post_init__(self, **kwargs):
        for field, hub_field in BACKBONE_FIELDS.items():
            value = getattr(self, field)
            if value is not None and Path(value).expanduser().is_dir():  # a local folder: recorded absolute
                setattr(self, field, str(Path(value).expanduser().resolve()))
                if getattr(self, hub_field) is None:
                    setattr(self, hub_field, hub_original(value))
        if self.audio_config is None and self.audio_model_id is not None:
            self.audio_config = _backbone_config("audio_model_id", self.audio_model_id, self.audio_model_revision)
        if self.text_config is None and self.text_model_id is not None:
            self.text_config = _backbone_config("text_model_id", self.text_model_id, self.text_model_revision)
        if (self.audio_token_id is None or self.ctc_blank_token_id is None) and self.text_model_id is not None:
            audio_token_id, blank_id = resolve_token_ids(self.text_model_id, self.text_model_revision, self.audio_token)
            if self.audio_token_id is None:
                self.audio_token_id = audio_token_id
            if self.ctc_blank_token_id is None:
                self.ctc_blank_token_id = blank_id
        if SubConfigSpec is None:
            for key, default_type in self._sub_config_types.items():
                value = getattr(self, key)
                if isinstance(value, dict):
                    fields = {name: item for name, item in value.items() if name != "model_type"}
                    setattr(self, key, AutoConfig.for_model(value.get("model_type", default_type), **fields))
        super().__post_init__(**kwargs)
        if self.pooling_type not in POOLING_TYPES:
            raise ValueError(f"pooling_type must be one of {POOLING_TYPES}, got {self.pooling_type!r}")
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type must be one of {PROJECTOR_TYPES}, got {self.projector_type!r}")
        if self.aligner_type not in ALIGNER_TYPES:
            raise ValueError(f"aligner_type must be one of {ALIGNER_TYPES}, got {self.aligner_type!r}")
        if self.steered_layers is not None:
            if self.aligner_type not in ("layerwise", "per_layer_router"):
                raise ValueError(f"steered_layers applies to layerwise and per_layer_router, not {self.aligner_type!r}")
            num_layers = self.audio_num_layers if self.audio_config is not None else None
            bad = [i for i in self.steered_layers if not 0 <= i < (num_layers or 10**9)]
            if bad or len(set(self.steered_layers)) != len(self.steered_layers) or not self.steered_layers:
                raise ValueError(f"steered_layers must be distinct indices of the {num_layers} encoder layers, got {self.steered_layers}")
        if self.audio_config is not None and self.audio_config.model_type not in AUDIO_ENCODER_TYPES:
            raise ValueError(
                f"Unsupported audio encoder type {self.audio_config.model_type!r}; supported: {AUDIO_ENCODER_TYPES}"
            )
        if self.encoder_lora_rank < 0 or self.lora_rank < 0:
            raise ValueError("LoRA ranks must be >= 0 (0 turns LoRA off)")
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {self.num_experts}")
        if self.pooling_type is not None and self.pooling_kernel_size < 1:
            raise ValueError(f"pooling_kernel_size must be >= 1, got {self.pooling_kernel_size}")
        self.validate_loss()

    def validate_loss(self):
        """Check the recipe's fields together, the frame compression with them (call again after changing them on a
        built config)."""
        coefs = {name: getattr(self, name) for name in LOSS_COEFFICIENTS.values()}
        negative = [name for name, value in coefs.items() if value < 0]
        if negative:
            raise ValueError(f"Loss coefficients must be >= 0, got {', '.join(f'{n}={coefs[n]}' for n in negative)}")
        if not any(coefs.values()):
            raise ValueError(f"Every loss coefficient is 0: nothing would train ({', '.join(coefs)}).")
        if self.llm_loss_start_step < 0:
            raise ValueError(f"llm_loss_start_step must be >= 0, got {self.llm_loss_start_step}")
        if self.frame_compression not in FRAME_COMPRESSIONS:
            raise ValueError(f"frame_compression must be one of {FRAME_COMPRESSIONS}, got {self.frame_compression!r}")
        if not 0 < self.ctc_blank_threshold < 1:
            raise ValueError(f"ctc_blank_threshold must be in (0, 1), got {self.ctc_blank_threshold}")
        if self.soft_token_temperature is not None:
            if self.soft_token_temperature <= 0:
                raise ValueError(f"soft_token_temperature must be > 0, got {self.soft_token_temperature}")
            if self.frame_compression is None:
                raise ValueError(
                    "soft_token_temperature reads the kept frames as tokens and needs frame_compression (ctc_argmax "
                    "or ctc_threshold): without it the blank frames would be read as words."
                )
        if self.frame_compression is not None and self.ctc_loss_coef <= 0:
            raise ValueError(
                f"frame_compression={self.frame_compression!r} keeps the frames the CTC head reads as labels, and "
                "only ctc_loss_coef > 0 trains that head: set it (the recipe's 1.0) or turn the compression off."
            )
        if self.llm_loss_start_step > 0 and self.ctc_loss_coef <= 0:
            raise ValueError(
                f"llm_loss_start_step={self.llm_loss_start_step} is a CTC-only warm-up and needs ctc_loss_coef > 0: "
                "without it nothing would train the frames during the warm-up."
            )
        if self.cache_prompt_prefix and self.lora_rank:
            raise ValueError(
                "cache_prompt_prefix reuses the frozen LLM's keys and values of the prompt; with lora_rank > 0 the "
                "LLM is trained and they change every step. Turn one of them off."
            )
        if self.kl_temperature <= 0:
            raise ValueError(f"kl_temperature must be > 0, got {self.kl_temperature}")

    @property
    def audio_hidden_size(self) -> int:
        """Width of the audio encoder's hidden states."""
        return getattr(self.audio_config, "d_model", None) or self.audio_config.hidden_size

    @property
    def audio_num_layers(self) -> int:
        """Number of transformer layers of the audio encoder."""
        return getattr(self.audio_config, "encoder_layers", None) or self.audio_config.num_hidden_layers

    @property
    def audio_conv_layers(self) -> tuple[tuple[int, int, int], ...]:
        """`(kernel, stride, padding)` of each layer of the encoder's conv stem, for `get_num_audio_tokens`."""
        if self.audio_config.model_type == "whisper":
            return WHISPER_CONV_LAYERS
        return tuple((k, s, 0) for k, s in zip(self.audio_config.conv_kernel, self.audio_config.conv_stride))

    @property
    def steered_layer_indices(self) -> tuple[int, ...]:
        """The encoder layers after which the aligner steers (empty for the linear baseline)."""
        num_layers = self.audio_num_layers
        if self.aligner_type == "linear":
            return ()
        if self.aligner_type == "post_encoder":
            return (num_layers - 1,)
        return tuple(sorted(self.steered_layers)) if self.steered_layers is not None else tuple(range(num_layers))

    @property
    def audio_frames_per_token(self) -> int:
        """Encoder frames merged into one LLM audio token (1 without pooling)."""
        return self.pooling_kernel_size if self.pooling_type is not None else 1

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """The saved config with the backbone overrides among `kwargs` (`audio_model_id`, `text_model_id` and their
        revisions) applied, and each recorded backbone reference resolved (`resolve_backbone`) against the adapter's
        folder; a reference that does not resolve is kept as recorded (the error comes where weights load)."""
        overrides = {key: kwargs.pop(key) for key in BACKBONE_OVERRIDES if kwargs.get(key) is not None}
        folder = Path(str(pretrained_model_name_or_path)) / kwargs.get("subfolder", "")
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        config_dict = {**config_dict, **overrides}
        for (field, hub_field), sub_config in zip(BACKBONE_FIELDS.items(), ("audio_config", "text_config")):
            if config_dict.get(field) is None or field in overrides:
                continue
            adapter_dir = folder if folder.is_dir() else None
            resolved, looked = resolve_backbone(config_dict[field], adapter_dir, config_dict.get(hub_field))
            if resolved is not None:
                config_dict[field] = resolved
            elif config_dict.get(sub_config) is None:  # an adapter saved without the backbone's config needs it now
                raise OSError(backbone_not_found_message(field, config_dict[field], looked))
        return config_dict, kwargs


def _backbone_config(field: str, value: str, revision: str | None):
    """The backbone's own config, loaded by id (only for configs that do not carry it, e.g. adapters saved before
    the backbone configs were)."""
    try:
        return AutoConfig.from_pretrained(value, revision=revision)
    except (OSError, ValueError) as error:
        raise OSError(backbone_not_found_message(field, value, resolve_backbone(value)[1])) from error


__all__ = ["SteerMoEConfig", "add_audio_token", "get_num_audio_tokens", "resolve_backbone"]
