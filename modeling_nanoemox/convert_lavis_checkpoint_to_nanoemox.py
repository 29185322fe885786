# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Convert the Nano-EmoX authors' LAVIS-style phase checkpoints into a Nano-EmoX folder.

The authors' runner (`runners/runner_base.py::_save_checkpoint`) writes `checkpoint_*.pth`, a dict with `model` (the
state dict minus every parameter that does not require a gradient, so: the phase's trainable tensors, the modules the
authors never freeze, and every buffer of the whole model), `optimizer`, `config`, `scaler` and `epoch`. Such a file
cannot stand alone, so it is overlaid onto a complete Nano-EmoX folder (`--base_model`, e.g. one built with
`modeling_nanoemox.compose_from_components` or the output of the previous phase) and saved as a new folder.

Key mapping (authors' name → ours; `{v}` is `video` or `audio`):

    {v}_Qformer.bert.embeddings.LayerNorm.*                      model.{v}_head.qformer.layernorm.*
    {v}_Qformer.bert.encoder.layer.{i}.attention.self.{q,k,v}.*  model.{v}_head.qformer.encoder.layer.{i}.attention.attention.{q,k,v}.*
    {v}_Qformer.bert.encoder.layer.{i}.attention.output.*        model.{v}_head.qformer.encoder.layer.{i}.attention.output.*
    {v}_Qformer.bert.encoder.layer.{i}.crossattention.self.*     model.{v}_head.qformer.encoder.layer.{i}.crossattention.attention.*
    {v}_Qformer.bert.encoder.layer.{i}.crossattention.output.*   model.{v}_head.qformer.encoder.layer.{i}.crossattention.output.*
    {v}_Qformer.bert.encoder.layer.{i}.intermediate_query.*      model.{v}_head.qformer.encoder.layer.{i}.intermediate_query.*
    {v}_Qformer.bert.encoder.layer.{i}.output_query.*            model.{v}_head.qformer.encoder.layer.{i}.output_query.*
    {v}_query_tokens                                             model.{v}_head.query_tokens
    video_frame_position_embedding.weight                        model.video_head.position_embedding.weight
    audio_position_embedding.weight                              model.audio_head.position_embedding.weight
    video_proj.* / audio_llama_proj.*                            model.video_head.projector.* / model.audio_head.projector.*
    multi_llama_proj.*                                           model.fusion_projector.*
    multi_multiscale_fusion.audio_proj.* / visual_proj.*         model.fusion_encoder.audio_projection.* / video_projection.*
    multi_multiscale_fusion.cross_attns.{i}.*                    model.fusion_encoder.experts.{i}.cross_attention.*
    multi_multiscale_fusion.ffns.{i}.{0,1,4}.*                   model.fusion_encoder.experts.{i}.{norm,fc1,fc2}.*
    multi_multiscale_fusion.gate_mlp.{0,3}.*                     model.fusion_encoder.gate.{0,3}.*
    facial_encoder.query                                         model.face_head.queries
    facial_encoder.attn.*                                        model.face_head.attention.*
    facial_encoder.face_proj.{0,3}.*                             model.face_head.projector.{linear_1,linear_2}.*
    llama_model.base_model.model.model.layers.{i}.{self_attn,mlp}.{q,k,v,o,gate,up,down}_proj.lora_{A,B}.default.weight
                                                                 LoRA of model.language_model.layers.{i}.{self_attn,mlp}.*_proj

Dead modules the authors create but the trained "multiscale" variant never uses, and buffers of the frozen towers,
are dropped through the commented list `DROPPED_KEYS` / `FROZEN_TOWER_PREFIXES`. Any other key is an error.

Phases (`--phase`). The set of our modules a checkpoint must provide is derived from the `frozen_*` flags of the
authors' `configs/phase1_1.yaml`, `phase1_2.yaml`, `phase2.yaml`, `phase3.yaml` (`AUTHORS_PHASE_FLAGS`, `FLAG_MODULES`):

    1.1  audio_head (Q-Former, queries, position embeddings, adapter)
    1.2  video_head (same parts), face_head (queries, attention, adapter)
    2    all of 1.1 and 1.2, fusion_encoder, fusion_projector
    3    all of 2, and LoRA on q/k/v/o/gate/up/down of every language-model layer

Missing = expected − provided, unexpected = provided − (mapped ∪ dropped); either is an error, as is a shape that
differs from the base model. A key that maps onto one of our modules that the phase does not train (the authors never
freeze their face pooler, so a phase-1.1 checkpoint carries an untouched copy of it: our face head's queries and
attention) is reported and NOT overlaid, so
converting phases in any order never overwrites trained weights with untrained ones. When the checkpoint's `config`
carries the authors' flags, they must describe the requested phase.

LoRA (phase 3): `--lora merge` (default) adds `B @ A * alpha / r` into the base language-model weights; `--lora adapter`
leaves them untouched and writes a PEFT adapter (target modules `model.language_model.layers.{i}.…`) to
`--adapter_dir` (default `<output_dir>/lora_adapter`). `r` is read from the tensors; `alpha` from the checkpoint's
`config` (`model.lora_alpha`), else `--lora_alpha` (default 32, the authors' value).

Prompt style: the converted folder's `processor_config.json` gets `"prompt_style": "authors"` (`--prompt_style`), so
`AutoProcessor.from_pretrained(output_dir)` renders the authors' `###Human: … ###Assistant: ` prompts, squashes frames
and normalises audio jointly — the inputs the checkpoint was trained on (see the processor's `prompt_style`).

Usage:

    python -m modeling_nanoemox.convert_lavis_checkpoint_to_nanoemox --checkpoint checkpoint_000059_loss_0.286.pth \\
        --phase 3 --base_model nanoemox-phase2 --output_dir nanoemox-phase3
"""

import argparse
import json
import pickle
import re
import shutil
import sys
from pathlib import Path

import torch
from transformers.utils import logging

from .configuration_nanoemox import NanoEmoXConfig
from .modeling_nanoemox import NanoEmoXForConditionalGeneration

logger = logging.get_logger(__name__)

PHASES = ("1.1", "1.2", "2", "3")
LORA = "lora"  # pseudo-module: the language model's LoRA tensors
LORA_PROJECTIONS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
DEFAULT_LORA_ALPHA = 32.0
DEFAULT_LORA_DROPOUT = 0.05

# The `frozen_*` flags of the authors' phase configs that decide which of our modules a checkpoint carries. Their
# `frozen_multi_Qformer`, `frozen_multi_MoE` and `frozen_facial_encoder` belong to fusion variants we do not port or
# are read nowhere in their code, so they are left out.
AUTHORS_PHASE_FLAGS = {
    "1.1": {
        "frozen_audio_Qformer": False,
        "frozen_audio_proj": False,
        "frozen_video_Qformer": True,
        "frozen_video_proj": True,
        "frozen_facial_llama_proj": True,
        "frozen_multi_multiscale": True,
        "frozen_multi_llama_proj": True,
        "frozen_llm": True,
    },
    "1.2": {
        "frozen_audio_Qformer": True,
        "frozen_audio_proj": True,
        "frozen_video_Qformer": False,
        "frozen_video_proj": False,
        "frozen_facial_llama_proj": False,
        "frozen_multi_multiscale": True,
        "frozen_multi_llama_proj": True,
        "frozen_llm": True,
    },
    "2": {
        "frozen_audio_Qformer": False,
        "frozen_audio_proj": False,
        "frozen_video_Qformer": False,
        "frozen_video_proj": False,
        "frozen_facial_llama_proj": False,
        "frozen_multi_multiscale": False,
        "frozen_multi_llama_proj": False,
        "frozen_llm": True,
    },
    "3": {
        "frozen_audio_Qformer": False,
        "frozen_audio_proj": False,
        "frozen_video_Qformer": False,
        "frozen_video_proj": False,
        "frozen_facial_llama_proj": False,
        "frozen_multi_multiscale": False,
        "frozen_multi_llama_proj": False,
        "frozen_llm": False,
    },
}
# Our modules each flag unfreezes (module names under `NanoEmoXForConditionalGeneration.model`).
FLAG_MODULES = {
    "frozen_audio_Qformer": ("audio_head.qformer", "audio_head.query_tokens", "audio_head.position_embedding"),
    "frozen_audio_proj": ("audio_head.projector",),
    "frozen_video_Qformer": ("video_head.qformer", "video_head.query_tokens", "video_head.position_embedding"),
    "frozen_video_proj": ("video_head.projector",),
    # The authors never freeze the face pooler (query + attention); it only gets gradients when faces are in the data,
    # which is exactly in the phases that train the face adapter, so it goes with `frozen_facial_llama_proj`.
    "frozen_facial_llama_proj": ("face_head.projector", "face_head.queries", "face_head.attention"),
    "frozen_multi_multiscale": ("fusion_encoder",),
    "frozen_multi_llama_proj": ("fusion_projector",),
    # With `frozen_llm: False` only the LoRA tensors train (the authors freeze the base LLM before adding LoRA).
    "frozen_llm": (LORA,),
}
# Where the authors keep each of our modules, to point at what a missing key should have been called.
AUTHORS_PREFIXES = {
    "audio_head.qformer": "audio_Qformer.bert.",
    "audio_head.query_tokens": "audio_query_tokens",
    "audio_head.position_embedding": "audio_position_embedding.",
    "audio_head.projector": "audio_llama_proj.",
    "video_head.qformer": "video_Qformer.bert.",
    "video_head.query_tokens": "video_query_tokens",
    "video_head.position_embedding": "video_frame_position_embedding.",
    "video_head.projector": "video_proj.",
    "face_head.queries": "facial_encoder.query",
    "face_head.attention": "facial_encoder.attn.",
    "face_head.projector": "facial_encoder.face_proj.",
    "fusion_encoder": "multi_multiscale_fusion.",
    "fusion_projector": "multi_llama_proj.",
    LORA: "llama_model.base_model.model.model.layers.",
}


def trainable_modules(flags: dict) -> tuple[str, ...]:
    """Our modules that the authors' `frozen_*` flags leave trainable (an absent flag is False, as in their code)."""
    return tuple(module for flag, modules in FLAG_MODULES.items() if not flags.get(flag, False) for module in modules)


PHASE_MODULES = {phase: trainable_modules(flags) for phase, flags in AUTHORS_PHASE_FLAGS.items()}

_W = r"(weight|bias)"
# (authors' key pattern, our key template); patterns are matched in full.
KEY_RULES = [
    (rf"(video|audio)_Qformer\.bert\.embeddings\.LayerNorm\.{_W}", r"model.\1_head.qformer.layernorm.\2"),
    (
        rf"(video|audio)_Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.(query|key|value)\.{_W}",
        r"model.\1_head.qformer.encoder.layer.\2.\3.attention.\4.\5",
    ),
    (
        rf"(video|audio)_Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.output\.(dense|LayerNorm)\.{_W}",
        r"model.\1_head.qformer.encoder.layer.\2.\3.output.\4.\5",
    ),
    (
        rf"(video|audio)_Qformer\.bert\.encoder\.layer\.(\d+)\.intermediate_query\.dense\.{_W}",
        r"model.\1_head.qformer.encoder.layer.\2.intermediate_query.dense.\3",
    ),
    (
        rf"(video|audio)_Qformer\.bert\.encoder\.layer\.(\d+)\.output_query\.(dense|LayerNorm)\.{_W}",
        r"model.\1_head.qformer.encoder.layer.\2.output_query.\3.\4",
    ),
    (r"(video|audio)_query_tokens", r"model.\1_head.query_tokens"),
    (r"video_frame_position_embedding\.weight", r"model.video_head.position_embedding.weight"),
    (r"audio_position_embedding\.weight", r"model.audio_head.position_embedding.weight"),
    (rf"video_proj\.{_W}", r"model.video_head.projector.\1"),
    (rf"audio_llama_proj\.{_W}", r"model.audio_head.projector.\1"),
    (rf"multi_llama_proj\.{_W}", r"model.fusion_projector.\1"),
    (rf"multi_multiscale_fusion\.audio_proj\.{_W}", r"model.fusion_encoder.audio_projection.\1"),
    (rf"multi_multiscale_fusion\.visual_proj\.{_W}", r"model.fusion_encoder.video_projection.\1"),
    (
        r"multi_multiscale_fusion\.cross_attns\.(\d+)\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)",
        r"model.fusion_encoder.experts.\1.cross_attention.\2",
    ),
    # ffns[i] = Sequential(LayerNorm, Linear, GELU, Dropout, Linear)
    (rf"multi_multiscale_fusion\.ffns\.(\d+)\.0\.{_W}", r"model.fusion_encoder.experts.\1.norm.\2"),
    (rf"multi_multiscale_fusion\.ffns\.(\d+)\.1\.{_W}", r"model.fusion_encoder.experts.\1.fc1.\2"),
    (rf"multi_multiscale_fusion\.ffns\.(\d+)\.4\.{_W}", r"model.fusion_encoder.experts.\1.fc2.\2"),
    # gate_mlp = Sequential(Linear, GELU, Dropout, Linear, Softmax); our gate applies the softmax outside.
    (rf"multi_multiscale_fusion\.gate_mlp\.(0|3)\.{_W}", r"model.fusion_encoder.gate.\1.\2"),
    (r"facial_encoder\.query", r"model.face_head.queries"),
    (
        r"facial_encoder\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)",
        r"model.face_head.attention.\1",
    ),
    # face_proj = Sequential(Linear, GELU, Dropout, Linear)
    (rf"facial_encoder\.face_proj\.0\.{_W}", r"model.face_head.projector.linear_1.\1"),
    (rf"facial_encoder\.face_proj\.3\.{_W}", r"model.face_head.projector.linear_2.\1"),
]
KEY_RULES = [(re.compile(pattern), template) for pattern, template in KEY_RULES]
# PEFT wraps the causal LM as base_model.model, whose decoder is `.model`; the authors' adapter is named "default".
LORA_RULE = re.compile(
    r"llama_model\.base_model\.model\.model\.layers\.(\d+)\."
    r"(self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)\.lora_(A|B)\.default\.weight"
)

# Keys the authors' checkpoints carry that have no counterpart in Nano-EmoX, each with the reason it is safe to drop.
DROPPED_KEYS = [
    # Image branch (`image_fusion_type`): always trainable in their code, never fed in the video tasks; not ported.
    rf"image_llama_proj\.{_W}",
    # Inputs of the "qformer"/"attention" fusion variants; the trained "multiscale" variant never calls them.
    rf"multi_(audio|video)_embs\.{_W}",
    # LayerNorm the face pooler creates but never applies in `forward`.
    rf"facial_encoder\.lynorm\.{_W}",
    # BERT's text position-id buffer: the Q-Formers see learned queries only (word/position embeddings are None).
    r"(video|audio)_Qformer\.bert\.embeddings\.position_ids",
    # Rotary frequencies of the LLM, recomputed from its config (persistent only in old transformers versions).
    r"llama_model\..*rotary_emb\.(original_)?inv_freq",
]
DROPPED_KEYS = [re.compile(pattern) for pattern in DROPPED_KEYS]
# Frozen towers: the authors save their buffers (CLIP/BERT `position_ids`, Swin `relative_position_index`), all integer
# index tensors recomputed by our towers. A floating-point tensor there would be a trained tower weight, which this
# converter cannot place, so only integer tensors are dropped.
FROZEN_TOWER_PREFIXES = ("visual_encoder.", "acoustic_encoder.", "facial_encoder.facexformer.")


def map_authors_key(key: str) -> tuple[str, str | None]:
    """
    Classifies one key of the authors' state dict.

    Returns:
        `("weight", our_key)`, `("lora", "<our module>.lora_A.weight" | "<our module>.lora_B.weight")`,
        `("dropped", None)` for a name in `DROPPED_KEYS`, `("tower", None)` for a frozen tower's tensor (dropped if it
        is an integer buffer) or `("unknown", None)`.
    """
    for pattern, template in KEY_RULES:
        if match := pattern.fullmatch(key):
            return "weight", match.expand(template)
    if match := LORA_RULE.fullmatch(key):
        layer, projection, side = match.groups()
        return LORA, f"model.language_model.layers.{layer}.{projection}.lora_{side}.weight"
    if any(pattern.fullmatch(key) for pattern in DROPPED_KEYS):
        return "dropped", None
    if key.startswith(FROZEN_TOWER_PREFIXES):
        return "tower", None
    return "unknown", None


HEADS_WITH_PARTS = ("video_head", "audio_head", "face_head")


def _module_of(our_key: str) -> str:
    """The unit the authors freeze separately: `video_head.qformer`, `fusion_encoder`, the LoRA tensors, …"""
    if ".lora_" in our_key:
        return LORA
    parts = our_key.split(".")
    return f"{parts[1]}.{parts[2]}" if parts[1] in HEADS_WITH_PARTS else parts[1]


def expected_keys(phase: str, model_state: dict[str, torch.Tensor], num_layers: int) -> set[str]:
    """Our keys (weights and `…lora_{A,B}.weight`) that a checkpoint of `phase` must provide."""
    if phase not in PHASE_MODULES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")
    modules = set(PHASE_MODULES[phase])
    expected = {key for key in model_state if key.startswith("model.") and _module_of(key) in modules}
    if LORA in modules:
        for layer in range(num_layers):
            for projection in LORA_PROJECTIONS:
                module = f"model.language_model.layers.{layer}.{projection}"
                expected |= {f"{module}.lora_A.weight", f"{module}.lora_B.weight"}
    return expected


def check_authors_config(checkpoint_config: dict | None, phase: str) -> None:
    """
    Raises `ValueError` when the checkpoint's own `config` describes another phase or a fusion variant that Nano-EmoX
    does not port. A checkpoint without a config (or without the flags) passes.
    """
    model_config = checkpoint_config.get("model") if isinstance(checkpoint_config, dict) else None
    if not isinstance(model_config, dict):
        return
    for option, ours in (
        ("multi_fusion_type", "multiscale"),
        ("video_fusion_type", "qformer"),
        ("audio_fusion_type", "qformer"),
    ):
        if option in model_config and model_config[option] != ours:
            raise ValueError(
                f"The checkpoint was trained with {option}={model_config[option]!r}; Nano-EmoX ports only "
                f"{option}={ours!r}, so its weights have no place here."
            )
    if not any(flag in model_config for flag in FLAG_MODULES):
        return
    trained = set(trainable_modules(model_config))
    if trained != set(PHASE_MODULES[phase]):
        matching = [p for p, modules in PHASE_MODULES.items() if set(modules) == trained]
        expected = set(PHASE_MODULES[phase])
        raise ValueError(
            f"--phase {phase} does not match the checkpoint's config: by its frozen_* flags it also trains "
            f"{sorted(trained - expected)} and does not train {sorted(expected - trained)}"
            + (f" (that is phase {matching[0]})." if matching else " (no Nano-EmoX phase trains exactly that).")
        )


def resolve_lora_alpha(checkpoint_config: dict | None, lora_alpha: float | None) -> float:
    """The checkpoint's `model.lora_alpha` if recorded, else `lora_alpha`, else 32; a disagreement is an error."""
    model_config = checkpoint_config.get("model") if isinstance(checkpoint_config, dict) else None
    recorded = model_config.get("lora_alpha") if isinstance(model_config, dict) else None
    if recorded is not None:
        if lora_alpha is not None and float(lora_alpha) != float(recorded):
            raise ValueError(
                f"--lora_alpha {lora_alpha} contradicts the checkpoint's config (lora_alpha={recorded}); omit it."
            )
        return float(recorded)
    return float(lora_alpha) if lora_alpha is not None else DEFAULT_LORA_ALPHA


def convert_lavis_state_dict(
    state_dict: dict[str, torch.Tensor],
    phase: str,
    config: NanoEmoXConfig,
    checkpoint_config: dict | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """
    Renames an authors' phase checkpoint (`torch.load(path)["model"]`) to Nano-EmoX names, strictly.

    Args:
        state_dict: the authors' state dict.
        phase: one of `PHASES`; decides which of our modules must be provided (see the module docstring).
        config: the configuration of the model the result is overlaid onto (for names and shapes).
        checkpoint_config: the checkpoint's `config` entry, checked against `phase` when it has the authors' flags.

    Returns:
        `(converted, lora)`: `converted` maps our parameter names to tensors of the phase's modules; `lora` maps
        `model.language_model.layers.{i}.{proj}.lora_{A,B}.weight` to tensors (empty before phase 3).

    Raises:
        ValueError: listing every missing, unexpected and mis-shaped key (and when the config contradicts `phase`).
    """
    if phase not in PHASE_MODULES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")
    check_authors_config(checkpoint_config, phase)
    with torch.device("meta"):  # names and shapes only
        model_state = NanoEmoXForConditionalGeneration(config).state_dict()
    num_layers = config.text_config.num_hidden_layers
    expected = expected_keys(phase, model_state, num_layers)

    provided: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    unexpected, problems, not_trained = [], [], []
    for key, value in state_dict.items():
        kind, ours = map_authors_key(key)
        if kind == "dropped":
            continue
        if kind == "tower":
            if value.is_floating_point() or value.is_complex():
                unexpected.append(f"{key} (a floating-point tensor of a frozen tower: trained tower weights?)")
            continue
        if kind == "unknown":
            unexpected.append(key)
            continue
        if ours in sources:
            problems.append(f"{key} and {sources[ours]} both map onto {ours}")
            continue
        if ours not in expected:
            exists = f"{ours.rsplit('.lora_', 1)[0]}.weight" in model_state if kind == LORA else ours in model_state
            if exists:
                not_trained.append(f"{key} -> {ours}")
            else:
                unexpected.append(f"{key} (maps onto {ours}, which this model does not have)")
            continue
        provided[ours], sources[ours] = value, key

    for ours, value in provided.items():
        if ".lora_" not in ours and model_state[ours].shape != value.shape:
            problems.append(
                f"{sources[ours]} -> {ours}: the base model has shape {tuple(model_state[ours].shape)}, the "
                f"checkpoint {tuple(value.shape)}"
            )
    for module in lora_modules(provided):
        lora_a, lora_b = provided.get(f"{module}.lora_A.weight"), provided.get(f"{module}.lora_B.weight")
        if lora_a is None or lora_b is None:
            continue  # reported as missing
        out_features, in_features = model_state[f"{module}.weight"].shape
        # A is (r, in_features), B is (out_features, r).
        if not (
            lora_a.dim() == lora_b.dim() == 2
            and lora_a.shape[1] == in_features
            and lora_b.shape[0] == out_features
            and lora_a.shape[0] == lora_b.shape[1]
        ):
            problems.append(
                f"{module}: LoRA A {tuple(lora_a.shape)} and B {tuple(lora_b.shape)} do not fit a weight of shape "
                f"{(out_features, in_features)} (A must be (r, in), B (out, r))"
            )
    ranks = {value.shape[0] for ours, value in provided.items() if ours.endswith("lora_A.weight")}
    if len(ranks) > 1:
        problems.append(f"LoRA ranks differ between modules: {sorted(ranks)}")
    model_config = checkpoint_config.get("model") if isinstance(checkpoint_config, dict) else None
    recorded_rank = model_config.get("lora_r") if isinstance(model_config, dict) else None
    if ranks and recorded_rank is not None and ranks != {recorded_rank}:
        problems.append(
            f"LoRA tensors have rank {sorted(ranks)} but the checkpoint's config says lora_r={recorded_rank}"
        )

    missing = sorted(expected - set(provided))
    if missing or unexpected or problems:
        lines = [f"Cannot convert the phase-{phase} checkpoint strictly:"]
        for key in missing:
            lines.append(f"  missing (not in the checkpoint): {key} (authors' {AUTHORS_PREFIXES[_module_of(key)]}…)")
        lines += [f"  unexpected (unknown to the converter): {key}" for key in sorted(unexpected)]
        lines += [f"  mismatch: {problem}" for problem in problems]
        lines.append(f"({len(missing)} missing, {len(unexpected)} unexpected, {len(problems)} mismatched)")
        raise ValueError("\n".join(lines))
    if not_trained:
        logger.warning(
            "%d tensors belong to modules that phase %s does not train and are NOT overlaid:\n  %s",
            len(not_trained),
            phase,
            "\n  ".join(sorted(not_trained)),
        )
    converted = {key: value for key, value in provided.items() if ".lora_" not in key}
    lora = {key: value for key, value in provided.items() if ".lora_" in key}
    return converted, lora


def lora_modules(lora: dict[str, torch.Tensor]) -> list[str]:
    """Names of the modules that `lora` (as returned by `convert_lavis_state_dict`) adapts."""
    return sorted({key.rsplit(".lora_", 1)[0] for key in lora if ".lora_" in key})


@torch.no_grad()
def merge_lora(model: torch.nn.Module, lora: dict[str, torch.Tensor], lora_alpha: float) -> None:
    """Adds `B @ A * lora_alpha / r` into each adapted weight of `model` (computed in float32, stored in its dtype)."""
    for module_name in lora_modules(lora):
        lora_a, lora_b = lora[f"{module_name}.lora_A.weight"], lora[f"{module_name}.lora_B.weight"]
        weight = model.get_submodule(module_name).weight
        scale = lora_alpha / lora_a.shape[0]
        delta = (lora_b.float() @ lora_a.float()) * scale  # (out, r) @ (r, in)
        weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))


def save_lora_adapter(
    model: torch.nn.Module,
    lora: dict[str, torch.Tensor],
    lora_alpha: float,
    adapter_dir: str | Path,
    lora_dropout: float = DEFAULT_LORA_DROPOUT,
    base_model_name_or_path: str | None = None,
) -> None:
    """
    Writes `lora` as a PEFT LoRA adapter for `model` (whose target modules are our names,
    `model.language_model.layers.{i}.…`). `model` is wrapped in place: save it before calling this.
    """
    from peft import LoraConfig, get_peft_model

    modules = lora_modules(lora)
    rank = lora[f"{modules[0]}.lora_A.weight"].shape[0]
    lora_config = LoraConfig(
        r=rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=modules, bias="none"
    )
    peft_model = get_peft_model(model, lora_config)
    with torch.no_grad():
        for module_name in modules:
            layer = peft_model.base_model.model.get_submodule(module_name)
            for side in ("A", "B"):
                target = getattr(layer, f"lora_{side}")["default"].weight
                target.copy_(lora[f"{module_name}.lora_{side}.weight"].to(target.dtype))
    if base_model_name_or_path is not None:
        peft_model.peft_config["default"].base_model_name_or_path = base_model_name_or_path
    peft_model.save_pretrained(str(adapter_dir))


def load_lavis_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Loads `checkpoint_*.pth` with `weights_only=True`; returns its `model` state dict and its `config` (or None)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds Python objects that `torch.load(weights_only=True)` refuses to unpickle ({error}). In the "
            "authors' checkpoints only `model` is needed; `config`, `optimizer` and `scaler` can carry such objects "
            "(e.g. an OmegaConf container, numpy scalars). This converter never unpickles arbitrary objects: in an "
            "environment you trust, re-save the weights alone with "
            "`torch.save({'model': torch.load(path, weights_only=False)['model']}, 'model_only.pth')` and convert that."
        ) from None
    if isinstance(checkpoint, dict) and "model" in checkpoint:
        state_dict, config = checkpoint["model"], checkpoint.get("config")
    else:
        state_dict, config = checkpoint, None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path}: expected the authors' checkpoint (a dict with a `model` state dict), got {found}.")
    return state_dict, config


