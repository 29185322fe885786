"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

import torch


def make_batch(config, modalities_per_sample, text_lengths=None, num_frames=4, num_clips=3, seed=0):
    """
    Builds model inputs by hand: per sample a set of modalities among video/face/audio (fusion follows video+audio),
    placeholders in the prompt, batch-aligned media with presence masks, right padding.
    """
    generator = torch.Generator().manual_seed(seed)
    batch = len(modalities_per_sample)
    text_lengths = text_lengths or [6] * batch
    rows = []
    for modalities, text_length in zip(modalities_per_sample, text_lengths):
        row = torch.randint(5, 400, (3,), generator=generator).tolist()
        present = set(modalities) | ({"fusion"} if {"video", "audio"} <= set(modalities) else set())
        for modality in ("video", "face", "audio", "fusion"):
            if modality in present:
                row += [getattr(config, f"{modality}_token_id")] * getattr(config, f"num_{modality}_tokens")
        row += torch.randint(5, 400, (text_length,), generator=generator).tolist()
        rows.append(row)
    length = max(map(len, rows))
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    image = config.vision_config.image_size
    face = config.face_config.backbone_config.image_size
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    for modality, key, shape in (
        ("video", "pixel_values_videos", (num_frames, 3, image, image)),
        ("face", "face_pixel_values", (num_frames, 3, face, face)),
        ("audio", "audio_values", (num_clips, 16000)),
    ):
        mask = torch.tensor([modality in m for m in modalities_per_sample])
        if mask.any():
            inputs[key] = torch.randn(batch, *shape, generator=generator) * mask.view(-1, *[1] * len(shape))
            inputs[f"{modality}_mask"] = mask
    return inputs
