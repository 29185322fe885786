# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Nano-EmoX demo (a Hugging Face Space): one clip in, the six affective tasks out, streamed.

    python spaces_demo/app.py --model DIR_OR_HUB_ID [--host 127.0.0.1 --port 7860]

The model is served through the public API only: `AutoModel` / `AutoProcessor.from_pretrained(...,
trust_remote_code=True)` and the model's own pipeline (`pipeline_nanoemox.NanoEmoXPipeline`, shipped with the weights
as `custom_pipelines`), so the Space needs transformers and the model's remote code, not this repository. Without
`--model` (or the `NANOEMOX_MODEL` variable) the app serves the embedded P2E run's model (`outputs/p2e/final`, the
recipe's default output) when it exists, else a random tiny model written by `modeling_nanoemox.tiny.create_tiny`
when that package is importable; the page always says which, and how to get a trained one.

Per request: the upload is checked (type, size, duration, resolution) before the processor sees it; then each task
goes through the pipeline's own stages — `preprocess` (frames, face crops, audio, prompt), `forward` (generation,
streamed here through a `TextIteratorStreamer`; the fusion gate weights come out of the prompt's forward pass) and
`postprocess` (answer, face boxes, gate weights). Nothing is shared between requests but the read-only model and
processor. Files: a refused upload is deleted at once; the face crops are written once to a fresh folder per request
(deleted shortly after the request, once Gradio has copied them to its cache); Gradio's cache (uploads, outputs)
is swept by `delete_cache`.
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
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
from PIL import Image, ImageDraw
from transformers import AutoModel, AutoProcessor, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

logger = logging.getLogger("nanoemox.demo")

REPO_ROOT = Path(__file__).resolve().parents[1]
# The embedded P2E run's model: `accelerate launch recipes/p2e.py` writes OUTPUT_DIR/final, OUTPUT_DIR defaulting to
# `outputs/p2e` under the directory it is run from (the README runs it from the repository root).
EMBEDDED_RUN_COMMAND = "accelerate launch recipes/p2e.py --output_dir outputs/p2e"
EMBEDDED_RUN_CHECKPOINTS = (Path("outputs") / "p2e" / "final", REPO_ROOT / "outputs" / "p2e" / "final")
# Example clips bundled with a Space upload (written by `app.py --write-examples spaces_demo/examples`).
BUNDLED_EXAMPLES = Path(__file__).resolve().parent / "examples"
# The Space's card: its `models:` metadata names the model a Space serves when NANOEMOX_MODEL is not set.
SPACE_CARD = Path(__file__).resolve().parent / "README.md"
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "nanoemox-demo"
# Each request's face-crop PNGs live in a folder of their own under the system's temporary folder (Gradio serves files
# from there), written once and never rewritten.
REQUEST_FILES_ROOT = Path(tempfile.gettempdir()) / "nanoemox-demo-requests"

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
# Audio files, and the containers a recording's sound may come in.
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma"}
AUDIO_SUFFIXES |= {".webm", ".mka", ".mkv", ".mp4"}
# The processor's `face_source` codes (`nanoemox_processing.FACE_SOURCES`).
FACE_SOURCES = ("none", "detected", "completed")
# Smallest side of a face crop in the gallery (the tiny model's crops are 32 px).
FACE_DISPLAY_PX = 160
BOX_COLOURS = {"detected": (46, 204, 113), "completed": (243, 156, 18)}


