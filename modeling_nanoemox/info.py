# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Parameter accounting for `nanoemox info`: built on the meta device, so the full model costs no memory or time."""

import torch

from .configuration_nanoemox import NanoEmoXConfig
from .modeling_nanoemox import NanoEmoXForConditionalGeneration
from .phases import PHASES, is_trainable, lora_parameter_count


def model_info(config: NanoEmoXConfig) -> dict:
    """
    Returns per-component parameter counts, totals (with and without the face encoder's Swin backbone), the
    parameters each P2E phase trains, and the LLM tokens one clip becomes.
    """
    with torch.device("meta"):
        model = NanoEmoXForConditionalGeneration(config)
    components = {name: sum(p.numel() for p in module.parameters()) for name, module in model.model.named_children()}
    for head in ("video_head", "audio_head"):
        components[f"{head}.qformer"] = sum(p.numel() for p in getattr(model.model, head).qformer.parameters())
    # The LM head is tied to the input embeddings in the released model; count it only when it is a separate matrix.
    if not config.tie_word_embeddings:
        components["lm_head"] = model.lm_head.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    swin = sum(p.numel() for p in model.model.face_encoder.backbone.parameters())
    phases = {}
    for phase in PHASES.values():
        trainable = sum(p.numel() for name, p in model.named_parameters() if is_trainable(name, phase))
        lora = lora_parameter_count(config.text_config) if phase.lora else 0
        phases[phase.name] = {"title": phase.title, "trainable": trainable + lora, "lora": lora}
    tokens = {m: getattr(config, f"num_{m}_tokens") for m in ("video", "audio", "face", "fusion")}
    return {
        "components": components,
        "total": total,
        "total_without_swin_backbone": total - swin,
        "swin_backbone": swin,
        "phases": phases,
        "tokens_per_clip": {**tokens, "total": sum(tokens.values())},
    }


def format_info(info: dict, size: str) -> str:
    def millions(count: int) -> str:
        return f"{count / 1e6:10.2f} M"

    lines = [f"Nano-EmoX ({size})", "", f"{'component':<36}parameters"]
    lines += [f"  {name:<34}{millions(count)}" for name, count in info["components"].items()]
    lines += [
        "",
        f"  {'total':<34}{millions(info['total'])}",
        f"  {'total without the Swin backbone':<34}{millions(info['total_without_swin_backbone'])}",
        "",
        f"{'P2E phase':<36}trainable",
    ]
    for name, phase in info["phases"].items():
        extra = f" (of which LoRA {phase['lora'] / 1e6:.2f} M)" if phase["lora"] else ""
        lines.append(f"  {name + ' ' + phase['title']:<34}{millions(phase['trainable'])}{extra}")
    tokens = info["tokens_per_clip"]
    lines += [
        "",
        f"tokens per clip: {tokens['video']} video + {tokens['audio']} audio + {tokens['face']} face + "
        f"{tokens['fusion']} fusion = {tokens['total']}",
    ]
    return "\n".join(lines) + "\n"
