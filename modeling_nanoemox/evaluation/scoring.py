# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""`score(task, predictions, references, ...)`: benchmark-compatible metrics for the six Nano-EmoX tasks.

The result is a dict `{"task", "metrics", "meta", "details"}`:

- `metrics`: metric name → value. Rates are fractions in [0, 1]; the ERI judge scores keep their 1–10 scale and say
  so in their names (`*_1_10`). `None` marks a metric with nothing to average (e.g. every gold label unmappable).
- `meta`: scalars describing how the numbers were obtained — counts, extractor identity, judge identity and prompt
  version, normalisation notes.
- `details`: per-grouping tables, confusion matrices, per-sample judge replies (written to `scores.json` and used
  by the plots; not printed by the CLI).

[`flat_scores`] merges `metrics` and `meta` into the one flat JSON object the CLI prints.

## Metric definitions

**OV-MER** (emotion-wheel metric, [`emotion_wheel_overlap`] for the per-grouping math). Twelve groupings, as in the
OV-MER paper and the authors' `ew_metric.py`:

- `m1_*` — M1: words grouped by their head word in `format.csv` (inflections / derivations merged);
- `m2_*` — M2: head words further grouped by their wheel word in `synonym.xlsx` (synonyms merged);
- `wheel{k}_level{l}_*` — M3, ten groupings: clusters of wheel *k* = 1..5 at level *l* = 1, 2;
- `m_avg_*` — M-avg: the mean of the twelve (F, precision, recall) triples above, the summary score of the OV-MER
  paper ("M-avg 为主指标" in the authors' code);
- `ew_level1_*`, `ew_level2_*` — the mean over the five wheels at one level. `ew_level1_f_score` is the OV-MERD
  number of MER-UniBench and of Nano-EmoX's Table 2 (the authors' `wheel_metric_calculation(level="level1")`);
- `f_score`, `precision`, `recall` — the same mean at the requested `level` (default level 1).

Every F here is 2PR/(P+R) of the sample-mean P and R of one grouping; averaged F's are means of those F's. A
grouping in which no sample has a mappable gold label is `None` and left out of the means.

**MER**: closed-set `accuracy`, `weighted_f1` and `macro_f1` (MER2023's metrics; the answer is matched to a label as
for MIR, so "The most likely label is happy." counts as "happy"), always; with the emotion wheel also `hit_rate` — per level-1 wheel, the share of samples whose gold cluster is among the predicted clusters
(gold unmappable there, e.g. "neutral", is skipped and counted in `n_skipped_wheel{k}`); mean over the five wheels.

**MSA**: gold valence 0 is dropped (`n_dropped_zero_valence`); gold positive = valence > 0; a prediction is
positive only when the first sentiment word it uses (positive / negative / neutral) is "positive" and is not negated
("not positive"). `weighted_f1` (main) and `accuracy` over the two classes.

