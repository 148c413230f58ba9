"""The web demo (space/app.py): its handlers in process, then the app started on 127.0.0.1 as `python space/app.py`
and driven with gradio_client and with a headless Chromium."""

import ast
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import gradio
import huggingface_hub
import numpy as np
import pytest
import soundfile
from adapters import save_readable_adapter
from conftest import ROOT, speechlike

sys.path.insert(0, str(ROOT / "space"))
import app as space_app  # noqa: E402
from gradio import Error as GradioError  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


MAX_NEW_TOKENS = 24
MAX_SECONDS = 70
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
]  # fmt: skip


@pytest.fixture(scope="module")
def adapter(backbone_dirs, tmp_path_factory):
    return save_readable_adapter(tmp_path_factory.mktemp("space") / "adapter", backbone_dirs)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    paths = {name: folder / name for name in ("speech.wav", "other.flac", "long.wav", "too_long.wav", "corrupt.wav",
                                              "empty.wav", "silence.wav")}  # fmt: skip
    soundfile.write(paths["speech.wav"], speechlike(2.0, seed=1), 16000)
    soundfile.write(paths["other.flac"], speechlike(1.5, 44100, seed=2), 44100)
    # 65 s: 20 s of speech, 40 s of silence (a segment of it is gated out), 5 s of speech.
    long = np.concatenate([speechlike(20.0, seed=3), np.zeros(40 * 16000, np.float32), speechlike(5.0, seed=5)])
    soundfile.write(paths["long.wav"], long, 16000)
    soundfile.write(paths["too_long.wav"], speechlike(MAX_SECONDS + 5.0, seed=4), 16000)
    paths["corrupt.wav"].write_bytes(b"RIFF\x00\x00garbage, not a wave file" * 20)
    soundfile.write(paths["empty.wav"], np.zeros(0, np.float32), 16000)
    soundfile.write(paths["silence.wav"], np.zeros(16000, np.float32), 16000)
    return paths


@pytest.fixture(scope="module")
def offline(adapter):
    """The offline transcript of a clip: the ASR pipeline on the same adapter (what steermoe-transcribe prints)."""
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(adapter), trust_remote_code=True)
    return lambda clip: asr(str(clip), max_new_tokens=MAX_NEW_TOKENS)["text"]


@pytest.fixture(scope="module")
def demo():
    return space_app.SteerMoEDemo(max_seconds=MAX_SECONDS, max_new_tokens=MAX_NEW_TOKENS)


class RecordedProgress:
    def __init__(self):
        self.calls = []

    def __call__(self, progress, desc=None, total=None, unit="steps"):
        self.calls.append((progress, desc))


def test_handlers_stream_the_transcript_and_plot_the_router(demo, adapter, clips, offline):
    outputs = list(demo.run(str(adapter), str(clips["speech.wav"]), "Transcribe", "", [], progress=RecordedProgress()))
    texts = [text for text, *_ in outputs]
    assert texts[-1] == offline(clips["speech.wav"]) and len(texts[-1].split()) >= 2
    streamed = [text for text in texts[:-1] if text]
    assert len(set(streamed)) >= 2 and all(b.startswith(a) for a, b in zip(streamed, streamed[1:]))
    figure = outputs[-1][1]
    assert figure is not None and figure.axes[0].get_ylabel() == "encoder layer"
    loaded = demo.load(str(adapter))
    usage = demo.router_usage(loaded, *demo.read_clip(loaded, clips["speech.wav"]))
    assert usage.shape == (loaded.model.config.audio_num_layers, loaded.model.config.num_experts)
    np.testing.assert_allclose(usage.sum(axis=1), 1.0, atol=1e-5)
    assert (usage > 0).all() and not np.allclose(usage, usage[0, 0])


def test_without_a_token_limit_transcripts_keep_the_pipelines_length_bound(adapter, clips):
    from transformers import pipeline

    demo = space_app.SteerMoEDemo(max_seconds=MAX_SECONDS)
    outputs = list(demo.run(str(adapter), str(clips["speech.wav"]), "Transcribe", "", [], progress=RecordedProgress()))
    loaded = demo.load(str(adapter))
    samples, rate = demo.read_clip(loaded, clips["speech.wav"])
    inputs = loaded.processor.apply_transcription_request(samples, sampling_rate=rate)
    bound = loaded.processor.transcript_token_bound(int((inputs["input_ids"] == loaded.processor.audio_token_id).sum()))
    assert bound < loaded.model.generation_config.max_new_tokens  # the bound, not the saved limit, is what stops it
    transcript = demo.transcribe(loaded, samples, rate)
    assert 0 < len(loaded.processor.tokenizer(transcript, add_special_tokens=False)["input_ids"]) <= bound + 1
    asr = pipeline("automatic-speech-recognition", model=str(adapter), trust_remote_code=True)
    assert outputs[-1][0] == transcript == asr(str(clips["speech.wav"]))["text"]


