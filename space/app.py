# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""SteerMoE web demo (Gradio): transcribe, ask about or chat with a clip, text streamed as it is generated, the
router's expert usage per layer for that clip, and live transcription from the microphone.

    python space/app.py          # http://127.0.0.1:7860, the adapter of outputs/demo when present

The folder is a Hugging Face Space as it is (README.md holds the Space's metadata). Settings, from the environment:
`STEERMOE_ADAPTER` (folder or Hub id loaded first), `STEERMOE_MAX_SECONDS` (longest clip accepted, 300),
`STEERMOE_MAX_NEW_TOKENS` (default: the adapter's generation config), `STEERMOE_DEVICE` (default: cuda when
available), `GRADIO_SERVER_NAME` (127.0.0.1 unless set, as Spaces do) and `GRADIO_SERVER_PORT` (7860).
"""

import importlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from matplotlib.figure import Figure
from transformers import AutoModel, AutoProcessor, TextIteratorStreamer

from live_transcription import LocalAgreementTranscriber


logger = logging.getLogger("steermoe.space")

TASKS = ("Transcribe", "Ask a question", "Chat")
SEGMENT_SECONDS = 30
MAX_UPLOAD = "100mb"


def default_adapter() -> str:
    """`STEERMOE_ADAPTER`, else the demo's trained adapter (outputs/demo beside this folder) when present."""
    if os.environ.get("STEERMOE_ADAPTER"):
        return os.environ["STEERMOE_ADAPTER"]
    local = Path(__file__).resolve().parent.parent / "outputs" / "demo"
    return str(local) if (local / "config.json").is_file() else ""


@dataclass
class LoadedAdapter:
    """A loaded adapter: the model, its processor, and the model's own processing module (its `load_audio`)."""

    name: str
    model: torch.nn.Module
    processor: object
    processing: object

    @property
    def can_chat(self) -> bool:
        """Chat needs an instruct LLM, i.e. a tokenizer with a chat template."""
        return bool(self.processor.chat_template or self.processor.tokenizer.chat_template)

    def describe(self) -> str:
        config = self.model.config
        aligner = self.model.get_parameter_report()["aligner"]["trainable"]
        chat = "chat available" if self.can_chat else "no chat template (transcribe and questions only)"
        return (
            f"**{self.name}**: encoder `{config.audio_model_id}`, LLM `{config.text_model_id}`, "
            f"{aligner:,} aligner parameters ({config.aligner_type}); {chat}."
        )


class SteerMoEDemo:
    """What the app runs: one adapter loaded at a time (the app's queue runs one request at a time)."""

    def __init__(self, max_seconds: float = 300.0, max_new_tokens: int | None = None, device: str | None = None):
        self.max_seconds = max_seconds
        self.max_new_tokens = max_new_tokens
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._loaded: LoadedAdapter | None = None
        self._lock = threading.Lock()

    def load(self, adapter: str) -> LoadedAdapter:
        """The adapter (folder or Hub id), loaded with its backbones unless it is the one already loaded."""
        adapter = (adapter or "").strip()
        if not adapter:
            raise gr.Error("Enter an adapter: a folder saved by SteerMoE or a Hub id such as my-org/steermoe-demo.")
        with self._lock:
            if self._loaded is None or self._loaded.name != adapter:
                self._loaded = None
                try:
                    dtype = torch.float32 if self.device == "cpu" else "auto"  # half precision is slow on CPUs
                    model = (
                        AutoModel.from_pretrained(adapter, trust_remote_code=True, dtype=dtype).to(self.device).eval()
                    )
                    processor = AutoProcessor.from_pretrained(adapter, trust_remote_code=True)
                except Exception as error:  # any loading failure is the user's to see, the app stays up
                    raise gr.Error(f"Could not load the adapter {adapter!r}: {error}") from error
                processing = importlib.import_module(type(processor).__module__)
                self._loaded = LoadedAdapter(adapter, model, processor, processing)
            return self._loaded

    def read_clip(self, loaded: LoadedAdapter, path) -> tuple[np.ndarray, int]:
        """An uploaded or recorded file as float32 mono `(samples,)` and its rate; a clear error if it is not audio,
        empty or longer than `max_seconds`."""
        if path is None:
            raise gr.Error("Record or upload a clip first.")
        name = Path(path).name
        try:
            samples, rate = loaded.processing.load_audio(str(path))
        except (OSError, ValueError) as error:
            raise gr.Error(str(error).replace(str(path), name)) from error
        seconds = samples.shape[0] / rate
        if seconds > self.max_seconds:
            raise gr.Error(f"{name} lasts {seconds:.1f} s; this demo takes clips up to {self.max_seconds:g} s.")
        return (samples.mean(axis=1) if samples.ndim == 2 else samples).astype(np.float32), rate

    def _generate_kwargs(self, loaded: LoadedAdapter, transcription_ids: torch.Tensor | None = None) -> dict:
        """`generate` options: the demo's `max_new_tokens` when set, else for a transcription (its prompt ids given)
        the transcript length bound that the pipeline applies."""
        kwargs = {"tokenizer": loaded.processor.tokenizer}
        if self.max_new_tokens is not None:
            kwargs["max_new_tokens"] = self.max_new_tokens
        elif transcription_ids is not None:
            kwargs["stopping_criteria"] = [loaded.processor.transcript_length_criteria(transcription_ids)]
        return kwargs

    def stream(self, loaded: LoadedAdapter, inputs, transcription: bool = False):
        """Generate from processor `inputs`, yielding the answer so far each time the streamer has new text
        (bounded by the transcript length bound when `transcription`)."""
        generate_kwargs = self._generate_kwargs(loaded, inputs["input_ids"] if transcription else None)
        streamer = TextIteratorStreamer(loaded.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors = []

        def generate():
            try:
                loaded.model.generate(**inputs.to(loaded.model.device), streamer=streamer, **generate_kwargs)
            except Exception as error:  # reported below, after the streamer is released
                errors.append(error)
                streamer.end()

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text
        thread.join()
        if errors:
            raise gr.Error(f"Generation failed: {errors[0]}") from errors[0]

    def transcribe(self, loaded: LoadedAdapter, samples: np.ndarray, sampling_rate: int) -> str:
        """The offline transcript of one clip (the live mode's decoder)."""
        inputs = loaded.processor.apply_transcription_request(samples, sampling_rate=sampling_rate)
        inputs = inputs.to(loaded.model.device)
        out = loaded.model.generate(**inputs, **self._generate_kwargs(loaded, inputs["input_ids"]))
        return loaded.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[
            0
        ].strip()

    @torch.no_grad()
    def router_usage(self, loaded: LoadedAdapter, samples: np.ndarray, sampling_rate: int) -> np.ndarray | None:
        """Mean routing probability of each expert at each steered layer over the clip's frames, `(layers,
        experts)` (rows sum to 1); `None` for an adapter without a router."""
        if not loaded.model.aligner.steered_layers:
            return None
        step = SEGMENT_SECONDS * sampling_rate
        totals, frames = None, 0
        for start in range(0, samples.shape[0], step):
            inputs = loaded.processor.apply_transcription_request(
                samples[start : start + step], sampling_rate=sampling_rate
            )
            output = loaded.model(**inputs.to(loaded.model.device), output_router_logits=True, logits_to_keep=1)
            sums = torch.stack([logits.float().softmax(-1).sum(0) for logits in output.router_logits]).cpu()
            totals = sums if totals is None else totals + sums
            frames += output.router_logits[0].shape[0]
        return (totals / frames).numpy()

    def run(self, adapter, audio_path, task, question, history, progress=gr.Progress()):
        """The Run button: yields (answer so far, router usage plot, chat messages, chat history)."""
        history = list(history or [])
        chat_view = _chat_view(history)
        progress(0, desc="Loading the adapter")
        loaded = self.load(adapter)
        samples, rate = self.read_clip(loaded, audio_path)
        question = (question or "").strip()
        if task == "Ask a question" and not question:
            raise gr.Error("Type the question about the clip.")
        if task == "Chat" and not loaded.can_chat:
            raise gr.Error(f"{loaded.name} has no chat template: chat needs an adapter on an instruct LLM.")
        if task not in TASKS:
            raise gr.Error(f"Unknown task {task!r}: choose one of {', '.join(TASKS)}.")
        answer = ""
        if task == "Transcribe":
            # Cut at pauses into segments the adapter handles (as the pipeline and the CLI cut them), each through
            # the no-speech gate (a silent segment gives no text).
            segments = [samples[start:end] for start, end in loaded.processor.speech_segments(samples, rate)]
            spoken = [segment for segment in segments if loaded.processor.has_speech(segment, rate)]
            if not spoken:
                gr.Info("No speech found in the clip (it is silent or too short): no transcript.")
            for index, segment in enumerate(spoken):
                if len(spoken) > 1:
                    progress((index, len(spoken)), desc=f"Segment {index + 1} of {len(spoken)}", unit="segments")
                inputs = loaded.processor.apply_transcription_request(segment, sampling_rate=rate)
                done = answer.rstrip() + " " if answer else ""
                for text in self.stream(loaded, inputs, transcription=True):
                    answer = done + text.lstrip()
                    yield answer, gr.skip(), chat_view, history
        elif task == "Ask a question":
            inputs = loaded.processor.apply_transcription_request(samples, prompt=question, sampling_rate=rate)
            for answer in self.stream(loaded, inputs):
                yield answer.strip(), gr.skip(), chat_view, history
        else:
            turn = [{"type": "audio", "audio": samples, "sampling_rate": rate}]
            if question:
                turn.append({"type": "text", "text": question})
            history.append(
                {"role": "user", "content": turn, "label": f"🎤 {Path(audio_path).name} {question}".strip()}
            )
            conversation = [{"role": m["role"], "content": m["content"]} for m in history]
            inputs = loaded.processor.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
            for answer in self.stream(loaded, inputs):
                answer = answer.strip()
                yield answer, gr.skip(), _chat_view(history) + [{"role": "assistant", "content": answer}], history
            history.append({"role": "assistant", "content": answer})
        progress(1.0, desc="Router usage")
        usage = self.router_usage(loaded, samples, rate)
        yield answer.strip(), usage_figure(usage, loaded.model.aligner.steered_layers), _chat_view(history), history

    def live_step(self, adapter, chunk, transcriber):
        """One microphone chunk `(rate, samples)`: returns (committed text, tentative tail, transcriber)."""
        if chunk is None:
            return gr.skip(), gr.skip(), transcriber
        rate, samples = chunk
        if transcriber is None:
            loaded = self.load(adapter)
            transcriber = LocalAgreementTranscriber(
                lambda clip, clip_rate: self.transcribe(loaded, clip, clip_rate),
                sampling_rate=rate,
                has_speech=loaded.processor.has_speech,
            )
        update = transcriber.push(samples)
        return update.committed, update.tentative, transcriber

    def live_stop(self, transcriber):
        """The recording stopped: the rest of the buffer is decoded and committed."""
        if transcriber is None:
            return gr.skip(), "", None
        return transcriber.finish().committed, "", None


def _chat_view(history: list[dict]) -> list[dict]:
    """The conversation as the Chatbot shows it (clips by name)."""
    return [{"role": m["role"], "content": m.get("label", m["content"])} for m in history]


def usage_figure(usage: np.ndarray | None, layers) -> Figure | None:
    """A heatmap of the router's expert usage, `(steered layers, experts)`."""
    if usage is None:
        return None
    figure = Figure(figsize=(1.5 + 0.55 * usage.shape[1], 1.2 + 0.4 * usage.shape[0]), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(usage, aspect="auto", cmap="viridis", vmin=0)
    axis.set_xticks(range(usage.shape[1]))
    axis.set_yticks(range(usage.shape[0]), [str(layer) for layer in layers])
    axis.set_xlabel("expert")
    axis.set_ylabel("encoder layer")
    figure.colorbar(image, ax=axis, label="mean routing weight")
    return figure


def build_app(demo: SteerMoEDemo, adapter: str = "") -> gr.Blocks:
    with gr.Blocks(title="SteerMoE") as app:
        gr.Markdown(
            "# SteerMoE\nA frozen audio encoder steered layer by layer by a mixture of learned vectors, read by a "
            "frozen LLM. Record or upload a clip; the text streams in as it is generated, and the plot shows how "
            "the router mixed the experts at each encoder layer for this clip."
        )
        with gr.Row():
            adapter_box = gr.Textbox(value=adapter, label="Adapter (folder or Hub id)", scale=4)
            load_button = gr.Button("Load", scale=1)
        status = gr.Markdown()
        with gr.Tab("Clip"):
            with gr.Row():
                with gr.Column():
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio")
                    task = gr.Radio(list(TASKS), value="Transcribe", label="Task")
                    question = gr.Textbox(label="Question (or your message in a chat)", lines=2)
                    with gr.Row():
                        run_button = gr.Button("Run", variant="primary")
                        clear_button = gr.Button("Clear chat")
                with gr.Column():
                    answer = gr.Textbox(label="Text", lines=6, elem_id="answer")
                    plot = gr.Plot(label="Router usage per layer", elem_id="router-plot")
                    chatbot = gr.Chatbot(label="Chat", height=260)
            history = gr.State([])
        with gr.Tab("Live microphone"):
            gr.Markdown(
                "Speak: the buffer is re-decoded every second and words appear once two decodings agree, so the text "
                "only grows; the line below it is what the model hears now, which may still change."
            )
            live_audio = gr.Audio(sources=["microphone"], type="numpy", streaming=True, label="Microphone")
            live_text = gr.Textbox(label="Transcript", lines=6, elem_id="live-transcript")
            live_tentative = gr.Textbox(label="Hearing…", lines=1, elem_id="live-tentative")
            live_state = gr.State(None)

        def load(name):
            """Load the adapter; chat is offered only on an instruct LLM."""
            loaded = demo.load(name)
            choices = list(TASKS) if loaded.can_chat else list(TASKS[:2])
            chat = gr.update(visible=loaded.can_chat)
            return loaded.describe(), gr.Radio(choices=choices, value="Transcribe"), chat, chat

        load_outputs = [status, task, chatbot, clear_button]
        load_button.click(load, adapter_box, load_outputs, concurrency_id="model")
        if adapter:  # the default adapter is loaded when the page opens
            app.load(load, adapter_box, load_outputs, concurrency_id="model")
        run_button.click(
            demo.run, [adapter_box, audio, task, question, history], [answer, plot, chatbot, history],
            api_name="run", concurrency_id="model", show_progress_on=plot,  # the text stays readable while it streams
        )  # fmt: skip
        clear_button.click(lambda: ([], [], ""), None, [chatbot, history, answer], queue=False)
        live_audio.stream(
            demo.live_step, [adapter_box, live_audio, live_state], [live_text, live_tentative, live_state],
            stream_every=0.5, concurrency_id="model", show_progress="hidden",
        )  # fmt: skip
        live_audio.stop_recording(demo.live_stop, live_state, [live_text, live_tentative, live_state])
    return app


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    max_new_tokens = os.environ.get("STEERMOE_MAX_NEW_TOKENS")
    demo = SteerMoEDemo(
        max_seconds=float(os.environ.get("STEERMOE_MAX_SECONDS", 300)),
        max_new_tokens=int(max_new_tokens) if max_new_tokens else None,
        device=os.environ.get("STEERMOE_DEVICE"),
    )
    app = build_app(demo, default_adapter())
    # One request uses the model at a time; the others wait in the queue (no limit on its length).
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), max_file_size=MAX_UPLOAD, show_error=True
    )


if __name__ == "__main__":
    main()
