# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The one manifest format for training and evaluation data.

A manifest is JSONL (one object per line) or a `datasets` dataset with the same columns:

| field        | type                                   | meaning                                                      |
|--------------|----------------------------------------|--------------------------------------------------------------|
| `id`         | str, unique                            | sample id                                                    |
| `task`       | `msa` `mer` `ovmer` `mir` `eri` `erg`  | which of the six tasks (and prompts) the sample trains/tests |
| `dataset`    | str, optional                          | source corpus; mixture weights refer to it                   |
| `video`      | path, optional                         | clip; its audio track is used unless `audio` is given        |
| `audio`      | path, optional                         | audio file                                                   |
| `faces`      | path, optional                         | pre-cropped faces (a folder of images, e.g. OpenFace output)  |
| `text`       | str, optional                          | subtitle / utterance (ERG: the user's current input)         |
| `history`    | list of `{role, content}`, optional    | ERG dialogue so far                                          |
| `candidates` | list of str, optional                  | labels to choose from (MER, MIR)                             |
| `target`     | str, optional                          | the answer to train on                                       |
| `reference`  | any, optional                          | the gold answer `nanoemox eval` scores against               |

Relative media paths are resolved against a media root given by the user (default: the manifest's folder). A
missing media file is reported with the sample id; the loader then either skips it (and counts it) or stops,
as the caller chooses — never a silent drop.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import logging

from nanoemox_processing.prompts_nanoemox import TASK_NAMES

logger = logging.get_logger(__name__)

MEDIA_FIELDS = ("video", "audio", "faces")
FIELDS = ("id", "task", "dataset", *MEDIA_FIELDS, "text", "history", "candidates", "target", "reference")


@dataclass
class Sample:
    """One manifest row with media paths resolved to absolute paths."""

    id: str
    task: str
    dataset: str = "default"
    video: str | None = None
    audio: str | None = None
    faces: str | None = None
    text: str | None = None
    history: list[dict] | None = None
    candidates: list[str] | None = None
    target: str | None = None
    reference: object = None

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass
class LoadReport:
    """What loading skipped, by reason, with the sample ids."""

    missing_media: dict[str, list[str]] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return len(self.missing_media)


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the row or sample ids."""


def iter_jsonl(path: Path):
    """The JSON objects of a JSONL file, one per non-blank line; `ManifestError` (a `ValueError`) names the line of
    anything else."""
    with Path(path).open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(f"{path}:{line_number}: not valid JSON ({error.msg}).") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}.")
            yield row


def _rows(source):
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            from datasets import load_from_disk

            yield from load_from_disk(str(path))
            return
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such manifest.")
        yield from iter_jsonl(path)
    else:
        yield from source  # a `datasets.Dataset` or any iterable of dicts


def parse_sample(row: dict, media_root: Path | None) -> tuple[Sample, list[str]]:
    """Validates one row; returns the sample and the media paths it names that do not exist."""
    unknown = set(row) - set(FIELDS)
    if unknown:
        raise ManifestError(f"sample {row.get('id')!r}: unknown fields {sorted(unknown)}; expected among {FIELDS}.")
    if not row.get("id"):
        raise ManifestError(f"a row has no id: {str(row)[:200]}")
    if row.get("task") not in TASK_NAMES:
        raise ManifestError(f"sample {row['id']!r}: task must be one of {TASK_NAMES}, got {row.get('task')!r}.")
    values = {name: row.get(name) for name in FIELDS if row.get(name) is not None}
    values["id"] = str(values["id"])
    missing = []
    for name in MEDIA_FIELDS:
        if values.get(name):
            path = Path(values[name]).expanduser()
            if not path.is_absolute() and media_root is not None:
                path = media_root / path
            values[name] = str(path)
            if not path.exists():
                missing.append(str(path))
    return Sample(**values), missing


def load_manifest(source, media_root: str | Path | None = None, on_missing: str = "error", tasks=None):
    """
    Reads a manifest (JSONL path, `datasets` folder or dataset) into [`Sample`]s.

    Args:
        media_root: folder relative media paths start from (default: the manifest's folder for a file).
        on_missing: `"error"` stops at the end of the pass listing every sample with missing media; `"skip"` leaves
            those samples out and reports them.
        tasks: keep only these tasks.

    Returns:
        `(samples, report)`.
    """
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}.")
    if media_root is None and isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        media_root = Path(source).resolve().parent
    media_root = Path(media_root) if media_root is not None else None
    samples, report, seen = [], LoadReport(), set()
    for row in _rows(source):
        sample, missing = parse_sample(dict(row), media_root)
        if sample.id in seen:
            raise ManifestError(f"sample id {sample.id!r} appears more than once.")
        seen.add(sample.id)
        if tasks is not None and sample.task not in tasks:
            continue
        if missing:
            report.missing_media[sample.id] = missing
            continue
        samples.append(sample)
    if report.missing_media:
        listing = "; ".join(f"{sid}: {', '.join(paths)}" for sid, paths in list(report.missing_media.items())[:10])
        message = f"{report.skipped} samples name media files that do not exist (first 10 — {listing})"
        if on_missing == "error":
            raise ManifestError(message + ". Fix the paths or --media_root, or skip them with on_missing='skip'.")
        logger.warning(message + "; they are skipped.")
    return samples, report


def write_manifest(samples, path: str | Path) -> Path:
    """Writes samples (or dicts) as JSONL, dropping empty fields."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for sample in samples:
            row = sample.to_dict() if isinstance(sample, Sample) else dict(sample)
            handle.write(json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n")
    return path
