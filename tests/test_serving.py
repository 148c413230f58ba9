"""vLLM serving (`serving/`): one OpenAI-compatible server on 127.0.0.1 for this module, on a randomised adapter over a
tiny Whisper and a tiny Qwen2 (head_dim 32), driven with the official `openai` client, and compared with what the
transformers pipeline and `model.generate` answer in the project's own environment. Runs in the serving
environment (`.venv-serving`, built by scripts/setup_serving.sh); skipped elsewhere, with the reason."""

import concurrent.futures
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile
from conftest import ROOT, SHARED, speechlike
from serving_support import (
    REQUEST_TIMEOUT_S,
    build_and_answer,
    input_audio,
    reference_python,
    require_vllm,
    vllm_server,
    wav_bytes,
)

MAX_TOKENS = 12
SIZE_LIMIT_MB = 2  # the server's upload limit here (VLLM_MAX_AUDIO_CLIP_FILESIZE_MB), so oversize files stay small
CLIPS = {  # name: (seconds, sampling rate, channels)
    "short.wav": (1.0, 16000, 1),
    "medium.wav": (4.0, 16000, 1),
    "long.wav": (12.0, 16000, 1),
    "two_windows.wav": (35.0, 16000, 1),
    "stereo.flac": (2.5, 44100, 2),
}


@pytest.fixture(scope="module")
def openai():
    return require_vllm()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="module")
def clips(workdir):
    paths = {}
    for index, (name, (seconds, rate, channels)) in enumerate(CLIPS.items()):
        samples = speechlike(seconds, rate, seed=index)
        if channels == 2:
            samples = np.stack([samples, speechlike(seconds, rate, seed=index + 10)], axis=1)
        paths[name] = workdir / name
        soundfile.write(paths[name], samples, rate)
    paths["silence.wav"] = workdir / "silence.wav"
    soundfile.write(paths["silence.wav"], np.zeros(16000, dtype=np.float32), 16000)
    return paths


@pytest.fixture(scope="module")
def adapter_and_reference(openai, workdir, clips):
    """The tiny randomised adapter, and `{json-encoded request: text}` from the transformers side for every request
    the tests send."""
    requests = [transcription_request(clips[name]) for name in CLIPS]
    requests += [transcription_request(clips["medium.wav"], prompt="what is said in this recording")]
    requests += [transcription_request(clips["medium.wav"], language="fr")]
    requests += [transcription_request(clips["silence.wav"], prompt="what is said in this recording")]
    requests += [transcription_request(clips[name], max_new_tokens=None) for name in ("medium.wav", "stereo.flac")]
    requests += [chat_request(messages) for messages in conversations(clips).values()]
    adapter, texts = build_and_answer(workdir / "tiny", requests)
    return adapter, {json.dumps(request, sort_keys=True): text for request, text in zip(requests, texts)}


@pytest.fixture(scope="module")
def adapter(adapter_and_reference):
    return adapter_and_reference[0]


@pytest.fixture(scope="module")
def reference(adapter_and_reference):
    return adapter_and_reference[1]


@pytest.fixture(scope="module")
def client(openai, adapter, workdir):
    log = workdir / "server.log"
    with vllm_server(adapter, log, "--max-model-len", "4096", env={"VLLM_MAX_AUDIO_CLIP_FILESIZE_MB": str(SIZE_LIMIT_MB)}) as url:
        yield openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)


@pytest.fixture(scope="module")
def model_name(client):
    return client.models.list().data[0].id


def transcription_request(path, prompt=None, language=None, max_new_tokens=MAX_TOKENS) -> dict:
    return {"kind": "transcribe", "audio": str(path), "prompt": prompt, "language": language, "max_new_tokens": max_new_tokens}


def chat_request(messages) -> dict:
    return {"kind": "chat", "messages": messages, "max_new_tokens": MAX_TOKENS}


