# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Composing Nano-EmoX from released components, and the tokenizer surgery that goes with it.

Not a remote-code file: a saved model folder loads without it. The model file only builds from a config; this module
is how a first checkpoint is assembled (DESIGN §3: weights arrive via `from_pretrained`, composition from released
components, or a conversion script).
"""

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel
from transformers.utils import logging

from .configuration_nanoemox import NanoEmoXConfig
from .modeling_nanoemox import NanoEmoXFaceEncoder, NanoEmoXForConditionalGeneration

logger = logging.get_logger(__name__)

DEFAULT_MODALITY_TOKENS = {
    "video": "<|emox_video|>",
    "audio": "<|emox_audio|>",
    "face": "<|emox_face|>",
    "fusion": "<|emox_fusion|>",
}


def add_modality_tokens(tokenizer, modality_tokens: dict[str, str] | None = None) -> dict[str, int]:
    """
    Adds the four placeholders to `tokenizer` as named special tokens (`tokenizer.video_token`,
    `tokenizer.video_token_id`, …), keeping the ones it already has, and returns their ids by modality.

    Args:
        tokenizer: a `PreTrainedTokenizerBase`; modified in place.
        modality_tokens: placeholder strings by modality, overriding [`DEFAULT_MODALITY_TOKENS`].
    """
    modality_tokens = {**DEFAULT_MODALITY_TOKENS, **(modality_tokens or {})}
    unknown = set(modality_tokens) - set(DEFAULT_MODALITY_TOKENS)
    if unknown:
        raise ValueError(
            f"modality_tokens: unknown modalities {sorted(unknown)}; expected keys among {tuple(DEFAULT_MODALITY_TOKENS)}."
        )
    tokenizer.add_special_tokens(
        {"extra_special_tokens": list(modality_tokens.values())}, replace_extra_special_tokens=False
    )
    tokenizer._set_model_specific_special_tokens({f"{name}_token": token for name, token in modality_tokens.items()})
    return {name: tokenizer.convert_tokens_to_ids(token) for name, token in modality_tokens.items()}


def compose_from_components(
    text: str | Path,
    vision: str | Path,
    audio: str | Path,
    face: str | Path | None = None,
    config_overrides: dict | None = None,
    modality_tokens: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
    return_tokenizer: bool = False,
    **hub_kwargs,
):
    """
    Composes Nano-EmoX from pretrained component checkpoints (local folders or Hub ids). The towers and the language
    model take the components' weights; the Q-Formers, heads, adapters and fusion encoder stay randomly initialised
    (that is what the P2E curriculum trains).

    Args:
        text: causal LM checkpoint, e.g. `Qwen/Qwen2.5-1.5B-Instruct`; its tokenizer is loaded too.
        vision: CLIP checkpoint, e.g. `openai/clip-vit-large-patch14`; only the vision tower is loaded.
        audio: HuBERT checkpoint, e.g. `TencentGameMate/chinese-hubert-large`.
        face: a FaceXFormer folder written by `convert_facexformer_to_nanoemox.py`; random when omitted (with a
            warning) so that a model can still be assembled before the conversion is done.
        config_overrides: extra [`NanoEmoXConfig`] arguments (token counts, fusion width, …).
        modality_tokens: placeholder strings, defaults to [`DEFAULT_MODALITY_TOKENS`].
        dtype: dtype of the returned model (float32 by default).
        return_tokenizer: also return the tokenizer extended with the placeholders.
        hub_kwargs: forwarded to every `from_pretrained` call (`revision`, `token`, `cache_dir`, …).

    Returns:
        The [`NanoEmoXForConditionalGeneration`], or `(model, tokenizer)` with `return_tokenizer=True`.

    Example:

    ```python
    >>> from modeling_nanoemox import compose_from_components

    >>> model, tokenizer = compose_from_components(
    ...     text="Qwen/Qwen2.5-1.5B-Instruct", vision="openai/clip-vit-large-patch14",
    ...     audio="TencentGameMate/chinese-hubert-large", face="facexformer-nanoemox", return_tokenizer=True,
    ... )
    ```
    """
    tokenizer = AutoTokenizer.from_pretrained(text, **hub_kwargs)
    token_ids = add_modality_tokens(tokenizer, modality_tokens)
    language_model = AutoModelForCausalLM.from_pretrained(text, dtype=torch.float32, **hub_kwargs)
    vision_config = AutoConfig.from_pretrained(vision, **hub_kwargs)
    vision_config = getattr(vision_config, "vision_config", vision_config)  # a full CLIPConfig or a vision one
    # A full CLIP checkpoint also holds the text tower, which Nano-EmoX does not use: skip the loader's long report of
    # its "unexpected" weights.
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        vision_tower = CLIPVisionModel.from_pretrained(vision, config=vision_config, dtype=torch.float32, **hub_kwargs)
    finally:
        logging.set_verbosity(verbosity)
    audio_tower = AutoModel.from_pretrained(audio, dtype=torch.float32, **hub_kwargs)
    face_encoder = None
    if face is not None:
        face_encoder = NanoEmoXFaceEncoder.from_pretrained(face, dtype=torch.float32, **hub_kwargs)
    else:
        logger.warning("No face encoder given: the face encoder stays randomly initialised.")

    text_config = language_model.config
    if len(tokenizer) > text_config.vocab_size:
        language_model.resize_token_embeddings(len(tokenizer))
    config_kwargs = {
        "text_config": text_config.to_dict(),
        "vision_config": vision_tower.config.to_dict(),
        "audio_config": {**audio_tower.config.to_dict(), "apply_spec_augment": False, "layerdrop": 0.0},
        **{f"{modality}_token_id": token_id for modality, token_id in token_ids.items()},
        **(config_overrides or {}),
    }
    if face_encoder is not None:
        config_kwargs["face_config"] = face_encoder.config.to_dict()
    config = NanoEmoXConfig(**config_kwargs)
    model = NanoEmoXForConditionalGeneration(config)
    model.model.language_model.load_state_dict(language_model.model.state_dict())
    model.lm_head.load_state_dict(language_model.lm_head.state_dict())
    model.model.vision_tower.load_state_dict(vision_tower.state_dict())
    model.model.audio_tower.load_state_dict(audio_tower.state_dict())
    if face_encoder is not None:
        model.model.face_encoder.load_state_dict(face_encoder.state_dict())
    model.generation_config = language_model.generation_config
    # A placeholder is an input slot, never an answer token.
    model.generation_config.suppress_tokens = sorted(config.modality_token_ids.values())
    if dtype is not None:
        model = model.to(dtype)
    return (model, tokenizer) if return_tokenizer else model


__all__ = ["DEFAULT_MODALITY_TOKENS", "add_modality_tokens", "compose_from_components"]
