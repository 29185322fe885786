# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Nano-EmoX demo (a Hugging Face Space): one clip in, the six affective tasks out, streamed.

    python spaces_demo/app.py --model DIR_OR_HUB_ID [--host 127.0.0.1 --port 7860]

The model is served through the public API only: `AutoModel` / `AutoProcessor.from_pretrained(...,
trust_remote_code=True)`, so the Space needs transformers and the model's own remote code, not this repository.
Without `--model` (or the `NANOEMOX_MODEL` variable) the app serves the embedded P2E run's checkpoint
(`outputs/p2e/final` under the repository root) when it exists, else a random tiny model written by
`modeling_nanoemox.tiny.create_tiny` when that package is importable; the page always says which.

Per request: the upload is checked (type, size, duration, resolution) before the processor sees it; the processor
decodes frames, face crops and audio; generation runs in a thread feeding a `TextIteratorStreamer`, and a forward hook
on the fusion encoder reads the gate weights of the three experts. Nothing is shared between requests but the
read-only model and processor.
"""

import argparse
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

try:  # ZeroGPU Spaces: imported before torch touches CUDA; `spaces.GPU` does nothing elsewhere
    import spaces
except ImportError:
    spaces = None

import av
import gradio as gr
import numpy as np
import pandas as pd
import torch
from transformers import AutoModel, AutoProcessor, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

logger = logging.getLogger("nanoemox.demo")

REPO_ROOT = Path(__file__).resolve().parents[1]
# Where the lead engineer's P2E recipe writes its final checkpoint.
EMBEDDED_RUN_CHECKPOINT = REPO_ROOT / "outputs" / "p2e" / "final"
# Example clips bundled with a Space upload (written by `app.py --write-examples spaces_demo/examples`).
BUNDLED_EXAMPLES = Path(__file__).resolve().parent / "examples"
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "nanoemox-demo"

# The processor's six tasks (`prompts_nanoemox.TASKS`), in the paper's order of cognitive levels.
TASKS = {
    "msa": "MSA · sentiment",
    "mer": "MER · emotion (closed set)",
    "ovmer": "OV-MER · open-vocabulary emotions",
    "mir": "MIR · intention",
    "eri": "ERI · emotion reasons",
    "erg": "ERG · empathic reply",
}
ALL_TASKS = "all"
TASK_CHOICES = [(label, name) for name, label in TASKS.items()] + [("All six", ALL_TASKS)]

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpeg", ".mpg", ".ogv", ".3gp", ".flv", ".ts"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".webm", ".mp4"}


class UploadError(ValueError):
    """An upload the demo refuses; its message is shown on the page as is."""


@dataclass(frozen=True)
class Limits:
    """What one request may bring: checked before any decoding, so a bad upload costs little."""

    max_file_mb: int = 100
    max_seconds: float = 300.0
    max_pixels: int = 3840 * 2160
    max_new_tokens: int = 512


@dataclass(frozen=True)
class ServedModel:
    """The model the page serves and how to describe it."""

    source: str
    origin: str  # "given" | "embedded-run" | "tiny"


# ---- uploads ----------------------------------------------------------------------------------------------------


def check_media(path: str | os.PathLike, kind: str, limits: Limits) -> dict:
    """
    Checks an uploaded `kind` ("video" or "audio") file before processing: file type, size, a readable container with
    the right stream, duration, resolution and one decodable frame. Returns `{"duration_s", "width", "height",
    "has_audio"}` (None where unknown); raises [`UploadError`] with a message meant for the user otherwise.
    """
    path = Path(path)
    name = path.name
    suffix = path.suffix.lower()
    allowed = VIDEO_SUFFIXES if kind == "video" else AUDIO_SUFFIXES
    if suffix not in allowed:
        raise UploadError(
            f"{name}: “{suffix or 'no extension'}” is not a {kind} file type this demo takes "
            f"({', '.join(sorted(allowed))})."
        )
    if not path.is_file():
        raise UploadError(f"{name}: the upload did not arrive; please upload it again.")
    size = path.stat().st_size
    if size == 0:
        raise UploadError(f"{name} is empty.")
    if size > limits.max_file_mb * 2**20:
        raise UploadError(f"{name} is {size / 2**20:.0f} MB; this demo takes files up to {limits.max_file_mb} MB.")
    unreadable = f"{name} could not be read as {kind}: the file is corrupt, truncated or not a {kind} file."
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, OSError):
        raise UploadError(unreadable) from None
    with container:
        streams = container.streams.video if kind == "video" else container.streams.audio
        if not streams:
            other = "put audio-only files in the Audio input" if kind == "video" else "it has no sound"
            raise UploadError(f"{name} has no {kind} track ({other}).")
        stream = streams[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        if duration is not None and duration > limits.max_seconds:
            raise UploadError(
                f"{name} lasts {duration:.0f} s; this demo takes clips up to {limits.max_seconds:.0f} s. "
                "Trim it and try again."
            )
        width = height = None
        if kind == "video":
            width, height = stream.codec_context.width, stream.codec_context.height
            if width and height and width * height > limits.max_pixels:
                raise UploadError(
                    f"{name} is {width}×{height}; this demo takes videos up to 3840×2160 (4K). Downscale it first."
                )
        try:
            next(iter(container.decode(streams[0])))
        except StopIteration:
            raise UploadError(f"{name} has a {kind} track but nothing in it could be decoded.") from None
        except (av.FFmpegError, ValueError):
            raise UploadError(unreadable) from None
        return {
            "duration_s": duration,
            "width": width,
            "height": height,
            "has_audio": bool(container.streams.audio),
        }


def parse_history(text: str | None) -> list[dict] | None:
    """
    The ERG dialogue so far, typed one turn per line as `user: …` / `assistant: …` (a line without a prefix continues
    the previous turn), or pasted as a JSON list of `{"role", "content"}`. Empty → None.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.startswith("["):
        try:
            turns = json.loads(text)
        except json.JSONDecodeError as error:
            raise UploadError(f"Dialogue history: not valid JSON ({error.msg} at position {error.pos}).") from None
        if not isinstance(turns, list) or not all(
            isinstance(t, dict) and t.get("role") in ("user", "assistant") and isinstance(t.get("content"), str)
            for t in turns
        ):
            raise UploadError(
                'Dialogue history: the JSON must be a list of {"role": "user"|"assistant", "content": …}.'
            )
        return [{"role": t["role"], "content": t["content"]} for t in turns] or None
    turns = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        role, sep, content = line.partition(":")
        role = role.strip().lower()
        if sep and role in ("user", "assistant"):
            turns.append({"role": role, "content": content.strip()})
        elif turns:
            turns[-1]["content"] += "\n" + line.strip()
        else:
            raise UploadError(
                f"Dialogue history, line {number}: start each turn with “user:” or “assistant:” (got {line.strip()!r})."
            )
    return turns


