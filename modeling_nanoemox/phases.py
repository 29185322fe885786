# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""What each phase of the Perception-to-Empathy (P2E) curriculum trains (DESIGN §4).

Freezing is a recipe decision expressed as parameter-name prefixes of `NanoEmoXForConditionalGeneration`; the model
itself has no notion of phases. This module needs neither TRL nor the processor (benchmarks import it on machines
that have only torch, transformers and PEFT).

Phases 2 and 3 train every module between the frozen towers and the LLM ("adapters + fusion" in DESIGN's wording): the
video and audio heads (Q-Former, queries, position embeddings, adapter), the face head (queries, attention, adapter),
the fusion encoder and its adapter.
That is what the authors' `configs/phase2.yaml` / `phase3.yaml` unfreeze, and it is the 50.8 M trainable parameters
DESIGN §2 counts; the four projectors alone would be 5.3 M.
"""

from dataclasses import dataclass

from transformers.utils import logging

logger = logging.get_logger(__name__)

AUDIO_HEAD = ("model.audio_head.",)
VISUAL_HEAD = ("model.video_head.", "model.face_head.")
HEADS = (*AUDIO_HEAD, *VISUAL_HEAD, "model.fusion_encoder.", "model.fusion_projector.")
# The same heads as module names, for PEFT's `modules_to_save` (phase 3 saves them with the LoRA adapter).
HEAD_MODULES = ("video_head", "audio_head", "face_head", "fusion_encoder", "fusion_projector")
# The LLM projections LoRA adapts in phase 3 (every layer, nowhere else).
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# As a PEFT `target_modules` regex: the short names alone would also match the towers' attention projections.
LORA_TARGET_REGEX = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05


# The authors train on one GPU with 3 clips per step and no accumulation (DESIGN §4: "batch 3/GPU"; their configs'
# batch_size_train 3), so their global batch is 3 and a phase sees 3 × its steps samples.
AUTHORS_GLOBAL_BATCH = 3


@dataclass(frozen=True)
class Phase:
    """One phase. `trainable_prefixes` is the only place the recipe's trainable parameters are defined (the YAML
    configs do not repeat them; `--trainable` overrides them for one run). `authors_steps`: the authors' length of
    the phase (DESIGN §4), at `AUTHORS_GLOBAL_BATCH`."""

    name: str
    title: str
    trainable_prefixes: tuple[str, ...]
    lora: bool = False
    authors_steps: int = 0

    @property
    def authors_samples(self) -> int:
        return AUTHORS_GLOBAL_BATCH * self.authors_steps


PHASES: dict[str, Phase] = {
    phase.name: phase
    for phase in (
        Phase("1.1", "audio alignment", AUDIO_HEAD, authors_steps=3 * 5000),
        Phase("1.2", "visual alignment", VISUAL_HEAD, authors_steps=5 * 5000),
        Phase("2", "fusion pre-training", HEADS, authors_steps=1 * 5000),
        Phase("3", "multitask instruction tuning", HEADS, lora=True, authors_steps=60 * 5000),
    )
}


def is_trainable(parameter_name: str, phase: Phase) -> bool:
    return parameter_name.startswith(phase.trainable_prefixes)


def freeze_for_phase(model, phase: Phase, trainable_prefixes: tuple[str, ...] | None = None) -> dict[str, int]:
    """Trains exactly the parameters under the phase's prefixes; returns `{"trainable": n, "frozen": m}`."""
    prefixes = tuple(trainable_prefixes or phase.trainable_prefixes)
    counts = {"trainable": 0, "frozen": 0}
    for name, parameter in model.named_parameters():
        trainable = name.startswith(prefixes)
        parameter.requires_grad_(trainable)
        counts["trainable" if trainable else "frozen"] += parameter.numel()
    if counts["trainable"] == 0:
        raise ValueError(f"No parameter matches the trainable prefixes {prefixes}.")
    return counts


def apply_lora(model, config=None):
    """
    Wraps the model with PEFT LoRA. `config` (a `peft.LoraConfig`, e.g. TRL's `get_peft_config(model_args)` built from
    a recipe's `lora_*` fields) is used as given, except that what it leaves unset is the recipe's default:
    `target_modules` the LLM's q, k, v, o, gate, up and down projections (`LORA_TARGET_REGEX`, nowhere else) and
    `modules_to_save` the modality heads (`HEAD_MODULES`) that have trainable parameters (as `freeze_for_phase` left
    them), so the adapter folder carries everything phase 3 trains. Without `config`: rank 16, alpha 32, dropout 0.05.

    `target_modules` / `modules_to_save` follow PEFT's matching: a list entry matches a module whose name is it or
    ends with `.` + it, so a short name such as `q_proj` also matches the towers' attention projections (a warning
    says so); give the full path (`language_model.layers.0.self_attn.q_proj`) to stay inside the LLM. Parameters
    outside the adapted modules and `modules_to_save` are frozen, whatever the phase's prefixes said.
    """
    import copy

    from peft import LoraConfig, get_peft_model

    if config is None:
        config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, task_type="CAUSAL_LM")
    config = copy.deepcopy(config)
    if config.target_modules is None:
        config.target_modules = LORA_TARGET_REGEX
    if config.modules_to_save is None:
        heads = {name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad and name.count(".") > 1}
        config.modules_to_save = [head for head in HEAD_MODULES if head in heads]
    model = get_peft_model(model, config)
    outside = sorted(
        name for name, module in model.named_modules() if hasattr(module, "lora_A") and ".language_model." not in name
    )
    if outside:
        logger.warning(
            f"LoRA target_modules {config.target_modules} also adapt {len(outside)} modules outside the language "
            f"model (first: {outside[0]}); name them by full path to adapt the LLM only."
        )
    return model


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