class UploadError(ValueError):
    """An upload the demo refuses; its message is shown on the page as is. `path` is the refused file."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Limits:
    """What one request may bring: checked before any decoding, so a bad upload costs little."""

    max_file_mb: int = 100
    max_seconds: float = 300.0
    max_pixels: int = 3840 * 2160
    max_new_tokens: int = 512


@dataclass(frozen=True)
class Storage:
    """How long the files the demo stores live."""

    # `gr.Blocks(delete_cache=(sweep_every_s, max_age_s))`: uploads (also posts straight to the upload route) and
    # output copies in Gradio's cache older than `max_age_s` go at each sweep; a clip kept for reruns lives that long.
    max_age_s: int = 3600
    sweep_every_s: int = 600
    # A request's own face-crop folder goes this long after the request ends (Gradio copies the files at once; cached
    # examples copy them right after the handler returns).
    request_files_grace_s: float = 30.0


@dataclass(frozen=True)
class ServedModel:
    """The model the page serves and how to describe it."""

    source: str
    origin: str  # "given" | "embedded-run" | "tiny"


# ---- uploads ----------------------------------------------------------------------------------------------------


def _demuxed_duration(path: Path, kind: str, max_seconds: float) -> tuple[float | None, bool]:
    """
    The duration of a file whose container states none (live Matroska / WebM), from its packets' timestamps: the
    packets are read, not decoded (time bounded by the file-size limit, memory constant), and reading stops as soon
    as the clip is known to be over `max_seconds`. Returns `(seconds, whether the whole file was read)`; seconds is
    None when no packet carries a timestamp.
    """
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        stream = (container.streams.video if kind == "video" else container.streams.audio)[0]
        start = stream.start_time or 0
        end = None
        for packet in container.demux(stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None:
                continue
            stamp += packet.duration or 0
            end = stamp if end is None else max(end, stamp)
            if float((end - start) * stream.time_base) > max_seconds:
                return float((end - start) * stream.time_base), False
        return (None if end is None else float((end - start) * stream.time_base)), True


def check_media(path: str | os.PathLike, kind: str, limits: Limits) -> dict:
    """
    Checks an uploaded `kind` ("video" or "audio") file before processing: file type, size, a readable container with
    the right stream, duration, resolution and one decodable frame. Returns `{"duration_s", "width", "height",
    "has_audio"}`; raises [`UploadError`] with a message meant for the user otherwise.

    The duration is the container's; a container that states none (a live recording, e.g. live Matroska) is measured
    from its packets' timestamps, and a file whose duration cannot be known is refused: the model's decoding is
    bounded by the clip's length, so an unknown length is not let through.
    """
    path = Path(path)
    name = path.name
    suffix = path.suffix.lower()
    allowed = VIDEO_SUFFIXES if kind == "video" else AUDIO_SUFFIXES
    if suffix not in allowed:
        raise UploadError(
            f"{name}: “{suffix or 'no extension'}” is not {'an audio' if kind == 'audio' else 'a video'} file type "
            "this demo takes "
            f"({', '.join(sorted(allowed))}).",
            path,
        )
    if not path.is_file():
        raise UploadError(f"{name}: the upload did not arrive; please upload it again.")
    size = path.stat().st_size
    if size == 0:
        raise UploadError(f"{name} is empty.", path)
    if size > limits.max_file_mb * 2**20:
        raise UploadError(
            f"{name} is {size / 2**20:.0f} MB; this demo takes files up to {limits.max_file_mb} MB.", path
        )
    unreadable = f"{name} could not be read as {kind}: the file is corrupt, truncated or not a {kind} file."
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, OSError):
        raise UploadError(unreadable, path) from None
    with container:
        streams = container.streams.video if kind == "video" else container.streams.audio
        if not streams:
            other = "put audio-only files in the Audio input" if kind == "video" else "it has no sound"
            raise UploadError(f"{name} has no {kind} track ({other}).", path)
        stream = streams[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        width = height = None
        if kind == "video":
            width, height = stream.codec_context.width, stream.codec_context.height
            if width and height and width * height > limits.max_pixels:
                raise UploadError(
                    f"{name} is {width}×{height}; this demo takes videos up to 3840×2160 (4K). Downscale it first.",
                    path,
                )
        try:
            next(iter(container.decode(streams[0])))
        except StopIteration:
            raise UploadError(f"{name} has a {kind} track but nothing in it could be decoded.", path) from None
        except (av.FFmpegError, ValueError):
            raise UploadError(unreadable, path) from None
        has_audio = bool(container.streams.audio)
    complete = True
    if duration is None:
        try:
            duration, complete = _demuxed_duration(path, kind, limits.max_seconds)
        except (av.FFmpegError, ValueError):
            raise UploadError(unreadable, path) from None
        if duration is None:
            raise UploadError(
                f"{name} does not say how long it is, and its {kind} track carries no timestamps to measure it; "
                "this demo takes only clips of a known length. Re-save it (e.g. as MP4) and try again.",
                path,
            )
    if duration > limits.max_seconds:
        raise UploadError(
            f"{name} lasts {f'{duration:.0f}' if complete else f'more than {limits.max_seconds:.0f}'} s; this demo "
            f"takes clips up to {limits.max_seconds:.0f} s. "
            "Trim it and try again.",
            path,
        )
    return {"duration_s": duration, "width": width, "height": height, "has_audio": has_audio}


def delete_upload(path: str | os.PathLike | None) -> bool:
    """Deletes `path` when it is an upload in Gradio's upload folder (never an example clip or another file), and its
    folder when that is left empty. True when something was deleted."""
    if not path:
        return False
    path = Path(path).resolve()
    uploads = Path(gr.utils.get_upload_folder()).resolve()
    if uploads not in path.parents or not path.is_file():
        return False
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()  # Gradio keeps each upload in a folder named after its hash
    except OSError:
        pass
    return True


def keep_upload_fresh(path: str | os.PathLike | None) -> None:
    """Marks an upload in use as new (its ctime, which `delete_cache` ages by, as Gradio does for outputs it hands out
    again), so that the cache sweep never takes a clip from under a long request."""
    if path and Path(gr.utils.get_upload_folder()).resolve() in Path(path).resolve().parents:
        try:
            os.utime(path)
        except OSError:
            pass


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


# ---- face crops -------------------------------------------------------------------------------------------------


def face_crop_images(
    crops: np.ndarray, face_boxes: list, crop_boxes: list, face_source: list[str]
) -> list[tuple[Image.Image, str]]:
    """
    The face crops the model saw, one per sampled frame, each with the face box drawn on it and a caption.

    Args:
        crops: `(T, S, S, 3)` uint8, the face encoder's input (de-normalised).
        face_boxes, crop_boxes: per frame `[x, y, w, h]` in original-frame pixels: the face, and the region cropped
            (the crop is that region resized to S×S, so the face box maps into it by the region's scale).
        face_source: per frame `detected`, `completed` (filled in from neighbouring frames) or `none` (no face found;
            no box is drawn).
    """
    images = []
    for index, (crop, face, region, source) in enumerate(zip(crops, face_boxes, crop_boxes, face_source)):
        image = Image.fromarray(crop)
        if min(image.size) < FACE_DISPLAY_PX:  # the tiny model's 32 px crops: enlarge, keeping the pixels visible
            factor = FACE_DISPLAY_PX / min(image.size)
            size = (round(image.width * factor), round(image.height * factor))
            image = image.resize(size, Image.Resampling.NEAREST)
        caption = f"frame {index + 1}" if source == "detected" else f"frame {index + 1}: {source}"
        if source == "none":
            caption = f"frame {index + 1}: no face"
        elif region[2] > 0 and region[3] > 0:
            scale_x, scale_y = image.width / region[2], image.height / region[3]
            left, top = (face[0] - region[0]) * scale_x, (face[1] - region[1]) * scale_y
            right, bottom = left + face[2] * scale_x, top + face[3] * scale_y
            width = max(2, image.width // 80)
            box = [max(left, 0), max(top, 0), min(right, image.width - 1), min(bottom, image.height - 1)]
            ImageDraw.Draw(image).rectangle(box, outline=BOX_COLOURS.get(source, (52, 152, 219)), width=width)
        images.append((image, caption))
    return images


def write_face_gallery(images: list[tuple[Image.Image, str]], folder: Path) -> list[tuple[str, str]]:
    """Writes the gallery's PNGs into `folder` (this request's own) and returns `(path, caption)` pairs. Each file is
    created, never overwritten (`x` mode): no client can be downloading a file while it is written."""
    folder.mkdir(parents=True, exist_ok=True)
    gallery = []
    for index, (image, caption) in enumerate(images):
        path = folder / f"face-{index + 1:02d}.png"
        with open(path, "xb") as file:
            image.save(file, format="PNG")
        gallery.append((str(path), caption))
    return gallery


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


def _streamed_text(text: str) -> str:
    # A character whose bytes are split over tokens shows as U+FFFD until its last byte arrives; the final answer
    # (the pipeline's, decoded at once) has none.
    return text.replace("\ufffd", "").strip()


def _split_streamed_erg(text: str, processor) -> tuple[str, str]:
    """(chain of empathy, reply) of a possibly unfinished ERG answer."""
    if "</think>" in text:
        return processor.split_chain_of_empathy(text)
    if "<think>" in text:
        return text.replace("<think>", "").strip(), ""
    return "", text.strip()


def gpu_seconds(video, audio, text, history, task, max_new_tokens=128, *args, **kwargs) -> int:
    """
    ZeroGPU seconds to reserve for one request (`spaces.GPU(duration=...)` calls this with the handler's arguments):
    10 s to attach the GPU, then per task 2 s (processor + prefill) and 40 ms per new token; at most 120 s.

    The per-token figure is an estimate for the full-size model (Qwen2.5-1.5B in bf16, plain eager `generate`,
    ~25 ms per token, with margin); measured here only for the tiny model on a CPU (spaces_demo/README.md, "GPU time
    per request").
    """
    tasks = len(TASKS) if task == ALL_TASKS else 1
    tokens = min(max(int(max_new_tokens or 1), 1), Limits.max_new_tokens)
    return round(min(120, 10 + tasks * (2 + 0.04 * tokens)))


def _gpu(function):
    """`spaces.GPU` on a Hugging Face Space (a ZeroGPU slot per call, sized by [`gpu_seconds`]); the function
    unchanged elsewhere, also when the `spaces` package is not installed."""
    if spaces is None or not (os.environ.get("SPACE_ID") or os.environ.get("SPACES_ZERO_GPU")):
        return function
    return spaces.GPU(duration=gpu_seconds)(function)


def load_pipeline(source: str, model, processor):
    """
    The model's own pipeline (`NanoEmoXPipeline`) around the loaded model and processor. Its code comes with the
    weights (`config.json` → `custom_pipelines`, remote code, as `transformers.pipeline(model=...)` loads it); a
    folder saved without it falls back to the installed `modeling_nanoemox` package.
    """
    impls = [
        spec["impl"]
        for spec in (getattr(model.config, "custom_pipelines", None) or {}).values()
        if isinstance(spec, dict) and spec.get("impl")
    ]
    if impls:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        pipeline_class = get_class_from_dynamic_module(impls[0], source)
    else:
        try:
            from modeling_nanoemox.pipeline_nanoemox import NanoEmoXPipeline as pipeline_class
        except ImportError:
            raise SystemExit(
                f"{source} ships no Nano-EmoX pipeline (no `custom_pipelines` in its config.json) and the `nanoemox` "
                "package is not installed: save the model again with a current `nanoemox`."
            ) from None
    return pipeline_class(model=model, processor=processor, device=model.device)


def _is_media_error(error: Exception) -> bool:
    # The processor's MediaError comes with the remote code, so it is matched by name.
    return any(cls.__name__ == "MediaError" for cls in type(error).__mro__)


@dataclass
class _Request:
    """Everything one request produces; `outputs()` maps it onto the page's output components."""

    tasks: list[str]
    answers: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    faces: list = field(default_factory=list)  # (png path, caption)
    face_boxes: list | None = None
    crop_boxes: list | None = None
    face_source: list | None = None
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
        result["crop_boxes_xywh"] = self.crop_boxes
        result["face_source"] = self.face_source
        result["fusion_gate_weights"] = self.gates
        result["notes"] = self.notes
        return result

    def outputs(self, text_only: bool = False) -> tuple:
        """The page's outputs; `text_only` leaves the gallery, plot and JSON as they are (`gr.skip()`): re-sending
        them with every streamed token would re-encode the images each time."""
        chain, reply = self.erg
        if text_only:
            return self.answer_text(), chain, reply, gr.skip(), gr.skip(), self.summary(), gr.skip()
        return self.answer_text(), chain, reply, list(self.faces), self.gate_frame(), self.summary(), self.details()


def default_dtype(device: str) -> torch.dtype:
    """
    The dtype `--dtype auto` serves in: the library's `default_inference_dtype` (bf16 on a GPU and on a CPU with
    native bf16 kernels, fp32 on other CPUs, where bf16 is emulated and about 4× slower); without the nanoemox
    package, bf16 on a GPU and fp32 on a CPU.
    """
    try:
        from modeling_nanoemox.quantization_nanoemox import default_inference_dtype
    except ImportError:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return default_inference_dtype(device)


def cpu_inference_path(model, quantize: str | None):
    """
    The library's CPU path, as `nanoemox predict` takes it: `quantize_for_cpu` when `quantize` is given (int8
    towers, fp16- or packed bf16-weight language model), otherwise `pack_for_cpu` (a bf16 model's linear layers
    pre-packed where the CPU has native bf16), then threads and allocator (`configure_cpu_inference`). All come from
    the `nanoemox` package; without it the model is served as loaded, and `quantize` is refused with what to install.
    """
    try:
        from modeling_nanoemox.quantization_nanoemox import configure_cpu_inference, pack_for_cpu, quantize_for_cpu
    except ImportError:
        if quantize is not None:
            raise ValueError(
                f"--quantize {quantize} needs the nanoemox package (add it to the Space's requirements.txt, or "
                "`pip install -e .` from the repository); without it the demo serves the model unquantized."
            ) from None
        logger.info("The nanoemox package is not installed: serving on the CPU with PyTorch's default settings.")
        return model
    model = quantize_for_cpu(model, quantize) if quantize is not None else pack_for_cpu(model)
    configure_cpu_inference()
    return model


class NanoEmoXDemo:
    """The page and its request handler around one loaded model (read-only after `__init__`)."""

    def __init__(
        self,
        served: ServedModel,
        device: str | None = None,
        dtype: str = "auto",
        limits: Limits = Limits(),
        storage: Storage = Storage(),
        quantize: str | None = None,
    ):
        self.served = served
        self.limits = limits
        self.storage = storage
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if quantize is not None and not device.startswith("cpu"):
            raise ValueError(f"--quantize {quantize} is for CPU inference; got --device {device}.")
        if quantize is not None:
            torch_dtype = "auto"  # quantize_for_cpu sets the dtype of every part
        elif dtype == "auto":
            torch_dtype = default_dtype(device)
        else:
            torch_dtype = getattr(torch, dtype)
        started = time.perf_counter()
        self.model = AutoModel.from_pretrained(served.source, trust_remote_code=True, dtype=torch_dtype)
        # Counted before the CPU path: quantized and packed layers keep their weights outside `parameters()`.
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        if device.startswith("cpu"):
            self.model = cpu_inference_path(self.model, quantize)
        self.model = self.model.to(device).eval()
        self.processor = AutoProcessor.from_pretrained(served.source, trust_remote_code=True)
        self.pipeline = load_pipeline(served.source, self.model, self.processor)
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
        # A modality placeholder in the answer would ask the next step for media it does not have: never generate one.
        self.placeholder_ids = [
            token_id
            for token_id in (getattr(config, f"{m}_token_id", None) for m in ("video", "audio", "face", "fusion"))
            if token_id is not None
        ]
        face_processor = self.processor.face_image_processor
        self.face_mean = np.asarray(face_processor.image_mean, np.float32).reshape(3, 1, 1)
        self.face_std = np.asarray(face_processor.image_std, np.float32).reshape(3, 1, 1)
        self._analyze_on_gpu = _gpu(self._analyze)

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
                f"⚠️ **Model: random tiny model — answers are meaningless** (`{self.served.source}`, {size} "
                f"parameters, {where}). No model was given and no embedded P2E run was found at `outputs/p2e/final`. "
                f"To serve a trained one, run the embedded recipe from the repository root — `{EMBEDDED_RUN_COMMAND}` "
                "(a few minutes on a CPU; see the README) — and start the app again, or start it with "
                "`--model DIR_OR_HUB_ID`."
            )
        if self.served.origin == "embedded-run":
            return (
                f"**Model:** the embedded P2E run's model `{self.served.source}` ({size} parameters, {where}): a tiny "
                "Nano-EmoX trained by `recipes/p2e.py` on the clips it generates (a few synthetic faces and voices), "
                "not the released 2.2 B model — on other clips its answers show the pipeline at work, not "
                "emotional intelligence. Start the app with `--model DIR_OR_HUB_ID` to serve another one."
            )
        text = f"**Model:** `{self.served.source}` ({size} parameters, {where})."
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

    def _describe_media(self, request: _Request, prepared: dict, folder: Path, audio_given: bool) -> None:
        """Fills the face gallery, the modality marks and the notes from the pipeline's first preprocessed task."""
        inputs, face_info = prepared["model_inputs"], prepared["face_info"]
        has_video = "pixel_values_videos" in inputs
        has_faces = "face_pixel_values" in inputs
        has_audio = "audio_values" in inputs
        if has_faces and face_info.get("face_boxes") is not None:
            crops = inputs["face_pixel_values"][0].float().cpu().numpy() * self.face_std + self.face_mean
            crops = (np.clip(crops.transpose(0, 2, 3, 1), 0, 1) * 255).round().astype(np.uint8)  # (T, S, S, 3)
            request.face_boxes = [[round(v, 1) for v in box] for box in face_info["face_boxes"][0].tolist()]
            request.crop_boxes = [[round(v, 1) for v in box] for box in face_info["crop_boxes"][0].tolist()]
            request.face_source = [FACE_SOURCES[code] for code in face_info["face_source"][0].tolist()]
            images = face_crop_images(crops, request.face_boxes, request.crop_boxes, request.face_source)
            request.faces = write_face_gallery(images, folder)
            missing = request.face_source.count("none")
            completed = request.face_source.count("completed")
            if missing == len(request.face_source):
                request.notes.append(
                    "No face was found in any frame: the face branch sees the regions shown (no face box), not a face."
                )
            elif missing:
                request.notes.append(
                    f"No face was found in {missing} of {len(request.face_source)} frames (regions shown without a box)."
                )
            if completed:
                request.notes.append(
                    f"In {completed} of {len(request.face_source)} frames the face was filled in from neighbouring "
                    "frames (amber boxes)."
                )
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

    def _stream(self, prepared: dict, generation: dict, seed: int | None, stop: threading.Event):
        """Runs the pipeline's `forward` (generation) in a thread; yields `(text so far, streamer, None)` as pieces
        arrive, then `(text, streamer, result)` with the pipeline's `postprocess` result (answer, gate weights)."""
        streamer = _CountingStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        outcome = {}

        def work():
            try:
                if seed is not None:
                    # The global generator: requests generate one at a time (concurrency 1 per model).
                    torch.manual_seed(seed)
                outputs = self.pipeline.forward(
                    prepared, streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]),
                    **generation,
                )  # fmt: skip
                outcome["result"] = self.pipeline.postprocess(outputs)
            except Exception as error:  # reported on the page by the request handler
                outcome["error"] = error
                streamer.end()

        thread = threading.Thread(target=work, name="nanoemox-generate", daemon=True)
        thread.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text, streamer, None
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        yield text, streamer, outcome["result"]

    def analyze(self, video, audio, text, history, task, max_new_tokens=128, do_sample=False, temperature=0.7, seed=0):
        """The page's handler (and the `/analyze` API): yields the outputs as the answer streams in. The request's
        own files go into a fresh folder, deleted `storage.request_files_grace_s` after the request (Gradio has copied
        them to its cache by then); this wrapper stays outside `spaces.GPU`, so the folder outlives the GPU worker."""
        folder = self._request_folder()
        try:
            yield from self._analyze_on_gpu(
                video, audio, text, history, task, max_new_tokens, do_sample, temperature, seed, str(folder)
            )
        finally:
            timer = threading.Timer(
                self.storage.request_files_grace_s, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True}
            )
            timer.daemon = True
            timer.start()

    def _request_folder(self) -> Path:
        """A fresh folder for one request's files; folders left behind (a killed run) go once older than the cache."""
        REQUEST_FILES_ROOT.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in REQUEST_FILES_ROOT.iterdir():
            try:
                if now - old.stat().st_mtime > self.storage.max_age_s:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=REQUEST_FILES_ROOT))

    def _task_input(self, task: str, video, audio, text, turns) -> dict:
        """The pipeline's dict input for one task of this request."""
        sample = {"task": task, "text": text}
        if video:
            sample["video"] = video
        if audio:
            sample["audio"] = audio
        if task == "erg" and turns:
            sample["history"] = turns
        return sample

    def _analyze(
        self, video, audio, text, history, task, max_new_tokens=128, do_sample=False, temperature=0.7, seed=0,
        folder=None,
    ):  # fmt: skip
        stop = threading.Event()
        folder = Path(folder) if folder else self._request_folder()
        try:
            try:
                tasks, text, turns = self._checked_inputs(video, audio, text, history, task)
            except UploadError as error:
                if delete_upload(error.path):  # a refused upload is of no further use: it is not kept
                    logger.info("Deleted the refused upload %s.", error.path)
                raise gr.Error(str(error), title="Cannot use this input") from None
            request = _Request(tasks=tasks, expert_labels=self.expert_labels)
            max_new_tokens = int(min(max(int(max_new_tokens or 1), 1), self.limits.max_new_tokens))
            yield request.outputs()
            for index, name in enumerate(tasks):
                for path in (video, audio):
                    keep_upload_fresh(path)
                try:
                    prepared = self.pipeline.preprocess(self._task_input(name, video, audio, text, turns))
                except ValueError as error:  # MediaError and prompt errors carry readable messages
                    if _is_media_error(error):
                        for path in (video, audio):
                            delete_upload(path)
                    raise gr.Error(str(error), title="Cannot process this input") from None
                timing = {"preprocess_s": round(prepared["preprocess_s"], 3), "tokens": 0}
                request.timings[name] = timing
                if index == 0:
                    self._describe_media(request, prepared, folder, audio_given=bool(audio))
                    for note in request.notes:
                        gr.Warning(note)
                    yield request.outputs()
                generation = {
                    "max_new_tokens": max_new_tokens,
                    "do_sample": bool(do_sample),
                    "suppress_tokens": self.placeholder_ids,
                }
                if do_sample:
                    generation["temperature"] = max(float(temperature), 1e-3)
                started = time.perf_counter()
                sample_seed = int(seed or 0) if do_sample else None
                for partial, streamer, result in self._stream(prepared, generation, sample_seed, stop):
                    if timing.get("first_token_s") is None and streamer.num_tokens:
                        timing["first_token_s"] = round(time.perf_counter() - started, 3)
                    timing["tokens"] = streamer.num_tokens
                    if result is None:
                        request.answers[name] = _streamed_text(partial)
                        if name == "erg":
                            request.erg = _split_streamed_erg(_streamed_text(partial), self.processor)
                        yield request.outputs(text_only=True)
                        continue
                    request.answers[name] = result["answer"]
                    if name == "erg":
                        request.erg = (result.get("chain_of_empathy", ""), result.get("reply", result["answer"]))
                    if request.gates is None and result.get("fusion_gate_weights"):
                        request.gates = [round(float(g), 4) for g in result["fusion_gate_weights"]]
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
        # Gradio keeps every upload (also posts straight to its upload route) and every output copy in its cache:
        # `delete_cache` sweeps what is older than `max_age_s`.
        delete_cache = (self.storage.sweep_every_s, self.storage.max_age_s)
        with gr.Blocks(title="Nano-EmoX demo", delete_cache=delete_cache) as demo:
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
                        label="Face crops the model saw (one per sampled frame, face box drawn; boxes in Details)",
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


