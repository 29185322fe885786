# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The embedded run's start model: the library's tiny Nano-EmoX, and a short supervised pre-training of its towers
standing in for the large-scale pre-training the released towers (CLIP, HuBERT, FaceXFormer) come with."""

import numpy as np
import torch
from torch import nn

from modeling_nanoemox import NanoEmoXForConditionalGeneration, NanoEmoXProcessor
from modeling_nanoemox.tiny import build_tiny

from .dataset import tokenizer_texts

# The embedded run's processor settings (measured in recipes/embedded/pipeline.py's docstring): a one-line system
# prompt (the default one is 30 of the tiny tokenizer's tokens in every sample) and 8 audio windows of 0.25 s that
# tile a 2-s clip (8 windows of the default 2 s would all be the same 2 s, 8 times the audio tower's work).
EMBEDDED_PROCESSOR_SETTINGS = {"system_prompt": "You are Nano-EmoX.", "audio_clip_seconds": 0.25}
TOWERS = ("video", "face", "audio")


def build_start_model(seed: int = 0) -> tuple[NanoEmoXForConditionalGeneration, NanoEmoXProcessor]:
    """`build_tiny(seed)` whose tokenizer is also trained on the generated dataset's word banks (short sequences),
    with the embedded run's processor settings (`EMBEDDED_PROCESSOR_SETTINGS`)."""
    return build_tiny(seed, extra_texts=tokenizer_texts(), **EMBEDDED_PROCESSOR_SETTINGS)


def chat_media(processor: NanoEmoXProcessor, samples) -> dict[str, torch.Tensor]:
    """The raw media tensors of `samples` through the standard chat path, exactly as the feature cache encodes
    them (`build_task_messages` with the sample's video and face crops, the video's own audio track)."""
    conversations = [
        processor.build_task_messages("msa", video=s.video, audio=s.audio, faces=s.faces) for s in samples
    ]
    inputs = processor.apply_chat_template(
        conversations, tokenize=True, return_dict=True, return_tensors="pt", load_audio_from_video=True,
        max_length=10**6, padding=True,
    )  # fmt: skip
    return {key: inputs[key] for key in ("pixel_values_videos", "face_pixel_values", "audio_values")}


def tower_features(model: NanoEmoXForConditionalGeneration, media: dict[str, torch.Tensor], batch_size: int = 64):
    """`{"video", "face", "audio"}` tower outputs of stacked media (one item per sample), in batches."""
    inner = model.model
    encoders = {"video": ("pixel_values_videos", inner.get_video_tower_features),
                "face": ("face_pixel_values", inner.get_face_tower_features),
                "audio": ("audio_values", inner.get_audio_tower_features)}  # fmt: skip
    out = {}
    with torch.inference_mode():
        for modality, (key, encode) in encoders.items():
            values = media[key]
            out[modality] = torch.cat(
                [encode(values[i : i + batch_size]).float() for i in range(0, len(values), batch_size)]
            )
    return out


def tower_inputs(processor: NanoEmoXProcessor, videos: list[str], chunk_size: int = 32) -> dict[str, torch.Tensor]:
    """The raw media tensors of `videos` (one clip each, its own audio track): what the three towers read."""
    media = {"pixel_values_videos": [], "face_pixel_values": [], "audio_values": []}
    placeholder = processor.video_token
    for start in range(0, len(videos), chunk_size):
        chunk = videos[start : start + chunk_size]
        batch = processor(text=[placeholder] * len(chunk), videos=chunk, load_audio_from_video=True)
        for key, values in media.items():
            values.append(batch[key])
    return {key: torch.cat(values) for key, values in media.items()}


