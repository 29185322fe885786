# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Data for training and evaluation: the manifest format, adapters from public corpora, generated data."""

from .manifest import FIELDS, TASK_NAMES, LoadReport, ManifestError, Sample, load_manifest, write_manifest

__all__ = ["FIELDS", "TASK_NAMES", "LoadReport", "ManifestError", "Sample", "load_manifest", "write_manifest"]
