# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""What every section of `gpu_bench.py` shares: the run context ([`Bench`]: arguments, device, dtype, config, the
results being written, one guarded measurement), the environment record, timing between device synchronisations,
peak memory, and the model and inputs built directly on the device.

Imports the package like any user (`modeling_nanoemox`, installed with `pip install --no-deps -e .` where only torch,
transformers and PEFT are present): importing it pulls no PyAV, OpenCV, TRL or gradio, which the GPU image lacks.
"""

import gc
import importlib
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch
import transformers
from _machine import cpu_model
from gpu_flops import prefill_flops, training_flops
from transformers.generation.streamers import BaseStreamer

from modeling_nanoemox import NanoEmoXConfig, NanoEmoXForConditionalGeneration

logger = logging.getLogger("gpu_bench")

REPO_ROOT = Path(__file__).resolve().parents[1]
# Modules the benchmark must never pull in: they are absent from the GPU image.
FORBIDDEN_MODULES = ("trl", "gradio", "av", "cv2")
MODALITIES = ("video", "face", "audio", "fusion")
# Each frozen tower, the model input it reads and the public method that runs it.
TOWER_INPUTS = {
    "vision_tower": "pixel_values_videos",
    "face_encoder": "face_pixel_values",
    "audio_tower": "audio_values",
}
TOWER_METHODS = {
    "vision_tower": "get_video_tower_features",
    "face_encoder": "get_face_tower_features",
    "audio_tower": "get_audio_tower_features",
}
# The `tower_features` key of each tower's output (the feature-cache path of the model).
TOWER_FEATURE_KEYS = {"vision_tower": "video", "face_encoder": "face", "audio_tower": "audio"}


def forbidden_modules_loaded() -> list[str]:
    return sorted(name for name in FORBIDDEN_MODULES if name in sys.modules)


# ----------------------------------------------------------------------------------------------------------------
# Environment, timing, memory
# ----------------------------------------------------------------------------------------------------------------


def package_version(name: str) -> str:
    try:
        return importlib.import_module(name).__version__
    except ImportError:
        return "not installed"


def git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout
        return revision + (" + uncommitted changes to tracked files" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git checkout)"


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    env = {
        "device_type": device.type,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": package_version("peft"),
        "accelerate": package_version("accelerate"),
        "dtype": str(dtype).replace("torch.", ""),
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "git_revision": git_revision(),
        "host": platform.node(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        env.update(
            device_name=torch.cuda.get_device_name(device),
            device_memory_gb=round(properties.total_memory / 1e9, 1),
            compute_capability=f"{properties.major}.{properties.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        env.update(device_name=cpu_model(), usable_cores=cores, torch_threads=torch.get_num_threads())
    return env


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarise(times: list[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "mean_s": statistics.fmean(times),
        "n": len(times),
    }


def time_calls(fn, warmup: int, steps: int, device: torch.device) -> dict:
    """Runs `fn` `warmup` times untimed, then `steps` times, each timed between device synchronisations."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return summarise(times)


