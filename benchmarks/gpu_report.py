# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Section 5 of `gpu_bench.py`: ratios to the plain baseline of the same run, the issue-7 targets next to the numbers
(judged only on an H100-class GPU with the full model), and the Markdown report (stdout, pasteable into
benchmarks/RESULTS.md)."""

import json
import math

from gpu_common import TOWER_INPUTS, Bench

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


def add_ratios_and_targets(bench: Bench) -> None:
    """Ratios to the plain baseline of this run, and the issue's targets next to the numbers."""
    results = bench.results

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
    for batch_size in bench.args.decode_batch_sizes:
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
    if bench.device.type != "cuda":
        not_judged = "n/a (CPU)"
    elif not any(tag in device_name for tag in H100_CLASS):
        not_judged = "n/a (not an H100-class GPU)"
    elif bench.args.size != "full":
        not_judged = "n/a (not the full-size model)"
    else:
        not_judged = None
    at_batch_8 = None if bench.args.batch_size == 8 else f"n/a (batch {bench.args.batch_size}, target is at 8)"
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
