# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Data for training and evaluation: the manifest format, adapters from public corpora, the chain-of-empathy targets.

Nothing here imports `modeling_nanoemox.evaluation` (evaluation reads manifests, not the other way round); task names
and label sets come from `nanoemox_processing.prompts_nanoemox`.
"""

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
from .manifest import FIELDS, LoadReport, ManifestError, Sample, load_manifest, write_manifest

__all__ = [
    "FIELDS",
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
]