def is_complete_model_folder(folder: Path) -> bool:
    """A saved model folder with its config and weights (a run killed while copying leaves one without)."""
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def space_model_id(readme: Path | None = None) -> str | None:
    """The first model the Space's card metadata names (`models:` in README.md's front matter), or None."""
    readme = readme or SPACE_CARD
    if not readme.is_file():
        return None
    lines = readme.read_text(encoding="utf-8").split("\n---", 1)[0].splitlines()
    for index, line in enumerate(lines):
        if line.strip() == "models:":
            for entry in lines[index + 1 :]:
                if not entry.strip().startswith("- "):
                    return None
                return entry.strip()[2:].strip().strip("\"'") or None
    return None


def resolve_model(model: str | None, cache_dir: Path) -> ServedModel:
    """--model / NANOEMOX_MODEL, else on a Space the model its card names, else the embedded P2E run's model
    (`outputs/p2e/final` in the current folder or the repository root), else a random tiny model (when the project's
    package is importable)."""
    model = model or os.environ.get("NANOEMOX_MODEL") or (space_model_id() if os.environ.get("SPACE_ID") else None)
    if model:
        return ServedModel(model, "given")
    for checkpoint in EMBEDDED_RUN_CHECKPOINTS:
        if is_complete_model_folder(checkpoint):
            return ServedModel(str(checkpoint.resolve()), "embedded-run")
    try:
        from modeling_nanoemox.tiny import create_tiny
    except ImportError:
        raise SystemExit(
            "A model id is required: pass --model DIR_OR_HUB_ID or set NANOEMOX_MODEL (no embedded P2E run at "
            "outputs/p2e/final, and the `nanoemox` package that can build a tiny test model is not installed)."
        ) from None
    folder = cache_dir / "tiny-model"
    if not is_complete_model_folder(folder):
        logger.warning(
            "No model given and no embedded P2E run at outputs/p2e/final: serving a random tiny model (its answers "
            "are meaningless). For a trained one run `%s` from the repository root.",
            EMBEDDED_RUN_COMMAND,
        )
        partial = cache_dir / f".tiny-model.{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        create_tiny(partial)
        shutil.rmtree(folder, ignore_errors=True)
        partial.replace(folder)  # whole or not at all: a killed start leaves no half-written model behind
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
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        default=os.environ.get("NANOEMOX_QUANTIZE") or None,
        help="CPU only: int8 quantization through the nanoemox package (default: $NANOEMOX_QUANTIZE); for CPU Spaces.",
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="Example clips, tiny model, cache.")
    parser.add_argument("--max-file-mb", type=int, default=100, help="Largest upload.")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="Longest clip.")
    parser.add_argument("--queue-size", type=int, default=16, help="Requests waiting at most.")
    parser.add_argument("--concurrency", type=int, default=1, help="Requests generating at once (one model).")
    parser.add_argument(
        "--cache-max-age", type=int, default=3600, help="Seconds uploads and output copies stay in Gradio's cache."
    )
    parser.add_argument("--cache-sweep-every", type=int, default=600, help="Seconds between sweeps of that cache.")
    parser.add_argument(
        "--request-files-grace",
        type=float,
        default=30.0,
        help="Seconds a request's own face-crop files stay after it ends.",
    )
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
    storage = Storage(
        max_age_s=args.cache_max_age,
        sweep_every_s=args.cache_sweep_every,
        request_files_grace_s=args.request_files_grace,
    )
    app = NanoEmoXDemo(
        served, device=args.device, dtype=args.dtype, limits=limits, storage=storage, quantize=args.quantize
    )
    examples, examples_folder = ([], None) if args.no_examples else example_rows(args.cache_dir)
    demo = app.build(examples)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=f"{args.max_file_mb}mb",  # also bounds posts straight to the upload route
        allowed_paths=[str(examples_folder)] if examples_folder else None,
        theme=gr.themes.Soft(),
        show_error=True,
        footer_links=["api"],
    )


if __name__ == "__main__":
    main()