def conversations(clips) -> dict[str, list]:
    """Conversations as transformers takes them (audio parts by path)."""
    return {
        "one clip": [
            {"role": "user", "content": [{"type": "audio", "path": str(clips["short.wav"])}, {"type": "text", "text": "transcribe the audio please"}]},
        ],
        "several clips and turns": [
            {"role": "system", "content": "what is said in this recording"},
            {"role": "user", "content": [
                {"type": "text", "text": "and so"}, {"type": "audio", "path": str(clips["medium.wav"])},
                {"type": "text", "text": "the quick brown fox"}, {"type": "audio", "path": str(clips["stereo.flac"])},
            ]},
            {"role": "assistant", "content": "it was the first great sorrow"},
            {"role": "user", "content": [{"type": "audio", "path": str(clips["two_windows.wav"])}]},
        ],
        "text only": [{"role": "user", "content": "the quick brown fox jumps over the lazy dog"}],
    }  # fmt: skip


def to_openai(messages: list) -> list:
    """The same conversation as an OpenAI client sends it (audio as base64 `input_audio` parts)."""
    converted = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [input_audio(part["path"]) if part["type"] == "audio" else part for part in content]
        converted.append({**message, "content": content})
    return converted


def expected(reference, request) -> str:
    return reference[json.dumps(request, sort_keys=True)]


def transcribe(client, model_name, path, max_new_tokens=MAX_TOKENS, **kwargs) -> str:
    extra_body = {} if max_new_tokens is None else {"max_completion_tokens": max_new_tokens}
    with open(path, "rb") as file:
        return client.audio.transcriptions.create(
            model=model_name, file=file, extra_body=extra_body, **kwargs
        ).text


def chat(client, model_name, messages) -> str:
    response = client.chat.completions.create(model=model_name, messages=to_openai(messages), max_tokens=MAX_TOKENS)
    return response.choices[0].message.content


def test_transcriptions_equal_transformers(client, model_name, clips, reference):
    texts = {name: transcribe(client, model_name, clips[name]) for name in CLIPS}
    assert texts == {name: expected(reference, transcription_request(clips[name])) for name in CLIPS}
    assert len(set(texts.values())) >= 3, f"the audio should change the answer: {texts}"


def test_transcripts_without_a_token_limit_stop_where_the_pipeline_stops(client, model_name, clips, reference):
    for name in ("medium.wav", "stereo.flac"):
        unbounded = expected(reference, transcription_request(clips[name], max_new_tokens=None))
        assert len(unbounded) > len(expected(reference, transcription_request(clips[name]))), name
        assert transcribe(client, model_name, clips[name], max_new_tokens=None) == unbounded, name


def test_transcription_prompt_and_language_equal_transformers(client, model_name, clips, reference):
    prompted = transcribe(client, model_name, clips["medium.wav"], prompt="what is said in this recording")
    assert prompted == expected(reference, transcription_request(clips["medium.wav"], prompt="what is said in this recording"))
    french = transcribe(client, model_name, clips["medium.wav"], language="fr")
    assert french == expected(reference, transcription_request(clips["medium.wav"], language="fr"))
    assert len({prompted, french, expected(reference, transcription_request(clips["medium.wav"]))}) == 3


def test_chat_with_audio_equals_transformers(client, model_name, clips, reference):
    for name, messages in conversations(clips).items():
        assert chat(client, model_name, messages) == expected(reference, chat_request(messages)), name


