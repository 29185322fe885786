# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Fast CPU inference: the dtype a device should run in, the thread count, and int8 quantization of the linear layers.

Not a remote-code file: a saved model folder never needs it. `nanoemox predict` and the demo call it after loading a
model:

```python
>>> from modeling_nanoemox.quantization_nanoemox import configure_cpu_inference, default_inference_dtype, quantize_for_cpu

>>> model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=default_inference_dtype("cpu"))
>>> model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype="auto")  # or: the checkpoint's bf16
>>> model = quantize_for_cpu(model, "int8")  # int8 towers, fp16-weight language model, the rest exact
>>> configure_cpu_inference()  # one thread per physical core this process may use; malloc keeps large buffers
```

End to end at full size on the 2 idle cores of this project's machine (one 16 s clip, 32 new tokens; README, "CPU
inference", two runs): fp32 53–55 s for a one-shot request (47 s in a served model's steady state) at a peak RSS of
14.2 GB, `quantize_for_cpu(model, "int8")` 19–21 s (2.6–2.8×; steady state 21–23 s, 2.1–2.3×) at 5.6–5.7 GB, with
the same answer and top-1 agreement 1.000 on a trained LLM. On a newer 2-core AMD EPYC with AVX-512, VNNI and
AVX512-BF16, against fp32's 35 s in steady state: the default (bf16, [`pack_for_cpu`]) 13–14 s, int8 (towers int8,
language model packed bf16) 12.8–14.5 s, at 5.5–5.8 GB.

Why these choices (measured on the 2-core AMD EPYC, AVX2 without AVX-512, of this project; `benchmarks/
bench_cpu_inference.py`):
- bf16 on a CPU without native bf16 kernels (no AMX / AVX512-BF16) is converted on the fly: a 1536×8960 matmul ran
  2.5× slower than fp32 at 128 tokens, and a whole `generate` 4.3× slower (issue 16). fp32 is the fast exact dtype
  there; bf16 is chosen on CPUs that have those instructions and on CUDA.
- int8: `torch.ao`'s dynamic quantization (FBGEMM kernels: int8 weights per output channel, activations quantized
  per call) against torchao 0.18's `Int8DynamicActivationInt8WeightConfig` / `Int8WeightOnlyConfig` in eager mode,
  one 1536×8960 linear, medians of interleaved runs on the shared (busy) machine, 2 threads: at 1 token (decoding)
  fp32 8.4 ms, torch.ao 12.3 ms, torchao 33.7 / 104 ms; at 64 tokens (prefill, towers) fp32 128 ms, torch.ao 48 ms,
  torchao 1726 / 228 ms. With 1 thread (no oversubscription): fp32 7.8 → torch.ao 1.0 ms at 1 token, 80 → 37 ms at
  64 tokens. torchao's CPU speed comes from `torch.compile`, which a command-line call cannot afford, and once
  installed every `import transformers` imports it. `torch.ao.quantization` prints a deprecation notice in torch 2.13
  but ships and works; the notice is silenced here, and torchao is the migration target once its CPU eager kernels
  are competitive.
- The language model keeps fp16 weights by default, not int8: FBGEMM quantizes each activation tensor with one
  7-bit scale, and a trained LLM's activation outliers cost it most of that resolution (SmolLM2-135M-Instruct: top-1
  next-token agreement with fp32 0.42 with int8, 1.00 with fp16 weights). fp16 holds every bf16 checkpoint value
  of normal magnitude exactly and halves the bytes read per decoded token.
- Weight-only int8 for the language model (int8 weights per output channel, activations kept in floating point, so
  no outlier problem) was measured and not adopted: torch 2.13's CPU kernel for it, `aten._weight_int8pack_mm`, has
  no fast path on AVX2. All 196 linear layers of the 1.5 B LLM, 2 threads, busy machine, fastest run: one token
  (decoding, 5 runs) 0.75 s (up to 1.58) with bf16 activations against 0.23 s (up to 0.45) for FBGEMM's fp16
  weights; 150 tokens (prefill, 2 runs) 12.1 s against 6.6 s; dequantizing the weights to fp32 in each call 17 s;
  with fp32 activations the kernel is unvectorised (one 8960×1536 layer, 300 tokens: 5.2 s against 0.11 s in fp32).