def test_long_clip_goes_segment_by_segment_with_progress(demo, adapter, clips):
    progress = RecordedProgress()
    outputs = list(demo.run(str(adapter), str(clips["long.wav"]), "Transcribe", "", [], progress=progress))
    loaded = demo.load(str(adapter))
    samples, rate = demo.read_clip(loaded, clips["long.wav"])
    # Cut at pauses as the pipeline cuts (at most 30 s each); the silent stretch is gated out.
    pieces = [samples[start:end] for start, end in loaded.processor.speech_segments(samples, rate)]
    spoken = [piece for piece in pieces if loaded.processor.has_speech(piece, rate)]
    assert len(pieces) > len(spoken) >= 2
    count = len(spoken)
    descs = [f"Segment {index + 1} of {count}" for index in range(count)]
    assert [desc for _, desc in progress.calls if desc and desc.startswith("Segment")] == descs
    assert [value for value, desc in progress.calls if desc == descs[-1]] == [(count - 1, count)]
    assert outputs[-1][0] == " ".join(demo.transcribe(loaded, piece, rate) for piece in spoken)


def test_silence_gives_no_transcript_and_bad_requests_give_messages(demo, adapter, clips):
    outputs = list(
        demo.run(str(adapter), str(clips["silence.wav"]), "Transcribe", "", [], progress=RecordedProgress())
    )
    assert outputs[-1][0] == ""
    with pytest.raises(GradioError, match="Type the question"):
        list(demo.run(str(adapter), str(clips["speech.wav"]), "Ask a question", " ", [], progress=RecordedProgress()))
    with pytest.raises(GradioError, match="Record or upload"):
        list(demo.run(str(adapter), None, "Transcribe", "", [], progress=RecordedProgress()))
    with pytest.raises(GradioError, match="Could not load the adapter"):
        list(
            demo.run(
                str(clips["speech.wav"].parent / "missing"), None, "Transcribe", "", [], progress=RecordedProgress()
            )
        )


def test_chat_keeps_the_conversation_and_needs_a_chat_template(demo, adapter, clips, backbone_dirs, tmp_path):
    *_, (answer, _, view, history) = demo.run(
        str(adapter), str(clips["speech.wav"]), "Chat", "What is said?", [], progress=RecordedProgress()
    )
    assert (
        answer
        and [m["role"] for m in history] == ["user", "assistant"]
        and view[0]["content"].endswith("What is said?")
    )
    *_, (second, _, view, history) = demo.run(
        str(adapter), str(clips["other.flac"]), "Chat", "", history, progress=RecordedProgress()
    )
    assert second and len(history) == 4 and view[-1] == {"role": "assistant", "content": second}
    # The same adapter without a chat template (a base LLM) offers no chat.
    plain = save_readable_adapter(tmp_path / "plain", backbone_dirs, chat=False)
    with pytest.raises(GradioError, match="no chat template"):
        list(demo.run(str(plain), str(clips["speech.wav"]), "Chat", "", [], progress=RecordedProgress()))


def test_adapter_without_router_has_no_plot(demo, backbone_dirs, clips, tmp_path):
    linear = save_readable_adapter(tmp_path / "linear", backbone_dirs, aligner_type="linear")
    *_, (text, figure, _, _) = demo.run(str(linear), str(clips["speech.wav"]), "Transcribe", "", [],
                                        progress=RecordedProgress())  # fmt: skip
    assert text and figure is None


