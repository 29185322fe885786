# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The training collator: manifest rows → model inputs with `labels` on the answer tokens only."""

import torch
from transformers import BatchFeature

from .feature_cache import FeatureCache


class NanoEmoXDataCollator:
    """
    Turns a list of manifest rows (dicts with the manifest's fields) into a right-padded training batch through the
    processor: prompts from the task's fixed instruction, `labels` = the target answer tokens (everything else -100).

    With a [`FeatureCache`], media are not decoded: the processor writes the prompts for the cached modalities and the
    batch carries the cached tower features (`video_tower_features`, `face_tower_features`, `audio_tower_features`)
    instead of pixels and waveforms.
    """

    def __init__(self, processor, feature_cache: FeatureCache | None = None, max_length: int | None = None):
        self.processor = processor
        self.feature_cache = feature_cache
        self.max_length = max_length

    def __call__(self, rows: list[dict]) -> BatchFeature:
        missing = [row["id"] for row in rows if not row.get("target")]
        if missing:
            raise ValueError(f"Training samples need a `target`; these have none: {missing[:10]}.")
        text_inputs = {
            "text": [row.get("text") for row in rows],
            "task": [row["task"] for row in rows],
            "history": [row.get("history") for row in rows],
            "candidates": [row.get("candidates") for row in rows],
            "targets": [row["target"] for row in rows],
            "max_length": self.max_length,
        }
        if self.feature_cache is None:
            return self.processor(
                videos=[row.get("video") for row in rows],
                audio=[row.get("audio") for row in rows],
                faces=[row.get("faces") for row in rows],
                **text_inputs,
            )
        uncached = [row["id"] for row in rows if row["id"] not in self.feature_cache]
        if uncached:
            raise ValueError(f"The feature cache has no entry for {uncached[:10]}; build it before training.")
        batch = self.processor(modalities=[self.feature_cache.modalities(row["id"]) for row in rows], **text_inputs)
        cached = [self.feature_cache.load(row["id"]) for row in rows]
        for modality in ("video", "face", "audio"):
            present = [modality in features for features in cached]
            if not any(present):
                continue
            reference = next(features[modality] for features in cached if modality in features)
            stacked = torch.zeros(len(rows), *reference.shape, dtype=reference.dtype)
            for row, features in enumerate(cached):
                if modality in features:
                    stacked[row] = features[modality]
            batch[f"{modality}_tower_features"] = stacked
        return batch
