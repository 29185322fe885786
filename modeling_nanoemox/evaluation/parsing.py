# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Reading prediction / reference rows and turning predictions into label lists.

Rows are JSON objects: predictions `{"id": ..., "prediction": ...}`, references `{"id": ..., "reference": ...}`.
Ids are compared as strings, so `7` and `"7"` are the same sample.

Label predictions (MER, OV-MER) take one of four routes, counted in the score's metadata:

1. `json_list` — a JSON list is the label list as-is;
2. `label_string` — a string that reads as a label list (`"[a, b]"`, `"a, b"`, `"happy"`, an optional final
   period) is split on commas, as the published scorer does;
3. `template` — an answer in one of the training templates ("The character's emotional state is a, b, c.",
   "The most likely label is X.", R1-style `<answer>X</answer>`, EMER-style "... inferred that he is X.") yields the
   listed words; a listed phrase that is not
   itself a vocabulary word is reduced to the vocabulary words inside it ("slightly anxious" → "anxious");
4. `extractor` — any other text goes through the configured [`LabelExtractor`].
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..data.manifest import iter_jsonl
from .emotion_wheel import split_label_string

ROUTES = ("json_list", "label_string", "template", "extractor")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a `.jsonl` file, one per non-blank line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No such file: {str(path)!r}")
    return list(iter_jsonl(path))


def read_csv_rows(
    path: str | os.PathLike, *, id_column: str, value_column: str, key: str = "prediction"
) -> list[dict]:
    """Rows `{"id": row[id_column], key: row[value_column]}` of a CSV file (e.g. the authors' published CSVs)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {id_column, value_column} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} lacks the columns {sorted(missing)}; it has {reader.fieldnames}")
        return [{"id": row[id_column], key: row[value_column] or ""} for row in reader]


def read_emer_references(path: str | os.PathLike) -> list[dict]:
    """EMER ground truth (`gt-eng.csv`: names, emotions, subtitles, reasons) as ERI reference rows.

    Each row is `{"id": name, "reference": {"rationale": reasons, "emotion": emotions, "subtitle": subtitles}}`.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"names", "reasons"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} lacks the EMER columns {sorted(missing)}; it has {reader.fieldnames}")
        return [
            {
                "id": row["names"],
                "reference": {
                    "rationale": row["reasons"] or "",
                    "emotion": row.get("emotions") or "",
                    "subtitle": row.get("subtitles") or "",
                },
            }
            for row in reader
        ]


def _ids(rows: Sequence[dict], kind: str) -> list[str]:
    ids = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or "id" not in row:
            raise ValueError(f"{kind} row {index} has no 'id': {str(row)[:120]}")
        ids.append(str(row["id"]))
    return ids


def _listing(items: Iterable[str], count: int) -> str:
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:10])
    return f"{count} ({shown}{', ...' if count > 10 else ''})"


def align_rows(
    predictions: Sequence[dict], references: Sequence[dict], *, prediction_key: str = "prediction"
) -> tuple[list[str], list, list]:
    """(ids, prediction values, reference values), in reference order.

    Raises `ValueError` listing (first 10 of) duplicate ids in either file, reference ids with no prediction and
    prediction ids with no reference, with their counts; or when a row lacks its value key.
    """
    pred_ids, ref_ids = _ids(predictions, "prediction"), _ids(references, "reference")
    problems = []
    for kind, ids in (("predictions", pred_ids), ("references", ref_ids)):
        duplicates = [i for i, n in Counter(ids).items() if n > 1]
        if duplicates:
            problems.append(f"duplicate ids in {kind}: {_listing(duplicates, len(duplicates))}")
    pred_set, ref_set = set(pred_ids), set(ref_ids)
    missing = [i for i in dict.fromkeys(ref_ids) if i not in pred_set]
    unexpected = [i for i in dict.fromkeys(pred_ids) if i not in ref_set]
    if missing:
        problems.append(f"references without a prediction: {_listing(missing, len(missing))}")
    if unexpected:
        problems.append(f"predictions without a reference: {_listing(unexpected, len(unexpected))}")
    if problems:
        raise ValueError(
            f"Predictions ({len(pred_ids)} rows) and references ({len(ref_ids)} rows) do not match; "
            + "; ".join(problems)
        )
    for kind, rows, key in (("prediction", predictions, prediction_key), ("reference", references, "reference")):
        for row in rows:
            if key not in row:
                raise ValueError(f"{kind} row with id {row['id']!r} has no {key!r} key: {str(row)[:120]}")
    by_id = {pid: row[prediction_key] for pid, row in zip(pred_ids, predictions)}
    return ref_ids, [by_id[i] for i in ref_ids], [row["reference"] for row in references]


# ---------------------------------------------------------------------------------------------------------------------
# Label predictions
# ---------------------------------------------------------------------------------------------------------------------

