# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Sections 1–3 of `gpu_bench.py`: the device's measured matmul rate (the MFU denominator) and the phase-3 training
step on raw media (plain baseline and optimised) and on cached tower features, each with samples/s, step time, peak
memory, MFU, and the paper FLOP count checked against `torch.utils.flop_counter` on the real step."""

import math
import time

import torch
from gpu_common import (
    TOWER_FEATURE_KEYS,
    TOWER_INPUTS,
    TOWER_METHODS,
    Bench,
    release_memory,
    set_checkpointing,
    synchronize,
    time_calls,
)
from gpu_flops import flop_counter_mapping, llm_flops

from modeling_nanoemox import phases

# Phase-3 optimiser settings (recipes/configs/full/phase_3.yaml).
LEARNING_RATE, WEIGHT_DECAY = 8e-6, 0.05


def matmul_rate(bench: Bench) -> dict:
    """1. The best of three runs of a square matmul in the run's dtype; sets `bench.matmul_rate` (FLOP/s)."""
    size = bench.args.matmul_size or (8192 if bench.device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=bench.device, dtype=bench.dtype)
    b = torch.randn(size, size, device=bench.device, dtype=bench.dtype)
    flops = 2 * size**3
    min_time = 1.0 if bench.device.type == "cuda" else 0.3
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(3):
        iterations, elapsed = 0, 0.0
        synchronize(bench.device)
        start = time.perf_counter()
        while elapsed < min_time:
            for _ in range(10 if bench.device.type == "cuda" else 1):
                a @ b
                iterations += 1
            synchronize(bench.device)
            elapsed = time.perf_counter() - start
        rates.append(flops * iterations / elapsed)
    del a, b
    release_memory()
    rate = max(rates)
    bench.matmul_rate = rate
    return {
        "size": size,
        "dtype": bench.args.dtype,
        "tflops": rate / 1e12,
        "tflops_runs": [r / 1e12 for r in rates],
    }


def train_section(bench: Bench) -> dict:
    """2–3. The phase-3 step: plain, optimised, and on cached tower features."""
    args = bench.args
    flops = bench.results["flops"]["train_step"]
    section = {}
    model = bench.build_model()
    inner = model.model
    # Paper count vs the model: every decoder Linear weight contributes 2 FLOPs per token.
    weights = sum(m.weight.numel() for m in inner.language_model.layers.modules() if isinstance(m, torch.nn.Linear))
    paper = llm_flops(bench.config.text_config, 1, 0)["linear"]
    section["check_llm_linear_flops_per_token"] = {"paper": paper, "from_weights": 2 * weights}

    # Phase 3 exactly as recipes/p2e.py sets it up (phases.py needs neither trl nor the processor).
    phase = phases.PHASES["3"]
    heads = phases.freeze_for_phase(model, phase)["trainable"]
    model = phases.apply_lora(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if bench.mixed:
        for parameter in trainable:  # fp32 master weights for what trains (PEFT already does it for LoRA)
            parameter.data = parameter.data.float()
    model.train()
    section["trainable_parameters"] = sum(p.numel() for p in trainable)
    section["expected_trainable_parameters"] = heads + phases.lora_parameter_count(bench.config.text_config)

    raw = bench.inputs(args.batch_size, args.train_tokens, args.label_tokens)

    # What a feature cache stores, and what every uncached step pays for: each tower timed on its own.
    towers = bench.time_towers(inner, raw, flops["components"], autocast=True)
    section["towers_forward"] = towers
    with torch.no_grad(), bench.autocast():
        features = {
            TOWER_FEATURE_KEYS[tower]: getattr(inner, TOWER_METHODS[tower])(raw[key])
            for tower, key in TOWER_INPUTS.items()
        }
    cached = {**{k: v for k, v in raw.items() if k not in TOWER_INPUTS.values()}, "tower_features": features}

    fused = bench.device.type == "cuda"
    variants = {
        # What the recipe does today (phase_3.yaml: gradient_checkpointing, adamw_torch), towers every step.
        "plain": dict(batch=raw, checkpointing=args.plain_checkpointing, fused=False, flops=flops["total_raw"]),
        # Same inputs; no checkpointing (the batch fits), fused AdamW.
        "optimised": dict(batch=raw, checkpointing=False, fused=fused, flops=flops["total_raw"]),
        # The feature cache: tower outputs computed once, passed as `tower_features` (one dict, no raw media).
        "cached": dict(batch=cached, checkpointing=False, fused=fused, flops=flops["total_cached"]),
    }
    for name, variant in variants.items():
        section[name] = bench.guarded(
            f"train/{name}", lambda v=variant: train_variant(bench, model, trainable, **v), optional=name != "plain"
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


def train_variant(bench: Bench, model, trainable, batch, checkpointing: bool, fused: bool, flops: int) -> dict:
    args = bench.args
    set_checkpointing(model, checkpointing)
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, fused=fused or None)
    losses = []

    def step():
        with bench.autocast():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    bench.memory.reset()
    timing = time_calls(step, args.warmup, args.steps, bench.device)
    result = {
        "checkpointing": checkpointing,
        "fused_adamw": fused,
        "step_s": timing,
        "samples_per_s": args.batch_size / timing["median_s"],
        "peak_memory_gb": bench.memory.peak_gb(),
        "paper_flops": flops,
        "achieved_tflops": flops / timing["median_s"] / 1e12,
        "mfu": flops / timing["median_s"] / bench.matmul_rate,
        "final_loss": float(losses[-1]),
    }
    if not math.isfinite(result["final_loss"]):
        raise FloatingPointError(f"non-finite loss {result['final_loss']}")
    if not checkpointing:  # counting recomputed layers would not be model FLOPs
        try:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False, custom_mapping=flop_counter_mapping())
            with counter, bench.autocast():
                model(**batch).loss.backward()
            result["flop_counter_flops"] = counter.get_total_flops()
            result["flop_counter_over_paper"] = result["flop_counter_flops"] / flops
        except Exception as error:  # noqa: BLE001 - a cross-check must not cost the timing above
            result["flop_counter_error"] = f"{type(error).__name__}: {error}"[:500]
        optimizer.zero_grad(set_to_none=True)
    set_checkpointing(model, False)
    return result