# ---- generation -------------------------------------------------------------------------------------------------


class _StopOnEvent(StoppingCriteria):
    """Ends generation when the request goes away (Stop button, closed tab)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _CountingStreamer(TextIteratorStreamer):
    """A `TextIteratorStreamer` that also counts the generated tokens (for the latency line)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_tokens = 0

    def put(self, value):
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.num_tokens += int(value.numel())
        super().put(value)


def _split_streamed_erg(text: str, processor) -> tuple[str, str]:
    """(chain of empathy, reply) of a possibly unfinished ERG answer."""
    if "</think>" in text:
        return processor.split_chain_of_empathy(text)
    if "<think>" in text:
        return text.replace("<think>", "").strip(), ""
    return "", text.strip()


@dataclass
class _Request:
    """Everything one request produces; `outputs()` maps it onto the page's output components."""

    tasks: list[str]
    answers: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    face_boxes: list | None = None
    face_detected: list | None = None
    modalities: dict = field(default_factory=dict)
    gates: list | None = None
    expert_labels: list = field(default_factory=list)
    erg: tuple = ("", "")  # (chain of empathy, reply)
    started: float = field(default_factory=time.perf_counter)

    def _shown_answer(self, task: str) -> str:
        answer = self.answers.get(task, "")
        if not answer and "generate_s" in self.timings.get(task, {}):
            return "(the model generated no visible text)"
        return answer

    def answer_text(self) -> str:
        if len(self.tasks) == 1:
            return self._shown_answer(self.tasks[0])
        blocks = [f"[{TASKS[task]}]\n{self._shown_answer(task)}" for task in self.tasks if task in self.answers]
        return "\n\n".join(blocks)

    def summary(self) -> str:
        lines = []
        if self.modalities:
            present = [name for name, seen in self.modalities.items() if seen]
            missing = [name for name, seen in self.modalities.items() if not seen]
            lines.append(
                f"**Modalities the model saw:** {', '.join(present) or 'none'}"
                + (f" — **not present:** {', '.join(missing)}" if missing else "")
            )
        for note in self.notes:
            lines.append(f"**Note:** {note}")
        for task, timing in self.timings.items():
            rate = timing["tokens"] / timing["generate_s"] if timing.get("generate_s") else 0.0
            first = (
                f"first token {timing['first_token_s']:.2f} s · " if timing.get("first_token_s") is not None else ""
            )
            done = "" if "generate_s" in timing else " (running…)"
            lines.append(
                f"**Latency, {task.upper()}:** preprocessing {timing['preprocess_s']:.2f} s · {first}"
                f"{timing['tokens']} tokens in {timing.get('generate_s', 0.0):.2f} s ({rate:.1f} tok/s){done}"
            )
        if self.timings and all("generate_s" in t for t in self.timings.values()):
            lines.append(f"**Total:** {time.perf_counter() - self.started:.2f} s")
        return "\n\n".join(lines)

    def gate_frame(self) -> pd.DataFrame:
        if not self.gates:
            # Typed even when empty: the plot fixes its axes from the first value's dtypes.
            return pd.DataFrame({"expert": pd.Series([], dtype=str), "weight": pd.Series([], dtype=float)})
        return pd.DataFrame({"expert": self.expert_labels, "weight": [round(g, 4) for g in self.gates]})

    def details(self) -> dict:
        result = {"tasks": {}}
        for task in self.tasks:
            if task in self.answers:
                entry = {"answer": self.answers[task]}
                if task == "erg":
                    entry["chain_of_empathy"], entry["reply"] = self.erg
                entry["timings"] = self.timings.get(task, {})
                result["tasks"][task] = entry
        result["modalities"] = [name for name, present in self.modalities.items() if present]
        result["face_boxes_xywh"] = self.face_boxes
        result["face_detected"] = self.face_detected
        result["fusion_gate_weights"] = self.gates
        result["notes"] = self.notes
        return result

    def outputs(self, text_only: bool = False) -> tuple:
        """The page's outputs; `text_only` leaves the gallery, plot and JSON as they are (`gr.skip()`): re-sending
        them with every streamed token would re-encode the images each time."""
        chain, reply = self.erg
        if text_only:
            return self.answer_text(), chain, reply, gr.skip(), gr.skip(), self.summary(), gr.skip()
        return self.answer_text(), chain, reply, self.faces, self.gate_frame(), self.summary(), self.details()


