# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""A complete, randomly initialised tiny Nano-EmoX (model + processor) built without any download.

Tests, the demo and `nanoemox create-tiny` use it: the architecture is the full one, only smaller, and the tokenizer
is a byte-level BPE trained here on the project's own prompts and label sets, with a ChatML template. The embedded
training run (`recipes/embedded/`) builds on it, adding its generated dataset's words to the tokenizer's corpus.
"""

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from nanoemox_processing import NanoEmoXProcessor
from nanoemox_processing.prompts_nanoemox import CHAIN_OF_EMPATHY, MER_LABELS, MINTREC2_INTENTS, SYSTEM_PROMPT, TASKS

from .composition_nanoemox import add_modality_tokens
from .configuration_nanoemox import NanoEmoXConfig
from .modeling_nanoemox import NanoEmoXForConditionalGeneration

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_VOCAB_SIZE = 1024


def _training_corpus() -> list[str]:
    """The project's prompts, label sets and a few typical answers."""
    lines = [SYSTEM_PROMPT, CHAIN_OF_EMPATHY, *MER_LABELS, *MINTREC2_INTENTS]
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


def build_tiny_tokenizer(
    with_modality_tokens: bool = True, extra_texts: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE tokenizer (under 1024 tokens) with ChatML and, by default, the four modality
    placeholders. `extra_texts` join the training corpus (texts the model will see often become short sequences)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE - 8,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([*_training_corpus(), *extra_texts], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )
    if with_modality_tokens:
        add_modality_tokens(tokenizer)
    return tokenizer


def build_tiny(
    seed: int = 0, extra_texts: Iterable[str] = (), **processor_kwargs
) -> tuple[NanoEmoXForConditionalGeneration, NanoEmoXProcessor]:
    """Builds the tiny model (random weights from `seed`) and its processor; `extra_texts` as in
    [`build_tiny_tokenizer`]; `processor_kwargs` (e.g. `system_prompt`, `audio_clip_seconds`) go to the processor."""
    tokenizer = build_tiny_tokenizer(extra_texts=extra_texts)
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
    processor = NanoEmoXProcessor.from_model_config(config, tokenizer, **{"max_length": 512, **processor_kwargs})
    return model, processor


def create_tiny(output_dir: str | Path, seed: int = 0) -> Path:
    """Writes a tiny model + processor folder loadable with the Auto classes (`trust_remote_code=True`)."""
    output_dir = Path(output_dir)
    model, processor = build_tiny(seed)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
