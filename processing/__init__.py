# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Nano-EmoX processing (installed as `nanoemox_processing`): prompts, chat template, media decoding, face crops.

Names are imported on first use, so `import nanoemox_processing` (and `import modeling_nanoemox`) loads neither
PyAV nor OpenCV until media are decoded.
"""

import importlib

_NAMES = {
    "FACE_DETECTORS": "face_detection_nanoemox",
    "FaceDetector": "face_detection_nanoemox",
    "build_face_detector": "face_detection_nanoemox",
    "MediaDecodeError": "media_nanoemox",
    "MediaError": "media_nanoemox",
    "MediaNotFoundError": "media_nanoemox",
    "FACE_SOURCES": "processing_nanoemox",
    "NanoEmoXProcessor": "processing_nanoemox",
    "build_chat_template": "processing_nanoemox",
    "AVAMERG_LABELS": "prompts_nanoemox",
    "CREMA_D_LABELS": "prompts_nanoemox",
    "MER_LABELS": "prompts_nanoemox",
    "MINTREC2_INTENTS": "prompts_nanoemox",
    "MINTREC_INTENTS": "prompts_nanoemox",
    "SYSTEM_PROMPT": "prompts_nanoemox",
    "TASK_NAMES": "prompts_nanoemox",
    "TASKS": "prompts_nanoemox",
    "Task": "prompts_nanoemox",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES))