def _gpu(function):
    """`spaces.GPU` on a Hugging Face Space (a ZeroGPU slot per call); the function unchanged elsewhere, also when
    the `spaces` package is not installed."""
    if spaces is None or not (os.environ.get("SPACE_ID") or os.environ.get("SPACES_ZERO_GPU")):
        return function
    return spaces.GPU(duration=120)(function)


class NanoEmoXDemo:
    """The page and its request handler around one loaded model (read-only after `__init__`)."""

    def __init__(self, served: ServedModel, device: str | None = None, dtype: str = "auto", limits: Limits = Limits()):
        self.served = served
        self.limits = limits
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        started = time.perf_counter()
        self.model = AutoModel.from_pretrained(served.source, trust_remote_code=True, dtype=torch_dtype)
        self.model = self.model.to(device).eval()
        self.processor = AutoProcessor.from_pretrained(served.source, trust_remote_code=True)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        logger.info(
            "Loaded %s (%.1f M parameters) on %s in %.1f s.",
            served.source,
            self.num_parameters / 1e6,
            device,
            time.perf_counter() - started,
        )
        config = self.model.config
        self.expert_labels = [
            f"E{i + 1} (a{a}/v{v})"
            for i, (a, v) in enumerate(zip(config.audio_multiscale_layers, config.vision_multiscale_layers))
        ]
        self.fusion_encoder = getattr(getattr(self.model, "model", None), "fusion_encoder", None)
        # A modality placeholder in the answer would ask the next step for media it does not have: never generate one.
        self.placeholder_ids = [
            token_id
            for token_id in (getattr(config, f"{m}_token_id", None) for m in ("video", "audio", "face", "fusion"))
            if token_id is not None
        ]
        self.analyze = _gpu(self._analyze)

    # ---- what the page says about the model ----

    def model_description(self) -> str:
        size = (
            f"{self.num_parameters / 1e9:.2f} B"
            if self.num_parameters >= 1e9
            else f"{self.num_parameters / 1e6:.1f} M"
        )
        where = f"{self.model.device.type} · {str(self.model.dtype).removeprefix('torch.')}"
        if self.served.origin == "tiny":
            return (
                f"**Model:** random tiny model — answers are meaningless (`{self.served.source}`, {size} parameters, "
                f"{where}). It was created at startup because no model was given and no P2E checkpoint exists at "
                f"`outputs/p2e/final`; start the app with `--model DIR_OR_HUB_ID` to serve a trained one."
            )
        origin = "the embedded P2E run's checkpoint " if self.served.origin == "embedded-run" else ""
        text = f"**Model:** {origin}`{self.served.source}` ({size} parameters, {where})."
        if self.num_parameters < 1e9:
            text += (
                " This is a reduced-size model, not the released 2.2 B Nano-EmoX: unless it was trained for these "
                "tasks, its answers are meaningless."
            )
        return text

    # ---- one request ----

    def _checked_inputs(self, video, audio, text, history, task):
        if task not in TASKS and task != ALL_TASKS:
            raise UploadError(f"Pick a task (one of {', '.join(TASKS)} or “all six”).")
        if not video and not audio:
            raise UploadError("Upload or record a video (or at least an audio file) first.")
        if video:
            check_media(video, "video", self.limits)
        if audio:
            check_media(audio, "audio", self.limits)
        text = text.strip() if isinstance(text, str) and text.strip() else None
        tasks = list(TASKS) if task == ALL_TASKS else [task]
        turns = parse_history(history) if "erg" in tasks else None
        return tasks, text, turns

    def _describe_media(self, request: _Request, inputs, has_video: bool, audio_given: bool) -> None:
        """Fills the face gallery, the modality marks and the notes from the processor's first output."""
        has_audio = "audio_mask" in inputs and bool(inputs["audio_mask"][0])
        has_faces = "face_mask" in inputs and bool(inputs["face_mask"][0])
        if "face_pixel_values" in inputs and has_faces:
            face_processor = self.processor.face_image_processor
            mean = np.asarray(face_processor.image_mean, np.float32).reshape(3, 1, 1)
            std = np.asarray(face_processor.image_std, np.float32).reshape(3, 1, 1)
            crops = inputs["face_pixel_values"][0].float().cpu().numpy() * std + mean  # (T, 3, S, S) in [0, 1]
            boxes = inputs["face_boxes"][0].tolist()
            detected = inputs["face_detected"][0].tolist()
            for index, (crop, found) in enumerate(zip(crops, detected)):
                image = (np.clip(crop.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
                caption = f"frame {index + 1}" if found else f"frame {index + 1}: no face"
                request.faces.append((image, caption))
            request.face_boxes = [[round(v, 1) for v in box] for box in boxes]
            request.face_detected = [bool(v) for v in detected]
            if not any(detected):
                request.notes.append(
                    "No face was found in any frame: the face branch sees whole frames instead of face crops."
                )
            elif not all(detected):
                missing = len(detected) - sum(detected)
                request.notes.append(f"No face was found in {missing} of {len(detected)} frames (whole frames used).")
        if has_video and not has_audio:
            request.notes.append(
                "No audio: the video has no sound track and no audio file was given, so the answer uses the "
                "picture and the text only."
                if not audio_given
                else "The audio could not be used; the answer uses the picture and the text only."
            )
        if not has_video:
            request.notes.append("No video: the answer uses the audio and the text only.")
        request.modalities = {
            "video": has_video,
            "face": has_faces,
            "audio": has_audio,
            "audio-visual fusion": has_video and has_audio,
        }

    def _stream(self, inputs, generation: dict, seed: int | None, stop: threading.Event, gates: list):
        """Generates in a thread; yields (text so far, streamer) as pieces arrive. `gates` receives the fusion gate
        weights `(1, 3)` of the prompt's forward pass."""
        streamer = _CountingStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure = []

        def work():
            ident = threading.get_ident()

            def read_gates(_module, _args, output):
                # The hook sits on the shared model: keep only this request's forward passes.
                if threading.get_ident() == ident and not gates:
                    gates.append(output[1].detach().float().cpu())

            handle = self.fusion_encoder.register_forward_hook(read_gates) if self.fusion_encoder else None
            try:
                if seed is not None:
                    # The global generator: requests generate one at a time (concurrency 1 per model).
                    torch.manual_seed(seed)
                with torch.inference_mode():
                    self.model.generate(
                        **inputs, streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]),
                        **generation,
                    )  # fmt: skip
            except Exception as error:  # reported on the page by the request handler
                failure.append(error)
                streamer.end()
            finally:
                if handle is not None:
                    handle.remove()

        thread = threading.Thread(target=work, name="nanoemox-generate", daemon=True)
        thread.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text, streamer
        thread.join()
        if failure:
            raise failure[0]
        yield text, streamer

    def _analyze(
        self, video, audio, text, history, task, max_new_tokens=128, do_sample=False, temperature=0.7, seed=0
    ):
        """The page's handler (and the `/analyze` API): yields the outputs as the answer streams in."""
        stop = threading.Event()
        try:
            try:
                tasks, text, turns = self._checked_inputs(video, audio, text, history, task)
            except UploadError as error:
                raise gr.Error(str(error), title="Cannot use this input") from None
            request = _Request(tasks=tasks, expert_labels=self.expert_labels)
            max_new_tokens = int(min(max(int(max_new_tokens or 1), 1), self.limits.max_new_tokens))
            yield request.outputs()
            for index, name in enumerate(tasks):
                started = time.perf_counter()
                try:
                    inputs = self.processor(
                        videos=video or None,
                        audio=audio or None,
                        text=text,
                        history=turns if name == "erg" else None,
                        task=name,
                    )
                except ValueError as error:  # MediaError and prompt errors carry readable messages
                    raise gr.Error(str(error), title="Cannot process this input") from None
                timing = {"preprocess_s": round(time.perf_counter() - started, 3), "tokens": 0}
                request.timings[name] = timing
                if index == 0:
                    self._describe_media(request, inputs, has_video=bool(video), audio_given=bool(audio))
                    for note in request.notes:
                        gr.Warning(note)
                    yield request.outputs()
                for key in ("face_boxes", "face_detected"):
                    inputs.pop(key, None)
                inputs = inputs.to(self.model.device)
                generation = {
                    "max_new_tokens": max_new_tokens,
                    "do_sample": bool(do_sample),
                    "suppress_tokens": self.placeholder_ids,
                }
                if do_sample:
                    generation["temperature"] = max(float(temperature), 1e-3)
                gates: list = []
                started = time.perf_counter()
                sample_seed = int(seed or 0) if do_sample else None
                for partial, streamer in self._stream(inputs, generation, sample_seed, stop, gates):
                    if timing.get("first_token_s") is None and streamer.num_tokens:
                        timing["first_token_s"] = round(time.perf_counter() - started, 3)
                    timing["tokens"] = streamer.num_tokens
                    request.answers[name] = partial.strip()
                    if name == "erg":
                        request.erg = _split_streamed_erg(partial, self.processor)
                    new_gates = bool(gates) and request.gates is None
                    if new_gates:
                        request.gates = [round(float(g), 4) for g in gates[0][0]]
                    yield request.outputs(text_only=not new_gates)
                timing["generate_s"] = round(time.perf_counter() - started, 3)
                yield request.outputs()
        except gr.Error:
            raise
        except Exception as error:  # never a traceback on the page; the log keeps it
            logger.exception("Request failed")
            raise gr.Error(
                f"Something went wrong while running the model ({type(error).__name__}: {error}). "
                "The app is still running: try another clip.",
                title="Model error",
            ) from None
        finally:
            stop.set()

    # ---- the page ----

    def build(self, examples: list[list] | None = None) -> gr.Blocks:
        with gr.Blocks(title="Nano-EmoX demo") as demo:
            gr.Markdown(
                "# Nano-EmoX — emotional intelligence from perception to empathy\n"
                "Upload a short clip of a person talking (or record one), pick a task and run it. "
                "The model sees sampled frames, face crops and the voice, plus the text you give."
            )
            gr.Markdown(self.model_description(), elem_id="model-banner")
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    video = gr.Video(
                        label="Video (upload or webcam)",
                        sources=["upload", "webcam"],
                        include_audio=True,
                        height=260,
                        elem_id="video-input",
                    )
                    audio = gr.Audio(
                        label="Audio (optional; empty = the video's own sound track)",
                        sources=["upload", "microphone"],
                        type="filepath",
                        elem_id="audio-input",
                    )
                    text = gr.Textbox(
                        label="Subtitle / utterance (ERG: what the speaker says now)",
                        elem_id="text-input",
                        value="",
                        placeholder="e.g. I can't believe we actually won!",
                        lines=2,
                    )
                    task = gr.Radio(choices=TASK_CHOICES, value="mer", label="Task", elem_id="task-selector")
                    history = gr.Textbox(
                        label="Dialogue so far (ERG only)",
                        info="One turn per line, “user: …” or “assistant: …” — or a JSON list of {role, content}.",
                        placeholder="user: I had my final interview yesterday.\nassistant: How do you feel it went?",
                        value="",
                        lines=3,
                        visible=False,
                    )
                    with gr.Accordion("Generation settings", open=False):
                        max_new_tokens = gr.Slider(
                            1, self.limits.max_new_tokens, value=128, step=1, label="Max new tokens (per task)"
                        )
                        do_sample = gr.Checkbox(value=False, label="Sample (off: greedy, deterministic)")
                        temperature = gr.Slider(0.1, 1.5, value=0.7, step=0.05, label="Temperature (when sampling)")
                        seed = gr.Number(value=0, precision=0, label="Seed (when sampling)")
                    with gr.Row():
                        run = gr.Button("Run", variant="primary", elem_id="run-button")
                        stop = gr.Button("Stop", variant="stop")
                with gr.Column(scale=1):
                    answer = gr.Textbox(label="Answer", lines=6, max_lines=24, elem_id="answer", buttons=["copy"])
                    with gr.Row(visible=False) as erg_row:
                        chain = gr.Textbox(label="Chain of empathy (ERG)", lines=4, elem_id="chain-of-empathy")
                        reply = gr.Textbox(label="Reply (ERG)", lines=4, elem_id="reply")
                    summary = gr.Markdown(label="Summary", elem_id="summary")
                    faces = gr.Gallery(
                        label="Face crops the model saw (one per sampled frame; boxes in Details)",
                        columns=4,
                        height="auto",
                        object_fit="contain",
                        format="png",
                        elem_id="faces",
                    )
                    gates = gr.BarPlot(
                        x="expert",
                        y="weight",
                        y_lim=[0, 1],
                        label="Fusion gate weights (expert: audio layer / video layer)",
                        elem_id="gates",
                    )
                    with gr.Accordion("Details (JSON)", open=False):
                        details = gr.JSON(label="Result")
            outputs = [answer, chain, reply, faces, gates, summary, details]
            inputs = [video, audio, text, history, task, max_new_tokens, do_sample, temperature, seed]

            def show_erg_inputs(choice):
                visible = choice in ("erg", ALL_TASKS)
                return gr.update(visible=visible), gr.update(visible=visible)

            task.change(show_erg_inputs, task, [history, erg_row], api_visibility="private", queue=False)
            run_event = run.click(self.analyze, inputs, outputs, api_name="analyze", concurrency_id="model")
            stop.click(None, cancels=[run_event])

            if examples:
                gr.Examples(
                    examples=examples,
                    inputs=[video, text, history, task],
                    outputs=outputs,
                    fn=self.analyze_example,
                    cache_examples=True,
                    cache_mode="lazy",
                    label="Examples (clips generated by the project: a public-domain portrait and a synthetic voice)",
                )
            gr.Markdown(
                f"Limits: files up to {self.limits.max_file_mb} MB, clips up to {self.limits.max_seconds:.0f} s, "
                "up to 3840×2160. Tasks: MSA positive/negative/neutral · MER one of happy, sad, neutral, angry, "
                "worried, surprise · OV-MER free emotion words · MIR one of 30 intents · ERI a rationale · ERG a "
                "chain of empathy (scenario, emotion, cause, goal) then a reply."
            )
        return demo

    def analyze_example(self, video, text, history, task):
        """Examples use the clip's own sound track and the default generation settings (greedy)."""
        yield from self.analyze(video, None, text, history, task)


