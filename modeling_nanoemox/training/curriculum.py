# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The pieces of one P2E phase: strict loading, freezing, LoRA, the trainer, and saving complete folders.

Phase chaining (DESIGN §4): 1.1 and 1.2 start from the same model; 2 starts from 1.2's folder with 1.1's audio head
copied in; 3 starts from 2. Every phase writes `final/` (a complete model + processor folder) and the next phase
loads it strictly: a missing, unexpected or mis-shaped weight is an error (the authors overlay partial checkpoints
with `strict=False`; we don't).
"""

from pathlib import Path

import torch
from transformers.utils import logging
from trl import SFTTrainer

from ..modeling_nanoemox import NanoEmoXForConditionalGeneration
from ..phases import PHASES, Phase
from .sampler import MixtureSampler

logger = logging.get_logger(__name__)


def load_strict(path, **kwargs) -> NanoEmoXForConditionalGeneration:
    """Loads a Nano-EmoX folder, raising `ValueError` if any weight is missing, unexpected or of another shape."""
    model, info = NanoEmoXForConditionalGeneration.from_pretrained(path, output_loading_info=True, **kwargs)
    problems = {kind: sorted(keys) for kind, keys in info.items() if keys and kind != "error_msgs"}
    if problems:
        raise ValueError(f"{path} does not match the Nano-EmoX architecture exactly: {problems}")
    return model


def copy_head_weights(target, source, prefixes: tuple[str, ...]) -> int:
    """Copies every parameter whose name starts with one of `prefixes` from `source` into `target` (same
    architecture); returns how many tensors were copied."""
    source_state = {name: p for name, p in source.named_parameters() if name.startswith(prefixes)}
    if not source_state:
        raise ValueError(f"The source model has no parameters under {prefixes}.")
    target_parameters = dict(target.named_parameters())
    with torch.no_grad():
        for name, value in source_state.items():
            if target_parameters[name].shape != value.shape:
                raise ValueError(
                    f"{name}: shapes differ ({tuple(value.shape)} vs {tuple(target_parameters[name].shape)})."
                )
            target_parameters[name].copy_(value)
    return len(source_state)


def save_phase(model, processor, phase_dir: Path) -> Path:
    """
    Writes `phase_dir/final` (complete model + processor). A PEFT model is also saved as `phase_dir/adapter` (LoRA +
    the heads) and merged into the weights of `final`.
    """
    final = Path(phase_dir) / "final"
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(Path(phase_dir) / "adapter")
        processor.save_pretrained(Path(phase_dir) / "adapter")
        model = model.merge_and_unload()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.save_pretrained(final)
    processor.save_pretrained(final)
    return final


MEDIA_KEYS = {"video": "pixel_values_videos", "face": "face_pixel_values", "audio": "audio_values"}


def _nanoemox_model(model):
    """The `NanoEmoXModel` inside a (PEFT-wrapped) `NanoEmoXForConditionalGeneration`."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.model


def absent_branches_pass(model, inputs: dict) -> torch.Tensor:
    """
    Runs the branch of every modality a batch lacks on one all-zero item and returns 0 × its output sum: a zero that
    carries those modules into the step.

    Data-parallel training needs every rank to run every trainable module at every step: DDP expects a gradient for
    each trainable parameter, and DeepSpeed ZeRO-3 / FSDP gather each module's weights collectively, so a rank whose
    batch lacks a modality would hang the others. With cached tower features (a feature cache skips the towers on
    every rank) the dummy starts from zero tower features; otherwise the towers run on zero media too.

    Args:
        model: a `NanoEmoXForConditionalGeneration`, possibly wrapped by PEFT (unwrap DDP / accelerate first).
        inputs: the batch the model is trained on (the collator's output).
    """
    inner = _nanoemox_model(model)
    config = inner.config
    tower_features = inputs.get("tower_features") or {}
    present = {m for m, key in MEDIA_KEYS.items() if inputs.get(key) is not None or m in tower_features}
    cached = bool(tower_features)
    device = inner.fusion_projector.weight.device
    vision, audio, face = config.vision_config, config.audio_config, config.face_config
    scales = 1 + config.num_fusion_experts
    zero_towers = {
        "video": lambda: torch.zeros(1, 1, scales, vision.hidden_size, device=device),
        "audio": lambda: torch.zeros(1, 1, scales, audio.hidden_size, device=device),
        "face": lambda: torch.zeros(1, 1, face.hidden_size, device=device),
    }
    run_towers = {
        "video": lambda: inner.get_video_tower_features(
            torch.zeros(1, 1, 3, *(vision.image_size,) * 2, device=device)
        ),
        # 400 samples (25 ms) is the shortest input HuBERT's convolutions accept.
        "audio": lambda: inner.get_audio_tower_features(torch.zeros(1, 1, 400, device=device)),
        "face": lambda: inner.get_face_tower_features(
            torch.zeros(1, 1, 3, *(face.backbone_config.image_size,) * 2, device=device)
        ),
    }
    heads = {
        "video": lambda t: inner.video_head(t[:, :, 0]),
        "audio": lambda t: inner.audio_head(t[:, :, 0]),
        "face": inner.face_head,
    }
    total = torch.zeros((), device=device)
    towers = {}
    for modality in ("video", "audio", "face"):
        if modality in present:
            continue
        towers[modality] = zero_towers[modality]() if cached else run_towers[modality]()
        total = total + heads[modality](towers[modality]).float().sum() * 0.0
    input_ids = inputs.get("input_ids")
    has_fusion = (
        {"video", "audio"} <= present and input_ids is not None and bool((input_ids == config.fusion_token_id).any())
    )
    if not has_fusion:
        video = towers["video"] if "video" in towers else zero_towers["video"]()
        audio = towers["audio"] if "audio" in towers else zero_towers["audio"]()
        embeddings, gates = inner.get_fusion_features(video, audio)
        total = total + (embeddings.float().sum() + gates.float().sum()) * 0.0
    return total


class NanoEmoXTrainer(SFTTrainer):
    """
    `SFTTrainer` drawing batches from the recipe's dataset mixture (see [`MixtureSampler`]).

    Args:
        mixture_weights: sampling weight of each dataset of the mixture; uniform shuffling when omitted.
        run_every_branch: add [`absent_branches_pass`] to each training loss, so that every trainable module takes
            part in every step on every rank. Defaults to on when training on more than one process.
    """

    def __init__(
        self,
        *args,
        mixture_weights: dict[str, float] | None = None,
        run_every_branch: bool | None = None,
        **kwargs,
    ):
        self.mixture_weights = mixture_weights
        super().__init__(*args, **kwargs)
        self.run_every_branch = self.args.world_size > 1 if run_every_branch is None else run_every_branch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if not (self.run_every_branch and model.training):
            return result
        absent = absent_branches_pass(self.accelerator.unwrap_model(model), inputs)
        if return_outputs:
            loss, outputs = result
            return loss + absent.to(loss.dtype), outputs
        return result + absent.to(result.dtype)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.mixture_weights:
            return super()._get_train_sampler(train_dataset)
        return MixtureSampler(dataset["dataset"], self.mixture_weights, seed=self.args.seed)


def phase_by_name(name: str) -> Phase:
    if name not in PHASES:
        raise ValueError(f"Unknown phase {name!r}; expected one of {sorted(PHASES)}.")
    return PHASES[name]