class PeakMemory:
    """Peak memory of one measurement: `torch.cuda.max_memory_allocated` on CUDA; on CPU the peak resident set size
    (VmHWM), reset through /proc/self/clear_refs where the kernel allows it (else it is the peak since start)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind = "peak RSS (VmHWM) since process start"

    def peak_gb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 1e9
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
        return float("nan")


class TokenClock(BaseStreamer):
    """A streamer that only timestamps: `generate` hands it the prompt first, then each new token once it is on the
    host (which synchronises with the device), so the stamps give time-to-first-token and the decoding rate."""

    def __init__(self):
        self.stamps: list[float] = []

    def put(self, value) -> None:
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------------------------
# Inputs and models
# ----------------------------------------------------------------------------------------------------------------


def build_inputs(
    config,
    batch_size: int,
    tokens: int,
    frames: int,
    clips: int,
    clip_samples: int,
    device,
    dtype,
    label_tokens: int = 0,
    seed: int = 0,
) -> dict:
    """A batch as the processor emits it (the model contract): per sample 3 text tokens, each modality's
    placeholders (69 for the full model), text up to `tokens`. Every sample has one video, one face track and one
    audio, so each media tensor holds `batch_size` items in sample order — `pixel_values_videos` `(B, T, 3, S, S)`,
    `face_pixel_values` `(B, T, 3, S_f, S_f)`, `audio_values` `(B, C, samples)` — and the model finds them by their
    placeholders (no masks). `labels` on the last `label_tokens` positions when asked."""
    generator = torch.Generator().manual_seed(seed)
    placeholders = []
    for modality in MODALITIES:
        placeholders += [getattr(config, f"{modality}_token_id")] * getattr(config, f"num_{modality}_tokens")
    text = tokens - len(placeholders) - 3
    if text < max(label_tokens, 1):
        raise ValueError(f"{tokens} tokens cannot hold {len(placeholders)} placeholders and {label_tokens} labels.")
    vocab = min(config.modality_token_ids.values())  # ordinary tokens lie below the placeholders
    rows = []
    for _ in range(batch_size):
        prefix, suffix = (
            torch.randint(0, vocab, (3,), generator=generator),
            torch.randint(0, vocab, (text,), generator=generator),
        )
        rows.append(torch.cat([prefix, torch.tensor(placeholders), suffix]))
    input_ids = torch.stack(rows)
    image, face = config.vision_config.image_size, config.face_config.backbone_config.image_size
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values_videos": torch.randn(batch_size, frames, 3, image, image, generator=generator),
        "face_pixel_values": torch.randn(batch_size, frames, 3, face, face, generator=generator),
        "audio_values": torch.randn(batch_size, clips, clip_samples, generator=generator),
    }
    if label_tokens:
        labels = torch.full_like(input_ids, -100)
        labels[:, -label_tokens:] = input_ids[:, -label_tokens:]
        inputs["labels"] = labels
    return {
        key: value.to(device, dtype) if value.is_floating_point() else value.to(device)
        for key, value in inputs.items()
    }


def build_model(config, device: torch.device, dtype: torch.dtype, seed: int):
    """A randomly initialised model created directly on `device` in `dtype` (no CPU copy of 2.3 B parameters)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = NanoEmoXForConditionalGeneration._from_config(config, dtype=dtype)
    text = config.text_config
    model.generation_config.eos_token_id = text.eos_token_id
    model.generation_config.pad_token_id = text.pad_token_id if text.pad_token_id is not None else text.eos_token_id
    return model


def release_memory() -> None:
    """Returns freed device memory after the caller dropped its references (so the next peak starts clean)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def set_checkpointing(model, enabled: bool) -> None:
    """Gradient checkpointing as the trainer turns it on for a PEFT model (non-reentrant + input grads); transformers
    5.24 calls it activation checkpointing, 5.17 gradient checkpointing."""
    if enabled:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    else:
        if hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_disable()
        model.disable_input_require_grads()


def graph_break_counts() -> dict:
    """Dynamo's graph-break reasons so far (a private counter, read only for the report)."""
    try:
        from torch._dynamo.utils import counters

        return dict(counters["graph_break"])
    except Exception:  # noqa: BLE001 - diagnostics must never fail the run
        return {}


def graph_break_summary(before: dict) -> dict:
    """Graph breaks since `before`: their number and up to five reasons (shortened)."""
    new = {reason: count - before.get(reason, 0) for reason, count in graph_break_counts().items()}
    new = {reason: count for reason, count in new.items() if count > 0}
    return {"count": sum(new.values()), "reasons": {k.split("\n")[0][:160]: v for k, v in list(new.items())[:5]}}


# ----------------------------------------------------------------------------------------------------------------
# The run context
# ----------------------------------------------------------------------------------------------------------------


