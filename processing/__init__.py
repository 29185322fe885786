# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Nano-EmoX processing (installed as `nanoemox_processing`): media decoding, face crops, prompts, tokenisation."""

from .face_detection_nanoemox import FACE_DETECTORS, FaceDetector, build_face_detector
from .media_nanoemox import MediaDecodeError, MediaError, MediaNotFoundError
from .processing_nanoemox import NanoEmoXProcessor
from .prompts_nanoemox import SYSTEM_PROMPT, TASKS, Task

__all__ = [
    "FACE_DETECTORS",
    "FaceDetector",
    "MediaDecodeError",
    "MediaError",
    "MediaNotFoundError",
    "NanoEmoXProcessor",
    "SYSTEM_PROMPT",
    "TASKS",
    "Task",
    "build_face_detector",
]
