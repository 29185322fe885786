# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Composing Nano-EmoX from released components, and the tokenizer surgery that goes with it.

Not a remote-code file: a saved model folder loads without it. The model file only builds from a config; this module
is how a first checkpoint is assembled (DESIGN §3: weights arrive via `from_pretrained`, composition from released
components, or a conversion script).

Composition builds the model as a skeleton on the meta device and moves each component's tensors into it as the
component is loaded (no copy), then frees the component: the peak memory stays near the composed model's size
(`benchmarks/bench_compose.py`), where loading every component next to a fully initialised model took twice that.
"""

import gc
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel
from transformers.utils import logging

from .configuration_nanoemox import NanoEmoXConfig, NanoEmoXFaceConfig
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
    dtype = dtype or torch.float32

    # 1. The language model first: its (possibly resized) vocabulary and generation config enter the config.
    language_model = AutoModelForCausalLM.from_pretrained(text, dtype=dtype, **hub_kwargs)
    if len(tokenizer) > language_model.config.vocab_size:
        language_model.resize_token_embeddings(len(tokenizer))
    text_config = language_model.config
    generation_config = language_model.generation_config
    vision_config = AutoConfig.from_pretrained(vision, **hub_kwargs)
    vision_config = getattr(vision_config, "vision_config", vision_config)  # a full CLIPConfig or a vision one
    audio_config = AutoConfig.from_pretrained(audio, **hub_kwargs)
    face_config = NanoEmoXFaceConfig.from_pretrained(face, **hub_kwargs) if face is not None else None
    config_kwargs = {
        "text_config": text_config.to_dict(),
        "vision_config": vision_config.to_dict(),
        "audio_config": {**audio_config.to_dict(), "apply_spec_augment": False, "layerdrop": 0.0},
        **{f"{modality}_token_id": token_id for modality, token_id in token_ids.items()},
        **(config_overrides or {}),
    }
    if face_config is not None:
        config_kwargs["face_config"] = face_config.to_dict()
    config = NanoEmoXConfig(**config_kwargs)

    # 2. The model as a skeleton on the meta device (no memory); each component's tensors then become the model's
    # own (`assign`, no copy) and the component is dropped before the next one loads, so the peak stays near the
    # composed model's size instead of components + model.
    with torch.device("meta"):
        model = NanoEmoXForConditionalGeneration(config)
    model.to(dtype)
    _assign_component(model.model.language_model, language_model.model, "language model")
    if not config.text_config.tie_word_embeddings:
        _assign_component(model.lm_head, language_model.lm_head, "LM head")
    del language_model
    gc.collect()
    # A full CLIP checkpoint also holds the text tower, which Nano-EmoX does not use: skip the loader's long report of
    # its "unexpected" weights.
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        vision_tower = CLIPVisionModel.from_pretrained(vision, config=vision_config, dtype=dtype, **hub_kwargs)
    finally:
        logging.set_verbosity(verbosity)
    _assign_component(model.model.vision_tower, vision_tower, "vision tower")
    del vision_tower
    gc.collect()
    audio_tower = AutoModel.from_pretrained(audio, dtype=dtype, **hub_kwargs)
    _assign_component(model.model.audio_tower, audio_tower, "audio tower")
    del audio_tower
    gc.collect()
    if face is not None:
        face_encoder = NanoEmoXFaceEncoder.from_pretrained(face, dtype=dtype, **hub_kwargs)
        _assign_component(model.model.face_encoder, face_encoder, "face encoder")
        del face_encoder
        gc.collect()
    else:
        logger.warning("No face encoder given: the face encoder stays randomly initialised.")

    # 3. What no component supplies (heads, adapters, fusion encoder; the face encoder when not given) gets real
    # memory and the model's own `_init_weights`; `lm_head` is tied to the embeddings first, so it is never
    # allocated.
    model.tie_weights()
    _materialise_meta_tensors(model)
    model.initialize_weights()
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise RuntimeError(f"compose_from_components left tensors on the meta device: {left[:10]}")

    model.generation_config = generation_config
    # A placeholder is an input slot, never an answer token.
    model.generation_config.suppress_tokens = sorted(config.modality_token_ids.values())
    return (model, tokenizer) if return_tokenizer else model


def _assign_component(target: torch.nn.Module, component: torch.nn.Module, what: str) -> None:
    """
    Makes `component`'s tensors the tensors of `target` (a meta skeleton of the same architecture) without copying
    them: parameters and persistent buffers through `load_state_dict(strict=True, assign=True)`, non-persistent
    buffers (rotary frequencies, position ids) one by one. Marks every module of `target` initialised so that the
    model's weight initialisation leaves them alone.
    """
    try:
        target.load_state_dict(component.state_dict(), strict=True, assign=True)
    except RuntimeError as error:
        raise ValueError(f"The {what} checkpoint does not match the architecture in the config: {error}") from None
    persistent = set(target.state_dict())
    for name, buffer in component.named_buffers():
        if name not in persistent:
            owner, _, leaf = name.rpartition(".")
            target.get_submodule(owner).register_buffer(leaf, buffer, persistent=False)
    for module in target.modules():
        module._is_hf_initialized = True
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            tensor._is_hf_initialized = True


def _materialise_meta_tensors(model: torch.nn.Module) -> None:
    """Gives every parameter and buffer still on the meta device uninitialised CPU memory (shared ones once)."""
    done = {}
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None and parameter.is_meta:
                if id(parameter) not in done:
                    done[id(parameter)] = torch.nn.Parameter(
                        torch.empty_like(parameter, device="cpu"), requires_grad=parameter.requires_grad
                    )
                module._parameters[name] = done[id(parameter)]
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_meta:
                module._buffers[name] = torch.empty_like(buffer, device="cpu")


__all__ = ["DEFAULT_MODALITY_TOKENS", "add_modality_tokens", "compose_from_components"]
