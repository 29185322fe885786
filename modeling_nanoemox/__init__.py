# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Nano-EmoX for transformers.

Importing this package registers Nano-EmoX with the Auto classes, so a saved folder loads with `AutoConfig`,
`AutoModel`, `AutoModelForCausalLM`, `AutoModelForImageTextToText` and `AutoProcessor` even without
`trust_remote_code=True`. Registering needs the configuration, model and processor classes, so those three modules are
imported here; they import no media or training library at module level (PyAV, OpenCV, TRL, gradio load when first
used). Every other public name is resolved on first access (PEP 562 `__getattr__`, the idea of transformers'
`_LazyModule`), and the subpackages (`data`, `evaluation`, `training`, ...) load only when imported.
"""

import importlib

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from nanoemox_processing.processing_nanoemox import NanoEmoXProcessor

from .configuration_nanoemox import NanoEmoXConfig, NanoEmoXFaceConfig
from .modeling_nanoemox import (
    NanoEmoXFaceEncoder,
    NanoEmoXForConditionalGeneration,
    NanoEmoXModel,
    NanoEmoXPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(NanoEmoXConfig.model_type, NanoEmoXConfig, exist_ok=True)
AutoConfig.register(NanoEmoXFaceConfig.model_type, NanoEmoXFaceConfig, exist_ok=True)
for _auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
    _auto_class.register(NanoEmoXConfig, NanoEmoXForConditionalGeneration, exist_ok=True)
AutoModel.register(NanoEmoXFaceConfig, NanoEmoXFaceEncoder, exist_ok=True)
AutoProcessor.register(NanoEmoXConfig, NanoEmoXProcessor, exist_ok=True)

# Public name → the submodule that defines it, imported on first access.
_LAZY_NAMES = {
    "DEFAULT_MODALITY_TOKENS": "composition_nanoemox",
    "add_modality_tokens": "composition_nanoemox",
    "compose_from_components": "composition_nanoemox",
    "build_tiny": "tiny",
    "create_tiny": "tiny",
}


def __getattr__(name: str):
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
        globals()[name] = value  # later accesses skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


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
    "build_tiny",
    "compose_from_components",
    "create_tiny",
]
