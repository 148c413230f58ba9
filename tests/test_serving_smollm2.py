"""vLLM serving on real backbones: whisper-tiny.en's encoder (../shared/models) and SmolLM2-135M-Instruct (converted
from PyPI's GGUF by scripts/setup_serving.sh), joined by a randomised aligner, plus a trained adapter named by
`STEERMOE_SERVING_ADAPTER` when set (e.g. an instruct adapter from the SmolLM2 recipe). One server per adapter; the
server's greedy answers must equal transformers'. Runs in the serving environment; skipped elsewhere or without the
backbones, with the reason."""

import concurrent.futures
import os
from pathlib import Path

import pytest
from conftest import ROOT, SHARED
from serving_support import REQUEST_TIMEOUT_S, build_and_answer, input_audio, require_vllm, vllm_server


SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct"
WHISPER_ENCODER = SHARED / "models" / "whisper-tiny.en-encoder"
AUDIO = SHARED / "audio"
MAX_TOKENS = 24
ADAPTERS = ["randomised"] + (["trained"] if os.environ.get("STEERMOE_SERVING_ADAPTER") else [])


def requests() -> list[dict]:
    """A few transcriptions and chats, real speech in (one chat is text only: the plain LLM)."""
    speech = [AUDIO / "jfk.flac", AUDIO / "librispeech-1995-1837-0001.wav"]
    transcriptions = [
        {"kind": "transcribe", "audio": str(path), "prompt": None, "language": None, "max_new_tokens": MAX_TOKENS}
        for path in speech
    ]
    chats = [
        [{"role": "user", "content": [{"type": "audio", "path": str(speech[0])}, {"type": "text", "text": "Answer the question."}]}],
        [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": [{"type": "audio", "path": str(speech[1])}, {"type": "text", "text": "Who is speaking?"}, {"type": "audio", "path": str(speech[0])}]}],
        [{"role": "user", "content": "What is the capital of France?"}],
    ]  # fmt: skip
    return transcriptions + [{"kind": "chat", "messages": messages, "max_new_tokens": MAX_TOKENS} for messages in chats]


@pytest.fixture(scope="module", params=ADAPTERS)
def adapter_and_reference(request, tmp_path_factory):
    """The adapter, and transformers' answers to `requests()`."""
    require_vllm()
    out = tmp_path_factory.mktemp("smollm2")
    if request.param == "trained":
        return build_and_answer(out, requests(), "--adapter", os.environ["STEERMOE_SERVING_ADAPTER"])
    for path, how in ((SMOLLM2, "bash scripts/setup_serving.sh converts it"), (WHISPER_ENCODER, "../shared is absent")):
        if not path.is_dir():
            pytest.skip(f"{path} is missing ({how})")
    return build_and_answer(out, requests(), "--audio_model_id", WHISPER_ENCODER, "--text_model_id", SMOLLM2)


@pytest.fixture(scope="module")
def client(adapter_and_reference, tmp_path_factory):
    openai = require_vllm()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with vllm_server(adapter_and_reference[0], log, "--max-model-len", "2048") as url:
        yield openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)


def answer(client, request) -> str:
    model = client.models.list().data[0].id
    if request["kind"] == "transcribe":
        with open(request["audio"], "rb") as file:
            return client.audio.transcriptions.create(
                model=model, file=file, extra_body={"max_completion_tokens": request["max_new_tokens"]}
            ).text
    messages = [
        {**message, "content": [input_audio(Path(part["path"])) if part["type"] == "audio" else part for part in message["content"]]}
        if isinstance(message["content"], list)
        else message
        for message in request["messages"]
    ]  # fmt: skip
    response = client.chat.completions.create(model=model, messages=messages, max_tokens=request["max_new_tokens"])
    return response.choices[0].message.content


def test_answers_equal_transformers(client, adapter_and_reference):
    reference = adapter_and_reference[1]
    answers = [answer(client, request) for request in requests()]
    assert answers == reference
    assert all(answers), answers
    assert "Paris" in answers[-1]  # the text-only turn is the plain SmolLM2: its weights loaded right


def test_concurrent_answers_equal_transformers(client, adapter_and_reference):
    reference = adapter_and_reference[1]
    jobs = [index % len(reference) for index in range(12)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(answer, client, requests()[index]) for index in jobs]
        _, not_done = concurrent.futures.wait(futures, timeout=600)
    assert not not_done, f"{len(not_done)} requests did not finish in 600 s"
    assert [future.result() for future in futures] == [reference[index] for index in jobs]
