"""Tiny, randomly initialised backbones saved the way Hub checkpoints are, for offline tests."""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "transcribe the audio please",
    "and so my fellow americans ask not what your country can do for you",
    "it was the first great sorrow of his life",
    "the quick brown fox jumps over the lazy dog",
    "what is said in this recording",
] * 20


def make_tokenizer(vocab_size: int = 200) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens, trained on a few sentences."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def whisper_config(layers: int = 2, d_model: int = 32) -> WhisperConfig:
    return WhisperConfig(
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        max_source_positions=1500,
        max_target_positions=32,
        vocab_size=60,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )


def qwen2_config(vocab_size: int, hidden_size: int = 32, tie: bool = True) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=tie,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=None,
        initializer_range=0.3,
    )


def save_whisper(path: Path, layers: int = 2, d_model: int = 32, seed: int = 0) -> Path:
    """A full tiny Whisper (encoder + decoder) checkpoint with its feature extractor."""
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(whisper_config(layers, d_model)).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


def save_qwen2(path: Path, hidden_size: int = 32, seed: int = 0) -> Path:
    """A tiny Qwen2 causal LM with its tokenizer; generation defaults to greedy."""
    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = qwen2_config(len(tokenizer), hidden_size)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


WAV2VEC2_FAMILIES = ("hubert", "wavlm", "wav2vec2-conformer")


def save_wav2vec2_family(path: Path, model_type: str, seed: int = 0) -> Path:
    """A tiny wav2vec2-style encoder (HuBERT, WavLM or the Conformer variant of wav2vec2) with its extractor."""
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        model_type,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_kernel=(10, 4), conv_stride=(5, 4), conv_bias=True,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer", do_stable_layer_norm=True, vocab_size=32,
        conv_depthwise_kernel_size=7, num_buckets=16, max_bucket_distance=64,
    )  # fmt: skip
    AutoModel.from_config(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(path)
    return path
