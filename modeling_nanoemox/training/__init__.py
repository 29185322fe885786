# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Training utilities for the Perception-to-Empathy curriculum (`recipes/p2e.py`)."""

from ..phases import apply_lora, freeze_for_phase
from .collator import NanoEmoXDataCollator
from .curriculum import NanoEmoXTrainer, copy_head_weights, load_strict, save_phase
from .feature_cache import FeatureCache
from .sampler import MixtureSampler

__all__ = [
    "FeatureCache",
    "MixtureSampler",
    "NanoEmoXDataCollator",
    "NanoEmoXTrainer",
    "apply_lora",
    "copy_head_weights",
    "freeze_for_phase",
    "load_strict",
    "save_phase",
]