# ---- examples ---------------------------------------------------------------------------------------------------

EXAMPLE_ROWS = [
    # clip, subtitle / utterance, dialogue history, task
    ("portrait_voice.mp4", "I can't believe we actually won the award!", "", "mer"),
    ("portrait_silent.mp4", "", "", "ovmer"),
    (
        "portrait_low_voice.mp4",
        "I didn't get the job.",
        "user: I had my final interview yesterday.\nassistant: How do you feel it went?",
        "erg",
    ),
    ("no_face_voice.mp4", "Well, that was the longest meeting of my life.", "", "msa"),
    ("portrait_voice.mp4", "I can't believe we actually won the award!", "", ALL_TASKS),
]


def write_example_clips(folder: Path) -> bool:
    """Writes the example clips with the project's generators (`modeling_nanoemox.synthetic`); False when that
    package is not installed (as on a Space, which ships the clips in `examples/` instead)."""
    try:
        from modeling_nanoemox.synthetic import photo_clip_frames, real_face_photo, synthetic_voice, write_clip
    except ImportError:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    fps, seconds = 12, 3.0
    num_frames = int(fps * seconds)
    photo = real_face_photo()
    face_frames, _ = photo_clip_frames(photo, num_frames, size=(270, 480), seed=0)
    plain = np.full((num_frames, 270, 480, 3), (40, 60, 90), np.uint8)
    clips = {
        "portrait_voice.mp4": (face_frames, synthetic_voice(seconds, pitch_hz=210, pitch_range=0.3, seed=1)),
        "portrait_silent.mp4": (face_frames, None),
        "portrait_low_voice.mp4": (
            face_frames,
            synthetic_voice(seconds, pitch_hz=110, pitch_range=0.05, syllables_per_second=2.5, loudness=0.15, seed=2),
        ),
        "no_face_voice.mp4": (plain, synthetic_voice(seconds, seed=3)),
    }
    for name, (frames, voice) in clips.items():
        target = folder / name
        if target.is_file():
            continue
        partial = folder / f".{name}.{os.getpid()}.mp4"
        write_clip(partial, frames, fps=fps, audio=voice)
        partial.replace(target)
    return True


