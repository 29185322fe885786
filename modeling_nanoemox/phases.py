# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""What each phase of the Perception-to-Empathy (P2E) curriculum trains (DESIGN §4).

Freezing is a recipe decision expressed as parameter-name prefixes of `NanoEmoXForConditionalGeneration`; the model
itself has no notion of phases.
"""

from dataclasses import dataclass

ADAPTERS = ("model.video_projector", "model.audio_projector", "model.face_projector", "model.fusion_projector")
# The LLM projections LoRA adapts in phase 3 (every layer, nowhere else).
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05


@dataclass(frozen=True)
class Phase:
    name: str
    title: str
    trainable_prefixes: tuple[str, ...]
    lora: bool = False


PHASES: dict[str, Phase] = {
    phase.name: phase
    for phase in (
        Phase(
            "1.1",
            "audio alignment",
            (
                "model.audio_qformer.",
                "model.audio_query_tokens",
                "model.audio_position_embedding.",
                "model.audio_projector.",
            ),
        ),
        Phase(
            "1.2",
            "visual alignment",
            (
                "model.video_qformer.",
                "model.video_query_tokens",
                "model.video_position_embedding.",
                "model.video_projector.",
                "model.face_pooler.",
                "model.face_projector.",
            ),
        ),
        Phase("2", "fusion pre-training", (*(f"{a}." for a in ADAPTERS), "model.fusion_encoder.")),
        Phase("3", "multitask instruction tuning", (*(f"{a}." for a in ADAPTERS), "model.fusion_encoder."), lora=True),
    )
}


def is_trainable(parameter_name: str, phase: Phase) -> bool:
    return parameter_name.startswith(phase.trainable_prefixes)


def lora_parameter_count(text_config, rank: int = LORA_RANK, targets=LORA_TARGET_MODULES) -> int:
    """Parameters LoRA adds to a Qwen2/Llama-style decoder: `rank * (in + out)` per adapted projection per layer."""
    hidden = text_config.hidden_size
    head_dim = getattr(text_config, "head_dim", None) or hidden // text_config.num_attention_heads
    kv = text_config.num_key_value_heads * head_dim
    q = text_config.num_attention_heads * head_dim
    inter = text_config.intermediate_size
    shapes = {
        "q_proj": (hidden, q),
        "k_proj": (hidden, kv),
        "v_proj": (hidden, kv),
        "o_proj": (q, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }
    return text_config.num_hidden_layers * sum(rank * sum(shapes[t]) for t in targets)
