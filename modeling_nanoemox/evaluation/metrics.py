# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Metric math: emotion-wheel overlap and hit rate, classification scores, Distinct-n.

Everything here works on already-parsed, already-normalised labels; [`modeling_nanoemox.evaluation.scoring`] does the
parsing. Classification scores are implemented with numpy and follow scikit-learn's definitions (support-weighted
averages over the classes present in the gold labels or the predictions, 0 where a ratio is 0/0).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from .emotion_wheel import GROUPINGS, EmotionWheel

# ---------------------------------------------------------------------------------------------------------------------
# Emotion wheel
# ---------------------------------------------------------------------------------------------------------------------


class _GroupCodebook:
    """All twelve groupings of every known word packed into one Python int per word.

    Grouping *g* owns a contiguous bit range; a word sets the bit of its group in every grouping where it maps. A
    sample's label set is then the OR of its words' ints, and set sizes / intersections per grouping are popcounts of
    masked ints. This is what keeps 100k samples × 12 groupings in the seconds range.
    """

    def __init__(self, wheel: EmotionWheel):
        self.offsets: dict[str, int] = {}
        self.masks: dict[str, int] = {}
        self.word_bits: dict[str, int] = {}
        offset = 0
        for grouping in GROUPINGS:
            mapping = wheel.grouping_map(grouping)
            group_ids = {group: i for i, group in enumerate(sorted(set(mapping.values())))}
            for word, group in mapping.items():
                self.word_bits[word] = self.word_bits.get(word, 0) | (1 << (offset + group_ids[group]))
            self.offsets[grouping] = offset
            self.masks[grouping] = ((1 << len(group_ids)) - 1) << offset
            offset += len(group_ids)

    def encode(self, words: Sequence[str]) -> int:
        bits = 0
        get = self.word_bits.get
        for word in words:
            bits |= get(word, 0)
        return bits


def _codebook(wheel: EmotionWheel) -> _GroupCodebook:
    return wheel.derived("group_codebook", _GroupCodebook)


def _normalise_words(words: Sequence[str]) -> list[str]:
    return [w.strip().lower() for w in words]


def emotion_wheel_overlap(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    wheel: EmotionWheel,
    groupings: Sequence[str] = GROUPINGS,
) -> dict[str, dict[str, float | int | None]]:
    """Set-level precision / recall / F of predicted vs. gold emotion words under each grouping.

    Per grouping (published algorithm): both word lists are mapped to groups (unmappable words dropped); samples whose
    mapped gold set is empty are skipped; an empty mapped prediction scores P = R = 0; otherwise
    P = |G ∩ P| / |P| and R = |G ∩ P| / |G|. precision / recall are the means over the scored samples and
    F = 2PR / (P + R) of those means (0 when P + R = 0, where the published code divides by zero). With no scored
    sample the three values are `None`.

    Returns grouping → {"precision", "recall", "f_score", "n_scored"}.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred must have the same length, got {len(gold)} and {len(pred)}")
    book = _codebook(wheel)
    masks = [(g, book.masks[g]) for g in groupings]
    sums = {g: [0.0, 0.0, 0] for g in groupings}
    for gold_words, pred_words in zip(gold, pred):
        gold_bits = book.encode(_normalise_words(gold_words))
        if not gold_bits:
            continue
        pred_bits = book.encode(_normalise_words(pred_words))
        for grouping, mask in masks:
            g = gold_bits & mask
            if not g:
                continue
            acc = sums[grouping]
            acc[2] += 1
            p = pred_bits & mask
            if p:
                hits = (g & p).bit_count()
                acc[0] += hits / p.bit_count()
                acc[1] += hits / g.bit_count()
    scores: dict[str, dict[str, float | int | None]] = {}
    for grouping in groupings:
        precision_sum, recall_sum, n = sums[grouping]
        if n == 0:
            scores[grouping] = {"precision": None, "recall": None, "f_score": None, "n_scored": 0}
            continue
        precision, recall = precision_sum / n, recall_sum / n
        f_score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        scores[grouping] = {"precision": precision, "recall": recall, "f_score": f_score, "n_scored": n}
    return scores


def emotion_wheel_hit_rate(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    wheel: EmotionWheel,
    groupings: Sequence[str],
) -> dict[str, dict[str, float | int | None]]:
    """MER hit rate per grouping: the share of samples whose gold group is among the predicted groups.

    Samples whose gold maps to nothing in a grouping (e.g. "neutral", which no wheel holds) are skipped there.
    (The published code averages |G ∩ P|, which equals this indicator for the single gold label of MER.)
    Returns grouping → {"hit_rate", "n_scored", "n_skipped"}; hit_rate is `None` when nothing was scored.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred must have the same length, got {len(gold)} and {len(pred)}")
    book = _codebook(wheel)
    hits = dict.fromkeys(groupings, 0)
    scored = dict.fromkeys(groupings, 0)
    for gold_words, pred_words in zip(gold, pred):
        gold_bits = book.encode(_normalise_words(gold_words))
        if not gold_bits:
            continue
        pred_bits = book.encode(_normalise_words(pred_words))
        for grouping in groupings:
            g = gold_bits & book.masks[grouping]
            if g:
                scored[grouping] += 1
                hits[grouping] += bool(g & pred_bits)
    return {
        g: {
            "hit_rate": hits[g] / scored[g] if scored[g] else None,
            "n_scored": scored[g],
            "n_skipped": len(gold) - scored[g],
        }
        for g in groupings
    }