def example_rows(cache_dir: Path) -> tuple[list[list], Path | None]:
    """The examples table and the folder its clips are in (bundled clips first, else generated into the cache)."""
    folder = BUNDLED_EXAMPLES
    if not all((folder / row[0]).is_file() for row in EXAMPLE_ROWS):
        folder = cache_dir / "example-clips"
        if not write_example_clips(folder):
            logger.info("No example clips: none bundled and `modeling_nanoemox` is not installed.")
            return [], None
    return [[str(folder / name), text, history, task] for name, text, history, task in EXAMPLE_ROWS], folder


# ---- startup ----------------------------------------------------------------------------------------------------


def resolve_model(model: str | None, cache_dir: Path) -> ServedModel:
    """--model / NANOEMOX_MODEL, else the embedded P2E run's checkpoint, else a random tiny model (when the project's
    package is importable)."""
    model = model or os.environ.get("NANOEMOX_MODEL")
    if model:
        return ServedModel(model, "given")
    if (EMBEDDED_RUN_CHECKPOINT / "config.json").is_file():
        return ServedModel(str(EMBEDDED_RUN_CHECKPOINT), "embedded-run")
    try:
        from modeling_nanoemox.tiny import create_tiny
    except ImportError:
        raise SystemExit(
            "A model id is required: pass --model DIR_OR_HUB_ID or set NANOEMOX_MODEL (no checkpoint at "
            f"{EMBEDDED_RUN_CHECKPOINT}, and the `nanoemox` package that can build a tiny test model is not installed)."
        ) from None
    folder = cache_dir / "tiny-model"
    if not (folder / "config.json").is_file():
        logger.info("No model given and no P2E checkpoint: writing a random tiny model to %s.", folder)
        create_tiny(folder)
    return ServedModel(str(folder), "tiny")


