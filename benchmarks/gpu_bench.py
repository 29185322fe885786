# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Nano-EmoX performance in one run on one device: training throughput and MFU, inference latency, memory — each
next to a plain baseline measured in the same run, so every gain is a ratio on one card (issue 7).

    python benchmarks/gpu_bench.py --size full --device cuda --dtype bfloat16 --batch-size 8 \\
        --time-budget-s 360 --out gpu_bench.json --markdown gpu_bench.md 2>gpu_bench.log
    python benchmarks/gpu_bench.py --size tiny --device cpu --dtype float32 --steps 2 --warmup 1   # CI-sized
    python benchmarks/gpu_bench.py --size full --sections flops    # the paper FLOP count only, no model

Weights are random, built from the config directly on the device (full size = `NanoEmoXConfig()`, nothing is
downloaded). Sections, in the order they run, each in a module beside this entry point (the JSON file is rewritten
after each measurement, so a run cut short keeps what it measured, and a failing measurement is recorded without
stopping the others):

0. environment: device, library versions, dtype, attention implementation, the exact command line; the FLOPs of one
   training step and of one prefill, counted on paper per component (`gpu_flops.py`; shared pieces in
   `gpu_common.py`);
1. the device's measured dense matmul rate in the run's dtype (MFU is computed against it, not a datasheet;
   `gpu_train.py`);
2. the phase-3 training step (frozen towers, LoRA r 16 / alpha 32 / dropout 0.05 on the LLM, heads + fusion
   trainable, AdamW step included) on raw media: the plain baseline (the recipe's settings — gradient checkpointing,
   towers recomputed every step, unfused AdamW) and the optimised variant (no checkpointing, fused AdamW); samples/s,
   step time, peak memory, MFU, and the paper count checked against `torch.utils.flop_counter` on the real step;
3. the same step on cached tower features (`tower_features`, the feature-cache path of phases 2–3);
4. inference: clip tensors → first token at batch 1 (towers + heads + LLM prefill, through `generate`), decode
   tokens/s at batch 1 and 16, peak memory. Plain: eager `generate` with the dynamic cache. Optimised:
   `generate(cache_implementation="static")`, for which transformers compiles the decoding step itself (CUDA graphs
   on CUDA, its default `CompileConfig`), and a prefill whose three towers are compiled (`nn.Module.compile`, CUDA
   graphs on CUDA). Compile times are reported apart; `--no-compile` (the CPU default) skips these
   (`gpu_inference.py`);
5. ratios to the plain baseline and the issue's targets (pass/fail only on an H100-class GPU with the full model),
   and the Markdown report (`gpu_report.py`).

Imports. The benchmark imports the installed package like any user. The GPU image has torch, transformers, peft and
accelerate but no trl, gradio, PyAV or OpenCV; install the project there without its dependencies
(`pip install --no-deps --no-build-isolation -e .`): importing `modeling_nanoemox` and the model code pulls none of
them (the report lists any that got imported). To compare a changed model under the same run conditions, run the
benchmark from that checkout.
"""

import argparse
import logging
import sys
from pathlib import Path

import torch
import transformers

try:
    from gpu_common import Bench, forbidden_modules_loaded
except ModuleNotFoundError as error:  # the project itself is what is missing, most likely
    if error.name not in ("modeling_nanoemox", "nanoemox_processing"):
        raise
    raise SystemExit(
        f"gpu_bench.py imports the project ({error.name} not found): install it first, e.g. "
        "`pip install --no-deps --no-build-isolation -e .` from the repository root."
    ) from error
from gpu_inference import inference_section
from gpu_report import add_ratios_and_targets, render_report
from gpu_train import matmul_rate, train_section

# The paper FLOP count is always computed (no model needed); `--sections flops` prints only that.
SECTIONS = ("flops", "matmul", "train", "inference")


def run(bench: Bench) -> dict:
    """Runs the chosen sections in order (each measurement guarded and saved), then the ratios and targets."""
    sections, results = bench.args.sections, bench.results
    if "matmul" in sections or "train" in sections:
        results["matmul"] = bench.guarded("matmul rate", lambda: matmul_rate(bench))
    if "train" in sections:
        if bench.matmul_rate is None:
            results["train"] = {"error": "no matmul rate to compute MFU against"}
        else:
            results["train"] = bench.guarded("train", lambda: train_section(bench))
    if "inference" in sections:
        results["inference"] = bench.guarded("inference", lambda: inference_section(bench))
    add_ratios_and_targets(bench)
    results["forbidden_modules_loaded"] = forbidden_modules_loaded()
    bench.save()
    return results


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
    results = run(Bench(args))
    report = render_report(results)
    sys.stdout.write(report)
    if args.markdown:
        Path(args.markdown).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
