# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Peak memory of `compose_from_components` against the size of the model it composes (issue 16: ≤ 1.25×).

    python benchmarks/bench_compose.py --size full [--eager] [--workdir DIR]
    python benchmarks/bench_compose.py --size tiny              # CI-sized

Random component folders at `--size` (shapes of `bench_cpu_inference.size_config`) are written once under `--workdir`,
each by its own subprocess, as the Hub ships them: the LLM (Qwen2) in bf16 with a tokenizer, a full CLIP checkpoint
(text tower included, which composition skips) in fp32, HuBERT and the FaceXFormer encoder in fp32. Composition then
runs in a fresh subprocess (fp32, the default), which reports its time and its peak resident set size (VmHWM); the
composed size is the bytes of the model's unique parameters and buffers. `--eager` also measures the composition
before issue 16 (every component and a fully initialised model in memory together, weights copied), in its own
subprocess — at full size it needs about 18 GB.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model

HERE = Path(__file__).resolve().parent

MAKE_COMPONENT = """
import sys, torch
sys.path.insert(0, sys.argv[3])
from bench_cpu_inference import size_config
from transformers import CLIPConfig, CLIPModel, HubertModel, Qwen2ForCausalLM
from modeling_nanoemox import NanoEmoXFaceEncoder
from modeling_nanoemox.tiny import build_tiny_tokenizer
config, which, folder = size_config(sys.argv[2]), sys.argv[1], sys.argv[4]
torch.manual_seed(0)
if which == "text":
    Qwen2ForCausalLM._from_config(config.text_config, dtype=torch.bfloat16).save_pretrained(folder)
    build_tiny_tokenizer(with_modality_tokens=False).save_pretrained(folder)
elif which == "vision":
    clip = CLIPConfig(vision_config=config.vision_config.to_dict(),
                      projection_dim=config.vision_config.projection_dim)
    CLIPModel(clip).save_pretrained(folder)
elif which == "audio":
    HubertModel(config.audio_config).save_pretrained(folder)
else:
    NanoEmoXFaceEncoder(config.face_config).save_pretrained(folder)
"""

COMPOSE = """
import gc, json, sys, time, torch
sys.path.insert(0, sys.argv[3])
from bench_cpu_inference import peak_rss_gb, size_config
from modeling_nanoemox import compose_from_components
root, size, eager = sys.argv[1], sys.argv[2], sys.argv[4] == "eager"
config = size_config(size)
overrides = {key: getattr(config, key) for key in (
    "vision_multiscale_layers", "audio_multiscale_layers", "num_video_tokens", "num_audio_tokens", "num_face_tokens",
    "face_num_heads", "face_projector_hidden_size", "fusion_hidden_size", "fusion_num_heads")}
overrides |= {"video_qformer_config": config.video_qformer_config.to_dict(),
              "audio_qformer_config": config.audio_qformer_config.to_dict()}
rss_before = peak_rss_gb()
start = time.perf_counter()
paths = {m: f"{root}/{m}" for m in ("text", "vision", "audio", "face")}
if eager:
    from bench_compose import eager_compose
    model = eager_compose(**paths, config_overrides=overrides)
else:
    model = compose_from_components(**paths, config_overrides=overrides)
seconds = time.perf_counter() - start
tensors = {t.data_ptr(): t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]}
print(json.dumps({"seconds": seconds, "peak_rss_gb": peak_rss_gb(), "rss_before_gb": rss_before,
                  "model_gb": sum(tensors.values()) / 1e9,
                  "parameters_b": sum(p.numel() for p in model.parameters()) / 1e9}))
"""


def eager_compose(text, vision, audio, face, config_overrides):
    """The composition before issue 16 (for `--eager`): components loaded in fp32 next to a fully initialised model,
    then copied into it."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, CLIPConfig, CLIPVisionModel

    from modeling_nanoemox import NanoEmoXConfig, NanoEmoXFaceEncoder, NanoEmoXForConditionalGeneration
    from modeling_nanoemox.composition_nanoemox import add_modality_tokens

    tokenizer = AutoTokenizer.from_pretrained(text)
    token_ids = add_modality_tokens(tokenizer)
    language_model = AutoModelForCausalLM.from_pretrained(text, dtype=torch.float32)
    vision_tower = CLIPVisionModel.from_pretrained(
        vision, config=CLIPConfig.from_pretrained(vision).vision_config, dtype=torch.float32
    )
    audio_tower = AutoModel.from_pretrained(audio, dtype=torch.float32)
    face_encoder = NanoEmoXFaceEncoder.from_pretrained(face, dtype=torch.float32)
    config = NanoEmoXConfig(
        text_config=language_model.config.to_dict(),
        vision_config=vision_tower.config.to_dict(),
        audio_config={**audio_tower.config.to_dict(), "apply_spec_augment": False, "layerdrop": 0.0},
        face_config=face_encoder.config.to_dict(),
        **{f"{modality}_token_id": token_id for modality, token_id in token_ids.items()},
        **config_overrides,
    )
    model = NanoEmoXForConditionalGeneration(config)
    model.model.language_model.load_state_dict(language_model.model.state_dict())
    model.model.vision_tower.load_state_dict(vision_tower.state_dict())
    model.model.audio_tower.load_state_dict(audio_tower.state_dict())
    model.model.face_encoder.load_state_dict(face_encoder.state_dict())
    return model


def run(args: list[str], what: str) -> str:
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=HERE)
    if completed.returncode:
        sys.stderr.write(completed.stderr[-8000:])
        raise SystemExit(f"{what} failed (exit {completed.returncode})")
    print(f"  {what}: {time.perf_counter() - start:.0f} s", flush=True)
    return completed.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "mid", "full"), default="full")
    parser.add_argument("--workdir", type=Path, help="where the component folders are kept (default: temp dir)")
    parser.add_argument("--eager", action="store_true", help="also measure the composition before issue 16")
    args = parser.parse_args()
    root = (args.workdir or Path(tempfile.gettempdir()) / "nanoemox-bench-compose") / f"components-{args.size}"
    print(f"cpu: {cpu_model()} ({os.cpu_count()} logical cores); components in {root}", flush=True)
    for which in ("text", "vision", "audio", "face"):
        if not (root / which / "config.json").exists():
            run(["-c", MAKE_COMPONENT, which, args.size, str(HERE), str(root / which)], f"random {which} component")
    disk = sum(f.stat().st_size for f in root.rglob("*.safetensors")) / 1e9
    lines = [f"command: {' '.join(sys.argv)}", f"size {args.size}; component checkpoints {disk:.2f} GB on disk", "",
             "| composition | seconds | peak RSS GB | composed model GB (fp32) | peak / model |", "|---|---|---|---|---|"]  # fmt: skip
    for kind in ("meta", "eager") if args.eager else ("meta",):
        stdout = run(["-c", COMPOSE, str(root), args.size, str(HERE), kind], f"{kind} composition")
        result = json.loads(stdout.strip().splitlines()[-1])
        lines.append(
            f"| {kind} | {result['seconds']:.1f} | {result['peak_rss_gb']:.2f} | {result['model_gb']:.2f} "
            f"({result['parameters_b']:.3f} B params) | {result['peak_rss_gb'] / result['model_gb']:.2f} |"
        )
    lines.append("")
    lines.append("peak RSS includes the interpreter and libraries (about 0.4 GB before anything loads).")
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
