# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Emotion-wheel resources and the word → cluster maps of the emotion-wheel (EW) metric.

The EW metric of OV-MER / MER-UniBench (DESIGN §5) groups free emotion words before comparing label sets. A word is
mapped in three hops:

1. surface form → head word(s), from `format.csv` (1,255 head words with their inflected / derived forms);
2. head word → wheel word(s), from `synonym.xlsx` (the 253 words that occur on the five wheels, each with the
   synonyms of 8 generation runs; the runs are merged by union);
3. the alphabetically first wheel word that occurs on wheel *k* gives the cluster: its level-1 ancestor
   (level 1), or its level-2 ancestor (level 2; a level-1 word goes to its alphabetically first level-2 child).

Words that fail any hop are dropped. Besides the wheel metric ("M3", one per wheel × level) the two coarser
groupings of the OV-MER paper are available: M1 (alphabetically first head word) and M2 (alphabetically first
wheel word of that head word).

The folder is never bundled with this package: users get `format.csv`, `synonym.xlsx` and `wheel1..5.xlsx` from the
AffectGPT / MER-UniBench releases and pass the folder in. Parsing and the maps are cached per folder, so scoring
100k samples builds them once.

Differences from the authors' loader (`evaluation/wheel.py`), none of which changes a map built from the published
files: every cell is lower-cased and stripped (the authors do so for the wheels and `synonym.xlsx` but not for
`format.csv`, whose published cells are already clean), a missing head word in `synonym.xlsx` drops the word instead
of raising `KeyError`, and pandas' implicit "NA"/"null" parsing of cells does not apply.
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Iterable
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)

WHEELS = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")
LEVELS = ("level1", "level2")
SYNONYM_RUNS = 8
# Ordered names of the twelve groupings of the OV-MER paper: M1, M2 and the ten wheel × level groupings (M3).
GROUPINGS = ("m1", "m2", *(f"{wheel}_{level}" for wheel in WHEELS for level in LEVELS))