- On a CPU with native bf16 (AVX-512 with AVX512-BF16 and VNNI, 2 cores, all 196 LLM linears, random weights):
  one token / 150 tokens took bf16 unpacked 178–204 ms / 1.08–1.10 s, bf16 packed ([`PackedBFloat16Linear`]) 117 ms
  / 1.03 s, FBGEMM fp16 99–105 ms / 2.14–2.20 s, weight-only int8 with bf16 activations 77–86 ms / 3.25–3.55 s. So
  there the default packs bf16 ([`pack_for_cpu`]) and int8's language model is packed bf16 (`language_model="auto"`):
  the prompt's prefill costs more than the few ms per decoded token that fp16 or weight-only int8 would save.
- Memory: transformers loads a checkpoint already in the requested dtype (a bf16 one with `dtype="auto"`) as views
  of the memory-mapped file, and every page read during quantization stays resident until the whole mapping goes:
  the full-size peak was 9.7 GB (4.6 GB of checkpoint pages on top of the quantized model). `quantize_for_cpu`
  releases the pages of each tensor it replaces ([`release_checkpoint_pages`]) and converts the remaining bf16
  tensors to fp32 in 64 MB blocks, so the peak stays near the quantized model's own size.
- The vision tower's last layer is dropped: Nano-EmoX reads the CLS tokens of layers -2, 12, 16 and 22 of CLIP's 24,
  so the last layer's output was computed and thrown away; the layer that becomes the last computes its CLS token
  only ([`compute_only_cls_in_last_vision_layer`]: keys and values from every token, the rest for one).
- Exact parts: the modality heads and adapters and the fusion encoder stay in fp32. The embedding table keeps the
  checkpoint's values (bf16, looked up into fp32: [`Float32OutputEmbedding`]); `lm_head`, tied to it, gets an fp16
  copy of its own, the same values for a bf16 checkpoint: decoding reads 0.47 GB less per token (5.2 → 6.3–7.3
  tokens/s) for no more memory than the fp32 table it replaces.