_LABEL_ITEM = re.compile(r"^[a-z][a-z '’-]*$", re.IGNORECASE)
_TEMPLATES = (
    re.compile(r"<answer>\s*(?P<labels>.*?)\s*</answer>", re.IGNORECASE | re.DOTALL),
    re.compile(
        r"emotional states?\s+(?:is|are|was|were|seems to be|appears to be|could be|might be|may be|can be)\s*:?\s*"
        r"(?P<labels>[^.\n]+)",
        re.IGNORECASE,
    ),
    re.compile(r"most likely (?:label|emotion)\s+is\s*:?\s*(?P<labels>[^.\n]+)", re.IGNORECASE),
    # EMER-style conclusions: "Therefore, it can be inferred that he is feeling angry."
    re.compile(
        r"(?:inferred|concluded|deduced) that (?:he|she|they|the \w+) (?:is|was|are|were|feels|felt)\s+(?:feeling\s+)?"
        r"(?P<labels>[^.\n]+)",
        re.IGNORECASE,
    ),
)
_TEMPLATE_SPLIT = re.compile(r",|;|/|\band\b|\bor\b|\bas well as\b", re.IGNORECASE)
_ARTICLES = re.compile(r"^(?:a|an|the|both|also)\s+", re.IGNORECASE)


def looks_like_label_list(text: str, vocabulary: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether `text` is a bare label list rather than prose.

    Items (comma-separated, optional brackets, quotes, a final period) must be letters, spaces, hyphens and
    apostrophes only; a single unbracketed item may have at most two words unless it is a vocabulary word; items of a
    list may have at most four words.
    """
    stripped = text.strip()
    bracketed = stripped.startswith("[") and stripped.endswith("]")
    items = split_label_string(stripped.rstrip(".") if not bracketed else stripped)
    if not items:
        return bracketed or not stripped
    max_words = 4 if (bracketed or len(items) > 1) else 2
    for item in items:
        if not _LABEL_ITEM.match(item):
            return False
        if len(item.split()) > max_words and item.lower() not in vocabulary:
            return False
    return True


def _template_labels(text: str) -> list[str] | None:
    for pattern in _TEMPLATES:
        match = pattern.search(text)
        if match:
            items = []
            for part in _TEMPLATE_SPLIT.split(match.group("labels")):
                item = _ARTICLES.sub("", part.strip(" \t\"'[]")).strip(" .!")
                if item:
                    items.append(item.lower())
            if items and all(len(item.split()) <= 4 for item in items):
                return items
    return None


def parse_label_predictions(values: Sequence, extractor, vocabulary_matcher=None) -> tuple[list[list[str]], Counter]:
    """Label lists for MER / OV-MER predictions, and how many took each route (see the module docstring).

    `extractor` handles free text (a [`LabelExtractor`]); `vocabulary_matcher` (a [`LexiconExtractor`]) reduces
    template phrases that are not vocabulary words. Free texts are sent to the extractor in one batch.
    """
    labels: list[list[str] | None] = []
    routes: Counter = Counter(dict.fromkeys(ROUTES, 0))
    pending: list[int] = []
    vocabulary = vocabulary_matcher.vocabulary if vocabulary_matcher is not None else frozenset()
    for index, value in enumerate(values):
        if isinstance(value, (list, tuple)):
            labels.append([str(item) for item in value])
            routes["json_list"] += 1
            continue
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise TypeError(
                f"A prediction must be a string or a list of strings, got {type(value).__name__}: {value!r}"
            )
        if looks_like_label_list(value, vocabulary):
            stripped = value.strip()
            bracketed = stripped.startswith("[") and stripped.endswith("]")
            labels.append(split_label_string(stripped if bracketed else stripped.rstrip(".")))
            routes["label_string"] += 1
            continue
        template = _template_labels(value)
        if template is not None:
            refined = []
            for item in template:
                if item in vocabulary or vocabulary_matcher is None:
                    refined.append(item)
                else:
                    refined.extend(vocabulary_matcher.extract_one(item))
            labels.append(refined)
            routes["template"] += 1
            continue
        labels.append(None)
        pending.append(index)
    if pending:
        if extractor is None:
            raise ValueError(f"{len(pending)} predictions are free text and no label extractor was given")
        extracted = extractor.extract([values[i] for i in pending])
        if len(extracted) != len(pending):
            raise ValueError(f"The extractor returned {len(extracted)} label lists for {len(pending)} texts")
        for index, words in zip(pending, extracted):
            labels[index] = list(words)
        routes["extractor"] += len(pending)
    return labels, routes


def parse_label_references(values: Sequence) -> list[list[str]]:
    """Gold label lists: a JSON list as-is, a string split like the published scorer (`"[a, b]"`, `"a, b"`, `"a"`)."""
    out = []
    for value in values:
        if value is not None and not isinstance(value, (str, list, tuple)):
            raise TypeError(f"A label reference must be a string or a list, got {type(value).__name__}: {value!r}")
        out.append(split_label_string(value))
    return out