def _examples_cache(served: ServedModel, cache_dir: Path) -> Path:
    """Cached example outputs belong to one model: key the folder on the model's identity."""
    key = served.source
    config = Path(served.source) / "config.json"
    if config.is_file():
        weights = sorted(Path(served.source).glob("*.safetensors"))
        key += config.read_text() + "".join(f"{w.name}{w.stat().st_mtime_ns}" for w in weights)
    return cache_dir / "cached-examples" / hashlib.sha1(key.encode()).hexdigest()[:16]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Nano-EmoX Gradio demo.")
    parser.add_argument(
        "--model", help="Model folder or Hub id (default: $NANOEMOX_MODEL, the P2E run, a tiny model)."
    )
    parser.add_argument("--host", help="Address to bind (default: Gradio's, 127.0.0.1; 0.0.0.0 on a Space).")
    parser.add_argument("--port", type=int, help="Port (default: Gradio's, 7860).")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available).")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="Example clips, tiny model, cache.")
    parser.add_argument("--max-file-mb", type=int, default=100, help="Largest upload.")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="Longest clip.")
    parser.add_argument("--queue-size", type=int, default=16, help="Requests waiting at most.")
    parser.add_argument("--concurrency", type=int, default=1, help="Requests generating at once (one model).")
    parser.add_argument("--no-examples", action="store_true", help="Serve no examples.")
    parser.add_argument("--write-examples", type=Path, help="Write the example clips to this folder and exit.")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    if args.write_examples:
        if not write_example_clips(args.write_examples):
            raise SystemExit("Writing the example clips needs the `nanoemox` package (pip install -e .).")
        logger.info("Wrote the example clips to %s.", args.write_examples)
        return
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    served = resolve_model(args.model, args.cache_dir)
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", str(_examples_cache(served, args.cache_dir)))
    limits = Limits(max_file_mb=args.max_file_mb, max_seconds=args.max_seconds)
    app = NanoEmoXDemo(served, device=args.device, dtype=args.dtype, limits=limits)
    examples, examples_folder = ([], None) if args.no_examples else example_rows(args.cache_dir)
    demo = app.build(examples)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=f"{args.max_file_mb}mb",
        allowed_paths=[str(examples_folder)] if examples_folder else None,
        theme=gr.themes.Soft(),
        show_error=True,
        footer_links=["api"],
    )


if __name__ == "__main__":
    main()
