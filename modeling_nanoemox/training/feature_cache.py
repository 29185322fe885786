# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Frozen-encoder feature cache: tower outputs computed once, stored as safetensors, reused by every epoch and phase.

The towers (CLIP, HuBERT, FaceXFormer) are frozen in all four P2E phases and run in eval mode, so their outputs for a
sample never change. Caching them skips media decoding and the three towers — most of a step's compute — in every
later epoch and phase. A cache is tied to the towers' weights and the processor's media settings by a fingerprint;
a different fingerprint is an error, never a silent reuse.

Layout: `ROOT/index.json` (fingerprint, which modalities each sample has) and one `ROOT/shards/<hash>.safetensors`
per sample with `video` `(T, 1 + S, D_v)`, `face` `(T, D_f)` and `audio` `(C, 1 + S, D_a)` tensors.
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers.utils import logging

logger = logging.get_logger(__name__)

MEDIA_SETTINGS = ("num_frames", "num_audio_clips", "audio_clip_seconds", "face_detector", "face_detection_max_side",
                  "face_margin", "max_frame_side")  # fmt: skip


def fingerprint(model, processor) -> str:
    """A hash of the towers' configs and weights (a strided sample of every tensor) and the processor's media
    settings: equal fingerprints mean equal features."""
    digest = hashlib.sha256()
    inner = model.model
    for name in ("vision_tower", "audio_tower", "face_encoder"):
        tower = getattr(inner, name)
        digest.update(tower.config.to_json_string(use_diff=False).encode())
        for key, tensor in tower.state_dict().items():
            flat = tensor.detach().flatten()
            stride = max(1, flat.numel() // 64)
            digest.update(key.encode())
            digest.update(flat[::stride].float().cpu().numpy().tobytes())
    settings = {name: getattr(processor, name) for name in MEDIA_SETTINGS}
    settings["image_processor"] = processor.image_processor.to_dict()
    settings["face_image_processor"] = processor.face_image_processor.to_dict()
    settings["feature_extractor"] = processor.feature_extractor.to_dict()
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class FeatureCache:
    """Tower features of manifest samples, by sample id."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.index_path = self.root / "index.json"
        index = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}
        self.fingerprint = index.get("fingerprint")
        self.entries: dict[str, list[str]] = index.get("samples", {})

    def _shard(self, sample_id: str) -> Path:
        return self.root / "shards" / f"{hashlib.sha1(sample_id.encode()).hexdigest()}.safetensors"

    def _save_index(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.index_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"fingerprint": self.fingerprint, "samples": self.entries}))
        temporary.replace(self.index_path)  # atomic: a killed build never leaves a half-written index

    def restricted_to(self, modalities) -> "FeatureCache":
        """A read-only view that shows only `modalities` (for phases that feed fewer media)."""
        view = FeatureCache.__new__(FeatureCache)
        view.root, view.index_path, view.fingerprint = self.root, self.index_path, self.fingerprint
        view.entries = {sid: [m for m in present if m in modalities] for sid, present in self.entries.items()}
        return view

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.entries

    def modalities(self, sample_id: str) -> list[str]:
        return self.entries[sample_id]

    def load(self, sample_id: str) -> dict[str, torch.Tensor]:
        """The sample's tower features by modality (only the modalities this cache or view shows)."""
        wanted = self.entries[sample_id]
        if not wanted:
            return {}
        return {name: tensor for name, tensor in load_file(self._shard(sample_id)).items() if name in wanted}

    def build(self, model, processor, samples, batch_size: int = 8) -> int:
        """
        Computes and stores the tower features of the samples not cached yet; returns how many were added.

        Raises `ValueError` when the cache was built with other towers or media settings.
        """
        current = fingerprint(model, processor)
        if self.fingerprint not in (None, current):
            raise ValueError(
                f"The feature cache at {self.root} was built with other towers or media settings; delete it or "
                "point the recipe at another folder."
            )
        self.fingerprint = current
        todo = [sample for sample in samples if sample.id not in self.entries]
        if not todo:
            return 0
        inner = model.model
        was_training = inner.training
        inner.eval()
        try:
            for start in tqdm(range(0, len(todo), batch_size), desc="feature cache", unit="batch"):
                batch = todo[start : start + batch_size]
                # The standard chat path, every modality on (a phase reads a restricted view of the cache).
                conversations = [
                    processor.build_task_messages("msa", video=s.video, audio=s.audio, faces=s.faces) for s in batch
                ]
                inputs = processor.apply_chat_template(
                    conversations, tokenize=True, return_dict=True, return_tensors="pt", load_audio_from_video=True,
                    max_length=10**6,
                )  # fmt: skip
                # Media tensors hold only the items present, in batch order; the placeholders say which rows have them.
                ids = inputs["input_ids"]
                encoded = {}
                with torch.inference_mode():
                    for modality, key, token_id, encode in (
                        ("video", "pixel_values_videos", processor.tokenizer.video_token_id,
                         inner.get_video_tower_features),
                        ("face", "face_pixel_values", processor.tokenizer.face_token_id, inner.get_face_tower_features),
                        ("audio", "audio_values", processor.tokenizer.audio_token_id, inner.get_audio_tower_features),
                    ):  # fmt: skip
                        if key in inputs:
                            rows = (ids == token_id).any(dim=1).nonzero().flatten().tolist()
                            features = encode(inputs[key].to(model.device)).float().cpu()
                            encoded[modality] = dict(zip(rows, features))
                for row, sample in enumerate(batch):
                    tensors = {m: per_row[row].contiguous() for m, per_row in encoded.items() if row in per_row}
                    if tensors:
                        shard = self._shard(sample.id)
                        shard.parent.mkdir(parents=True, exist_ok=True)
                        save_file(tensors, shard)
                    self.entries[sample.id] = sorted(tensors)
                self._save_index()
        finally:
            inner.train(was_training)
        return len(todo)
