# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Data for training and evaluation: the manifest format, adapters from public corpora, generated data."""

# The manifest first: the adapters import the evaluation package, parts of which import `load_manifest` from here.
from .manifest import FIELDS, TASK_NAMES, LoadReport, ManifestError, Sample, load_manifest, write_manifest

# isort: split
from .adapters import (
    ADAPTERS,
    AdapterSamples,
    read_avamerg,
    read_caer,
    read_corpus,
    read_crema_d,
    read_emer,
    read_ferv39k,
    read_m3ed,
    read_mer_caption_plus,
    read_merr_fine,
    read_mintrec,
)
from .chain_of_empathy import (
    ChainBuildReport,
    ChainOfEmpathyBuilder,
    EmpathyTurn,
    TeacherCache,
    fill_erg_targets,
    format_chain_of_empathy,
    parse_chain_of_empathy,
)
from .synthetic_dataset import build_synthetic_dataset, chance_levels, label_from_cues

__all__ = [
    "FIELDS",
    "TASK_NAMES",
    "LoadReport",
    "ManifestError",
    "Sample",
    "load_manifest",
    "write_manifest",
    "ADAPTERS",
    "AdapterSamples",
    "read_avamerg",
    "read_caer",
    "read_corpus",
    "read_crema_d",
    "read_emer",
    "read_ferv39k",
    "read_m3ed",
    "read_mer_caption_plus",
    "read_merr_fine",
    "read_mintrec",
    "ChainBuildReport",
    "ChainOfEmpathyBuilder",
    "EmpathyTurn",
    "TeacherCache",
    "fill_erg_targets",
    "format_chain_of_empathy",
    "parse_chain_of_empathy",
    "build_synthetic_dataset",
    "chance_levels",
    "label_from_cues",
]
