# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Section 4 of `gpu_bench.py`: inference. Clip tensors → first token at batch 1 (towers + heads + LLM prefill,
through `generate`), decode tokens/s at batch 1 and 16, peak memory. Plain: eager `generate` with the dynamic cache.
Optimised: `generate(cache_implementation="static")`, for which transformers compiles the decoding step itself (CUDA
graphs on CUDA, its default `CompileConfig`), and a prefill whose three towers are compiled."""

import statistics
import time

import torch
from gpu_common import (
    TOWER_INPUTS,
    TOWER_METHODS,
    Bench,
    TokenClock,
    graph_break_counts,
    graph_break_summary,
    synchronize,
    time_calls,
)
from transformers import CompileConfig


def generation_kwargs(bench: Bench, new_tokens: int) -> dict:
    return {
        "do_sample": False,
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        # Random weights may pick a placeholder id; suppressed, as the released generation config does.
        "suppress_tokens": list(bench.config.modality_token_ids.values()),
    }


def generate_once(bench: Bench, model, inputs: dict, new_tokens: int, **kwargs) -> dict:
    clock = TokenClock()
    synchronize(bench.device)
    start = time.perf_counter()
    output = model.generate(**inputs, streamer=clock, **generation_kwargs(bench, new_tokens), **kwargs)
    synchronize(bench.device)
    total = time.perf_counter() - start
    tokens = clock.stamps[1:]  # the first stamp is the prompt, handed over before the prefill
    generated = output.shape[1] - inputs["input_ids"].shape[1]
    if generated != new_tokens or len(tokens) != new_tokens:
        raise RuntimeError(f"asked for {new_tokens} new tokens, got {generated} ({len(tokens)} streamed)")
    decode = tokens[-1] - tokens[0] if len(tokens) > 1 else float("nan")
    return {"total_s": total, "first_token_s": tokens[0] - start, "decode_s": decode}


def generate_timed(bench: Bench, model, inputs: dict, new_tokens: int, compile_run: bool = False, **kwargs) -> dict:
    """First call timed on its own when it compiles, then `decode_warmup` untimed calls and `decode_steps` timed
    ones; medians of time-to-first-token, decode time, and the derived decode rate."""
    args = bench.args
    first = generate_once(bench, model, inputs, new_tokens, **kwargs) if compile_run else None
    for _ in range(args.decode_warmup):
        generate_once(bench, model, inputs, new_tokens, **kwargs)
    runs = [generate_once(bench, model, inputs, new_tokens, **kwargs) for _ in range(args.decode_steps)]
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


def compile_config(bench: Bench) -> CompileConfig:
    """transformers' own compile of the decoding step: CUDA graphs ("reduce-overhead") on CUDA; elsewhere plain
    inductor, which transformers only does on request (`_compile_all_devices`)."""
    if bench.device.type == "cuda":
        return CompileConfig(mode="reduce-overhead" if bench.args.cuda_graphs else "default")
    config = CompileConfig(mode="default")
    config._compile_all_devices = True
    return config


def inference_section(bench: Bench) -> dict:
    """4. Prefill and decoding, plain then (with `--compile`) optimised."""
    args = bench.args
    section = {}
    model = bench.build_model().eval()
    inner = model.model
    one = bench.inputs(1, args.prefill_tokens)

    def forward():
        with torch.no_grad():
            model(**one, use_cache=True, logits_to_keep=1)

    def plain_prefill():
        bench.memory.reset()
        towers = bench.time_towers(inner, one)
        result = {
            "towers_ms": towers["total_ms"],
            "towers": towers,
            "forward_ms": time_calls(forward, args.warmup, args.steps, bench.device)["median_s"] * 1e3,
        }
        result["llm_and_heads_ms"] = result["forward_ms"] - result["towers_ms"]
        generate = generate_timed(bench, model, one, 1)
        result["first_token_ms"] = generate["first_token_ms"]
        result["peak_memory_gb"] = bench.memory.peak_gb()
        return result

    section["prefill_plain"] = bench.guarded("inference/prefill plain", plain_prefill)
    for batch_size in args.decode_batch_sizes:
        inputs = bench.inputs(batch_size, args.prefill_tokens)

        def plain_decode(inputs=inputs):
            bench.memory.reset()
            return {**generate_timed(bench, model, inputs, args.new_tokens), "peak_memory_gb": bench.memory.peak_gb()}

        section[f"decode_plain_batch_{batch_size}"] = bench.guarded(
            f"inference/decode plain batch {batch_size}", plain_decode, optional=batch_size != 1
        )
    if not args.compile:
        reason = "skipped: --no-compile" + (" (the default on CPU)" if bench.device.type == "cpu" else "")
        section["decode_optimised"] = section["prefill_optimised"] = {"skipped": reason}
        return section

    # Most valuable first (the targets are at batch 1); each compile costs device minutes.
    first, *others = args.decode_batch_sizes
    section[f"decode_optimised_batch_{first}"] = optimised_decode(bench, model, first)
    section["prefill_optimised"] = bench.guarded(
        "inference/prefill, towers compiled", lambda: optimised_prefill(bench), optional=True
    )
    for batch_size in others:
        section[f"decode_optimised_batch_{batch_size}"] = optimised_decode(bench, model, batch_size)
    return section


def optimised_decode(bench: Bench, model, batch_size: int) -> dict:
    """`generate(cache_implementation="static")`: transformers compiles the decoding step itself (with CUDA graphs
    under its default `CompileConfig` on CUDA); the prefill stays eager."""
    inputs = bench.inputs(batch_size, bench.args.prefill_tokens)

    def measure():
        bench.memory.reset()
        before = graph_break_counts()
        result = generate_timed(
            bench,
            model,
            inputs,
            bench.args.new_tokens,
            compile_run=True,
            cache_implementation="static",
            compile_config=compile_config(bench),
        )
        result.update(peak_memory_gb=bench.memory.peak_gb(), graph_breaks=graph_break_summary(before))
        return result

    return bench.guarded(f"inference/decode static cache + compile batch {batch_size}", measure, optional=True)


def optimised_prefill(bench: Bench) -> dict:
    """A fresh model whose three towers are compiled (`nn.Module.compile`, static shapes — one clip is always 8
    frames, 8 crops, 8 audio clips — with CUDA graphs on CUDA); clip tensors → first token through `generate`.
    The LLM prefill stays eager: transformers' caches are not compile-stable across prefill calls (see RESULTS.md)."""
    args = bench.args
    mode = "reduce-overhead" if bench.device.type == "cuda" and args.cuda_graphs else "default"
    model = bench.build_model().eval()
    inner = model.model
    one = bench.inputs(1, args.prefill_tokens)
    # One eager call first: transformers installs its hidden-state capture hooks on the first forward, under a lock
    # that would otherwise break the compiled graph.
    with torch.no_grad():
        for name, key in TOWER_INPUTS.items():
            getattr(inner, TOWER_METHODS[name])(one[key])
    for name in TOWER_INPUTS:
        getattr(inner, name).compile(mode=mode, dynamic=False)
    bench.memory.reset()
    before = graph_break_counts()
    result = {"compiled": "vision_tower, audio_tower, face_encoder", "mode": mode}
    result["cuda_graphs"] = "on" if mode == "reduce-overhead" else "skipped (CUDA only)"
    result.update(generate_timed(bench, model, one, 1, compile_run=True))
    result.update(peak_memory_gb=bench.memory.peak_gb(), graph_breaks=graph_break_summary(before))
    return result
