"""Tiny adapters for tests that read what the model writes (streaming, the web demo)."""

import torch

from configuration_steermoe import SteerMoEConfig
from modeling_steermoe import SteerMoEForConditionalGeneration
from processing_steermoe import SteerMoEProcessor


def save_readable_adapter(path, backbone_dirs, chat: bool = True, **config_kwargs):
    """A tiny adapter saved as train.py saves one. Its generation config lets the random LLM write only letters and
    spaces, and favours spaces, so that what it generates is readable text made of several words. `chat=False`: a
    base LLM's tokenizer (no chat template)."""
    audio_dir, text_dir = backbone_dirs
    torch.manual_seed(0)
    config = SteerMoEConfig(audio_model_id=str(audio_dir), text_model_id=str(text_dir), **config_kwargs)
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32)
    processor = SteerMoEProcessor.from_config(config)
    tokenizer = processor.tokenizer
    if not chat:
        tokenizer.chat_template = processor.chat_template = None
    allowed = set("abcdefghijklmnopqrstuvwxyz ")
    model.generation_config.suppress_tokens = [
        i for i in range(len(tokenizer)) if tokenizer.decode([i]) not in allowed
    ]
    model.generation_config.sequence_bias = [[tokenizer.encode(" ", add_special_tokens=False), 2.0]]
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
