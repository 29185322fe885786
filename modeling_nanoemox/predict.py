# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""`nanoemox predict`: one clip in, the model's answer out (with `--json`: face boxes, fusion gates, timings)."""

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

# What a saved processor leaves in a folder; `checkpoint-*` folders of a phase hold weights only.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def check_device(device: str) -> str:
    """`device` if this torch can use it, else a `ValueError` that says why (e.g. `cuda` on a CPU-only build)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"--device {device!r} is not a device torch knows ({error}).") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"--device {device}: no CUDA device is usable (torch {torch.__version__} is {build}); use --device cpu.")
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


def load(model_id: str, device: str | None = None, dtype: str = "auto"):
    """Loads a Nano-EmoX folder or Hub id through the public Auto classes."""
    from transformers import AutoModel, AutoProcessor

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    check_model_folder(model_id)
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        dtype
    ]
    try:
        model = AutoModel.from_pretrained(model_id, trust_remote_code=True, dtype=torch_dtype).to(device).eval()
    except pickle.UnpicklingError:
        raise ValueError(
            f"{model_id}: the pickle weights file holds more than tensors and is refused (torch.load with "
            "weights_only=True). Use a safetensors checkpoint from a source you trust."
        ) from None
    processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
    return model, processor


def generation_budget(model, prompt_length: int, max_new_tokens: int) -> int:
    """`max_new_tokens`, clamped (with a warning) so the prompt plus the answer fit the LLM's context length."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    text_config = getattr(model.config, "text_config", model.config)
    context = getattr(text_config, "max_position_embeddings", None)
    if not context:
        return max_new_tokens
    room = context - prompt_length
    if room < 1:
        raise ValueError(f"The prompt takes {prompt_length} tokens: no room left in the {context}-token context.")
    if max_new_tokens > room:
        logger.warning(
            f"max_new_tokens {max_new_tokens} goes past the {context}-token context ({prompt_length} in the prompt); "
            f"generating at most {room}."
        )
        return room
    return max_new_tokens


def predict(
    model, processor, *, video=None, audio=None, text=None, history=None, task="mer", max_new_tokens=128
) -> dict:
    """
    Runs one sample end to end and returns the answer with what the model saw: face boxes (original-frame pixels),
    per-frame face flags, the fusion gate weights and timings in seconds.
    """
    timings = {}
    start = time.perf_counter()
    inputs = processor(videos=video, audio=audio, text=text, history=history, task=task)
    timings["preprocess_s"] = time.perf_counter() - start

    gates = []
    # The gate weights are an output of the prompt's forward pass; a hook reads them during generation.
    hook = model.model.fusion_encoder.register_forward_hook(lambda _m, _i, output: gates.append(output[1].detach()))
    try:
        start = time.perf_counter()
        device_inputs = inputs.to(model.device)
        max_new_tokens = generation_budget(model, inputs["input_ids"].shape[1], max_new_tokens)
        with torch.inference_mode():
            output = model.generate(**device_inputs, max_new_tokens=max_new_tokens, do_sample=False)
        timings["generate_s"] = time.perf_counter() - start
    finally:
        hook.remove()
    answer = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :])[0].strip()
    result = {"task": task, "answer": answer}
    if task == "erg":
        result["chain_of_empathy"], result["reply"] = processor.split_chain_of_empathy(answer)
    result["modalities"] = [
        name for name, key in (("video", "video_mask"), ("face", "face_mask"), ("audio", "audio_mask"))
        if key in inputs and bool(inputs[key][0])
    ]  # fmt: skip
    if "face_boxes" in inputs:
        result["face_boxes"] = [[round(v, 1) for v in box] for box in inputs["face_boxes"][0].tolist()]
        result["face_detected"] = inputs["face_detected"][0].tolist()
    result["fusion_gate_weights"] = gates[0][0].float().tolist() if gates else None
    result["timings"] = {k: round(v, 4) for k, v in timings.items()}
    return result


def _run(args: argparse.Namespace) -> int:
    history = None
    if args.history:
        try:
            history = json.loads(Path(args.history).read_text() if Path(args.history).is_file() else args.history)
        except json.JSONDecodeError as error:
            raise ValueError(f"--history is not valid JSON ({error.msg} at position {error.pos}).") from None
    if args.video is None and args.audio is None and args.text is None:
        raise ValueError("give at least one of --video, --audio, --text.")
    model, processor = load(args.model, args.device, args.dtype)
    result = predict(
        model,
        processor,
        video=args.video,
        audio=args.audio,
        text=args.text,
        history=history,
        task=args.task,
        max_new_tokens=args.max_new_tokens,
    )
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if args.json else result["answer"] + "\n")
    return 0


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def register(commands) -> None:
    parser = commands.add_parser("predict", help="Answer one task for one clip.")
    parser.add_argument("--model", required=True, help="Model folder or Hub id.")
    parser.add_argument("--video", help="Video file (.mp4, .mkv, ...); its audio track is used unless --audio.")
    parser.add_argument("--audio", help="Audio file, instead of the video's own track.")
    parser.add_argument("--text", help="Subtitle / utterance (ERG: the user's current input).")
    parser.add_argument("--history", help="ERG dialogue history: JSON list of {role, content} or a file with it.")
    parser.add_argument("--task", required=True, choices=("msa", "mer", "ovmer", "mir", "eri", "erg"))
    parser.add_argument(
        "--max-new-tokens", type=_positive_int, default=128, help="Generation budget (clamped to the context)."
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available).")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    parser.add_argument("--json", action="store_true", help="Print answer, face boxes, fusion gates and timings.")
    parser.set_defaults(handler=_run)