- Allocator and threads for the towers: [`configure_cpu_allocator`] stops glibc from unmapping the towers' 34 MB
  activations after each use (int8 vision tower 8.1 → 6.1 s); [`split_batch_across_threads`] runs each int8 tower's
  batch as one-thread halves side by side (FBGEMM's int8 matmul: 111 ms on one thread, 94 ms on two).
- Threads: PyTorch's default can count hyper-threads and ignores CPU quotas; more threads than cores makes OpenMP
  spin against itself (on a busy 2-core machine a 2-thread int8 matmul was 15× slower than a 1-thread one).
"""

import ctypes
import functools
import math
import mmap
import os
import platform
import sys
import types
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers.utils import ModelOutput, logging

from nanoemox_processing.threads_nanoemox import run_on_one_thread_each

logger = logging.get_logger(__name__)

QUANTIZATION_MODES = ("int8",)
LANGUAGE_MODEL_KINDS = ("auto", "float16", "bfloat16", "int8", None)
# Parts of `NanoEmoXModel` whose linear layers `quantize_for_cpu` replaces: the frozen towers and language model.
# Everything else (heads, adapters, fusion encoder, embeddings, lm_head unless asked) stays exact.
TOWERS = ("vision_tower", "audio_tower", "face_encoder")
# CPU flags that give fast native bf16 matmuls (oneDNN uses them); without them bf16 is emulated.
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# Block size in which `quantize_for_cpu` converts a checkpoint tensor to fp32 (see `_float32_copy`).
CONVERSION_BLOCK_BYTES = 64 * 2**20
# glibc's mallopt parameters (malloc.h) and the free heap top `configure_cpu_allocator` lets malloc keep.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
ALLOCATOR_TRIM_THRESHOLD = 2**30
# `quantize_for_cpu` gives freed heap memory back every this many replaced layers (see `_return_free_heap_memory`).
TRIM_EVERY_LAYERS = 16


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matmul instructions (AMX-BF16 or AVX512-BF16) that oneDNN can use."""
    if not torch.backends.mkldnn.is_available():
        return False
    return any(flag in _cpu_flags() for flag in FAST_BF16_CPU_FLAGS)


def default_inference_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """
    The fastest exact dtype to run Nano-EmoX in on `device`: bf16 on CUDA (fp16 on a GPU without bf16) and on a CPU
    with native bf16 kernels (AMX / AVX512-BF16), fp32 on other CPUs (where bf16 is emulated and several times
    slower) and on other devices.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


@functools.cache
def bfloat16_packing_available() -> bool:
    """
    Whether [`PackedBFloat16Linear`] runs here at full speed: a CPU with native bf16 matmuls ([`cpu_has_fast_bf16`])
    and a PyTorch whose oneDNN ops pack and run a bf16 linear layer (checked once on a small one).
    """
    if not cpu_has_fast_bf16():
        return False
    try:
        weight = torch.ones(8, 16, dtype=torch.bfloat16)
        output = torch.ops.mkldnn._linear_pointwise(
            torch.ones(2, 16, dtype=torch.bfloat16), torch.ops.mkldnn._reorder_linear_weight(weight), None, "none",
            [], "",
        )  # fmt: skip
    except (AttributeError, RuntimeError):
        return False
    return bool((output == 16).all())


class PackedBFloat16Linear(nn.Module):
    """
    A frozen linear layer for CPU inference whose bf16 weight is stored pre-packed in oneDNN's blocked layout.
    `forward(x (..., in_features))` → `(..., out_features)` in `x`'s dtype; the matmul takes `x` in bf16 and
    accumulates in fp32, and gives bit for bit what `nn.functional.linear` gives in bf16 (checked in the tests).

    Why: `nn.functional.linear` in bf16 hands oneDNN a plain row-major weight, which it re-lays out on every call. On
    the AVX512-BF16 machine of `benchmarks/bench_cpu_inference.py` (2 cores), all 196 linear layers of the 1.5 B
    language model took, for one token (decoding), 178–204 ms unpacked and 117 ms packed (FBGEMM's fp16 weights:
    99–105 ms), and for 150 tokens (prefill) 1.08–1.10 s unpacked, 1.03 s packed (fp16: 2.14–2.20 s). The weight
    is not a parameter (an opaque oneDNN tensor): a model holding these layers is for inference and cannot be saved.
    Build with `PackedBFloat16Linear(linear)`; only where [`bfloat16_packing_available`].
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(torch.bfloat16))
        bias = linear.bias
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16).clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"PackedBFloat16Linear: expected {self.in_features} input features, got {x.shape[-1]}.")
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        output = torch.ops.mkldnn._linear_pointwise(flat, self.weight_packed, self.bias, "none", [], "")
        return output.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_for_cpu(model: nn.Module) -> nn.Module:
    """
    Replaces, in place, every bf16 `nn.Linear` of a [`NanoEmoXForConditionalGeneration`]'s frozen parts (the three
    towers, the language model and `lm_head`, where nearly all the weights are) by a [`PackedBFloat16Linear`] of the
    same values, where [`bfloat16_packing_available`] (elsewhere `model` is returned unchanged); releases the
    checkpoint pages of the replaced weights and returns `model`. The outputs are unchanged bit for bit, only faster:
    the CPU path of a model loaded in bf16 (`nanoemox predict` and the demo on a CPU with native bf16). The heads and
    the fusion encoder (2 % of the weights) stay as they are. For inference only.
    """
    if not bfloat16_packing_available():
        return model
    parts = ("lm_head", *(f"model.{part}" for part in (*TOWERS, "language_model")))
    names = [name for name, module in model.named_modules()
             if name.startswith(parts) and type(module) is nn.Linear and module.weight.dtype == torch.bfloat16]  # fmt: skip
    released = 0
    for name in names:
        owner, _, leaf = name.rpartition(".")
        parent = model.get_submodule(owner)
        linear = getattr(parent, leaf)
        setattr(parent, leaf, PackedBFloat16Linear(linear))
        # A tied weight (lm_head and the embedding table) faults back in from the file when a row is looked up.
        released += release_checkpoint_pages([tensor.detach() for tensor in (linear.weight, linear.bias)
                                              if tensor is not None])  # fmt: skip
    _return_free_heap_memory()
    logger.debug("pack_for_cpu packed %d bf16 linear layers, released %.2f GB of checkpoint pages.", len(names),
                 released / 1e9)  # fmt: skip
    return model


def physical_cpu_cores() -> int:
    """
    Physical cores this process may run on: the CPUs in its affinity mask counted once per core (hyper-threads
    share a core), capped by a cgroup CPU quota when one is set (containers, CPU Spaces).
    """
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology.joinpath("physical_package_id").read_text().strip(),
                       topology.joinpath("core_id").read_text().strip()))  # fmt: skip
        except OSError:
            cores.add(("cpu", str(cpu)))
    count = len(cores) or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def configure_cpu_threads(num_threads: int | None = None) -> int:
    """Sets PyTorch's intra-op threads to `num_threads` (default: [`physical_cpu_cores`]) and returns the number."""
    num_threads = num_threads or physical_cpu_cores()
    torch.set_num_threads(num_threads)
    return num_threads