class Bench:
    """One benchmark run: its arguments, device, dtype and config, the results written so far (`results`, saved to
    `--out` after every measurement) and the helpers every section uses. Sections are functions of it
    (`gpu_train`, `gpu_inference`); `gpu_report` turns its results into ratios, targets and Markdown."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = getattr(torch, args.dtype)
        self.config = NanoEmoXConfig() if args.size == "full" else NanoEmoXConfig.tiny()
        self.frames = args.frames
        self.clips = args.audio_clips
        self.clip_samples = int(round(args.audio_seconds * 16000))
        self.memory = PeakMemory(self.device)
        self.start = time.perf_counter()
        self.mixed = self.dtype != torch.float32  # bf16/fp16 weights, fp32 trainable copies, autocast
        self.matmul_rate: float | None = None  # FLOP/s, set by the matmul section (`gpu_train.matmul_rate`)
        self.results = {
            "env": environment(self.device, self.dtype),
            "settings": {
                "size": args.size,
                "batch_size": args.batch_size,
                "train_tokens": args.train_tokens,
                "label_tokens": args.label_tokens,
                "prefill_tokens": args.prefill_tokens,
                "new_tokens": args.new_tokens,
                "decode_batch_sizes": args.decode_batch_sizes,
                "frames": self.frames,
                "audio_clips": self.clips,
                "audio_samples_per_clip": self.clip_samples,
                "media_tokens_per_clip": sum(getattr(self.config, f"num_{m}_tokens") for m in MODALITIES),
                "steps": args.steps,
                "warmup": args.warmup,
                "decode_steps": args.decode_steps,
                "decode_warmup": args.decode_warmup,
                "compile": args.compile,
                "cuda_graphs": args.cuda_graphs,
                "plain_checkpointing": args.plain_checkpointing,
                "precision": (
                    f"frozen weights {args.dtype}, trainable weights float32, autocast {args.dtype}"
                    if self.mixed
                    else "float32 everywhere"
                ),
                "memory_kind": self.memory.kind,
            },
            "flops": {
                "train_step": training_flops(
                    self.config,
                    args.batch_size,
                    args.train_tokens,
                    self.frames,
                    self.clips,
                    self.clip_samples,
                ),
                "prefill_batch_1": prefill_flops(
                    self.config, 1, args.prefill_tokens, self.frames, self.clips, self.clip_samples
                ),
            },
            "forbidden_modules_loaded": forbidden_modules_loaded(),
        }

    # ---- bookkeeping -------------------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over_budget(self) -> bool:
        return bool(self.args.time_budget_s) and self.elapsed() > self.args.time_budget_s

    def save(self) -> None:
        self.results["settings"]["memory_kind"] = self.memory.kind
        self.results["wall_s"] = round(self.elapsed(), 1)
        if self.args.out:
            Path(self.args.out).write_text(json.dumps(self.results, indent=2, default=str) + "\n")

    def guarded(self, name: str, fn, optional: bool = False) -> dict:
        """Runs one measurement; an error (or, for optional ones, an exhausted time budget) is recorded, not raised,
        so one failing variant never costs the rest of a device session."""
        if optional and self.over_budget():
            logger.info("%s: skipped (time budget of %s s spent)", name, self.args.time_budget_s)
            return {"skipped": f"time budget of {self.args.time_budget_s} s spent"}
        logger.info("%s ...", name)
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as error:  # noqa: BLE001 - recorded in the report
            logger.error("%s failed: %s", name, error)
            result = {"error": f"{type(error).__name__}: {error}"[:2000], "traceback": traceback.format_exc()[-4000:]}
        release_memory()  # the measurement's models and tensors died with its frame
        result.setdefault("wall_s", round(time.perf_counter() - start, 2))
        self.save()
        return result

    def build_model(self):
        model = build_model(self.config, self.device, self.dtype, self.args.seed)
        self.results["env"]["attn_implementation"] = {
            name: getattr(getattr(model.config, name), "_attn_implementation", None)
            for name in ("text_config", "vision_config", "audio_config", "face_config")
        }
        return model

    def autocast(self):
        if not self.mixed:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def inputs(self, batch_size: int, tokens: int, label_tokens: int = 0) -> dict:
        return build_inputs(
            self.config,
            batch_size,
            tokens,
            self.frames,
            self.clips,
            self.clip_samples,
            self.device,
            self.dtype,
            label_tokens=label_tokens,
            seed=self.args.seed,
        )

    def time_towers(self, inner, media: dict, flops: dict | None = None, autocast: bool = False) -> dict:
        """Median time of each frozen tower on `media` (all frames / clips / crops of the batch in one call), the sum,
        and the achieved rate where the FLOPs are given."""
        result = {"total_ms": 0.0}
        for name, key in TOWER_INPUTS.items():
            method = getattr(inner, TOWER_METHODS[name])

            def call(method=method, key=key):
                with torch.no_grad(), self.autocast() if autocast else nullcontext():
                    method(media[key])

            seconds = time_calls(call, self.args.warmup, self.args.steps, self.device)["median_s"]
            result[name] = {"ms": seconds * 1e3}
            if flops:
                result[name]["achieved_tflops"] = flops[name] / seconds / 1e12
            result["total_ms"] += seconds * 1e3
        return result

    # ---- 1. matmul rate --------------------------------------------------------------------------------------
