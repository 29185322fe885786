# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Nano-EmoX for transformers.

Importing this package registers Nano-EmoX with the Auto classes, so a saved folder loads with `AutoConfig`,
`AutoModel`, `AutoModelForCausalLM` and `AutoProcessor` even without `trust_remote_code=True`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from nanoemox_processing import NanoEmoXProcessor

from .configuration_nanoemox import NanoEmoXConfig, NanoEmoXFaceConfig
from .modeling_nanoemox import (
    DEFAULT_MODALITY_TOKENS,
    NanoEmoXFaceEncoder,
    NanoEmoXForConditionalGeneration,
    NanoEmoXModel,
    NanoEmoXPreTrainedModel,
    add_modality_tokens,
)

__version__ = "0.1.0"

AutoConfig.register(NanoEmoXConfig.model_type, NanoEmoXConfig, exist_ok=True)
AutoConfig.register(NanoEmoXFaceConfig.model_type, NanoEmoXFaceConfig, exist_ok=True)
for _auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
    _auto_class.register(NanoEmoXConfig, NanoEmoXForConditionalGeneration, exist_ok=True)
AutoModel.register(NanoEmoXFaceConfig, NanoEmoXFaceEncoder, exist_ok=True)
AutoProcessor.register(NanoEmoXConfig, NanoEmoXProcessor, exist_ok=True)

__all__ = [
    "DEFAULT_MODALITY_TOKENS",
    "NanoEmoXConfig",
    "NanoEmoXFaceConfig",
    "NanoEmoXFaceEncoder",
    "NanoEmoXForConditionalGeneration",
    "NanoEmoXModel",
    "NanoEmoXPreTrainedModel",
    "NanoEmoXProcessor",
    "add_modality_tokens",
]
