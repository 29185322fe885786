# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Nano-EmoX performance in one run on one device: training throughput and MFU, inference latency, memory — each
next to a plain baseline measured in the same run, so every gain is a ratio on one card (issue 7).

    python benchmarks/gpu_bench.py --size full --device cuda --dtype bfloat16 --batch-size 8 \\
        --time-budget-s 360 --out gpu_bench.json --markdown gpu_bench.md 2>gpu_bench.log
    python benchmarks/gpu_bench.py --size tiny --device cpu --dtype float32 --steps 2 --warmup 1   # CI-sized
    python benchmarks/gpu_bench.py --size full --sections flops    # the paper FLOP count only, no model

Weights are random, built from the config directly on the device (full size = `NanoEmoXConfig()`, nothing is
downloaded). Sections, in the order they run (the JSON file is rewritten after each measurement, so a run cut short
keeps what it measured, and a failing measurement is recorded without stopping the others):

0. environment: device, library versions, dtype, attention implementation, the exact command line; the FLOPs of one
   training step and of one prefill, counted on paper per component (see "FLOPs" below);
1. the device's measured dense matmul rate in the run's dtype (MFU is computed against it, not a datasheet);
2. the phase-3 training step (frozen towers, LoRA r 16 / alpha 32 / dropout 0.05 on the LLM, heads + fusion
   trainable, AdamW step included) on raw media: the plain baseline (the recipe's settings — gradient checkpointing,
   towers recomputed every step, unfused AdamW) and the optimised variant (no checkpointing, fused AdamW); samples/s,
   step time, peak memory, MFU, and the paper count checked against `torch.utils.flop_counter` on the real step;
3. the same step on cached tower features (`*_tower_features`, the feature-cache path of phases 2–3);
4. inference: clip tensors → first token at batch 1 (towers + heads + LLM prefill, through `generate`), decode
   tokens/s at batch 1 and 16, peak memory. Plain: eager `generate` with the dynamic cache. Optimised:
   `generate(cache_implementation="static")`, for which transformers compiles the decoding step itself (CUDA graphs
   on CUDA, its default `CompileConfig`), and a prefill whose three towers are compiled (`nn.Module.compile`, CUDA
   graphs on CUDA). Compile times are reported apart; `--no-compile` (the CPU default) skips these;
5. ratios to the plain baseline and the issue's targets (pass/fail only on an H100-class GPU with the full model).

