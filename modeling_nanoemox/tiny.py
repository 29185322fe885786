# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""A complete, randomly initialised tiny Nano-EmoX (model + processor) built without any download.

Tests, the demo and the embedded training run use it: the architecture is the full one, only smaller, and the
tokenizer is a byte-level BPE trained here on the project's own prompts and label sets, with a ChatML template.
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from nanoemox_processing import NanoEmoXProcessor
from nanoemox_processing.prompts_nanoemox import CHAIN_OF_EMPATHY, MER_LABELS, MINTREC2_INTENTS, SYSTEM_PROMPT, TASKS

from .configuration_nanoemox import NanoEmoXConfig
from .modeling_nanoemox import NanoEmoXForConditionalGeneration, add_modality_tokens

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_VOCAB_SIZE = 1024


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [text for item in value for text in _strings(item)] if isinstance(value, (list, tuple)) else []


def _training_corpus() -> list[str]:
    # The project's prompts, label sets and the word banks of its generated dataset: the embedded training run then
    # sees short sequences (about 150 tokens instead of 400), which is most of its speed on a CPU.
    from .data import synthetic_dataset as generated

    lines = [SYSTEM_PROMPT, CHAIN_OF_EMPATHY, *MER_LABELS, *MINTREC2_INTENTS]
    for bank in ("SLOT_WORDS", "INTENT_TEMPLATES", "FACE_DESCRIPTIONS", "VOICE_DESCRIPTIONS", "EVENTS", "FEELINGS",
                 "MASKED_FEELINGS", "GOALS", "REPLIES", "OPENERS", "FOLLOW_UPS", "OVMER_WORDS"):  # fmt: skip
        lines += _strings(getattr(generated, bank))
    for task in TASKS.values():
        lines += [task.title, task.instruction, task.answer_format]
    lines += [
        "The most likely label is happy. The character's emotional state is sad, worried, angry.",
        "positive negative neutral surprise fear disgust joy calm excited nervous relieved lonely proud",
        "Video Face Audio Audio-visual Subtitle Utterance Current input Candidate labels user assistant system",
        "I can't believe you did that! Thank you so much, this means a lot. Please leave me alone.",
        "<think> The speaker lost a job and feels sad because of it; the reply should comfort. </think> I'm sorry.",
    ]
    return lines


def build_tiny_tokenizer(with_modality_tokens: bool = True) -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE tokenizer (under 1024 tokens) with ChatML and, by default, the four modality
    placeholders."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE - 8,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_training_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )
    if with_modality_tokens:
        add_modality_tokens(tokenizer)
    return tokenizer


def build_tiny(seed: int = 0) -> tuple[NanoEmoXForConditionalGeneration, NanoEmoXProcessor]:
    """Builds the tiny model (random weights from `seed`) and its processor."""
    tokenizer = build_tiny_tokenizer()
    token_ids = {f"{m}_token_id": tokenizer.convert_tokens_to_ids(getattr(tokenizer, f"{m}_token"))
                 for m in ("video", "audio", "face", "fusion")}  # fmt: skip
    config = NanoEmoXConfig.tiny(vocab_size=TINY_VOCAB_SIZE, **token_ids)
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = NanoEmoXForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.suppress_tokens = sorted(config.modality_token_ids.values())
    processor = NanoEmoXProcessor.from_model_config(config, tokenizer, max_length=512)
    return model, processor


def pretrain_towers(
    model: NanoEmoXForConditionalGeneration,
    processor: NanoEmoXProcessor,
    samples,
    face_labels: dict[str, str],
    voice_labels: dict[str, str],
    steps: int = 150,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> dict[str, float]:
    """
    Gives a tiny model's random towers a short supervised pre-training, standing in for the large-scale pre-training
    the released towers (CLIP, HuBERT, FaceXFormer) come with: the vision tower and the face encoder learn the face's
    expression, the audio tower the voice's emotion, each through a temporary linear probe on exactly the features
    Nano-EmoX reads. Frozen random towers pass almost nothing on (a linear probe on their features is barely above
    the majority class), and no head could learn from them.

    Only the embedded training run uses this, on its generated training split; the towers are frozen again afterwards.

    Returns:
        The probes' final training accuracy per tower.
    """
    import numpy as np
    from torch import nn

    inner = model.model
    samples = [s for s in samples if s.video is not None and s.id in face_labels and s.id in voice_labels]
    if not samples:
        raise ValueError("No sample has a video and both face and voice labels.")
    classes = sorted({*face_labels.values(), *voice_labels.values()})
    index = {label: i for i, label in enumerate(classes)}
    frames, faces, audio = [], [], []
    for start in range(0, len(samples), 32):
        chunk = samples[start : start + 32]
        batch = processor(videos=[s.video for s in chunk], text=[""] * len(chunk), task=["msa"] * len(chunk))
        frames.append(batch["pixel_values_videos"][:, ::2])  # 4 of the 8 frames are enough for a probe
        faces.append(batch["face_pixel_values"][:, ::2])
        audio.append(batch["audio_values"][:, ::4])  # 2 of the 8 clips
    frames, faces, audio = torch.cat(frames), torch.cat(faces), torch.cat(audio)
    face_targets = torch.tensor([index[face_labels[s.id]] for s in samples])
    voice_targets = torch.tensor([index[voice_labels[s.id]] for s in samples])

    towers = (inner.vision_tower, inner.face_encoder, inner.audio_tower)
    probes = nn.ModuleDict(
        {
            "video": nn.Linear(model.config.vision_config.hidden_size, len(classes)),
            "face": nn.Linear(model.config.face_config.hidden_size, len(classes)),
            "audio": nn.Linear(model.config.audio_config.hidden_size, len(classes)),
        }
    )
    for tower in towers:
        tower.requires_grad_(True)  # eval mode stays: no dropout, and the towers read their layers by index
    parameters = [p for tower in towers for p in tower.parameters()] + list(probes.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    generator = np.random.default_rng(seed)
    correct = {}
    for _ in range(steps):
        rows = torch.from_numpy(generator.choice(len(samples), size=min(batch_size, len(samples)), replace=False))
        logits = {
            "video": probes["video"](inner.get_video_tower_features(frames[rows])[:, :, 0].mean(dim=1)),
            "face": probes["face"](inner.get_face_tower_features(faces[rows]).mean(dim=1)),
            "audio": probes["audio"](inner.get_audio_tower_features(audio[rows])[:, :, 0].mean(dim=1)),
        }
        targets = {"video": face_targets[rows], "face": face_targets[rows], "audio": voice_targets[rows]}
        loss = sum(nn.functional.cross_entropy(logits[m], targets[m]) for m in logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        correct = {m: (logits[m].argmax(-1) == targets[m]).float().mean().item() for m in logits}
    for tower in towers:
        tower.requires_grad_(False)
    return correct


def create_tiny(output_dir: str | Path, seed: int = 0) -> Path:
    """Writes a tiny model + processor folder loadable with the Auto classes (`trust_remote_code=True`)."""
    output_dir = Path(output_dir)
    model, processor = build_tiny(seed)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
