# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""`python -m serving ADAPTER [vLLM arguments]`: vLLM's own OpenAI-compatible server on a SteerMoE adapter.

The adapter (folder or Hub id) is served with these vLLM arguments added, unless given:

- `--host 127.0.0.1` (vLLM's default listens on every interface);
- `--chat-template` / `--chat-template-content-format openai`: the LLM's chat template, preceded by the
  `SteerMoEProcessor`'s rendering of content parts (text as is, each audio part as the audio token, joined
  without separators), so `/v1/chat/completions` builds the prompt `processor.apply_chat_template` builds;
- `--middleware serving.transcription_gate.TranscriptionGate` (decoding errors, the no-speech gate, the
  processor's resampling for `/v1/audio/transcriptions`);
- `--override-generation-config '{"temperature": 0.0}'` when the adapter's generation config is greedy (the
  transformers default), as vLLM would otherwise sample at temperature 1.

Everything else (`--port`, `--dtype`, `--max-model-len`, `--tensor-parallel-size`, ...) goes to vLLM unchanged.
The full vLLM command is logged, for use with `vllm serve` directly.
"""

import argparse
import json
import logging
import shlex
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("serving")

MIDDLEWARE = "serving.transcription_gate.TranscriptionGate"


def flatten_content_parts(template: str, audio_token: str) -> str:
    """`template` (a chat template written for string contents) preceded by Jinja that turns list contents into
    strings as `SteerMoEProcessor.apply_chat_template` does: text parts as they are, audio parts as
    `audio_token`, joined with nothing between them."""
    prefix = (
        "{%- set steermoe = namespace(messages=[]) -%}"
        "{%- for message in messages -%}"
        "{%- if message.content is string or message.content is none -%}"
        "{%- set steermoe.messages = steermoe.messages + [message] -%}"
        "{%- else -%}"
        "{%- set flat = namespace(text='') -%}"
        "{%- for part in message.content -%}"
        "{%- if part.type == 'text' -%}{%- set flat.text = flat.text + part.text -%}"
        f"{{%- elif part.type == 'audio' -%}}{{%- set flat.text = flat.text + {json.dumps(audio_token)} -%}}"
        "{%- else -%}{{ raise_exception('SteerMoE chat takes text and audio content parts only.') }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- set steermoe.messages = steermoe.messages + [dict(message, content=flat.text)] -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- set messages = steermoe.messages %}"
    )
    return prefix + template


def vllm_arguments(adapter: str, extra: list[str], workdir: str) -> list[str]:
    """The vLLM server arguments for `adapter`: SteerMoE's defaults (module docstring) then `extra`."""
    from transformers import GenerationConfig

    from configuration_steermoe import SteerMoEConfig
    from serving.vllm_steermoe import check_servable, load_processor

    check_servable(SteerMoEConfig.from_pretrained(adapter))
    given = {argument.split("=", 1)[0] for argument in extra if argument.startswith("--")}
    arguments = ["--model", adapter]
    if "--host" not in given:
        arguments += ["--host", "127.0.0.1"]
    processor = load_processor(adapter)
    template = processor.chat_template or processor.tokenizer.chat_template
    if template is not None and "--chat-template" not in given:
        path = Path(workdir) / "chat_template.jinja"
        path.write_text(flatten_content_parts(template, processor.audio_token))
        arguments += ["--chat-template", str(path), "--chat-template-content-format", "openai"]
    arguments += ["--middleware", MIDDLEWARE]
    if "--override-generation-config" not in given:
        generation_config = GenerationConfig.from_pretrained(adapter)
        if not generation_config.do_sample:
            arguments += ["--override-generation-config", json.dumps({"temperature": 0.0})]
    return arguments + extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve a SteerMoE adapter with vLLM's OpenAI-compatible server; other arguments go to vLLM.",
    )
    parser.add_argument("adapter", help="adapter folder or Hub id (saved by save_pretrained)")
    known, extra = parser.parse_known_args(argv)

    from vllm.entrypoints.launchers.api_server.entry import main as serve

    from serving import register

    register()
    with tempfile.TemporaryDirectory(prefix="steermoe-serving-") as workdir:
        arguments = vllm_arguments(known.adapter, extra, workdir)
        logging.basicConfig(level=logging.INFO)
        logger.info("vLLM arguments: %s", shlex.join(arguments))
        sys.argv = ["python -m serving", *arguments]
        serve()


__all__ = ["flatten_content_parts", "main", "vllm_arguments"]
