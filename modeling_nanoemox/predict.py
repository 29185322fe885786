# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""`nanoemox predict`: one clip in, the model's answer out (with `--json`: face boxes, fusion gates, timings).

It runs through [`NanoEmoXPipeline`] (`modeling_nanoemox/pipeline_nanoemox.py`), the pipeline saved with every model
folder, so the command line, the demo and `pipeline(model=folder, trust_remote_code=True)` give the same answers.
"""

import argparse
import json
import os
import pickle
import re
import sys
from pathlib import Path

from nanoemox_processing.prompts_nanoemox import TASK_NAMES

# What a Hub id looks like ("name" or "owner/name"); anything else given as --model is a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def check_model_id(model_id: str) -> str:
    """
    Fails fast, in one line, on a model that cannot exist: a local path (absolute, `./…`, `~/…`, three or more parts,
    or inside an existing folder) that is no folder, a folder without `config.json`, or — with `HF_HUB_OFFLINE` set —
    a Hub id that is not in the local cache. Nothing here touches the network.
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        check_model_folder(path)
        return model_id
    looks_like_path = (
        not _HUB_ID.match(model_id)
        or model_id.startswith((".", "~"))
        or ("/" in model_id and Path(model_id.split("/")[0]).is_dir())
    )
    if looks_like_path:
        raise OSError(f"no such model folder or Hub id: {model_id}")
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            raise OSError(f"no such model folder or Hub id: {model_id} (HF_HUB_OFFLINE is set and it is not cached)")
    return model_id


# What a saved processor leaves in a folder; `checkpoint-*` folders of a phase hold weights only.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def check_device(device: str) -> str:
    """`device` if this torch can use it, else a `ValueError` that says why (e.g. `cuda` on a CPU-only build)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"--device {device!r} is not a device torch knows ({error}).") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(
                f"--device {device}: no CUDA device is usable (torch {torch.__version__} is {build}); use --device cpu."
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
    elif parsed.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu.")
    return device


def check_model_folder(model_id: str) -> None:
    """For a local folder, a `ValueError` naming what is missing before anything heavy is loaded."""
    folder = Path(model_id)
    if not folder.is_dir():
        return  # a Hub id: the Hub client reports its own errors
    hint = ""
    if (folder / "final").is_dir():
        hint = f" Did you mean {folder / 'final'}?"
    elif folder.name.startswith("checkpoint-"):
        hint = " A checkpoint-* folder holds training state: use the phase's final/ folder."
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: not a saved Nano-EmoX model folder.{hint}")
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        raise ValueError(f"{folder} has no processor ({' or '.join(PROCESSOR_FILES)}).{hint}")


def load(model_id: str, device: str | None = None, dtype: str = "auto", quantize: str | None = None):
    """
    Loads a Nano-EmoX folder or Hub id through the public Auto classes; returns `(model, processor)`.

    `dtype="auto"` is the fastest correct dtype on the device (`default_inference_dtype`: fp32 on a CPU without native
    bf16, where a bf16 checkpoint would run 4.3× slower; bf16 on CUDA), not transformers' "the checkpoint's dtype".
    `quantize="int8"` (CPU only) applies `quantize_for_cpu`; otherwise, on a CPU, a model in bf16 gets its linear
    layers pre-packed for oneDNN (`pack_for_cpu`: the same outputs, faster; only on CPUs with native bf16). On a CPU
    the intra-op threads are set to the physical cores and the allocator keeps large buffers
    (`configure_cpu_inference`).
    """
    import torch
    from transformers import AutoModel, AutoProcessor

    from .quantization_nanoemox import configure_cpu_inference, default_inference_dtype, pack_for_cpu, quantize_for_cpu

    check_model_id(model_id)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    on_cpu = torch.device(device).type == "cpu"
    if quantize is not None and not on_cpu:
        raise ValueError(f"--quantize {quantize} is for CPU inference; got --device {device}.")
    if quantize is not None and dtype == "auto":
        torch_dtype = "auto"  # the checkpoint's own dtype: quantize_for_cpu sets the dtype of every part
    elif dtype == "auto":
        torch_dtype = default_inference_dtype(device)
    else:
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    try:
        model = AutoModel.from_pretrained(model_id, trust_remote_code=True, dtype=torch_dtype)
        processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{model_id}: the pickle weights file holds more than tensors and is refused (torch.load with "
            "weights_only=True). Use a safetensors checkpoint from a source you trust."
        ) from None
    except OSError as error:
        if Path(model_id).expanduser().is_dir():
            raise
        raise OSError(f"no such model folder or Hub id: {model_id} ({' '.join(str(error).split())[:200]})") from None
    if quantize is not None:
        model = quantize_for_cpu(model, quantize)
    elif on_cpu:
        model = pack_for_cpu(model)
    if on_cpu:
        configure_cpu_inference()
    return model.to(device).eval(), processor


def build_pipeline(model, processor):
    """[`NanoEmoXPipeline`] around an already loaded model and processor, on the model's device."""
    from .pipeline_nanoemox import NanoEmoXPipeline

    return NanoEmoXPipeline(model=model, processor=processor, device=model.device)