def test_streaming_gives_the_same_text(client, model_name, clips, reference):
    messages = conversations(clips)["one clip"]
    stream = client.chat.completions.create(
        model=model_name, messages=to_openai(messages), max_tokens=MAX_TOKENS, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([piece for piece in pieces if piece]) > 1
    assert "".join(pieces) == expected(reference, chat_request(messages))

    with open(clips["long.wav"], "rb") as file:
        stream = client.audio.transcriptions.create(
            model=model_name, file=file, stream=True, extra_body={"max_completion_tokens": MAX_TOKENS}
        )
        deltas = [event.choices[0]["delta"]["content"] for event in stream if event.choices]
    assert "".join(deltas).strip() == expected(reference, transcription_request(clips["long.wav"]))


def test_64_concurrent_mixed_requests_all_complete_with_the_same_texts(client, model_name, clips, reference):
    chats = list(conversations(clips).values())[:2]
    jobs = []
    for index in range(64):
        name = list(CLIPS)[index % len(CLIPS)]
        if index % 3 == 2:
            messages = chats[(index // 3) % 2]
            jobs.append((lambda m=messages: chat(client, model_name, m), chat_request(messages)))
        else:
            jobs.append((lambda n=name: transcribe(client, model_name, clips[n]), transcription_request(clips[name])))
    with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
        futures = [pool.submit(job) for job, _ in jobs]
        _, not_done = concurrent.futures.wait(futures, timeout=600)
    assert not not_done, f"{len(not_done)} of 64 requests did not finish in 600 s"
    answers = [future.result() for future in futures]
    assert answers == [expected(reference, request) for _, request in jobs]


def test_silence_is_gated_unless_a_prompt_is_given(client, model_name, clips, reference):
    assert transcribe(client, model_name, clips["silence.wav"]) == ""
    with open(clips["silence.wav"], "rb") as file:
        stream = client.audio.transcriptions.create(model=model_name, file=file, stream=True)
        assert [event.choices[0]["delta"]["content"] for event in stream if event.choices] == [""]
    prompted = transcribe(client, model_name, clips["silence.wav"], prompt="what is said in this recording")
    assert prompted == expected(reference, transcription_request(clips["silence.wav"], prompt="what is said in this recording"))
    assert prompted != ""


def test_bad_uploads_get_clear_4xx_errors_and_the_server_keeps_serving(openai, client, model_name, clips, reference):
    good = wav_bytes(speechlike(1.0))
    oversize = wav_bytes(speechlike(70.0))  # 2.2 MB of 16-bit PCM
    assert len(oversize) > SIZE_LIMIT_MB * 2**20
    uploads = {
        "empty.wav": (b"", 400, "empty"),
        "noise.mp3": (np.random.default_rng(0).bytes(4096), 400, "not a decodable audio file"),
        "cut.wav": (good[:2000], 400, "truncated"),
        "picture.png": (b"\x89PNG\r\n\x1a\n" + bytes(64), 400, "not a decodable audio file"),
        "big.wav": (oversize, 413, "limit"),
    }
    for name, (data, status, reason) in uploads.items():
        with pytest.raises(openai.APIStatusError) as error:
            client.audio.transcriptions.create(model=model_name, file=(name, data))
        assert error.value.status_code == status, name
        assert name in error.value.message and reason in error.value.message, error.value.message

    with pytest.raises(openai.BadRequestError, match="verbose_json"):
        client.audio.transcriptions.create(model=model_name, file=("ok.wav", good), response_format="verbose_json")
    with pytest.raises(openai.BadRequestError):
        bad_audio = {"type": "input_audio", "input_audio": {"data": "bm90IGF1ZGlv", "format": "wav"}}
        client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": [bad_audio]}], max_tokens=4)
    not_a_form = urllib.request.Request(
        f"{client.base_url}audio/transcriptions", data=b'{"file": "x"}', headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(not_a_form, timeout=REQUEST_TIMEOUT_S)
    assert 400 <= error.value.code < 500

    assert transcribe(client, model_name, clips["short.wav"]) == expected(reference, transcription_request(clips["short.wav"]))


def test_audio_token_count_is_the_processors(openai, processor):
    from serving.vllm_steermoe import count_audio_tokens

    for seconds in (0.01, 1.0, 29.99, 30.0, 30.01, 75.0):
        samples = np.zeros(int(seconds * 16000), dtype=np.float32)
        out = processor(text=processor.audio_token, audio=samples, sampling_rate=16000)
        written = int((out["input_ids"] == processor.audio_token_id).sum())
        assert count_audio_tokens(processor, samples.shape[0]) == written, seconds


def test_chat_template_renders_content_parts_as_the_processor(processor, clips):
    from serving.launch import flatten_content_parts

    template = flatten_content_parts(processor.tokenizer.chat_template, processor.audio_token)
    for name, messages in conversations(clips).items():
        as_vllm_sends_them = [  # vLLM's "openai" content format: lists of parts, audio parts without data
            {**message, "content": [{"type": "text", "text": message["content"]}]}
            if isinstance(message["content"], str)
            else {**message, "content": [{"type": part["type"], **({"text": part["text"]} if part["type"] == "text" else {})} for part in message["content"]]}
            for message in messages
        ]  # fmt: skip
        rendered = processor.tokenizer.apply_chat_template(
            as_vllm_sends_them, chat_template=template, add_generation_prompt=True, tokenize=False
        )
        assert rendered == processor.apply_chat_template(messages, add_generation_prompt=True), name


def test_launcher_adds_steermoe_defaults_and_keeps_user_arguments(openai, adapter, tmp_path):
    from serving.launch import MIDDLEWARE, vllm_arguments

    arguments = vllm_arguments(adapter, ["--port", "8123"], str(tmp_path))
    assert arguments[arguments.index("--host") + 1] == "127.0.0.1"
    assert arguments[arguments.index("--chat-template-content-format") + 1] == "openai"
    template = tmp_path / "chat_template.jinja"
    assert arguments[arguments.index("--chat-template") + 1] == str(template) and template.is_file()
    assert arguments[arguments.index("--middleware") + 1] == MIDDLEWARE
    assert json.loads(arguments[arguments.index("--override-generation-config") + 1]) == {"temperature": 0.0}
    assert arguments[-2:] == ["--port", "8123"]

    custom = vllm_arguments(adapter, ["--host", "0.0.0.0", "--override-generation-config", "{}"], str(tmp_path))
    assert custom.count("--host") == 1 and custom.count("--override-generation-config") == 1


def test_adapters_vllm_cannot_serve_are_refused_before_vllm_starts(adapter, tmp_path):
    from serving.launch import vllm_arguments

    compressed = tmp_path / "compressed"
    shutil.copytree(adapter, compressed)
    config = json.loads((compressed / "config.json").read_text())
    (compressed / "config.json").write_text(json.dumps({**config, "ctc_loss_coef": 1.0, "frame_compression": "ctc_argmax"}))
    with pytest.raises(NotImplementedError, match="frame_compression='ctc_argmax'.*Serve it with transformers"):
        vllm_arguments(str(compressed), [], str(tmp_path))


def test_throughput_benchmark_runs_against_the_server(client, adapter, tmp_path):
    if not (SHARED / "audio").is_dir():
        pytest.skip(f"{SHARED / 'audio'} is absent: the benchmark cuts its clips from those recordings")
    output = tmp_path / "result.json"
    command = [sys.executable, str(ROOT / "bench" / "serving_throughput.py"), "--adapter", adapter, "--server_url",
               str(client.base_url), "--reference_python", reference_python(), "--clips", "3", "--concurrency", "1", "3",
               "--batch_sizes", "1", "2", "--max_new_tokens", "2", "--rounds", "1", "--output", str(output)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(output.read_text())["rows"]
    assert [row["system"] for row in rows] == [
        "transformers pipeline, batch 1", "transformers pipeline, batch 2", "vLLM, concurrency 1", "vLLM, concurrency 3"
    ]
    assert all(row["requests_per_s"] > 0 and row["latency_p90_s"] >= row["latency_p50_s"] for row in rows)
    assert all(row["same_texts"] == "3/3" for row in rows[2:])
    assert "| vLLM, concurrency 3 |" in result.stdout


def test_model_card_tells_how_to_serve_with_vllm(model):
    from hub_card.publish import render_model_card

    card = render_model_card(model, "my-org/steermoe-test")
    assert "python -m serving my-org/steermoe-test --port 8000" in card.text