def configure_cpu_allocator(arenas: int | None = None) -> bool:
    """
    Makes glibc's `malloc` keep large freed buffers for reuse instead of returning them to the system, with at most
    `arenas` heaps (default: [`physical_cpu_cores`]), and returns whether it could (False off glibc, e.g. macOS or
    musl, where nothing changes). Process-wide and idempotent.

    Why: glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh `mmap` and unmaps it on
    `free`, so each such tensor is page-faulted and zeroed by the kernel again on every use. The towers' activations
    are of that size at full size (CLIP's MLP: 8 frames × 257 tokens × 4096 × 4 bytes = 34 MB): on the 2-core
    machine of `benchmarks/bench_cpu_inference.py` the int8 vision tower spent 1.3 s of 9.6 in element-wise ops that
    take 0.23 s once the pages are reused, and 8.1 → 6.1 s in all. jemalloc or tcmalloc (`LD_PRELOAD`) do the same
    for a whole process; this needs no preloading. The memory kept is what the largest forward pass used anyway.

    The arena bound: glibc gives each thread that allocates a heap of its own (up to 8 per core), and each heap now
    keeps what it frees, so memory kept grows with the threads that ever allocated (the processor's decoding, audio
    and face-detection threads). The processor's peak resident memory in `benchmarks/bench_processor.py` was 579–605
    MB unbounded, 548–555 MB with 2 arenas and 534–537 MB with 1, at the same throughput (2 cores).
    """
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success. No mmap for any allocation the heap can serve (a thread's arena still maps
    # requests above its 64 MB heap size), no trimming of the heap's free top below 1 GB, and a bounded number of
    # arenas (threads share them; arenas made before this call stay).
    return (
        bool(mallopt(M_MMAP_MAX, 0))
        and bool(mallopt(M_TRIM_THRESHOLD, ALLOCATOR_TRIM_THRESHOLD))
        and bool(mallopt(M_ARENA_MAX, max(1, arenas or physical_cpu_cores())))
    )


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc (whose `mallopt` / `malloc_trim` are used here), else None."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _return_free_heap_memory() -> None:
    """
    Gives the whole free pages inside glibc's heaps back to the system (`malloc_trim(0)`, 10–40 ms at full size).
    Quantizing makes a transient fp32 copy of every layer between long-lived packed weights; the heap cannot shrink
    past those, and the freed copies stayed resident: 4.3 to 5.6 GB after quantizing the full-size model, varying from
    run to run, against 4.3 GB each time with a trim every few layers.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def configure_cpu_inference(num_threads: int | None = None) -> int:
    """
    Sets this process up for CPU inference: [`configure_cpu_threads`] (returns the thread count) and
    [`configure_cpu_allocator`] with as many arenas as threads. Call it once the model is loaded (and quantized): from then on malloc keeps what it
    frees, and the transient copies made while loading (0.6 GB at full size) would stay with the process.
    `nanoemox predict` and the demo call it on a CPU.
    """
    num_threads = configure_cpu_threads(num_threads)
    configure_cpu_allocator(arenas=num_threads)
    return num_threads


def _quantized_engine() -> str:
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "qnnpack"):
        if engine in engines:
            return engine
    raise RuntimeError(f"This PyTorch build has no int8 CPU engine (supported engines: {engines}).")


def quantize_for_cpu(
    model: nn.Module,
    mode: str = "int8",
    *,
    language_model: str | None = "auto",
    towers: bool = True,
    lm_head: bool | None = None,
) -> nn.Module:
    """
    Quantizes, in place, the frozen parts of a [`NanoEmoXForConditionalGeneration`] for CPU inference and converts the
    rest to fp32, otherwise exact: the modality heads and adapters and the fusion encoder. The embedding table (with
    the placeholders' rows) keeps its values: in fp32, or, when `lm_head` is quantized, in the dtype it was loaded in
    (a bf16 checkpoint's own values, 2 bytes each) with lookups returned in fp32 ([`Float32OutputEmbedding`]).

    `mode="int8"`: the linear layers of the vision, audio and face towers (with `towers=True`) in int8 — weights per
    output channel, activations quantized dynamically per call (`torch.ao` dynamic quantization, FBGEMM kernels on
    x86). The language model's linear layers as `language_model` says:
    - `"auto"` (default): `"bfloat16"` where [`bfloat16_packing_available`] (a CPU with AMX or AVX512-BF16), else
      `"float16"`;
    - `"float16"`: weights stored in fp16, activations and accumulation in fp32 (FBGEMM's fp16 kernels): half the
      memory traffic of fp32 when decoding, logits practically unchanged;
    - `"bfloat16"`: the checkpoint's bf16 weights pre-packed for oneDNN ([`PackedBFloat16Linear`]; activations
      rounded to bf16 at each matmul, accumulation in fp32): the same memory traffic as fp16 when decoding, and on the
      AVX512-BF16 machine of the benchmark prefill in half the time of fp16 (1.03 against 2.14–2.20 s for 150 tokens
      through all 196 layers), decoding 117 against 99–105 ms per token;
    - `"int8"`: like the towers. Fastest, but FBGEMM quantizes each activation tensor with one 7-bit scale, and a
      trained LLM's activation outliers (SmolLM2-135M-Instruct: a few channels 300× the mean) then cost most of the
      resolution: the top-1 next token agreed with fp32 at only 0.42 of the prompt positions (per-token groups 0.78,
      SmoothQuant-style scaling 0.86); use it only where that is acceptable;
    - `None`: left in fp32.

    Each layer is converted and replaced one at a time, so a model loaded in bf16 never holds a full fp32 copy, and
    the memory-mapped checkpoint pages of every replaced tensor are released ([`release_checkpoint_pages`]). The
    vision tower's layers after the last one Nano-EmoX reads are dropped (`config.vision_feature_layer` and
    `vision_multiscale_layers` become the equivalent non-negative indices). A quantized model is for CPU inference;
    it cannot be saved with `save_pretrained` (quantize again after loading).

    Args:
        model: the model, on the CPU, in fp32 or bf16.
        mode: `"int8"`.
        language_model: `"auto"`, `"float16"`, `"bfloat16"`, `"int8"` or `None` (see above).
        towers: quantize the towers' linear layers to int8.
        lm_head: also quantize `lm_head` like the language model, which unties it from the embedding table. Default
            (`None`): with `"float16"` and `"bfloat16"`, which hold every bf16 value of normal magnitude exactly and
            halve the bytes read per decoded token (0.93 → 0.47 GB at full size); not with `"int8"`.

    Returns:
        The same model, quantized, in eval mode.
    """
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"quantize_for_cpu: mode must be one of {QUANTIZATION_MODES}, got {mode!r}.")
    if language_model not in LANGUAGE_MODEL_KINDS:
        raise ValueError(
            f"quantize_for_cpu: language_model must be one of {LANGUAGE_MODEL_KINDS}, got {language_model!r}."
        )
    devices = {tensor.device.type for tensor in model.parameters()}
    if devices != {"cpu"}:
        raise ValueError(f"quantize_for_cpu quantizes a model on the CPU; its parameters are on {sorted(devices)}.")
    if language_model == "auto":
        language_model = "bfloat16" if bfloat16_packing_available() else "float16"
    if language_model == "bfloat16" and not bfloat16_packing_available():
        raise ValueError(
            "quantize_for_cpu: language_model='bfloat16' needs a CPU with native bf16 matmuls (AMX or AVX512-BF16) "
            "and PyTorch's oneDNN ops; use 'float16' (or 'auto') here."
        )
    if lm_head and language_model is None:
        raise ValueError("quantize_for_cpu: lm_head=True quantizes lm_head like the language model, which is None.")
    if lm_head is None:
        lm_head = language_model in ("float16", "bfloat16")
    torch.backends.quantized.engine = _quantized_engine()
    inner = model.model
    targets = [(getattr(inner, part), "int8") for part in (TOWERS if towers else ())]
    if language_model is not None:
        targets.append((inner.language_model, language_model))
    with warnings.catch_warnings():
        # torch 2.13 flags every torch.ao.quantization call as deprecated (see the module docstring).
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated.*")
        released = _quantize_lm_head(model, language_model) if lm_head else 0
        for root, kind in targets:
            # By name, not a list of modules: a list would keep every replaced layer (and its fp32 copy) alive.
            names = [name for name, module in root.named_modules() if type(module) is nn.Linear]
            for index, name in enumerate(names):
                owner, _, leaf = name.rpartition(".")
                parent = root.get_submodule(owner)
                linear = getattr(parent, leaf)
                # Detached views: converting the layer swaps its parameters' data, and the views keep the old data.
                originals = [tensor.detach() for tensor in (linear.weight, linear.bias) if tensor is not None]
                setattr(parent, leaf, _quantize_linear(linear, kind))
                released += release_checkpoint_pages(originals)
                if index % TRIM_EVERY_LAYERS == TRIM_EVERY_LAYERS - 1:
                    _return_free_heap_memory()
    released += _to_float32(model)
    _return_free_heap_memory()
    _drop_unread_vision_layers(model)
    compute_only_cls_in_last_vision_layer(inner.vision_tower)
    for part in TOWERS if towers else ():
        split_batch_across_threads(getattr(inner, part))
    logger.debug("quantize_for_cpu released %.2f GB of memory-mapped checkpoint pages.", released / 1e9)
    model.eval()
    model.nanoemox_quantization = {"mode": mode, "language_model": language_model, "towers": towers,
                                   "lm_head": lm_head}  # fmt: skip
    return model


class Float32OutputEmbedding(nn.Embedding):
    """
    An `nn.Embedding` whose table stays in the dtype it was loaded in (a bf16 checkpoint's exact values, as views of
    the memory-mapped file, so only the rows looked up become resident) while its lookups are fp32, the dtype of the
    rest of a [`quantize_for_cpu`] model. `forward(input_ids (B, L)) -> (B, L, hidden)` in fp32.
    """

    @classmethod
    def wrap(cls, embedding: nn.Embedding) -> "Float32OutputEmbedding":
        """The same table (not a copy) behind a `Float32OutputEmbedding`."""
        return cls(
            embedding.num_embeddings,
            embedding.embedding_dim,
            padding_idx=embedding.padding_idx,
            max_norm=embedding.max_norm,
            norm_type=embedding.norm_type,
            scale_grad_by_freq=embedding.scale_grad_by_freq,
            sparse=embedding.sparse,
            _weight=embedding.weight.detach(),
            _freeze=True,
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input).to(torch.float32)


def _quantize_lm_head(model: nn.Module, kind: str) -> int:
    """
    Replaces `lm_head` by a `kind` linear layer of its own, untied from the embedding table, which becomes a
    [`Float32OutputEmbedding`] of the same values; returns the bytes of checkpoint pages released. Done before the
    other layers, while the model is still mostly unconverted, so the transient fp32 copy of the 151,936 × 1,536
    table (0.93 GB at full size) never adds to the peak.
    """
    model.config.text_config.tie_word_embeddings = False
    model.config.tie_word_embeddings = False
    embeddings = model.get_input_embeddings()
    head = model.lm_head
    # A Parameter of its own over the same data: converting the head must not convert the shared Parameter in place.
    untied = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None, device="meta")
    untied.weight = nn.Parameter(head.weight.detach(), requires_grad=False)
    if head.bias is not None:
        untied.bias = nn.Parameter(head.bias.detach(), requires_grad=False)
    model.set_input_embeddings(Float32OutputEmbedding.wrap(embeddings))
    model.lm_head = _quantize_linear(untied, kind)
    # The table's pages read while packing fault in again from the file when a row is looked up.
    return release_checkpoint_pages([embeddings.weight.detach()])


def split_batch_across_threads(module: nn.Module) -> nn.Module:
    """
    Makes `module`'s forward run its batch in as many contiguous chunks as PyTorch has intra-op threads, each chunk
    in a thread of its own with one intra-op thread, and concatenate the outputs (tensors, tuples and `ModelOutput`s,
    along dim 0); returns `module`. For modules whose batch items are computed independently (the towers in eval
    mode) and that take the batch as their first argument with no other tensor argument; otherwise, with one thread,
    a batch of one or autograd on, the forward runs as it is.

    Why: on the 2-core machine of `benchmarks/bench_cpu_inference.py` FBGEMM's int8 kernels scale poorly over two
    threads (one 2056 × 1024 × 4096 matmul: 111 ms on one thread, 94 ms on two), while two one-thread chunks run side
    by side at nearly the one-thread speed each, and do not wait on each other when the machine is busy. The int8
    towers then took 0.85–0.96 of their two-thread time (three runs, 8 frames and 8 audio clips). Dynamic int8
    quantization picks one activation scale per call, so a chunk's features can differ slightly from the whole
    batch's; [`quantize_for_cpu`] uses this for its int8 towers only.
    """
    forward = module.forward

    def split_forward(batch, *args, **kwargs):
        workers = min(torch.get_num_threads(), len(batch)) if isinstance(batch, torch.Tensor) else 1
        extra_tensors = any(isinstance(value, torch.Tensor) for value in (*args, *kwargs.values()))
        if workers < 2 or extra_tensors or torch.is_grad_enabled():
            return forward(batch, *args, **kwargs)
        chunks = batch.tensor_split(workers)
        outputs = run_on_one_thread_each(lambda chunk: forward(chunk, *args, **kwargs), chunks)
        return _concatenate(outputs)

    module.forward = functools.update_wrapper(split_forward, forward)
    return module


def _concatenate(outputs: list):
    """Concatenates, along dim 0, the outputs of one forward on consecutive chunks of a batch."""
    first = outputs[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if isinstance(first, ModelOutput):
        return type(first)(**{key: _concatenate([output[key] for output in outputs]) for key in first.keys()})
    if isinstance(first, (tuple, list)):
        return type(first)(_concatenate(list(items)) for items in zip(*outputs))
    raise TypeError(f"split_batch_across_threads: cannot concatenate outputs of type {type(first).__name__}.")


def _drop_unread_vision_layers(model: nn.Module) -> None:
    """
    Drops the vision tower's layers after the last one whose output Nano-EmoX reads (full size: CLS tokens of layers
    -2, 12, 16 and 22 of 24, so the last layer's 1/24 of the tower's work is wasted), and rewrites the layer indices
    in `model.config` as non-negative ones, which mean the same layers in the shorter tower.
    """
    config = model.config
    encoder = getattr(model.model.vision_tower, "encoder", None)  # CLIPVisionModel's in transformers 5
    if encoder is None or not isinstance(getattr(encoder, "layers", None), nn.ModuleList):
        return
    num_layers = len(encoder.layers)
    # `hidden_states[i]` is the output of layer i (0: the embeddings), so there are num_layers + 1 of them.
    feature_layer, *multiscale = (
        index % (num_layers + 1) for index in (config.vision_feature_layer, *config.vision_multiscale_layers)
    )
    needed = max(feature_layer, *multiscale)
    if needed == num_layers:
        return
    encoder.layers = encoder.layers[:needed]
    config.vision_config.num_hidden_layers = model.model.vision_tower.config.num_hidden_layers = needed
    config.vision_feature_layer, config.vision_multiscale_layers = feature_layer, multiscale


def compute_only_cls_in_last_vision_layer(vision_tower: nn.Module) -> None:
    """
    Makes the last layer of a CLIP vision tower compute the CLS token alone: keys and values still come from every
    token, but the query, the attention output, the MLP and the output `(N, 1, hidden)` are the CLS token's. Nano-EmoX
    reads only CLS tokens of the tower's hidden states, so this is the same result for about 1/24 less work (the last
    layer's MLP and projections on 256 patch tokens). The forward is replaced on the layer itself, so the hooks that
    record `hidden_states` still see its output. Towers other than CLIP's are left as they are.
    """
    layers = getattr(getattr(vision_tower, "encoder", None), "layers", None)
    attention = getattr(layers[-1], "self_attn", None) if isinstance(layers, nn.ModuleList) and len(layers) else None
    if attention is None or not all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "out_proj")):
        return
    layers[-1].forward = types.MethodType(_cls_only_layer_forward, layers[-1])


def _cls_only_layer_forward(layer, hidden_states: torch.Tensor, attention_mask=None, **kwargs) -> torch.Tensor:
    # CLIPEncoderLayer's pre-norm block, for the CLS query only.
    attention = layer.self_attn
    batch, length, _ = hidden_states.shape
    normed = layer.layer_norm1(hidden_states)

    def heads(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view(batch, tensor.shape[1], -1, attention.head_dim).transpose(1, 2)

    mask = None if attention_mask is None else attention_mask[..., :1, :]
    attended = nn.functional.scaled_dot_product_attention(
        heads(attention.q_proj(normed[:, :1])),
        heads(attention.k_proj(normed)),
        heads(attention.v_proj(normed)),
        attn_mask=mask,
        scale=attention.scale,
    )
    hidden = hidden_states[:, :1] + attention.out_proj(attended.transpose(1, 2).reshape(batch, 1, -1))
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def _to_float32(model: nn.Module) -> int:
    """
    `model.float()` one tensor at a time, releasing each replaced tensor's checkpoint pages as it goes; returns the
    bytes released. A tensor shared by several modules (tied embeddings) is converted once.
    """
    # Keyed by where the data is, not by `id`: a replaced tensor may be freed and its `id` reused by the next one,
    # while two live bf16 tensors with the same address, shape and strides are the same data.
    converted = {}
    released = 0
    for module in model.modules():
        if isinstance(module, Float32OutputEmbedding):
            continue  # kept in its own dtype on purpose
        for store in (module._parameters, module._buffers):
            for name, tensor in list(store.items()):
                if tensor is None or not tensor.is_floating_point() or tensor.dtype == torch.float32:
                    continue
                key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
                if key not in converted:
                    data, freed = _float32_copy(tensor.detach())
                    released += freed
                    is_parameter = isinstance(tensor, nn.Parameter)
                    converted[key] = nn.Parameter(data, tensor.requires_grad) if is_parameter else data
                store[name] = converted[key]
    return released


def _float32_copy(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """
    An fp32 copy of `tensor`, made in blocks of rows whose checkpoint pages are released once copied (so the bf16
    embeddings, 0.47 GB at full size, are never resident next to their whole fp32 copy); returns it with the bytes
    released.
    """
    if tensor.dim() == 0 or not tensor.is_contiguous():
        return tensor.float(), release_checkpoint_pages([tensor])
    copy = torch.empty(tensor.shape, dtype=torch.float32)
    rows = max(1, CONVERSION_BLOCK_BYTES // max(1, tensor[0].numel() * tensor.element_size()))
    released = 0
    for start in range(0, tensor.shape[0], rows):
        copy[start : start + rows] = tensor[start : start + rows]
        released += release_checkpoint_pages([tensor[start : start + rows]])
    return copy, released


def _checkpoint_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's memory mappings of `.safetensors` files (from `/proc/self/maps`)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].endswith(".safetensors"):
            start, end = fields[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def release_checkpoint_pages(tensors: list[torch.Tensor]) -> int:
    """
    Drops from this process's resident memory the pages of `tensors` that are views of a memory-mapped `.safetensors`
    checkpoint, and returns how many bytes that covered; tensors in ordinary memory are left alone. Call it with the
    tensors that were just replaced, while the caller still holds them.

    Why: transformers loads a checkpoint already in the requested dtype as views of the file's mapping. Every page the
    quantization reads then stays resident (and counts in the peak RSS) until the whole mapping is closed, on top of
    the quantized copy. `madvise(MADV_DONTNEED)` on a private file mapping forgets the pages; a later read faults them
    in again from the file, so tensors still sharing a page see the same values. Only whole pages inside one tensor are
    released, and only inside a mapping of a checkpoint file (anonymous memory would read back as zeros). Linux only:
    elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return 0
    mappings = _checkpoint_mappings()
    if not mappings:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    page = mmap.PAGESIZE
    released = 0
    for tensor in tensors:
        if not tensor.is_contiguous():
            continue
        begin = tensor.data_ptr()
        end = begin + tensor.numel() * tensor.element_size()
        if not any(low <= begin and end <= high for low, high in mappings):
            continue
        first, last = -(-begin // page) * page, end // page * page
        if last > first and libc.madvise(first, last - first, mmap.MADV_DONTNEED) == 0:
            released += last - first
    return released


def _quantize_linear(linear: nn.Linear, kind: str) -> nn.Module:
    if kind == "bfloat16":
        return PackedBFloat16Linear(linear)
    linear.float()  # a bf16 layer becomes fp32 only while it is converted
    linear.qconfig = (
        torch.ao.quantization.per_channel_dynamic_qconfig
        if kind == "int8"
        else torch.ao.quantization.float16_dynamic_qconfig
    )
    return torch.ao.nn.quantized.dynamic.Linear.from_float(linear)


def is_quantized_linear(module: nn.Module) -> bool:
    """Whether `module` is a linear layer replaced by [`quantize_for_cpu`] (int8, fp16 or packed bf16 weights)."""
    return isinstance(module, (torch.ao.nn.quantized.dynamic.Linear, PackedBFloat16Linear))


__all__ = [
    "Float32OutputEmbedding",
    "PackedBFloat16Linear",
    "bfloat16_packing_available",
    "compute_only_cls_in_last_vision_layer",
    "configure_cpu_allocator",
    "configure_cpu_inference",
    "configure_cpu_threads",
    "cpu_has_fast_bf16",
    "default_inference_dtype",
    "is_quantized_linear",
    "pack_for_cpu",
    "physical_cpu_cores",
    "quantize_for_cpu",
    "release_checkpoint_pages",
    "split_batch_across_threads",
]