def test_live_microphone_handlers(demo, adapter, clips, offline):
    samples, rate = soundfile.read(clips["speech.wav"], dtype="int16")
    state, shown = None, []
    for start in range(0, len(samples), rate // 2):  # what the browser sends every 0.5 s
        committed, tentative, state = demo.live_step(str(adapter), (rate, samples[start : start + rate // 2]), state)
        shown.append(committed)
    final, tentative, state = demo.live_stop(state)
    assert state is None and tentative == "" and final
    assert all(b.startswith(a) for a, b in zip(shown, shown[1:] + [final]))
    # The end of the stream decodes the whole buffer (the whole clip here) and commits what was not yet committed.
    agreed = len(shown[-1].split())
    assert final.split()[agreed:] == offline(clips["speech.wav"]).split()[agreed:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(adapter, tmp_path_factory):
    """`python space/app.py` on 127.0.0.1 (a free port), serving the tiny adapter."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {**os.environ, "STEERMOE_ADAPTER": str(adapter), "GRADIO_SERVER_PORT": str(port),
           "STEERMOE_MAX_SECONDS": str(MAX_SECONDS), "STEERMOE_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(folder / "gradio")}  # fmt: skip
    log = open(folder / "server.log", "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "space" / "app.py")], env=env, cwd=folder, stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the app did not start: {(folder / 'server.log').read_text()[-3000:]}") from None
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_client_gets_the_streamed_transcript_errors_for_bad_uploads_and_the_app_stays_up(
    server, adapter, clips, offline
):
    client = Client(server, verbose=False)
    expected = offline(clips["speech.wav"])

    def run(clip, task="Transcribe", question=""):
        job = client.submit(str(adapter), handle_file(str(clip)), task, question, api_name="/run")
        result = job.result(timeout=300)
        return job.outputs(), result

    outputs, (text, plot, _) = run(clips["speech.wav"])
    streamed = [answer for answer, *_ in outputs]
    assert text == expected and len({s for s in streamed if s}) >= 3  # partial texts arrived before the last
    assert plot is not None
    bad_uploads = {
        "corrupt.wav": "corrupt.wav: not a decodable audio file",
        "empty.wav": "empty.wav: the file holds no audio samples",
        "too_long.wav": f"too_long.wav lasts {MAX_SECONDS + 5:.1f} s; this demo takes clips up to {MAX_SECONDS} s",
    }
    for clip, message in bad_uploads.items():
        with pytest.raises(AppError, match=message):
            run(clips[clip])
    assert run(clips["speech.wav"])[1][0] == expected  # the app is still up and gives the same answer


def test_concurrent_users_are_queued_not_dropped(server, adapter, clips, offline):
    clients = [Client(server, verbose=False) for _ in range(3)]
    jobs = [c.submit(str(adapter), handle_file(str(clips[name])), "Transcribe", "", api_name="/run")
            for c, name in zip(clients, ["speech.wav", "other.flac", "speech.wav"])]  # fmt: skip
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda job: job.result(timeout=300)[0], jobs))
    assert results == [offline(clips["speech.wav"]), offline(clips["other.flac"]), offline(clips["speech.wav"])]


def chromium(tmp_path, *flags):
    """Selenium driving Debian's headless Chromium; skips where it is not installed."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip(
            "Chromium and ChromeDriver are not installed (apt-get install chromium chromium-driver; .ci/run does)"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for a driver on the network
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, *flags, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def visible(browser, xpath: str) -> list:
    from selenium.webdriver.common.by import By

    return [element for element in browser.find_elements(By.XPATH, xpath) if element.is_displayed()]


def test_browser_uploads_a_clip_and_sees_the_streamed_transcript(server, clips, offline, tmp_path):
    browser = chromium(tmp_path)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        browser.get(server)
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: "aligner parameters (layerwise); chat available" in b.page_source)  # loaded on opening
        upload = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "input[type=file]"))[0]
        upload.send_keys(str(clips["speech.wav"]))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "audio, #waveform, .waveform-container"))
        visible(browser, "//button[normalize-space()='Run']")[0].click()
        expected = offline(clips["speech.wav"])
        answer = lambda b: b.find_element(By.CSS_SELECTOR, "#answer textarea").get_attribute("value")  # noqa: E731
        wait.until(lambda b: answer(b) == expected)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#router-plot img"))
        browser.save_screenshot(str(tmp_path / "space.png"))
    finally:
        browser.quit()
    assert (tmp_path / "space.png").stat().st_size > 10_000


def test_browser_live_microphone_transcribes_while_recording(server, clips, tmp_path):
    """Chromium's fake microphone plays a clip into the Live tab: text appears while it records (tentative until two
    decodings agree; the random tiny model rarely agrees with itself) and all of it is committed when it stops."""
    microphone = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={clips['long.wav']}"]  # fmt: skip
    browser = chromium(tmp_path, *microphone)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        browser.get(server)
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: visible(b, "//button[normalize-space()='Live microphone']"))[0].click()
        wait.until(lambda b: visible(b, "//button[normalize-space()='Record']"))[0].click()
        text = lambda b, box: b.find_element(By.CSS_SELECTOR, f"#live-{box} textarea").get_attribute("value")  # noqa: E731
        wait.until(lambda b: text(b, "tentative") or text(b, "transcript"))  # words arrive while it records
        browser.save_screenshot(str(tmp_path / "live.png"))
        visible(browser, "//button[normalize-space()='Stop']")[0].click()
        wait.until(lambda b: text(b, "transcript") and not text(b, "tentative"))  # the rest is committed at the end
    finally:
        browser.quit()


def imported_packages(path) -> set[str]:
    """Top-level packages a module imports, outside `try:` blocks (optional imports), as transformers checks
    remote code."""
    tree = ast.parse(path.read_text())
    optional = {id(node) for block in ast.walk(tree) if isinstance(block, ast.Try) for node in ast.walk(block)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names)


def test_space_folder_is_a_space_with_its_requirements():
    metadata = huggingface_hub.metadata_load(ROOT / "space" / "README.md")
    assert metadata["sdk"] == "gradio" and (ROOT / "space" / metadata["app_file"]).is_file()
    assert metadata["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0]
    assert len(metadata["short_description"]) <= 60
    requirements = {
        re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower()
        for line in (ROOT / "space" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    local = {path.stem for path in (ROOT / "space").glob("*.py")} | {path.stem for path in ROOT.glob("*_steermoe.py")}
    # What the app imports, and what the model's code (downloaded with the adapter) imports.
    code = [*(ROOT / "space").glob("*.py"), *(ROOT / f"{kind}_steermoe.py" for kind in
                                             ("configuration", "modeling", "processing", "pipeline"))]  # fmt: skip
    needed = set().union(*(imported_packages(path) for path in code)) - local - {"gradio"}  # gradio: sdk_version
    assert needed and needed <= requirements, f"missing from space/requirements.txt: {sorted(needed - requirements)}"
