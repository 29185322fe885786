# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The training collator: manifest rows → model inputs with `labels` on the answer tokens only."""

import os
from collections.abc import Iterable

import torch
from transformers import BatchFeature

from .feature_cache import FeatureCache

IGNORE_INDEX = -100
MODALITIES = ("video", "face", "audio")


class NanoEmoXDataCollator:
    """
    Turns a list of manifest rows (dicts with the manifest's fields) into a right-padded training batch through the
    standard chat path: `processor.build_task_messages(task, …, target=…)` (the task's fixed instruction, the answer as
    the assistant turn, the dialogue trimmed to `max_length`), then `processor.apply_chat_template(…, tokenize=True,
    return_assistant_tokens_mask=True)`; `labels` are the tokens of the final assistant turn (the answer and its
    `<|im_end|>`), -100 elsewhere — TRL's assistant-mask convention, with dialogue-history replies left as context.

    `modalities` (default all of video / face / audio) says what the phase feeds: without `audio` no audio is read,
    not even the video's own track; without `face` the face branch is off.

    With a [`FeatureCache`], media are not decoded: the prompts get the placeholders of the cached modalities and the
    batch carries `tower_features = {"video": (N_video, …), "face": …, "audio": …}` (only the items present, in batch
    order) instead of pixels and waveforms.
    """

    def __init__(
        self,
        processor,
        feature_cache: FeatureCache | None = None,
        max_length: int | None = None,
        modalities: Iterable[str] | None = None,
    ):
        self.processor = processor
        self.feature_cache = feature_cache
        self.max_length = max_length or processor.max_length
        self.modalities = set(MODALITIES if modalities is None else modalities)
        unknown = self.modalities - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; use {MODALITIES}.")

    def _messages(self, row: dict, video, audio, placeholders=()) -> list[dict]:
        return self.processor.build_task_messages(
            row["task"],
            text=row.get("text"),
            history=row.get("history"),
            candidates=row.get("candidates"),
            target=row["target"],
            video=video,
            audio=audio,
            faces=row.get("faces") if video is not None and "face" in self.modalities else None,
            modalities=placeholders,
            max_length=self.max_length,
        )

    def _live_media(self, row: dict) -> tuple:
        """The (video, audio) parts of a row for the phase's modalities. A phase with audio but no video hears the
        video file's own track as a separate audio part (what the feature cache path feeds it too)."""
        video = row.get("video") if "video" in self.modalities else None
        audio = row.get("audio") if "audio" in self.modalities else None
        if audio is None and video is None and "audio" in self.modalities and _has_audio_track(row.get("video")):
            audio = row["video"]
        return video, audio

    def __call__(self, rows: list[dict]) -> BatchFeature:
        missing = [row["id"] for row in rows if not row.get("target")]
        if missing:
            raise ValueError(f"Training samples need a `target`; these have none: {missing[:10]}.")
        template_kwargs = {"tokenize": True, "return_dict": True, "return_tensors": "pt",
                           "return_assistant_tokens_mask": True, "padding": True, "padding_side": "right",
                           "max_length": self.max_length}  # fmt: skip
        if self.feature_cache is None:
            conversations = [self._messages(row, *self._live_media(row)) for row in rows]
            batch = self.processor.apply_chat_template(
                conversations,
                load_audio_from_video="audio" in self.modalities,
                use_faces="face" in self.modalities,
                **template_kwargs,
            )
            return _with_labels(batch)

        uncached = [row["id"] for row in rows if row["id"] not in self.feature_cache]
        if uncached:
            raise ValueError(f"The feature cache has no entry for {uncached[:10]}; build it before training.")
        declared = [[m for m in self.feature_cache.modalities(row["id"]) if m in self.modalities] for row in rows]
        prompts = []
        for row, present in zip(rows, declared):
            # The same parts the live path writes: a video part when there is video, an audio part for separate
            # audio (or audio without video); the video's own track is expanded from the video placeholder.
            parts = ["video"] if "video" in present else []
            if "audio" in present and (row.get("audio") is not None or "video" not in present):
                parts.append("audio")
            prompts.append(self._messages(row, None, None, parts))
        # Rendered once with the template's generation markers, which give the answer spans (as in the live path).
        rendered, assistant_spans = _render_with_spans(self.processor, prompts)
        batch = self.processor(
            text=rendered,
            modalities=declared,
            padding=True,
            padding_side="right",
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_text_replacement_offsets=True,
            return_tensors=None,
        )
        batch = self.processor._adjust_assistant_masks_indices(batch, assistant_spans)
        batch.convert_to_tensors(tensor_type="pt")
        batch = _with_labels(batch)
        cached = [self.feature_cache.load(row["id"]) for row in rows]
        features = {}
        for modality in MODALITIES:
            items = [entry[modality] for entry, present in zip(cached, declared) if modality in present]
            if items:
                features[modality] = torch.stack(items)
        if features:
            batch["tower_features"] = features
        return batch


def _has_audio_track(video) -> bool:
    """Whether `video` is a media file with an audio stream (a folder of frames or an array has none)."""
    if not isinstance(video, (str, os.PathLike)) or os.path.isdir(video):
        return False
    from nanoemox_processing.media_nanoemox import open_container

    with open_container(video) as container:
        return bool(container.streams.audio)


def _render_with_spans(processor, conversations: list[list[dict]]):
    from transformers.utils.chat_template_utils import render_jinja_template

    return render_jinja_template(
        conversations=conversations,
        chat_template=processor.chat_template,
        return_assistant_tokens_mask=True,
        **processor.tokenizer.special_tokens_map,
    )


def _with_labels(batch: BatchFeature) -> BatchFeature:
    """`labels` = `input_ids` on the final assistant turn (the target answer and its `<|im_end|>`), -100 elsewhere:
    earlier assistant turns of a dialogue history are context, not targets."""
    mask = torch.as_tensor(batch.pop("assistant_masks")).bool() & batch["attention_mask"].bool()
    for row in mask:
        positions = row.nonzero().flatten()
        if len(positions):
            # The last contiguous run of assistant tokens.
            gaps = (positions[1:] - positions[:-1] > 1).nonzero().flatten()
            start = positions[gaps[-1] + 1] if len(gaps) else positions[0]
            row[:start] = False
    batch["labels"] = torch.where(mask, batch["input_ids"], torch.full_like(batch["input_ids"], IGNORE_INDEX))
    return batch