def generation_budget(model, prompt_length: int, max_new_tokens: int) -> int:
    """`max_new_tokens` clamped to the LLM's context; see `pipeline_nanoemox.generation_budget` (the pipeline applies
    it to every call)."""
    from .pipeline_nanoemox import generation_budget as budget

    return budget(model, prompt_length, max_new_tokens)


def predict(
    model,
    processor,
    *,
    video=None,
    audio=None,
    text=None,
    history=None,
    candidates=None,
    task="mer",
    max_new_tokens=128,
    load_audio_from_video=True,
) -> dict:
    """
    Runs one sample end to end (greedy decoding) and returns the pipeline's result: `task`, `answer` (ERG also
    `chain_of_empathy` and `reply`), `modalities`, `face_boxes` / `crop_boxes` / `face_source` (per frame) when there
    is a video, `fusion_gate_weights` (or `None`) and `timings` in seconds.
    """
    sample = {"video": video, "audio": audio, "text": text, "history": history, "candidates": candidates}
    sample = {key: value for key, value in sample.items() if value is not None}
    return build_pipeline(model, processor)(
        sample, task=task, max_new_tokens=max_new_tokens, load_audio_from_video=load_audio_from_video
    )


def _run(args: argparse.Namespace) -> int:
    history = None
    if args.history:
        try:
            history = json.loads(Path(args.history).read_text() if Path(args.history).is_file() else args.history)
        except json.JSONDecodeError as error:
            raise ValueError(f"--history is not valid JSON ({error.msg} at position {error.pos}).") from None
    if args.video is None and args.audio is None and args.text is None:
        raise ValueError("give at least one of --video, --audio, --text.")
    for option, value in (("--video", args.video), ("--audio", args.audio)):
        if value is not None and not Path(value).exists():
            raise OSError(f"{option} {value}: no such file.")
    candidates = [label.strip() for label in args.candidates.split(",") if label.strip()] if args.candidates else None
    model, processor = load(args.model, args.device, args.dtype, args.quantize)
    result = predict(
        model,
        processor,
        video=args.video,
        audio=args.audio,
        text=args.text,
        history=history,
        candidates=candidates,
        task=args.task,
        max_new_tokens=args.max_new_tokens,
        load_audio_from_video=not args.no_video_audio,
    )
    result["dtype"], result["quantize"] = str(model.dtype).removeprefix("torch."), args.quantize
    sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n" if args.json else result["answer"] + "\n")
    return 0


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def register(commands) -> None:
    parser = commands.add_parser("predict", help="Answer one task for one clip.")
    parser.add_argument("--model", required=True, help="Model folder or Hub id.")
    parser.add_argument("--video", help="Video file (.mp4, .mkv, ...) or folder of frames; its audio track is used.")
    parser.add_argument("--audio", help="Audio file, instead of the video's own track.")
    parser.add_argument("--no-video-audio", action="store_true", help="Ignore the video's own audio track.")
    parser.add_argument("--text", help="Subtitle / utterance (ERG: the user's current input).")
    parser.add_argument("--history", help="ERG dialogue history: JSON list of {role, content} or a file with it.")
    parser.add_argument("--candidates", help="Comma-separated labels to choose from (MER, MIR); default: the task's.")
    parser.add_argument("--task", required=True, choices=TASK_NAMES)
    parser.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=128,
        help="Generation budget (default 128, clamped to the context).",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available).")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto (default): bf16 on CUDA and on CPUs with native bf16, fp32 on other CPUs.",
    )
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="CPU only: int8 towers and a lighter LLM (torch.ao dynamic quantization); see the README's CPU inference.",
    )
    parser.add_argument("--json", action="store_true", help="Print answer, face boxes, fusion gates and timings.")
    parser.set_defaults(handler=_run)
