"""The transformers side of the serving tests, run in the project's environment (transformers >= 5.23, the versions
users run), not vLLM's: builds a test adapter and answers requests with the pipeline and `model.generate`.

    python tests/serving_reference.py OUT_DIR REQUESTS.json [--audio_model_id ID] [--text_model_id ID | --adapter DIR]

builds `OUT_DIR/adapter` (unless `--adapter` names one), prints its path and writes the answers, in order, to
`OUT_DIR/reference.json`.

A request is `{"kind": "transcribe", "audio": path, "prompt": str or null, "language": str or null,
"max_new_tokens": n}` (the ASR pipeline, or `apply_transcription_request` when a language is named) or
`{"kind": "chat", "messages": [...], "max_new_tokens": n}` (`processor.apply_chat_template` + `generate`).
"""

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from configuration_steermoe import SteerMoEConfig
from modeling_steermoe import SteerMoEForConditionalGeneration
from processing_steermoe import SteerMoEProcessor


def randomise_aligner(model: SteerMoEForConditionalGeneration, seed: int = 0) -> None:
    """An untrained aligner whose audio frames matter: unit steering vectors, a sharp router, and a projector whose
    outputs have the spread of the LLM's own token embeddings (a fresh one is ~100x smaller, so the LLM would
    ignore the audio and every clip would give the same answer)."""
    generator = torch.Generator().manual_seed(seed)
    aligner = model.aligner
    embedding_std = float(model.get_input_embeddings().weight.float().std())
    with torch.no_grad():
        for name, parameter in aligner.named_parameters():
            if name == "steering_vectors":
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
            elif name.startswith("router") and name.endswith("weight"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
            elif name.startswith("projector") and name.endswith("weight"):
                scale = embedding_std / parameter.shape[1] ** 0.5
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def save_printable_qwen2(path: Path, hidden_size: int = 128, seed: int = 0) -> Path:
    """A tiny random Qwen2 (4 heads: head_dim = hidden_size / 4) whose byte-level BPE tokenizer knows only printable
    ASCII and newline, so whatever a random model generates decodes to readable text (with all 256 bytes, most
    single-byte tokens are pieces of UTF-8 characters and decode to U+FFFD)."""
    from backbones import CHATML_TEMPLATE, CORPUS, qwen2_config
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = sorted({byte_level.pre_tokenize_str(chr(code))[0][0] for code in [*range(32, 127), 10]})
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, initial_alphabet=alphabet)
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML_TEMPLATE
    )
    torch.manual_seed(seed)
    config = qwen2_config(len(tokenizer), hidden_size)
    config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    model = Qwen2ForCausalLM(config)
    model.generation_config.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build(out_dir: Path, audio_model_id: str | None, text_model_id: str | None) -> Path:
    """A randomised adapter (fp32) on the given backbones, or on tiny random ones (a 2-layer Whisper and a 2-layer
    Qwen2 of width 128 with 4 heads: head_dim 32, the smallest vLLM's CPU attention takes)."""
    from backbones import save_whisper

    out_dir.mkdir(parents=True, exist_ok=True)
    audio_model_id = audio_model_id or str(save_whisper(out_dir / "whisper"))
    text_model_id = text_model_id or str(save_printable_qwen2(out_dir / "qwen2"))
    torch.manual_seed(0)
    config = SteerMoEConfig(audio_model_id=audio_model_id, text_model_id=text_model_id)
    model = SteerMoEForConditionalGeneration(config, dtype=torch.float32)
    randomise_aligner(model)
    adapter = out_dir / "adapter"
    model.save_pretrained(adapter)
    SteerMoEProcessor.from_config(config).save_pretrained(adapter)
    return adapter


def generate(adapter: str, requests: list[dict]) -> list[str]:
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=adapter, trust_remote_code=True, dtype=torch.float32)
    model, processor = asr.model, asr.processor
    texts = []
    for request in requests:
        if request["kind"] == "transcribe" and request.get("language") is None:
            limit = {} if request["max_new_tokens"] is None else {"max_new_tokens": request["max_new_tokens"]}
            texts.append(asr(request["audio"], prompt=request.get("prompt"), **limit)["text"])
            continue
        if request["kind"] == "transcribe":
            inputs = processor.apply_transcription_request(
                request["audio"], prompt=request.get("prompt"), language=request["language"]
            )
        else:
            inputs = processor.apply_chat_template(
                request["messages"], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
        out = model.generate(**inputs, max_new_tokens=request["max_new_tokens"])
        text = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        texts.append(text.strip() if request["kind"] == "transcribe" else text)
    return texts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("requests", type=Path)
    parser.add_argument("--audio_model_id")
    parser.add_argument("--text_model_id")
    parser.add_argument("--adapter", help="answer with this adapter instead of building one")
    args = parser.parse_args()
    adapter = args.adapter or str(build(args.out_dir, args.audio_model_id, args.text_model_id))
    texts = generate(adapter, json.loads(args.requests.read_text()))
    (args.out_dir / "reference.json").write_text(json.dumps(texts))
    print(adapter)


if __name__ == "__main__":
    main()