# Weight files of the base folder that `save_pretrained` replaces; every other file it lacks is copied over.
_WEIGHT_FILE = re.compile(r".*\.(safetensors|bin|pth|pt)|.*\.index\.json")


def _copy_companion_files(base_dir: Path, output_dir: Path) -> None:
    # Tokenizer, processor and chat-template files make the output as complete as the base folder.
    for path in sorted(base_dir.iterdir()):
        if path.is_file() and not _WEIGHT_FILE.fullmatch(path.name) and not (output_dir / path.name).exists():
            shutil.copy2(path, output_dir / path.name)
            logger.info("Copied %s from the base folder.", path.name)


def set_prompt_style(output_dir: str | Path, prompt_style: str = "authors") -> bool:
    """Writes `prompt_style` into the folder's `processor_config.json`; False (and a warning) when it has none."""
    path = Path(output_dir) / "processor_config.json"
    if not path.is_file():
        logger.warning("%s has no processor_config.json; load the processor with prompt_style=%r.", output_dir,
                       prompt_style)  # fmt: skip
        return False
    config = json.loads(path.read_text(encoding="utf-8"))
    config["prompt_style"] = prompt_style
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status (0 on success, 1 on any conversion error)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="The authors' checkpoint_*.pth.")
    parser.add_argument("--phase", required=True, choices=PHASES, help="The P2E phase the checkpoint ends.")
    parser.add_argument(
        "--base_model", required=True, help="Complete Nano-EmoX folder to overlay the checkpoint onto."
    )
    parser.add_argument("--output_dir", required=True, help="Folder to save the converted model into.")
    parser.add_argument(
        "--lora", choices=("merge", "adapter"), default="merge", help="Phase 3: merge LoRA or write a PEFT adapter."
    )
    parser.add_argument(
        "--lora_alpha", type=float, default=None, help="LoRA alpha when the checkpoint's config lacks it (32)."
    )
    parser.add_argument("--adapter_dir", default=None, help="Where --lora adapter writes (<output_dir>/lora_adapter).")
    parser.add_argument(
        "--prompt_style",
        choices=("authors", "chat"),
        default="authors",
        help="Prompt style written into the processor_config.json (default: authors, what the checkpoint saw).",
    )
    args = parser.parse_args(argv)

    base_dir, output_dir = Path(args.base_model), Path(args.output_dir)
    try:
        if base_dir.resolve() == output_dir.resolve():
            raise ValueError(
                f"--output_dir must differ from --base_model ({base_dir}); the base is read while saving."
            )
        state_dict, checkpoint_config = load_lavis_checkpoint(args.checkpoint)
        model = NanoEmoXForConditionalGeneration.from_pretrained(base_dir)
        converted, lora = convert_lavis_state_dict(state_dict, args.phase, model.config, checkpoint_config)
        lora_alpha = resolve_lora_alpha(checkpoint_config, args.lora_alpha) if lora else None
    except (ValueError, TypeError, OSError) as error:
        logger.error("%s", error)
        return 1

    target_state = model.state_dict()  # shares storage with the parameters
    with torch.no_grad():
        for key, value in converted.items():
            target_state[key].copy_(value)
    logger.info("Overlaid %d tensors of phase %s onto %s.", len(converted), args.phase, base_dir)
    if lora and args.lora == "merge":
        merge_lora(model, lora, lora_alpha)
        logger.info("Merged LoRA into %d modules (alpha %s).", len(lora_modules(lora)), lora_alpha)
    model.save_pretrained(output_dir)
    _copy_companion_files(base_dir, output_dir)
    if set_prompt_style(output_dir, args.prompt_style):
        logger.info("prompt_style %r written into %s/processor_config.json.", args.prompt_style, output_dir)
    if lora and args.lora == "adapter":
        adapter_dir = Path(args.adapter_dir) if args.adapter_dir else output_dir / "lora_adapter"
        dropout = DEFAULT_LORA_DROPOUT
        if isinstance(checkpoint_config, dict) and isinstance(checkpoint_config.get("model"), dict):
            dropout = float(checkpoint_config["model"].get("lora_dropout", dropout))
        save_lora_adapter(model, lora, lora_alpha, adapter_dir, dropout, base_model_name_or_path=str(output_dir))
        logger.info("Wrote a PEFT LoRA adapter for %d modules to %s.", len(lora_modules(lora)), adapter_dir)
    return 0


if __name__ == "__main__":
    import logging as std_logging

    std_logging.basicConfig(level=std_logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
