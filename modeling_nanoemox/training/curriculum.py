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


class NanoEmoXTrainer(SFTTrainer):
    """`SFTTrainer` drawing batches from the recipe's dataset mixture (see [`MixtureSampler`])."""

    def __init__(self, *args, mixture_weights: dict[str, float] | None = None, **kwargs):
        self.mixture_weights = mixture_weights
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.mixture_weights:
            return super()._get_train_sampler(train_dataset)
        return MixtureSampler(dataset["dataset"], self.mixture_weights, seed=self.args.seed)


def phase_by_name(name: str) -> Phase:
    if name not in PHASES:
        raise ValueError(f"Unknown phase {name!r}; expected one of {sorted(PHASES)}.")
    return PHASES[name]