# ---------------------------------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------------------------------


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> np.ndarray:
    """Counts with gold labels as rows and predicted labels as columns, in the order of `labels`.

    Pairs whose gold or predicted label is not in `labels` are not counted.
    """
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    return matrix


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def classification_scores(
    y_true: Sequence, y_pred: Sequence, macro_labels: Sequence | None = None
) -> dict[str, float | int]:
    """Accuracy, support-weighted precision / F1 and macro F1.

    Weighted scores average the per-class scores over every class that occurs in `y_true` or `y_pred`, weighted by
    the class's gold support (scikit-learn's `average="weighted"`, `zero_division=0`), so classes that only occur in
    predictions weigh nothing. Macro F1 averages per-class F1 over `macro_labels` (default: the classes that occur in
    `y_true`), so a prediction outside the label set counts as an error without adding a class of its own.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred must have the same length, got {len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("Cannot score an empty set of predictions")
    classes = sorted(set(y_true) | set(y_pred), key=str)
    matrix = confusion_matrix(y_true, y_pred, classes)
    true_positive = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    weights = support / support.sum()
    macro_set = set(y_true) if macro_labels is None else set(macro_labels)
    macro_index = [i for i, c in enumerate(classes) if c in macro_set]
    # A macro label that never occurs in gold or predictions has F1 = 0 (0/0 -> 0), as in scikit-learn.
    absent = len(macro_set - set(classes))
    macro_f1 = float(f1[macro_index].sum() / (len(macro_index) + absent)) if macro_set else 0.0
    return {
        "accuracy": float(true_positive.sum() / len(y_true)),
        "weighted_precision": float((weights * precision).sum()),
        "weighted_f1": float((weights * f1).sum()),
        "macro_f1": macro_f1,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Generation diversity
# ---------------------------------------------------------------------------------------------------------------------


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    tokens = text.strip().lower().split()
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(responses: Sequence[str], n: int) -> dict[str, float | int | None]:
    """Distinct-n of lower-cased, whitespace-tokenised responses.

    `per_response`: mean over responses of (#unique n-grams / #n-grams) — the paper's number; responses with no
    n-gram are skipped, as in the authors' code. `corpus`: #unique n-grams over all responses / #n-grams over all
    responses. Values are `None` when no response has an n-gram.
    """
    ratios, corpus, total = [], Counter(), 0
    for response in responses:
        grams = _ngrams(response, n)
        if not grams:
            continue
        ratios.append(len(set(grams)) / len(grams))
        corpus.update(grams)
        total += len(grams)
    return {
        "per_response": float(np.mean(ratios)) if ratios else None,
        "corpus": len(corpus) / total if total else None,
        "n_responses": len(ratios),
    }
