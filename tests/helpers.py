"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

import torch

MEDIA_KEYS = {"video": "pixel_values_videos", "face": "face_pixel_values", "audio": "audio_values"}


def make_batch(
    config, modalities_per_sample, text_lengths=None, num_frames=4, num_clips=3, seed=0, padding_side="right"
):
    """
    Builds model inputs by hand, as the processor emits them: per sample a set of modalities among video/face/audio
    (fusion follows video+audio), their placeholders in the prompt, padding on `padding_side`, and media tensors that
    hold only the items present, in batch order.
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
        span = slice(0, len(row)) if padding_side == "right" else slice(length - len(row), length)
        input_ids[i, span] = torch.tensor(row)
        attention_mask[i, span] = 1
    image = config.vision_config.image_size
    face = config.face_config.backbone_config.image_size
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    for modality, shape in (
        ("video", (num_frames, 3, image, image)),
        ("face", (num_frames, 3, face, face)),
        ("audio", (num_clips, 16000)),
    ):
        count = sum(modality in m for m in modalities_per_sample)
        if count:
            inputs[MEDIA_KEYS[modality]] = torch.randn(count, *shape, generator=generator)
    return inputs


def select_sample(inputs, modalities_per_sample, index):
    """The inputs of sample `index` alone (its media items picked out, padding cut)."""
    kept = inputs["attention_mask"][index].bool()
    single = {
        "input_ids": inputs["input_ids"][index : index + 1, kept],
        "attention_mask": inputs["attention_mask"][index : index + 1, kept],
    }
    for modality, key in MEDIA_KEYS.items():
        if modality in modalities_per_sample[index]:
            item = sum(modality in m for m in modalities_per_sample[:index])
            single[key] = inputs[key][item : item + 1]
    return single