def pretrain_towers(
    model: NanoEmoXForConditionalGeneration,
    processor: NanoEmoXProcessor,
    samples,
    face_labels: dict[str, str],
    voice_labels: dict[str, str],
    steps: int = 150,
    batch_size: int = 16,
    learning_rate: float | dict[str, float] = 3e-3,
    seed: int = 0,
    media: dict[str, torch.Tensor] | None = None,
    progress=None,
    towers: tuple[str, ...] = TOWERS,
) -> dict[str, float]:
    """
    Gives a tiny model's random towers a short supervised pre-training: the vision tower and the face encoder learn
    the face's expression, the audio tower the voice's emotion, each through a temporary linear probe on exactly the
    features Nano-EmoX reads. Frozen random towers pass almost nothing on (a linear probe on their features is barely
    above the majority class), and no head could learn from them. The towers are frozen again afterwards.

    Args:
        samples: manifest samples; those with a video and both labels are used (every one has its own clip).
        face_labels, voice_labels: sample id → the emotion its face / its voice shows (`cues.jsonl`).
        media: the samples' media tensors (`pixel_values_videos`, `face_pixel_values`, `audio_values`, one item per
            sample, in `samples` order) when already decoded; decoded here otherwise.
        learning_rate: one for all, or one per tower (`{"video": …, "face": …, "audio": …}`).
        progress: a `tqdm`-like object whose `update(1)` is called per step.
        towers: which towers train (among `TOWERS`). Each tower's loss reaches only its own parameters, and every
            subset draws the same batches and probes, so two subsets trained in two processes forked from one state
            are the towers that training all of them together gives (what the embedded pipeline does, one process
            per core).

    Returns:
        The probes' final training accuracy per tower.
    """
    unknown = set(towers) - set(TOWERS)
    if not towers or unknown:
        raise ValueError(f"towers must be a non-empty subset of {TOWERS}, got {towers!r}.")
    inner = model.model
    keep = [i for i, s in enumerate(samples) if s.video is not None and s.id in face_labels and s.id in voice_labels]
    if not keep:
        raise ValueError("No sample has a video and both face and voice labels.")
    if media is not None:
        media = {key: value[keep] for key, value in media.items()}
    samples = [samples[i] for i in keep]
    classes = sorted({*face_labels.values(), *voice_labels.values()})
    index = {label: i for i, label in enumerate(classes)}
    if media is None:
        media = tower_inputs(processor, [s.video for s in samples])
    inputs = {
        "video": media["pixel_values_videos"][:, ::2],  # (N, T/2, 3, S, S): 4 of the 8 frames are enough for a probe
        "face": media["face_pixel_values"][:, ::2],
        "audio": media["audio_values"][:, ::4],  # (N, C/4, samples): 2 of the 8 clips
    }
    face_targets = torch.tensor([index[face_labels[s.id]] for s in samples])
    voice_targets = torch.tensor([index[voice_labels[s.id]] for s in samples])
    targets = {"video": face_targets, "face": face_targets, "audio": voice_targets}
    # The feature each probe reads (B, D): the CLS token of each frame / clip, averaged over time; the face encoder's
    # per-frame vectors, averaged.
    features = {
        "video": lambda x: inner.get_video_tower_features(x)[:, :, 0].mean(dim=1),
        "face": lambda x: inner.get_face_tower_features(x).mean(dim=1),
        "audio": lambda x: inner.get_audio_tower_features(x)[:, :, 0].mean(dim=1),
    }
    widths = {"video": model.config.vision_config.hidden_size, "face": model.config.face_config.hidden_size,
              "audio": model.config.audio_config.hidden_size}  # fmt: skip
    # Probes for every tower, whichever train, from torch's generator as the caller left it: the same probes for any
    # subset, so processes forked from one state train the towers one process would. (A probe initialisation of its
    # own seed instead collapsed the audio tower to chance at its learning rate, measured.)
    probes = nn.ModuleDict({name: nn.Linear(widths[name], len(classes)) for name in TOWERS})
    modules = tower_modules(model)
    for name in towers:
        modules[name].requires_grad_(True)  # eval mode stays: no dropout, and the towers read their layers by index
    rates = learning_rate if isinstance(learning_rate, dict) else dict.fromkeys(probes, learning_rate)
    groups = [
        {"params": [*modules[name].parameters(), *probes[name].parameters()], "lr": rates[name]} for name in towers
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    generator = np.random.default_rng(seed)
    correct = {}
    for _ in range(steps):
        rows = torch.from_numpy(generator.choice(len(samples), size=min(batch_size, len(samples)), replace=False))
        logits = {name: probes[name](features[name](inputs[name][rows])) for name in towers}
        loss = sum(nn.functional.cross_entropy(logits[name], targets[name][rows]) for name in towers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        correct = {name: (logits[name].argmax(-1) == targets[name][rows]).float().mean().item() for name in towers}
        if progress is not None:
            progress.update(1)
    for name in towers:
        modules[name].requires_grad_(False)
    return correct


def tower_modules(model: NanoEmoXForConditionalGeneration) -> dict[str, nn.Module]:
    """The three towers by the names [`pretrain_towers`] uses."""
    inner = model.model
    return {"video": inner.vision_tower, "face": inner.face_encoder, "audio": inner.audio_tower}