def split_label_string(value) -> list[str]:
    """Split a label-list string the way the published scorer does.

    `"[a, 'b', c]"` and `"a, b, c"` both give `["a", "b", "c"]`: one pair of surrounding brackets is removed, the text is
    split on commas, and each item is stripped of whitespace and quotes; empty items are dropped. Lists and tuples are
    returned as lists of their (string-converted) items; `None` gives `[]`. No lower-casing happens here.
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    if not isinstance(value, str):
        raise TypeError(f"Expected a label string or a list of labels, got {type(value).__name__}: {value!r}")
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    items = (item.strip().strip("'\"").strip() for item in text.split(","))
    return [item for item in items if item]


def _clean(cell) -> str:
    return "" if cell is None else str(cell).strip().lower()


def _read_format_csv(path: Path) -> dict[str, tuple[str, ...]]:
    """surface form → sorted head words. Every head word also maps to itself."""
    surface_to_heads: dict[str, set[str]] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"name", "format"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} must have the columns 'name' and 'format'; missing {sorted(missing)}")
        for row in reader:
            head = _clean(row["name"])
            if not head:
                continue
            for form in split_label_string(row["format"] or ""):
                surface_to_heads.setdefault(form.lower().strip(), set()).add(head)
            surface_to_heads.setdefault(head, set()).add(head)
    return {form: tuple(sorted(heads)) for form, heads in surface_to_heads.items()}


def _open_sheet(path: Path):
    try:
        import openpyxl
    except ImportError as error:  # pragma: no cover - exercised only without the `eval` extra
        raise ImportError(
            "Reading the emotion-wheel .xlsx files needs openpyxl: pip install 'nanoemox[eval]'"
        ) from error
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    rows = [list(row) for row in workbook.worksheets[0].iter_rows(values_only=True)]
    workbook.close()
    if not rows:
        raise ValueError(f"{path} has no rows")
    header = [_clean(cell) for cell in rows[0]]
    return header, rows[1:]


def _read_synonyms(path: Path) -> dict[str, tuple[str, ...]]:
    """word (a wheel word or one of its synonyms) → sorted wheel words, merged over the 8 runs."""
    header, rows = _open_sheet(path)
    word_to_wheel: dict[str, set[str]] = {}
    for run in range(1, SYNONYM_RUNS + 1):
        try:
            word_col, synonym_col = header.index(f"word_run{run}"), header.index(f"synonym_run{run}")
        except ValueError:
            raise ValueError(
                f"{path} must have the columns word_run1..{SYNONYM_RUNS} and synonym_run1..{SYNONYM_RUNS}; "
                f"got {header}"
            ) from None
        for row in rows:
            wheel_word = _clean(row[word_col] if word_col < len(row) else None)
            if not wheel_word:
                continue
            word_to_wheel.setdefault(wheel_word, set()).add(wheel_word)
            cell = row[synonym_col] if synonym_col < len(row) else None
            for synonym in split_label_string(None if cell is None else str(cell)):
                word_to_wheel.setdefault(synonym.lower().strip(), set()).add(wheel_word)
    return {word: tuple(sorted(targets)) for word, targets in word_to_wheel.items()}


def _read_wheel(path: Path) -> dict[str, dict[str, list[str]]]:
    """level1 → level2 → [level3, ...] in sheet order. Blank cells carry the value above them forward."""
    header, rows = _open_sheet(path)
    try:
        columns = [header.index(name) for name in ("level1", "level2", "level3")]
    except ValueError:
        raise ValueError(f"{path} must have the columns level1, level2, level3; got {header}") from None
    tree: dict[str, dict[str, list[str]]] = {}
    current = ["", "", ""]
    for row in rows:
        cells = [_clean(row[col] if col < len(row) else None) for col in columns]
        if not any(cells):
            continue
        current = [cell or previous for cell, previous in zip(cells, current)]
        level1, level2, level3 = current
        tree.setdefault(level1, {}).setdefault(level2, []).append(level3)
    return tree


def _wheel_cluster_map(tree: dict[str, dict[str, list[str]]], level: str) -> dict[str, str]:
    """wheel word → its cluster at `level`.

    Built in sheet order with later entries overwriting earlier ones, exactly like the published code, so a word
    that occurs twice on one wheel takes the cluster of its last occurrence.
    """
    cluster: dict[str, str] = {}
    for level1, children in tree.items():
        if level == "level1":
            cluster[level1] = level1
            for level2, leaves in children.items():
                cluster[level2] = level1
                for level3 in leaves:
                    cluster[level3] = level1
        else:
            cluster[level1] = sorted(children)[0]
            for level2, leaves in children.items():
                cluster[level2] = level2
                for level3 in leaves:
                    cluster[level3] = level2
    return cluster


class EmotionWheel:
    """The emotion-wheel resources of one folder and the word → cluster maps built from them.

    Use [`load_emotion_wheel`] rather than the constructor: it caches one instance per folder, and each instance
    caches its maps, so the maps are built once per (folder, grouping).

    Words passed to the mapping methods are expected lower-cased and stripped (the scorer does this).
    """

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        required = ["format.csv", "synonym.xlsx", *(f"{wheel}.xlsx" for wheel in WHEELS)]
        missing = [name for name in required if not (folder / name).is_file()]
        if missing:
            raise ValueError(
                f"Emotion-wheel folder {str(folder)!r} lacks {missing}; it must hold format.csv, synonym.xlsx and "
                "wheel1..5.xlsx (from the AffectGPT / MER-UniBench releases)"
            )
        self.folder = folder
        self.surface_to_heads = _read_format_csv(folder / "format.csv")
        self.word_to_wheel_words = _read_synonyms(folder / "synonym.xlsx")
        self.wheels = {wheel: _read_wheel(folder / f"{wheel}.xlsx") for wheel in WHEELS}
        self._maps: dict[str, dict[str, str]] = {}
        self._derived: dict[str, object] = {}
        logger.info(
            "Loaded emotion wheel %s: %d surface forms, %d synonym entries",
            folder,
            len(self.surface_to_heads),
            len(self.word_to_wheel_words),
        )

    def wheel_words(self) -> set[str]:
        """All words that occur on any of the five wheels, at any level."""
        words: set[str] = set()
        for tree in self.wheels.values():
            for level1, children in tree.items():
                words.add(level1)
                for level2, leaves in children.items():
                    words.add(level2)
                    words.update(leaves)
        return words

    def vocabulary(self) -> set[str]:
        """Every word the metric knows: all surface forms of `format.csv` plus all wheel words."""
        return set(self.surface_to_heads) | self.wheel_words()

    def grouping_map(self, grouping: str) -> dict[str, str]:
        """surface form → group for one of [`GROUPINGS`] (`"m1"`, `"m2"`, `"wheel3_level1"`, ...). Cached.

        Surface forms that map to nothing are absent from the returned dict (the metric drops them).
        """
        if grouping in self._maps:
            return self._maps[grouping]
        if grouping not in GROUPINGS:
            raise ValueError(f"Unknown grouping {grouping!r}; expected one of {list(GROUPINGS)}")
        mapping: dict[str, str] = {}
        if grouping == "m1":
            mapping = {form: heads[0] for form, heads in self.surface_to_heads.items()}
        elif grouping == "m2":
            for form, heads in self.surface_to_heads.items():
                targets = self.word_to_wheel_words.get(heads[0])
                if targets:
                    mapping[form] = targets[0]
        else:
            wheel, level = grouping.split("_")
            clusters = _wheel_cluster_map(self.wheels[wheel], level)
            for form, heads in self.surface_to_heads.items():
                candidates = sorted({w for head in heads for w in self.word_to_wheel_words.get(head, ())})
                for candidate in candidates:
                    if candidate in clusters:
                        mapping[form] = clusters[candidate]
                        break
        self._maps[grouping] = mapping
        return mapping

    def derived(self, key: str, factory):
        """A structure built from this wheel by `factory(self)` once and cached on the instance (codebooks,
        lexicons), so it lives exactly as long as the wheel."""
        if key not in self._derived:
            self._derived[key] = factory(self)
        return self._derived[key]

    def cluster_map(self, wheel: str, level: str = "level1") -> dict[str, str]:
        """surface form → cluster on `wheel` (`"wheel1"`..`"wheel5"`) at `level` (`"level1"` or `"level2"`)."""
        if wheel not in WHEELS or level not in LEVELS:
            raise ValueError(f"Expected wheel in {list(WHEELS)} and level in {list(LEVELS)}, got {wheel!r}, {level!r}")
        return self.grouping_map(f"{wheel}_{level}")

    def map_word(self, word: str, wheel: str, level: str = "level1") -> str | None:
        """The cluster of one word (lower-cased and stripped here), or `None` when the metric drops it."""
        return self.cluster_map(wheel, level).get(word.strip().lower())

    def map_words(self, words: Iterable[str], wheel: str, level: str = "level1") -> set[str]:
        """The set of clusters of `words`; unmappable words are dropped."""
        mapping = self.cluster_map(wheel, level)
        return {mapping[w] for w in (word.strip().lower() for word in words) if w in mapping}


@functools.lru_cache(maxsize=8)
def _load_cached(resolved: str) -> EmotionWheel:
    return EmotionWheel(resolved)


def load_emotion_wheel(folder: str | os.PathLike | EmotionWheel) -> EmotionWheel:
    """The [`EmotionWheel`] of `folder`, parsed once per process (an `EmotionWheel` is passed through)."""
    if isinstance(folder, EmotionWheel):
        return folder
    if folder is None:
        raise ValueError("An emotion-wheel folder is required (format.csv, synonym.xlsx, wheel1..5.xlsx)")
    return _load_cached(str(Path(folder).expanduser().resolve()))