**MSA, paper protocol** (`protocol="paper"`, [`score_msa_openset`]): the answer to the OV-MER question → emotion
labels (the extractor) → sentiment (the authors' LLM step with an LLM extractor, else [`LexiconSentiment`]); then as
above, positive vs. the rest on non-zero gold valence (evaluation-scoreonly.py:182-194). **MER, paper protocol**: the
same metrics as MER, of the OV answers; the emotion-wheel hit rate is the headline (MER-UniBench), so the wheel is
required.

**MIR**: `accuracy`, `weighted_f1`, `weighted_precision` (support-weighted, as the authors' scikit-learn calls) and
`macro_f1` (MIntRec's official metric, averaged over the gold label set). Labels are normalised before matching
(lower case, `_` → space, whitespace collapsed, surrounding punctuation and quotes removed); a prediction that is not
a label itself but contains exactly the words of a label ("The intent is complain.") is mapped to the first such
label in the text and counted in `n_pred_label_found_in_text`.

**ERG**: `emotion_accuracy` — the speaker emotion read from the chain of empathy ("the emotion of the speaker is
X") or, failing that, the first known emotion word of the answer, compared exactly with the gold label;
`coarse_hit_rate` — same coarse class (see [`modeling_nanoemox.evaluation.labels`]); `distinct_{1,2}` — per-response
Distinct-n, mean over responses (the paper's number), `corpus_distinct_{1,2}` — over the whole corpus;
`bleu` — sacrebleu corpus BLEU / 100; `rouge_l` — mean ROUGE-L F1 (rouge-score, Porter stemmer). Distinct / BLEU /
ROUGE-L use the reply after `</think>`.

**ERI**: `clue_overlap_1_10`, `label_overlap_1_10` (LLM judge, 1–10, see [`ERIJudge`]) and `overall_1_10`, their
mean; parse failures are counted and excluded, never scored 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from transformers.utils import logging

from nanoemox_processing.prompts_nanoemox import TASK_NAMES

from .backends import ChatBackend
from .emotion_wheel import GROUPINGS, LEVELS, WHEELS, EmotionWheel, load_emotion_wheel
from .extractors import (
    LabelExtractor,
    LexiconExtractor,
    LexiconSentiment,
    LLMLabelExtractor,
    LLMSentiment,
)
from .judge import ERIJudge
from .labels import COARSE_CLASS, COARSE_CLASSES
from .metrics import classification_scores, confusion_matrix, distinct_n, emotion_wheel_hit_rate, emotion_wheel_overlap
from .parsing import align_rows, parse_label_predictions, parse_label_references

logger = logging.get_logger(__name__)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _lexicon(wheel: EmotionWheel) -> LexiconExtractor:
    return wheel.derived("lexicon_extractor", LexiconExtractor)


def _resolve_extractor(extractor, wheel: EmotionWheel) -> LabelExtractor:
    if extractor is None or extractor == "lexicon":
        return _lexicon(wheel)
    if isinstance(extractor, LabelExtractor):
        return extractor
    if isinstance(extractor, ChatBackend):
        return LLMLabelExtractor(extractor)
    raise TypeError(
        f"extractor must be None, 'lexicon', a LabelExtractor or a ChatBackend, got {type(extractor).__name__}"
    )


def _require_wheel(emotion_wheel, task: str) -> EmotionWheel:
    if emotion_wheel is None:
        raise ValueError(
            f"Task {task!r} needs the emotion-wheel folder (format.csv, synonym.xlsx, wheel1..5.xlsx from the "
            "AffectGPT / MER-UniBench releases): pass emotion_wheel= / --emotion-wheel"
        )
    return load_emotion_wheel(emotion_wheel)


def _label_inputs(predictions, references, wheel: EmotionWheel, extractor) -> tuple[list, list, dict]:
    resolved = _resolve_extractor(extractor, wheel)
    gold = parse_label_references(references)
    pred, routes = parse_label_predictions(predictions, resolved, _lexicon(wheel))
    meta = {"extractor": resolved.identity, "emotion_wheel": str(wheel.folder)}
    meta.update({f"n_pred_{route}": count for route, count in routes.items()})
    meta["n_pred_empty"] = sum(1 for labels in pred if not labels)
    return gold, pred, meta


# ---------------------------------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------------------------------


def score_ovmer(predictions, references, *, emotion_wheel, level: str = "level1", extractor=None) -> dict:
    """OV-MER: the twelve emotion-wheel groupings, their level means and M-avg.

    `predictions` and `references` are the bare values, already aligned by id (see [`score`]).
    """
    if emotion_wheel == "none":
        return _score_ovmer_exact(predictions, references)
    wheel = _require_wheel(emotion_wheel, "ovmer")
    gold, pred, meta = _label_inputs(predictions, references, wheel, extractor)
    table = emotion_wheel_overlap(gold, pred, wheel)
    metrics: dict[str, float | None] = {}
    keys = ("f_score", "precision", "recall")
    for lev in LEVELS:
        for key in keys:
            metrics[f"ew_{lev}_{key}"] = _mean(table[f"{w}_{lev}"][key] for w in WHEELS)
    for key in keys:
        metrics[key] = metrics[f"ew_{level}_{key}"]
    for grouping in GROUPINGS:
        for key in keys:
            metrics[f"{grouping}_{key}"] = table[grouping][key]
    for key in keys:
        metrics[f"m_avg_{key}"] = _mean(table[g][key] for g in GROUPINGS)
    meta["level"] = level
    for w in WHEELS:
        meta[f"n_scored_{w}"] = table[f"{w}_{level}"]["n_scored"]
    return {"metrics": metrics, "meta": meta, "details": {"groupings": table}}


def _score_ovmer_exact(predictions, references) -> dict:
    """Set overlap of exact (lower-cased) emotion words, for runs without the emotion-wheel resources: comparable
    between models scored the same way, not with published OV-MER numbers."""
    gold = parse_label_references(references)
    pred, unparsed = [], 0
    for value in predictions:
        try:
            pred.append(parse_label_predictions([value], extractor=None)[0][0])
        except ValueError:  # free text: without the wheel's lexicon there is no extractor; it scores as empty
            pred.append([])
            unparsed += 1
    precision, recall = [], []
    for g, p in zip(gold, pred):
        g, p = {w.lower() for w in g}, {w.lower() for w in p}
        if not g:
            continue
        precision.append(len(g & p) / len(p) if p else 0.0)
        recall.append(len(g & p) / len(g))
    mean_p, mean_r = _mean(precision), _mean(recall)
    f = 2 * mean_p * mean_r / (mean_p + mean_r) if mean_p and mean_r else 0.0
    meta = {"emotion_wheel": "none (exact words)", "n_pred_free_text_unscored": unparsed}
    return {"metrics": {"exact_f_score": f, "exact_precision": mean_p, "exact_recall": mean_r}, "meta": meta,
            "details": {}}  # fmt: skip


def score_mer(
    predictions, references, *, emotion_wheel=None, level: str = "level1", extractor=None, labels=None
) -> dict:
    """MER: closed-set `accuracy` / `weighted_f1` / `macro_f1` (MER2023's metrics, always) and, with the emotion
    wheel, the hit rate over the five wheels (MER-UniBench's metric; level 1 unless asked otherwise)."""
    gold_labels = [r[0] if isinstance(r, (list, tuple)) and len(r) == 1 else r for r in references]
    closed = score_mir(predictions, gold_labels, labels=labels)
    metrics = {key: closed["metrics"][key] for key in ("accuracy", "weighted_f1", "macro_f1")}
    meta = {f"closed_set_{key}": value for key, value in closed["meta"].items()}
    details = {"confusion": closed["details"]["confusion"]}
    if emotion_wheel is None:
        meta["hit_rate"] = "not computed: no emotion-wheel folder given"
        return {"metrics": metrics, "meta": meta, "details": details}
    wheel = load_emotion_wheel(emotion_wheel)
    gold, pred, label_meta = _label_inputs(predictions, references, wheel, extractor)
    meta.update(label_meta)
    groupings = [f"{w}_{level}" for w in WHEELS]
    table = emotion_wheel_hit_rate(gold, pred, wheel, groupings)
    metrics["hit_rate"] = _mean(table[g]["hit_rate"] for g in groupings)
    for w in WHEELS:
        metrics[f"{w}_hit_rate"] = table[f"{w}_{level}"]["hit_rate"]
    meta["level"] = level
    meta["n_skipped"] = sum(1 for labels in gold if not any(wheel.map_words(labels, w, level) for w in WHEELS))
    for w in WHEELS:
        meta[f"n_skipped_{w}"] = table[f"{w}_{level}"]["n_skipped"]
    return {"metrics": metrics, "meta": meta, "details": {**details, "groupings": table}}


_SENTIMENT = re.compile(r"\b(positive|negative|neutral)\b")
_NEGATED_POSITIVE = re.compile(
    r"\b(?:not|isn't|wasn't|never|no longer)\s+(?:very\s+|really\s+|entirely\s+)?positive\b"
)


def says_positive(prediction) -> bool | None:
    """True / False when the first sentiment word is / is not "positive"; None when there is no sentiment word."""
    text = " ".join(map(str, prediction)) if isinstance(prediction, (list, tuple)) else str(prediction or "")
    text = text.lower()
    match = _SENTIMENT.search(text)
    if match is None:
        return None
    if match.group(1) != "positive":
        return False
    return _NEGATED_POSITIVE.search(text[: match.end()]) is None


def _valence(reference) -> float:
    if isinstance(reference, bool):
        raise TypeError(f"An MSA reference must be a valence number, got a bool: {reference!r}")
    if isinstance(reference, (int, float)):
        return float(reference)
    if isinstance(reference, str):
        named = {"positive": 1.0, "negative": -1.0, "neutral": 0.0}
        text = reference.strip().lower()
        if text in named:
            return named[text]
        try:
            return float(text)
        except ValueError:
            pass
    raise ValueError(f"An MSA reference must be a valence number (or positive/negative/neutral), got {reference!r}")


def score_msa(predictions, references) -> dict:
    """MSA: weighted F1 and accuracy of positive vs. non-positive on samples with non-zero gold valence."""
    valences = [_valence(r) for r in references]
    said = [says_positive(p) for p in predictions]
    keep = [i for i, v in enumerate(valences) if v != 0]
    y_true = ["positive" if valences[i] > 0 else "negative" for i in keep]
    y_pred = ["positive" if said[i] else "negative" for i in keep]
    meta = {
        "n_scored": len(keep),
        "n_dropped_zero_valence": len(valences) - len(keep),
        "n_pred_positive": sum(1 for i in keep if said[i]),
        "n_pred_without_sentiment": sum(1 for i in keep if said[i] is None),
        "normalization": "a prediction is positive only if its first sentiment word is an un-negated 'positive'",
    }
    if not keep:
        return {"metrics": {"weighted_f1": None, "accuracy": None}, "meta": meta, "details": {}}
    scores = classification_scores(y_true, y_pred)
    labels = ["negative", "positive"]
    return {
        "metrics": {"weighted_f1": scores["weighted_f1"], "accuracy": scores["accuracy"]},
        "meta": meta,
        "details": {"confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels).tolist()}},
    }


def score_msa_openset(predictions, references, *, emotion_wheel, extractor=None) -> dict:
    """MSA under the paper's protocol: OV answers → labels → sentiment → positive vs. the rest (non-zero valence)."""
    wheel = _require_wheel(emotion_wheel, "msa (protocol paper)")
    _, labels, meta = _label_inputs(predictions, [[]] * len(predictions), wheel, extractor)
    backend = extractor.backend if isinstance(extractor, LLMLabelExtractor) else extractor
    judge = (
        LLMSentiment(backend)
        if isinstance(backend, ChatBackend)
        else wheel.derived("lexicon_sentiment", LexiconSentiment)
    )
    sentiments = judge.sentiment(labels)
    valences = [_valence(r) for r in references]
    keep = [i for i, v in enumerate(valences) if v != 0]
    y_true = ["positive" if valences[i] > 0 else "negative" for i in keep]
    y_pred = ["positive" if sentiments[i] == "positive" else "negative" for i in keep]
    meta.update({
        "sentiment": judge.identity,
        "n_scored": len(keep),
        "n_dropped_zero_valence": len(valences) - len(keep),
        "n_pred_positive": sum(1 for i in keep if sentiments[i] == "positive"),
        "n_pred_neutral": sum(1 for i in keep if sentiments[i] == "neutral"),
    })  # fmt: skip
    if not keep:
        return {"metrics": {"weighted_f1": None, "accuracy": None}, "meta": meta, "details": {}}
    scores = classification_scores(y_true, y_pred)
    labels_ = ["negative", "positive"]
    return {
        "metrics": {"weighted_f1": scores["weighted_f1"], "accuracy": scores["accuracy"]},
        "meta": meta,
        "details": {"confusion": {"labels": labels_, "matrix": confusion_matrix(y_true, y_pred, labels_).tolist()}},
    }


_PUNCTUATION = " \t\n.,!?;:'\"`()[]{}"


def normalize_intent(label) -> str:
    """Lower case, `_` → space, whitespace collapsed, surrounding punctuation / quotes removed."""
    if isinstance(label, (list, tuple)):
        label = label[0] if len(label) == 1 else ", ".join(map(str, label))
    text = re.sub(r"\s+", " ", str(label if label is not None else "").replace("_", " ")).strip(_PUNCTUATION).lower()
    return text


def score_mir(predictions, references, *, labels: Sequence[str] | None = None) -> dict:
    """MIR: accuracy, weighted F1 / precision, macro F1 over normalised intent labels."""
    gold = [normalize_intent(r) for r in references]
    label_set = set(gold) | {normalize_intent(label) for label in labels or ()}
    # Longest label first so "ask for help" wins over a shorter label at the same position.
    patterns = [
        (label, re.compile(r"\b" + re.escape(label) + r"\b")) for label in sorted(label_set, key=len, reverse=True)
    ]
    pred, found_in_text, out_of_set = [], 0, 0
    for value in predictions:
        text = normalize_intent(value)
        if text not in label_set:
            hits = [(m.start(), -len(label), label) for label, rx in patterns if (m := rx.search(text))]
            if hits:
                text = min(hits)[2]
                found_in_text += 1
            else:
                out_of_set += 1
        pred.append(text)
    scores = classification_scores(gold, pred, macro_labels=sorted(label_set))
    ordered = sorted(label_set)
    matrix_labels = ordered + (["(other)"] if out_of_set else [])
    mapped_pred = [p if p in label_set else "(other)" for p in pred]
    return {
        "metrics": scores,
        "meta": {
            "n_labels": len(label_set),
            "n_pred_label_found_in_text": found_in_text,
            "n_pred_out_of_set": out_of_set,
            "normalization": "labels lower-cased, '_' -> ' ', whitespace collapsed, outer punctuation/quotes removed",
        },
        "details": {
            "confusion": {
                "labels": matrix_labels,
                "matrix": confusion_matrix(gold, mapped_pred, matrix_labels).tolist(),
            }
        },
    }


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
# Tried in order: "the emotion of the speaker is X" (the authors' targets), then "Speaker emotion: X" (our
# chain-of-empathy format, where X may itself be phrased the authors' way, which the first pattern catches).
_SPEAKER_EMOTION = (
    re.compile(r"emotion of the speaker is\s*:?\s*([a-z][a-z-]*)"),
    re.compile(r"speaker(?:'s)? emotion(?: is)?\s*:?\s*([a-z][a-z-]*)"),
)
_EMOTION_WORDS = sorted(COARSE_CLASS, key=len, reverse=True)
_EMOTION_WORD = re.compile(r"\b(" + "|".join(re.escape(w) for w in _EMOTION_WORDS) + r")\b")


def split_think(text: str) -> tuple[str, str]:
    """(chain of empathy, reply) of an ERG answer; the chain is "" when there is no `<think>` block."""
    text = text or ""
    if "</think>" in text.lower():
        index = text.lower().rindex("</think>")
        head, reply = text[:index], text[index + len("</think>") :]
        return re.sub(r"<think>", "", head, flags=re.IGNORECASE).strip(), reply.strip()
    return "", _THINK.sub("", text).strip()


def extract_speaker_emotion(text: str) -> str | None:
    """The speaker emotion stated in an ERG answer: the chain of empathy's "the emotion of the speaker is X", else
    a reply that is just an emotion word, else the first known emotion word anywhere; `None` when there is none."""
    think, reply = split_think(text)
    lowered = f"{think}\n{reply}".lower()
    for pattern in _SPEAKER_EMOTION:
        if match := pattern.search(lowered):
            return match.group(1).strip("-")
    bare = reply.strip(_PUNCTUATION).lower()
    if bare in COARSE_CLASS:
        return bare
    match = _EMOTION_WORD.search(lowered)
    return match.group(1) if match else None


def _erg_reference(reference) -> tuple[str, str | None]:
    if isinstance(reference, str):
        return reference.strip().lower(), None
    if isinstance(reference, dict):
        emotion = reference.get("emotion", reference.get("speaker_emotion"))
        response = reference.get("response", reference.get("reply"))
        if isinstance(emotion, str):
            return emotion.strip().lower(), response if isinstance(response, str) else None
    raise ValueError(
        "An ERG reference must be the gold emotion string or an object with 'emotion' (or 'speaker_emotion') and "
        f"optionally 'response' (or 'reply'); got {str(reference)[:120]!r}"
    )


def score_erg(predictions, references) -> dict:
    """ERG: speaker-emotion accuracy and coarse hit rate; Distinct-n, BLEU, ROUGE-L of the replies."""
    gold_emotions, gold_responses = zip(*(_erg_reference(r) for r in references))
    texts = [" ".join(map(str, p)) if isinstance(p, (list, tuple)) else str(p or "") for p in predictions]
    pred_emotions = [extract_speaker_emotion(t) for t in texts]
    replies = [split_think(t)[1] for t in texts]

    gold_coarse = [COARSE_CLASS.get(g) for g in gold_emotions]
    pred_coarse = [COARSE_CLASS.get(p) if p else None for p in pred_emotions]
    hit_pairs = [(g, p) for g, p in zip(gold_coarse, pred_coarse) if g is not None]
    unmapped_gold = sorted({g for g, c in zip(gold_emotions, gold_coarse) if c is None})
    if unmapped_gold:
        logger.warning("Gold emotions without a coarse class (skipped in coarse_hit_rate): %s", unmapped_gold)
    metrics: dict[str, float | None] = {
        "emotion_accuracy": float(np.mean([p == g for p, g in zip(pred_emotions, gold_emotions)])),
        "coarse_hit_rate": float(np.mean([g == p for g, p in hit_pairs])) if hit_pairs else None,
    }
    meta: dict = {
        "n_pred_emotion_missing": sum(1 for p in pred_emotions if p is None),
        "n_pred_emotion_unmapped": sum(1 for p, c in zip(pred_emotions, pred_coarse) if p is not None and c is None),
        "n_gold_emotion_unmapped": len(gold_emotions) - len(hit_pairs),
    }
    distinct = {n: distinct_n(replies, n) for n in (1, 2)}
    for n in (1, 2):
        metrics[f"distinct_{n}"] = distinct[n]["per_response"]
        metrics[f"corpus_distinct_{n}"] = distinct[n]["corpus"]
    meta["n_empty_replies"] = sum(1 for r in replies if not r.strip())

    with_reference = [i for i, r in enumerate(gold_responses) if r is not None]
    metrics["bleu"] = metrics["rouge_l"] = None
    meta["n_reference_replies"] = len(with_reference)
    if with_reference:
        overlap = text_overlap([replies[i] for i in with_reference], [gold_responses[i] for i in with_reference])
        metrics.update(overlap["metrics"])
        meta.update(overlap["meta"])

    labels = [*COARSE_CLASSES, "(none)"]
    matrix = confusion_matrix(
        [g or "(none)" for g in gold_coarse], [p or "(none)" for p in pred_coarse], labels
    ).tolist()
    return {"metrics": metrics, "meta": meta, "details": {"confusion": {"labels": labels, "matrix": matrix}}}


def text_overlap(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus BLEU (sacrebleu, as a fraction) and mean ROUGE-L F1 (rouge-score, Porter stemmer)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    bleu = sacrebleu.metrics.BLEU()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(r, h)["rougeL"].fmeasure for r, h in zip(references, hypotheses)]
    return {
        "metrics": {
            "bleu": bleu.corpus_score(list(hypotheses), [list(references)]).score / 100.0,
            "rouge_l": float(np.mean(rouge)),
        },  # fmt: skip
        "meta": {
            "bleu_signature": str(bleu.get_signature()),
            "rouge_l_variant": "rouge-score rougeL F1, Porter stemmer, mean over texts",
        },
    }


def _rationale(reference) -> str:
    if isinstance(reference, str):
        return reference
    if isinstance(reference, dict):
        for key in ("rationale", "reason", "reasons"):
            if isinstance(reference.get(key), str):
                return reference[key]
    raise ValueError(
        f"An ERI reference must be the gold rationale string or an object with 'rationale'; got {str(reference)[:120]!r}"
    )


def score_eri(predictions, references, *, judge) -> dict:
    """ERI: LLM-judged clue overlap and label overlap (1–10). With `judge="none"` only the lexical overlap with the
    gold rationale (BLEU, ROUGE-L) is computed — no substitute for the judge, but an offline signal."""
    if judge is None:
        raise ValueError(
            "Task 'eri' needs an LLM judge: pass judge= (an ERIJudge or ChatBackend) / --judge, or judge='none' for "
            "lexical overlap only"
        )
    if judge == "none":
        gold = [_rationale(r) for r in references]
        pred = [" ".join(map(str, p)) if isinstance(p, (list, tuple)) else str(p or "") for p in predictions]
        overlap = text_overlap(pred, gold)
        return {"metrics": overlap["metrics"], "meta": {"judge": "none (lexical overlap only)", **overlap["meta"]},
                "details": {}}  # fmt: skip
    if isinstance(judge, ChatBackend):
        judge = ERIJudge(judge)
    if not isinstance(judge, ERIJudge):
        raise TypeError(f"judge must be an ERIJudge or a ChatBackend, got {type(judge).__name__}")
    gold = [_rationale(r) for r in references]
    pred = [" ".join(map(str, p)) if isinstance(p, (list, tuple)) else str(p or "") for p in predictions]
    result = judge.score(gold, pred)
    clue, label = result["clue"], result["label"]
    clue_mean, label_mean = _mean(clue), _mean(label)
    metrics = {
        "clue_overlap_1_10": clue_mean,
        "label_overlap_1_10": label_mean,
        "overall_1_10": _mean([clue_mean, label_mean]) if None not in (clue_mean, label_mean) else None,
    }
    failures_clue = sum(1 for s in clue if s is None)
    failures_label = sum(1 for s in label if s is None)
    if failures_clue or failures_label:
        logger.warning("Judge replies without a readable score: clue %d, label %d", failures_clue, failures_label)
    meta = {
        "judge": judge.identity,
        "judge_prompt_version": judge.prompt_version,
        "n_clue_scored": len(clue) - failures_clue,
        "n_clue_parse_failures": failures_clue,
        "n_label_scored": len(label) - failures_label,
        "n_label_parse_failures": failures_label,
    }
    return {"metrics": metrics, "meta": meta, "details": {"judge": result}}


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------


def score(
    task: str,
    predictions: Sequence[dict],
    references: Sequence[dict],
    *,
    emotion_wheel=None,
    level: str = "level1",
    extractor=None,
    judge=None,
    labels: Sequence[str] | None = None,
    protocol: str = "direct",
) -> dict:
    """Score prediction rows against reference rows for one task.

    Args:
        task: one of `mer`, `ovmer`, `msa`, `mir`, `eri`, `erg`.
        predictions: rows `{"id": ..., "prediction": ...}`.
        references: rows `{"id": ..., "reference": ...}`; every id must occur exactly once in both.
        emotion_wheel: folder of the emotion-wheel resources (or a loaded [`EmotionWheel`]); needed by mer / ovmer.
        level: `"level1"` (default, the benchmark's) or `"level2"` — the headline level for ovmer / mer.
        extractor: free-text → labels for mer / ovmer: `None` / `"lexicon"` (offline default), a
            [`LabelExtractor`], or a [`ChatBackend`] (wrapped in [`LLMLabelExtractor`]).
        judge: for eri, an [`ERIJudge`] or a [`ChatBackend`].
        labels: for mir, the full label set (optional; macro F1 then also counts labels absent from the gold).
        protocol: msa / mer: `"direct"` (answers to the task's own prompt) or `"paper"` (answers to the OV-MER
            question, scored as MER-UniBench: labels extracted, then MSA by their sentiment, MER by the wheel hit
            rate; needs the emotion wheel).

    Returns:
        `{"task", "metrics", "meta", "details"}` — see the module docstring; [`flat_scores`] flattens it.
    """
    if task not in TASK_NAMES:
        raise ValueError(f"Unknown task {task!r}; expected one of {list(TASK_NAMES)}")
    if level not in LEVELS:
        raise ValueError(f"Unknown level {level!r}; expected one of {list(LEVELS)}")
    if protocol not in ("direct", "paper"):
        raise ValueError(f"protocol must be 'direct' or 'paper', got {protocol!r}")
    if protocol == "paper" and task == "mer" and emotion_wheel is None:
        raise ValueError(
            "The paper's protocol scores MER by the emotion-wheel hit rate (MER-UniBench): pass emotion_wheel= / "
            "--emotion-wheel, or use protocol 'direct'."
        )
    ids, preds, refs = align_rows(predictions, references)
    if not ids:
        raise ValueError("There are no samples to score (both files are empty)")
    if task == "ovmer":
        result = score_ovmer(preds, refs, emotion_wheel=emotion_wheel, level=level, extractor=extractor)
    elif task == "mer":
        result = score_mer(preds, refs, emotion_wheel=emotion_wheel, level=level, extractor=extractor, labels=labels)
    elif task == "msa" and protocol == "paper":
        result = score_msa_openset(preds, refs, emotion_wheel=emotion_wheel, extractor=extractor)
    elif task == "msa":
        result = score_msa(preds, refs)
    elif task == "mir":
        result = score_mir(preds, refs, labels=labels)
    elif task == "erg":
        result = score_erg(preds, refs)
    else:
        result = score_eri(preds, refs, judge=judge)
    meta = {"task": task, "n_samples": len(ids), **result["meta"]}
    if task in ("msa", "mer"):
        meta["protocol"] = protocol
    details = result["details"]
    if task == "eri":
        details = {"ids": ids, **details}  # per-sample judge replies are only useful with their ids
    return {"task": task, "metrics": result["metrics"], "meta": meta, "details": details}


def flat_scores(result: dict) -> dict:
    """One flat dict: the metrics, then the metadata scalars (the object the CLI prints)."""
    flat = dict(result["metrics"])
    for key, value in result["meta"].items():
        if key in flat:
            raise ValueError(f"Metadata key {key!r} collides with a metric name")
        flat[key] = value
    return flat