Imports. The GPU image has torch, transformers, peft and accelerate but no trl, gradio, PyAV or OpenCV. Importing
`modeling_nanoemox.<anything>` runs the package's `__init__`, which imports the processor (PyAV, OpenCV), and
`modeling_nanoemox.training` imports trl. So this script loads exactly the three files it needs —
`configuration_nanoemox.py`, `modeling_nanoemox.py` and `phases.py` — by path, as submodules of a stand-in package
whose `__init__` never runs; that is what transformers' remote-code loader does with a saved folder (the files are
shipped with relative imports for that reason). It needs no installed project and no files written anywhere.
"""

import argparse
import gc
import importlib
import importlib.machinery
import importlib.util
import json
import logging
import math
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
from transformers import CompileConfig
from transformers.generation.streamers import BaseStreamer

logger = logging.getLogger("gpu_bench")

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_PACKAGE_DIR = REPO_ROOT / "modeling_nanoemox"
# The stand-in package the model files are loaded under (see the module docstring).
MODEL_CODE_ALIAS = "nanoemox_bench_model_code"
# Modules this script must never pull in: they are absent from the GPU image.
FORBIDDEN_MODULES = ("modeling_nanoemox", "nanoemox_processing", "trl", "gradio", "av", "cv2")
# The paper FLOP count is always computed (no model needed); `--sections flops` prints only that.
SECTIONS = ("flops", "matmul", "train", "inference")
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
# Phase-3 optimiser settings (recipes/configs/full/phase_3.yaml).
LEARNING_RATE, WEIGHT_DECAY = 8e-6, 0.05
# Targets of issue 7, judged only on an H100-class GPU.
H100_CLASS = ("H100", "H200", "H800", "GH200")
TARGETS = {
    "train_mfu": 0.40,
    "train_speedup": 2.0,
    "train_peak_memory_gb": 40.0,
    "cached_speedup": 4.0,
    "prefill_ms": 35.0,
    "decode_tokens_per_s_batch_1": 200.0,
}


# ----------------------------------------------------------------------------------------------------------------
# Model code, without the package's __init__
# ----------------------------------------------------------------------------------------------------------------


def load_model_code(package_dir: Path = MODEL_PACKAGE_DIR):
    """Imports `configuration_nanoemox`, `modeling_nanoemox` and `phases` from `package_dir` as submodules of a stand-in
    package (its `__path__` points at the folder, its `__init__.py` is never executed). Returns the three modules."""
    if MODEL_CODE_ALIAS not in sys.modules:
        spec = importlib.machinery.ModuleSpec(MODEL_CODE_ALIAS, None, is_package=True)
        spec.submodule_search_locations = [str(package_dir)]
        sys.modules[MODEL_CODE_ALIAS] = importlib.util.module_from_spec(spec)
    return tuple(
        importlib.import_module(f"{MODEL_CODE_ALIAS}.{name}")
        for name in ("configuration_nanoemox", "modeling_nanoemox", "phases")
    )


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
# FLOPs, counted on paper
# ----------------------------------------------------------------------------------------------------------------
# Convention: 2 FLOPs per multiply-accumulate of every matmul and convolution; norms, softmax, activations, element-
# wise ops and gathers are not counted (they are memory-bound and a few % at most). Attention score and value
# matmuls are counted over the full (T × T) square, as PaLM's MFU does (causal kernels skip about half of it).
# Backward: a matmul whose weight trains needs an input-gradient and a weight-gradient matmul (2× its forward); a
# frozen weight needs only the input gradient (1×), and nothing at all where its input needs no gradient either
# (the towers, run without autograd). Gradient-checkpointing recomputation is not model work and is not counted,
# nor is flash attention's score recomputation in backward.


def clip_vision_flops(vc) -> int:
    """Forward FLOPs of the CLIP vision tower for one image: patch embedding + every encoder layer.
    n = (S/P)² + 1 tokens; per layer 2·n·(4·d² + 2·d·ff) for q, k, v, out and the MLP, + 4·n²·d for attention."""
    patches = (vc.image_size // vc.patch_size) ** 2
    n, d, ff = patches + 1, vc.hidden_size, vc.intermediate_size
    patch_embedding = 2 * patches * d * 3 * vc.patch_size**2
    per_layer = 2 * n * (4 * d * d + 2 * d * ff) + 4 * n * n * d
    return patch_embedding + vc.num_hidden_layers * per_layer


def hubert_flops(ac, num_samples: int) -> int:
    """Forward FLOPs of HuBERT for one clip of `num_samples`: the 7 feature-extractor convolutions
    (2·L_out·C_out·C_in·k each), the feature projection, the grouped positional convolution and the encoder layers
    (per layer 2·T·(4·d² + 2·d·ff) + 4·T²·d)."""
    length, channels_in, convolutions = num_samples, 1, 0
    for channels_out, kernel, stride in zip(ac.conv_dim, ac.conv_kernel, ac.conv_stride):
        length = (length - kernel) // stride + 1
        convolutions += 2 * length * channels_out * channels_in * kernel
        channels_in = channels_out
    frames, d, ff = length, ac.hidden_size, ac.intermediate_size
    projection = 2 * frames * ac.conv_dim[-1] * d
    kernel = ac.num_conv_pos_embeddings
    positional_frames = frames + 2 * (kernel // 2) - kernel + 1  # "same" padding; one frame is trimmed if k is even
    positional = 2 * positional_frames * d * (d // ac.num_conv_pos_embedding_groups) * kernel
    per_layer = 2 * frames * (4 * d * d + 2 * d * ff) + 4 * frames * frames * d
    return convolutions + projection + positional + ac.num_hidden_layers * per_layer


def face_encoder_flops(fc) -> int:
    """Forward FLOPs of the FaceXFormer encoder for one crop: Swin (patch embedding; per block q, k, v and output
    projections and windowed attention on the window-padded map, MLP; patch merging 4C→2C between stages) + the
    multi-scale head (one Linear C_s→H per stage on its map, the 1×1 fusion convolution 4H→H at stage-1 resolution)."""
    bc = fc.backbone_config
    resolution = bc.image_size // bc.patch_size
    total = 2 * resolution**2 * bc.embed_dim * 3 * bc.patch_size**2
    head = 0
    for stage, depth in enumerate(bc.depths):
        channels, side = bc.embed_dim * 2**stage, math.ceil(resolution / 2**stage)
        tokens = side * side
        window = min(bc.window_size, side)  # transformers shrinks the window to a smaller map
        padded = (math.ceil(side / window) * window) ** 2
        mlp = int(bc.mlp_ratio * channels)
        block = 2 * padded * channels * 4 * channels + 4 * padded * window**2 * channels + 4 * tokens * channels * mlp
        total += depth * block
        if stage < len(bc.depths) - 1:
            total += 2 * math.ceil(side / 2) ** 2 * 4 * channels * 2 * channels
        head += 2 * tokens * channels * fc.hidden_size
    num_stages = len(bc.depths)
    head += 2 * resolution**2 * num_stages * fc.hidden_size * fc.hidden_size
    return total + head


def qformer_head_flops(qc, num_queries: int, num_items: int, text_hidden: int) -> int:
    """Forward FLOPs of one Q-Former head (queries Q, items L of width E): per layer self-attention
    2·Q·h·3h + 4·Q²·h + 2·Q·h², cross-attention 2·Q·h² + 4·L·E·h + 4·Q·L·h + 2·Q·h², FFN 4·Q·h·I; adapter 2·Q·h·d."""
    q, h, e, i = num_queries, qc.hidden_size, qc.encoder_hidden_size, qc.intermediate_size
    self_attention = 2 * q * h * 3 * h + 4 * q * q * h + 2 * q * h * h
    cross_attention = 2 * q * h * h + 4 * num_items * e * h + 4 * q * num_items * h + 2 * q * h * h
    per_layer = self_attention + cross_attention + 4 * q * h * i
    return qc.num_hidden_layers * per_layer + 2 * q * h * text_hidden


def head_flops(config, num_frames: int, num_clips: int) -> tuple[dict, dict]:
    """Forward FLOPs of the trainable heads for one sample, and per head the part whose input needs no gradient (the
    matmuls that read frozen tower features directly: their backward has no input-gradient matmul). The Q-Formers'
    cross-attention reads tower features + trainable position embeddings, so it does need input gradients."""
    d = config.text_config.hidden_size
    video = qformer_head_flops(config.video_qformer_config, config.num_video_tokens, num_frames, d)
    audio = qformer_head_flops(config.audio_qformer_config, config.num_audio_tokens, num_clips, d)
    # Face head: Q_f queries attend over T frames of width H, then the MLP H → P → d.
    h, q, p = config.face_config.hidden_size, config.num_face_tokens, config.face_projector_hidden_size
    face_key_value = 4 * num_frames * h * h
    face = 2 * q * h * h + face_key_value + 4 * q * num_frames * h + 2 * q * h * h + 2 * q * (h * p + p * d)
    # Fusion: shared projections of the S scales (A→F, V→F), S experts (audio queries over video frames + FFN), the
    # gate (S·F → F → S) and the adapter F → d on the time-averaged vector.
    f, s = config.fusion_hidden_size, config.num_fusion_experts
    projections = 2 * num_clips * s * config.audio_config.hidden_size * f
    projections += 2 * num_frames * s * config.vision_config.hidden_size * f
    expert = 2 * num_clips * f * f + 4 * num_frames * f * f + 4 * num_clips * num_frames * f
    expert += 2 * num_clips * f * f + 4 * num_clips * f * f
    fusion = projections + s * expert + 2 * (s * f * f + f * s) + 2 * f * d
    forward = {"video_head": video, "audio_head": audio, "face_head": face, "fusion": fusion}
    return forward, {"face_head": face_key_value, "fusion": projections}


def llm_flops(tc, tokens: int, logits_positions: int, lora_rank: int = 0, lora_targets=()) -> dict:
    """Forward FLOPs of the decoder on one sequence of `tokens`: linear 2·T·(d·q + 2·d·kv + q·d + 3·d·ff) per layer;
    attention 4·T²·q per layer; LoRA 2·T·r·Σ(in + out) per layer over the adapted projections; LM head 2·P·d·V over
    the P positions whose logits are computed."""
    d, ff, layers = tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers
    head_dim = getattr(tc, "head_dim", None) or d // tc.num_attention_heads
    q, kv = tc.num_attention_heads * head_dim, tc.num_key_value_heads * head_dim
    shapes = {
        "q_proj": (d, q),
        "k_proj": (d, kv),
        "v_proj": (d, kv),
        "o_proj": (q, d),
        "gate_proj": (d, ff),
        "up_proj": (d, ff),
        "down_proj": (ff, d),
    }
    linear = layers * 2 * tokens * sum(i * o for i, o in shapes.values())
    attention = layers * 4 * tokens * tokens * q
    lora = layers * 2 * tokens * lora_rank * sum(sum(shapes[t]) for t in lora_targets)
    lm_head = 2 * logits_positions * d * tc.vocab_size
    return {"linear": linear, "attention": attention, "lora": lora, "lm_head": lm_head}


def training_flops(config, phases, batch_size: int, tokens: int, frames: int, clips: int, clip_samples: int) -> dict:
    """Model FLOPs of one phase-3 training step (forward + backward of the batch), by component, for raw media and
    for cached tower features. Towers: forward only (frozen, no autograd). Heads (all trainable): 3× forward, less the
    input-gradient matmuls of those that read tower features. LLM (frozen base + LoRA): base linears and the LM head
    (frozen, tied) 2× forward (input gradients only); attention and LoRA 3× forward. Logits are computed at every
    position (the model's `logits_to_keep=0`), so the LM head counts all `tokens`."""
    towers = {
        "vision_tower": batch_size * frames * clip_vision_flops(config.vision_config),
        "audio_tower": batch_size * clips * hubert_flops(config.audio_config, clip_samples),
        "face_encoder": batch_size * frames * face_encoder_flops(config.face_config),
    }
    heads_forward, no_input_grad = head_flops(config, frames, clips)
    heads = {name: batch_size * (3 * value - no_input_grad.get(name, 0)) for name, value in heads_forward.items()}
    llm_forward = llm_flops(config.text_config, tokens, tokens, phases.LORA_RANK, phases.LORA_TARGET_MODULES)
    multiplier = {"linear": 2, "attention": 3, "lora": 3, "lm_head": 2}
    llm = {f"llm_{name}": batch_size * multiplier[name] * value for name, value in llm_forward.items()}
    cached = sum(heads.values()) + sum(llm.values())
    return {
        "components": {**towers, **heads, **llm},
        "towers_forward": sum(towers.values()),
        "heads_forward_backward": sum(heads.values()),
        "llm_forward_backward": sum(llm.values()),
        "total_raw": sum(towers.values()) + cached,
        "total_cached": cached,
    }


def prefill_flops(config, batch_size: int, tokens: int, frames: int, clips: int, clip_samples: int) -> dict:
    """Forward FLOPs of clip tensors → first token: towers, heads, the plain decoder (no LoRA) on the prompt, and the
    LM head at the last position only (what `generate` asks for)."""
    towers = batch_size * (
        frames * clip_vision_flops(config.vision_config)
        + clips * hubert_flops(config.audio_config, clip_samples)
        + frames * face_encoder_flops(config.face_config)
    )
    heads = batch_size * sum(head_flops(config, frames, clips)[0].values())
    llm = batch_size * sum(llm_flops(config.text_config, tokens, 1).values())
    return {"towers": towers, "heads": heads, "llm": llm, "total": towers + heads + llm}


def flop_counter_mapping() -> dict:
    """`FlopCounterMode` formulas for the fused attention kernels that follow the convention above — backward = 2×
    forward (no recomputation), grouped-query shapes accepted (k/v with fewer heads than q) — and that also cover the
    CPU flash kernels, which torch's registry lacks."""

    def attention(query_shape, key_shape, value_shape) -> int:
        batch, heads, queries, head_dim = query_shape
        keys, value_dim = key_shape[-2], value_shape[-1]
        return 2 * batch * heads * queries * keys * (head_dim + value_dim)  # Q·Kᵀ and P·V

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return attention(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return 2 * attention(query_shape, key_shape, value_shape)

    aten, mapping = torch.ops.aten, {}
    for kernel in ("efficient", "flash", "cudnn", "flash_attention_for_cpu"):
        name = f"_scaled_dot_product_{kernel}" if kernel.endswith("cpu") else f"_scaled_dot_product_{kernel}_attention"
        for op, formula in ((name, forward), (f"{name}_backward", backward)):
            if hasattr(aten, op):
                mapping[getattr(aten, op)] = formula
    return mapping


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
    """A batch as the processor would emit it: 3 text tokens, each modality's placeholders (69 for the full model),
    text up to `tokens`; raw media for every sample; `labels` on the last `label_tokens` positions when asked."""
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


def build_model(modeling, config, device: torch.device, dtype: torch.dtype, seed: int):
    """A randomly initialised model created directly on `device` in `dtype` (no CPU copy of 2.3 B parameters)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = modeling.NanoEmoXForConditionalGeneration._from_config(config, dtype=dtype)
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
# The benchmark
# ----------------------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = getattr(torch, args.dtype)
        self.configuration, self.modeling, self.phases = load_model_code(Path(args.model_code))
        if args.size == "full":
            self.config = self.configuration.NanoEmoXConfig()
        else:
            self.config = self.configuration.NanoEmoXConfig.tiny()
        self.frames = args.frames
        self.clips = args.audio_clips
        self.clip_samples = int(round(args.audio_seconds * 16000))
        self.memory = PeakMemory(self.device)
        self.start = time.perf_counter()
        self.mixed = self.dtype != torch.float32  # bf16/fp16 weights, fp32 trainable copies, autocast
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
                "model_code": args.model_code,
            },
            "flops": {
                "train_step": training_flops(
                    self.config,
                    self.phases,
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
            "forbidden_modules_loaded": sorted(m for m in FORBIDDEN_MODULES if m in sys.modules),
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
        model = build_model(self.modeling, self.config, self.device, self.dtype, self.args.seed)
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

    def matmul(self) -> dict:
        size = self.args.matmul_size or (8192 if self.device.type == "cuda" else 1024)
        a = torch.randn(size, size, device=self.device, dtype=self.dtype)
        b = torch.randn(size, size, device=self.device, dtype=self.dtype)
        flops = 2 * size**3
        min_time = 1.0 if self.device.type == "cuda" else 0.3
        for _ in range(3):
            a @ b
        rates = []
        for _ in range(3):
            iterations, elapsed = 0, 0.0
            synchronize(self.device)
            start = time.perf_counter()
            while elapsed < min_time:
                for _ in range(10 if self.device.type == "cuda" else 1):
                    a @ b
                    iterations += 1
                synchronize(self.device)
                elapsed = time.perf_counter() - start
            rates.append(flops * iterations / elapsed)
        del a, b
        release_memory()
        rate = max(rates)
        self.matmul_rate = rate
        return {
            "size": size,
            "dtype": self.args.dtype,
            "tflops": rate / 1e12,
            "tflops_runs": [r / 1e12 for r in rates],
        }

    # ---- 2–3. phase-3 training step --------------------------------------------------------------------------

    def train(self) -> dict:
        args, phases = self.args, self.phases
        flops = self.results["flops"]["train_step"]
        section = {}
        model = self.build_model()
        inner = model.model
        # Paper count vs the model: every decoder Linear weight contributes 2 FLOPs per token.
        weights = sum(
            m.weight.numel() for m in inner.language_model.layers.modules() if isinstance(m, torch.nn.Linear)
        )
        paper = llm_flops(self.config.text_config, 1, 0)["linear"]
        section["check_llm_linear_flops_per_token"] = {"paper": paper, "from_weights": 2 * weights}

        # Phase 3 exactly as recipes/p2e.py sets it up (phases.py needs neither trl nor the processor).
        phase = phases.PHASES["3"]
        heads = phases.freeze_for_phase(model, phase)["trainable"]
        inner.encode_absent_modalities = True
        model = phases.apply_lora(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if self.mixed:
            for parameter in trainable:  # fp32 master weights for what trains (PEFT already does it for LoRA)
                parameter.data = parameter.data.float()
        model.train()
        section["trainable_parameters"] = sum(p.numel() for p in trainable)
        section["expected_trainable_parameters"] = heads + phases.lora_parameter_count(self.config.text_config)

        raw = self.inputs(args.batch_size, args.train_tokens, args.label_tokens)

        # What a feature cache stores, and what every uncached step pays for: each tower timed on its own.
        towers = self.time_towers(inner, raw, flops["components"], autocast=True)
        section["towers_forward"] = towers
        with torch.no_grad(), self.autocast():
            cached = {
                "video_tower_features": inner.get_video_tower_features(raw["pixel_values_videos"]),
                "face_tower_features": inner.get_face_tower_features(raw["face_pixel_values"]),
                "audio_tower_features": inner.get_audio_tower_features(raw["audio_values"]),
                **{k: v for k, v in raw.items() if k not in TOWER_INPUTS.values()},
            }

        fused = self.device.type == "cuda"
        variants = {
            # What the recipe does today (phase_3.yaml: gradient_checkpointing, adamw_torch), towers every step.
            "plain": dict(batch=raw, checkpointing=args.plain_checkpointing, fused=False, flops=flops["total_raw"]),
            # Same inputs; no checkpointing (the batch fits), fused AdamW.
            "optimised": dict(batch=raw, checkpointing=False, fused=fused, flops=flops["total_raw"]),
            # The feature cache: tower outputs computed once, passed as `*_tower_features`.
            "cached": dict(batch=cached, checkpointing=False, fused=fused, flops=flops["total_cached"]),
        }
        for name, variant in variants.items():
            section[name] = self.guarded(
                f"train/{name}", lambda v=variant: self.train_variant(model, trainable, **v), optional=name != "plain"
            )
        plain = section["plain"].get("samples_per_s")
        for name in ("optimised", "cached"):
            if plain and section[name].get("samples_per_s"):
                section[name]["speedup_vs_plain"] = section[name]["samples_per_s"] / plain
        if section["optimised"].get("samples_per_s") and section["cached"].get("samples_per_s"):
            section["cached"]["speedup_vs_optimised"] = (
                section["cached"]["samples_per_s"] / section["optimised"]["samples_per_s"]
            )
        return section

    def train_variant(self, model, trainable, batch, checkpointing: bool, fused: bool, flops: int) -> dict:
        args = self.args
        set_checkpointing(model, checkpointing)
        optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, fused=fused or None)
        losses = []

        def step():
            with self.autocast():
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())

        self.memory.reset()
        timing = time_calls(step, args.warmup, args.steps, self.device)
        result = {
            "checkpointing": checkpointing,
            "fused_adamw": fused,
            "step_s": timing,
            "samples_per_s": args.batch_size / timing["median_s"],
            "peak_memory_gb": self.memory.peak_gb(),
            "paper_flops": flops,
            "achieved_tflops": flops / timing["median_s"] / 1e12,
            "mfu": flops / timing["median_s"] / self.matmul_rate,
            "final_loss": float(losses[-1]),
        }
        if not math.isfinite(result["final_loss"]):
            raise FloatingPointError(f"non-finite loss {result['final_loss']}")
        if not checkpointing:  # counting recomputed layers would not be model FLOPs
            try:
                from torch.utils.flop_counter import FlopCounterMode

                counter = FlopCounterMode(display=False, custom_mapping=flop_counter_mapping())
                with counter, self.autocast():
                    model(**batch).loss.backward()
                result["flop_counter_flops"] = counter.get_total_flops()
                result["flop_counter_over_paper"] = result["flop_counter_flops"] / flops
            except Exception as error:  # noqa: BLE001 - a cross-check must not cost the timing above
                result["flop_counter_error"] = f"{type(error).__name__}: {error}"[:500]
            optimizer.zero_grad(set_to_none=True)
        set_checkpointing(model, False)
        return result

    # ---- 4. inference ------------------------------------------------------------------------------------------

    def generation_kwargs(self, new_tokens: int) -> dict:
        return {
            "do_sample": False,
            "max_new_tokens": new_tokens,
            "min_new_tokens": new_tokens,
            # Random weights may pick a placeholder id, which the model rightly refuses as input without media.
            "suppress_tokens": list(self.config.modality_token_ids.values()),
        }

    def generate_once(self, model, inputs: dict, new_tokens: int, **kwargs) -> dict:
        clock = TokenClock()
        synchronize(self.device)
        start = time.perf_counter()
        output = model.generate(**inputs, streamer=clock, **self.generation_kwargs(new_tokens), **kwargs)
        synchronize(self.device)
        total = time.perf_counter() - start
        tokens = clock.stamps[1:]  # the first stamp is the prompt, handed over before the prefill
        generated = output.shape[1] - inputs["input_ids"].shape[1]
        if generated != new_tokens or len(tokens) != new_tokens:
            raise RuntimeError(f"asked for {new_tokens} new tokens, got {generated} ({len(tokens)} streamed)")
        decode = tokens[-1] - tokens[0] if len(tokens) > 1 else float("nan")
        return {"total_s": total, "first_token_s": tokens[0] - start, "decode_s": decode}

    def generate_timed(self, model, inputs: dict, new_tokens: int, compile_run: bool = False, **kwargs) -> dict:
        """First call timed on its own when it compiles, then `decode_warmup` untimed calls and `decode_steps` timed
        ones; medians of time-to-first-token, decode time, and the derived decode rate."""
        args = self.args
        first = self.generate_once(model, inputs, new_tokens, **kwargs) if compile_run else None
        for _ in range(args.decode_warmup):
            self.generate_once(model, inputs, new_tokens, **kwargs)
        runs = [self.generate_once(model, inputs, new_tokens, **kwargs) for _ in range(args.decode_steps)]
        batch_size = inputs["input_ids"].shape[0]
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        result = {
            "batch_size": batch_size,
            "new_tokens": new_tokens,
            "first_token_ms": median["first_token_s"] * 1e3,
            "total_s": median["total_s"],
            "runs": len(runs),
        }
        if new_tokens > 1:
            result["decode_tokens_per_s"] = batch_size * (new_tokens - 1) / median["decode_s"]
            result["decode_ms_per_step"] = median["decode_s"] / (new_tokens - 1) * 1e3
        if first is not None:
            result["first_call_s"] = first["total_s"]
            result["compile_s"] = max(first["total_s"] - median["total_s"], 0.0)
        return result

    def compile_config(self) -> CompileConfig:
        """transformers' own compile of the decoding step: CUDA graphs ("reduce-overhead") on CUDA; elsewhere plain
        inductor, which transformers only does on request (`_compile_all_devices`)."""
        if self.device.type == "cuda":
            return CompileConfig(mode="reduce-overhead" if self.args.cuda_graphs else "default")
        config = CompileConfig(mode="default")
        config._compile_all_devices = True
        return config

    def inference(self) -> dict:
        args = self.args
        section = {}
        model = self.build_model().eval()
        inner = model.model
        one = self.inputs(1, args.prefill_tokens)

        def forward():
            with torch.no_grad():
                model(**one, use_cache=True, logits_to_keep=1)

        def plain_prefill():
            self.memory.reset()
            towers = self.time_towers(inner, one)
            result = {
                "towers_ms": towers["total_ms"],
                "towers": towers,
                "forward_ms": time_calls(forward, args.warmup, args.steps, self.device)["median_s"] * 1e3,
            }
            result["llm_and_heads_ms"] = result["forward_ms"] - result["towers_ms"]
            generate = self.generate_timed(model, one, 1)
            result["first_token_ms"] = generate["first_token_ms"]
            result["peak_memory_gb"] = self.memory.peak_gb()
            return result

        section["prefill_plain"] = self.guarded("inference/prefill plain", plain_prefill)
        for batch_size in args.decode_batch_sizes:
            inputs = self.inputs(batch_size, args.prefill_tokens)

            def plain_decode(inputs=inputs):
                self.memory.reset()
                return {**self.generate_timed(model, inputs, args.new_tokens), "peak_memory_gb": self.memory.peak_gb()}

            section[f"decode_plain_batch_{batch_size}"] = self.guarded(
                f"inference/decode plain batch {batch_size}", plain_decode, optional=batch_size != 1
            )
        if not args.compile:
            reason = "skipped: --no-compile" + (" (the default on CPU)" if self.device.type == "cpu" else "")
            section["decode_optimised"] = section["prefill_optimised"] = {"skipped": reason}
            return section

        # Most valuable first (the targets are at batch 1); each compile costs device minutes.
        first, *others = args.decode_batch_sizes
        section[f"decode_optimised_batch_{first}"] = self.optimised_decode(model, first)
        section["prefill_optimised"] = self.guarded(
            "inference/prefill, towers compiled", self.optimised_prefill, optional=True
        )
        for batch_size in others:
            section[f"decode_optimised_batch_{batch_size}"] = self.optimised_decode(model, batch_size)
        return section

    def optimised_decode(self, model, batch_size: int) -> dict:
        """`generate(cache_implementation="static")`: transformers compiles the decoding step itself (with CUDA graphs
        under its default `CompileConfig` on CUDA); the prefill stays eager."""
        inputs = self.inputs(batch_size, self.args.prefill_tokens)

        def measure():
            self.memory.reset()
            before = graph_break_counts()
            result = self.generate_timed(
                model,
                inputs,
                self.args.new_tokens,
                compile_run=True,
                cache_implementation="static",
                compile_config=self.compile_config(),
            )
            result.update(peak_memory_gb=self.memory.peak_gb(), graph_breaks=graph_break_summary(before))
            return result

        return self.guarded(f"inference/decode static cache + compile batch {batch_size}", measure, optional=True)

    def optimised_prefill(self) -> dict:
        """A fresh model whose three towers are compiled (`nn.Module.compile`, static shapes — one clip is always 8
        frames, 8 crops, 8 audio clips — with CUDA graphs on CUDA); clip tensors → first token through `generate`.
        The LLM prefill stays eager: transformers' caches are not compile-stable across prefill calls (see RESULTS.md)."""
        args = self.args
        mode = "reduce-overhead" if self.device.type == "cuda" and args.cuda_graphs else "default"
        model = self.build_model().eval()
        inner = model.model
        one = self.inputs(1, args.prefill_tokens)
        # One eager call first: transformers installs its hidden-state capture hooks on the first forward, under a lock
        # that would otherwise break the compiled graph.
        with torch.no_grad():
            for name, key in TOWER_INPUTS.items():
                getattr(inner, TOWER_METHODS[name])(one[key])
        for name in TOWER_INPUTS:
            getattr(inner, name).compile(mode=mode, dynamic=False)
        self.memory.reset()
        before = graph_break_counts()
        result = {"compiled": "vision_tower, audio_tower, face_encoder", "mode": mode}
        result["cuda_graphs"] = "on" if mode == "reduce-overhead" else "skipped (CUDA only)"
        result.update(self.generate_timed(model, one, 1, compile_run=True))
        result.update(peak_memory_gb=self.memory.peak_gb(), graph_breaks=graph_break_summary(before))
        return result

    # ---- 5. ratios and targets ---------------------------------------------------------------------------------

    def summarise(self) -> None:
        """Ratios to the plain baseline of this run, and the issue's targets next to the numbers."""
        results = self.results

        def get(section: str, variant: str, key: str):
            value = results.get(section, {}).get(variant, {})
            return value.get(key) if isinstance(value, dict) else None

        pairs = {
            "train_optimised_vs_plain": (("train", "optimised", "samples_per_s"), ("train", "plain", "samples_per_s")),
            "train_cached_vs_plain": (("train", "cached", "samples_per_s"), ("train", "plain", "samples_per_s")),
            "train_cached_vs_optimised": (
                ("train", "cached", "samples_per_s"),
                ("train", "optimised", "samples_per_s"),
            ),
            # Latency: plain / optimised, so that > 1 is a gain like every other ratio.
            "prefill_plain_vs_optimised": (
                ("inference", "prefill_plain", "first_token_ms"),
                ("inference", "prefill_optimised", "first_token_ms"),
            ),
        }
        for batch_size in self.args.decode_batch_sizes:
            pairs[f"decode_batch_{batch_size}_optimised_vs_plain"] = (
                ("inference", f"decode_optimised_batch_{batch_size}", "decode_tokens_per_s"),
                ("inference", f"decode_plain_batch_{batch_size}", "decode_tokens_per_s"),
            )
        results["ratios"] = {}
        for name, (numerator, denominator) in pairs.items():
            top, bottom = get(*numerator), get(*denominator)
            if top and bottom:
                results["ratios"][name] = top / bottom

        device_name = results["env"].get("device_name", "")
        if self.device.type != "cuda":
            not_judged = "n/a (CPU)"
        elif not any(tag in device_name for tag in H100_CLASS):
            not_judged = "n/a (not an H100-class GPU)"
        elif self.args.size != "full":
            not_judged = "n/a (not the full-size model)"
        else:
            not_judged = None
        at_batch_8 = None if self.args.batch_size == 8 else f"n/a (batch {self.args.batch_size}, target is at 8)"
        ratios = results["ratios"]
        rows = [
            # name, description, value, plain value, higher is better, extra condition
            ("train_mfu", "phase-3 step MFU at batch 8 (optimised, raw media)", get("train", "optimised", "mfu"),
             get("train", "plain", "mfu"), True, at_batch_8),
            ("train_speedup", "phase-3 samples/s, optimised / plain", ratios.get("train_optimised_vs_plain"), 1.0,
             True, at_batch_8),
            ("train_peak_memory_gb", "phase-3 peak memory (optimised), GB", get("train", "optimised", "peak_memory_gb"),
             get("train", "plain", "peak_memory_gb"), False, at_batch_8),
            ("cached_speedup", "cached-feature samples/s / plain", ratios.get("train_cached_vs_plain"), 1.0, True,
             at_batch_8),
            ("prefill_ms", "clip → first token at batch 1, ms (towers compiled)",
             get("inference", "prefill_optimised", "first_token_ms"),
             get("inference", "prefill_plain", "first_token_ms"), False, None),
            ("decode_tokens_per_s_batch_1", "decode tokens/s at batch 1 (static cache + compile)",
             get("inference", "decode_optimised_batch_1", "decode_tokens_per_s"),
             get("inference", "decode_plain_batch_1", "decode_tokens_per_s"), True, None),
        ]  # fmt: skip
        results["targets"] = []
        for name, description, value, plain, higher_is_better, condition in rows:
            goal = TARGETS[name]
            if value is None:
                verdict = "not measured"
            elif not_judged or condition:
                verdict = not_judged or condition
            else:
                verdict = "pass" if (value >= goal if higher_is_better else value <= goal) else "fail"
            results["targets"].append(
                {
                    "name": name,
                    "description": description,
                    "value": value,
                    "target": goal,
                    "higher_is_better": higher_is_better,
                    "plain": plain,
                    "verdict": verdict,
                }
            )

    def run(self) -> dict:
        sections = self.args.sections
        if "matmul" in sections or "train" in sections:
            self.results["matmul"] = self.guarded("matmul rate", self.matmul)
        if "train" in sections:
            if not hasattr(self, "matmul_rate"):
                self.results["train"] = {"error": "no matmul rate to compute MFU against"}
            else:
                self.results["train"] = self.guarded("train", self.train)
        if "inference" in sections:
            self.results["inference"] = self.guarded("inference", self.inference)
        self.summarise()
        self.results["forbidden_modules_loaded"] = sorted(m for m in FORBIDDEN_MODULES if m in sys.modules)
        self.save()
        return self.results


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _cell(result: dict, key: str, scale: float = 1.0, digits: int = 3) -> str:
    if "error" in result:
        return "error"
    if "skipped" in result:
        return "skipped"
    value = result.get(key)
    return _fmt(value * scale if isinstance(value, (int, float)) else value, digits)


def _towers_line(towers: dict) -> str:
    parts = []
    for name in TOWER_INPUTS:
        if name in towers:
            rate = towers[name].get("achieved_tflops")
            parts.append(f"{name} {towers[name]['ms']:.3g} ms" + (f" ({rate:.3g} TFLOP/s)" if rate else ""))
    return ", ".join(parts) + f"; total {towers['total_ms']:.3g} ms"


def render_report(results: dict) -> str:
    """The run as Markdown (stdout, and pasteable into benchmarks/RESULTS.md)."""
    env, settings = results["env"], results["settings"]
    lines = ["# Nano-EmoX benchmark", "", "## Environment", ""]
    lines += [f"- {key}: `{value}`" for key, value in env.items()]
    lines += [f"- settings: `{json.dumps(settings)}`", ""]
    matmul = results.get("matmul", {})
    if matmul:
        lines += [
            "## Matmul rate",
            "",
            f"{_cell(matmul, 'tflops', digits=4)} TFLOP/s ({matmul.get('size')}³ {matmul.get('dtype')}, best of 3)",
            "",
        ]
    flops = results["flops"]["train_step"]
    lines += ["## Training-step FLOPs (on paper, per step)", "", "| component | TFLOP |", "|---|---|"]
    lines += [f"| {name} | {value / 1e12:.4g} |" for name, value in flops["components"].items()]
    lines += [
        f"| **total, raw media** | **{flops['total_raw'] / 1e12:.4g}** |",
        f"| **total, cached features** | **{flops['total_cached'] / 1e12:.4g}** |",
        "",
        "Prefill at batch 1 (TFLOP): "
        + ", ".join(f"{k} {v / 1e12:.4g}" for k, v in results["flops"]["prefill_batch_1"].items()),
        "",
    ]
    train = results.get("train", {})
    if "trainable_parameters" in train:
        lines += [
            f"Trainable parameters: {train['trainable_parameters']:,} (expected "
            f"{train['expected_trainable_parameters']:,}); LLM linear FLOPs/token, paper vs 2 × decoder Linear weights: "
            f"{train['check_llm_linear_flops_per_token']}.",
            "",
        ]
    if train:
        lines += [
            "## Phase-3 training step",
            "",
            "| variant | ckpt | samples/s | step ms (median) | peak GB | MFU | TFLOP/s | × plain | counter/paper |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name in ("plain", "optimised", "cached"):
            r = train.get(name, {})
            step = r.get("step_s", {}).get("median_s")
            lines.append(
                f"| {name} | {_cell(r, 'checkpointing')} | {_cell(r, 'samples_per_s')} | "
                f"{_fmt(step * 1e3 if step else None)} | {_cell(r, 'peak_memory_gb')} | {_cell(r, 'mfu')} | "
                f"{_cell(r, 'achieved_tflops')} | {_cell(r, 'speedup_vs_plain') if name != 'plain' else '1'} | "
                f"{_cell(r, 'flop_counter_over_paper', digits=4)} |"
            )
        towers = train.get("towers_forward")
        if towers:
            lines += ["", f"Towers forward on the training batch (no grad): {_towers_line(towers)}."]
        errors = {
            name: train[name]["error"] for name in ("plain", "optimised", "cached") if "error" in train.get(name, {})
        }
        if "error" in train:
            errors["train"] = train["error"]
        lines += [f"- {name} error: `{error}`" for name, error in errors.items()]
        lines.append("")
    inference = results.get("inference", {})
    if inference:
        lines += ["## Inference", ""]
        prefill = inference.get("prefill_plain", {})
        optimised = inference.get("prefill_optimised", {})
        lines += [
            "| prefill, batch 1 | first token ms | towers ms | forward ms | compile s | peak GB |",
            "|---|---|---|---|---|---|",
            f"| plain (eager, dynamic cache) | {_cell(prefill, 'first_token_ms')} | {_cell(prefill, 'towers_ms')} | "
            f"{_cell(prefill, 'forward_ms')} | — | {_cell(prefill, 'peak_memory_gb')} |",
            f"| towers compiled ({optimised.get('mode', '—')}) | {_cell(optimised, 'first_token_ms')} | — | — | "
            f"{_cell(optimised, 'compile_s')} | {_cell(optimised, 'peak_memory_gb')} |",
        ]
        if prefill.get("towers"):
            lines += ["", f"Towers at batch 1 (eager): {_towers_line(prefill['towers'])}."]
        lines += [
            "",
            "| decode | batch | tokens/s | ms/step | first token ms | compile s | peak GB |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind in ("plain", "optimised"):
            for key, r in inference.items():
                if key.startswith(f"decode_{kind}_batch_"):
                    lines.append(
                        f"| {kind} | {key.rsplit('_', 1)[1]} | {_cell(r, 'decode_tokens_per_s')} | "
                        f"{_cell(r, 'decode_ms_per_step')} | {_cell(r, 'first_token_ms')} | {_cell(r, 'compile_s')} | "
                        f"{_cell(r, 'peak_memory_gb')} |"
                    )
            if f"decode_{kind}" in inference:
                lines.append(f"| {kind} | — | {inference[f'decode_{kind}'].get('skipped', '—')} | | | | |")
        for key, r in inference.items():
            if isinstance(r, dict) and "error" in r:
                lines.append(f"- {key} error: `{r['error']}`")
        if "error" in inference:
            lines.append(f"- inference error: `{inference['error']}`")
        lines.append("")
    if results.get("ratios"):
        lines += ["## Ratios to the plain baseline (same run)", ""]
        lines += [f"- {name}: {value:.3g}×" for name, value in results["ratios"].items()]
        lines.append("")
    lines += ["## Targets (issue 7)", "", "| target | value | goal | plain | verdict |", "|---|---|---|---|---|"]
    for t in results.get("targets", []):
        goal = ("≥ " if t["higher_is_better"] else "≤ ") + _fmt(t["target"])
        lines.append(f"| {t['description']} | {_fmt(t['value'])} | {goal} | {_fmt(t['plain'])} | {t['verdict']} |")
    lines += [
        "",
        f"Forbidden modules loaded: {results.get('forbidden_modules_loaded')}; wall {results.get('wall_s')} s",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="NanoEmoXConfig() or .tiny()")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch (clips)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps / prefill calls")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--decode-steps", type=int, default=None, help="timed generate calls (default min(steps, 3))")
    parser.add_argument(
        "--decode-warmup", type=int, default=None, help="untimed generate calls (default min(warmup, 1))"
    )
    parser.add_argument(
        "--train-tokens", type=int, default=200, help="tokens per training sample, placeholders included"
    )
    parser.add_argument("--label-tokens", type=int, default=30, help="trailing tokens that carry labels")
    parser.add_argument("--prefill-tokens", type=int, default=300, help="prompt length for inference")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens decoded per generate call")
    parser.add_argument("--decode-batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--frames", type=int, default=8, help="video frames and face crops per clip")
    parser.add_argument("--audio-clips", type=int, default=8)
    parser.add_argument("--audio-seconds", type=float, default=2.0, help="seconds per audio clip at 16 kHz")
    parser.add_argument(
        "--matmul-size", type=int, default=None, help="square matmul side (default 8192 CUDA, 1024 CPU)"
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure the compiled variants (default: on for CUDA, off for CPU)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile with mode='reduce-overhead' (CUDA graphs) on CUDA",
    )
    parser.add_argument(
        "--plain-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gradient checkpointing in the plain training baseline (as recipes/configs/full/phase_3.yaml)",
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--time-budget-s",
        type=float,
        default=0,
        help="skip the remaining optional variants once this many seconds have passed (0: no limit)",
    )
    parser.add_argument(
        "--model-code",
        default=str(MODEL_PACKAGE_DIR),
        help="folder with configuration_nanoemox.py, modeling_nanoemox.py, phases.py (to A/B a changed model)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="gpu_bench.json", help="JSON report (rewritten after every measurement)")
    parser.add_argument("--markdown", default=None, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    args.cuda_graphs = args.cuda_graphs and args.device.startswith("cuda")
    args.decode_steps = args.decode_steps if args.decode_steps is not None else max(1, min(args.steps, 3))
    args.decode_warmup = args.decode_warmup if args.decode_warmup is not None else min(args.warmup, 1)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be at least 1, --warmup at least 0")
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()  # random-weight generation warnings would bury the progress log
    results = Bench(args).run()
    report = render_report(results)
    sys.stdout.write(report)
    if args.markdown:
        Path(args.markdown).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
