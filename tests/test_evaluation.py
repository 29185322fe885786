# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Metric tests: emotion wheel (DESIGN §5 fixture), OV-MER, MER, MSA, MIR (real MIntRec files), ERG, id checks."""

import json
import random
from pathlib import Path

import pytest

from modeling_nanoemox.evaluation import (
    COARSE_CLASS,
    COARSE_CLASSES,
    GROUPINGS,
    WHEELS,
    flat_scores,
    load_emotion_wheel,
    score,
    split_label_string,
)
from modeling_nanoemox.evaluation.metrics import classification_scores, distinct_n
from modeling_nanoemox.evaluation.parsing import looks_like_label_list
from nanoemox_processing.prompts_nanoemox import AVAMERG_LABELS

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"
WHEEL_DIR = SHARED_DATA / "emotion_wheel"
MINTREC_DIR = SHARED_DATA / "mintrec"


@pytest.fixture(scope="module")
def wheel_dir():
    if not (WHEEL_DIR / "format.csv").is_file():
        pytest.skip(f"emotion-wheel resources not found at {WHEEL_DIR} (third-party data, only in the workplace)")
    return WHEEL_DIR


def rows(values, key):
    return [{"id": f"s{i + 1}", key: value} for i, value in enumerate(values)]


# The DESIGN §5 fixture, computed with the published algorithm.
FIXTURE_GOLD = ["regret, guilt, sadness", "[happy, grateful, shy]", "worried"]
FIXTURE_PRED = ["[anxiety, nervousness, self-blame, regret, sorrow]", "[joyful, thankful]", "[]"]


# ---------------------------------------------------------------------------------------------------------------------
# Emotion wheel
# ---------------------------------------------------------------------------------------------------------------------


def test_design_fixture_level1_and_level2(wheel_dir):
    result = flat_scores(
        score("ovmer", rows(FIXTURE_PRED, "prediction"), rows(FIXTURE_GOLD, "reference"), emotion_wheel=wheel_dir)
    )
    assert result["ew_level1_f_score"] == pytest.approx(0.509784, abs=5e-7)
    assert result["ew_level1_precision"] == pytest.approx(0.444444, abs=5e-7)
    assert result["ew_level1_recall"] == pytest.approx(0.600000, abs=5e-7)
    assert result["ew_level2_f_score"] == pytest.approx(0.331313, abs=5e-7)
    assert result["ew_level2_precision"] == pytest.approx(0.333333, abs=5e-7)
    assert result["ew_level2_recall"] == pytest.approx(0.333333, abs=5e-7)
    # The headline follows --level; the average is of per-wheel F's, not F of the averaged P and R.
    assert result["f_score"] == result["ew_level1_f_score"]
    assert result["ew_level1_f_score"] != pytest.approx(2 * 0.444444 * 0.6 / (0.444444 + 0.6), abs=1e-4)
    level2 = flat_scores(
        score(
            "ovmer",
            rows(FIXTURE_PRED, "prediction"),
            rows(FIXTURE_GOLD, "reference"),
            emotion_wheel=wheel_dir,
            level="level2",
        )
    )
    assert level2["f_score"] == pytest.approx(0.331313, abs=5e-7)


def test_full_ovmer_set_and_m_avg(wheel_dir):
    result = flat_scores(
        score("ovmer", rows(FIXTURE_PRED, "prediction"), rows(FIXTURE_GOLD, "reference"), emotion_wheel=wheel_dir)
    )
    for grouping in GROUPINGS:
        for key in ("f_score", "precision", "recall"):
            assert 0.0 <= result[f"{grouping}_{key}"] <= 1.0
    # M-avg is the mean of the twelve groupings (M1, M2, ten wheel × level).
    expected = sum(result[f"{g}_f_score"] for g in GROUPINGS) / 12
    assert result["m_avg_f_score"] == pytest.approx(expected)
    assert result["m1_precision"] == pytest.approx(1 / 12)  # only "regret" survives exact head-word grouping
    assert result["n_pred_label_string"] == 3 and result["n_pred_empty"] == 1


@pytest.mark.parametrize("level, expected", [("level1", ["scared", "fearful", "scared", "fear", "scared"])])
def test_word_checks(wheel_dir, level, expected):
    wheel = load_emotion_wheel(wheel_dir)
    assert [wheel.map_word("worried", w, level) for w in WHEELS] == expected
    assert [wheel.map_word(" Worried ", w, level) for w in WHEELS] == expected  # lower-cased and stripped
    for lev in ("level1", "level2"):
        assert [wheel.map_word("neutral", w, lev) for w in WHEELS] == [None] * 5


def test_maps_are_built_once_per_folder(wheel_dir):
    first = load_emotion_wheel(wheel_dir)
    assert load_emotion_wheel(str(wheel_dir) + "/.") is first
    assert first.cluster_map("wheel3", "level2") is first.cluster_map("wheel3", "level2")
    assert len(first.wheel_words()) == 253
    assert {"worried", "fed up", "happy"} <= first.vocabulary()


def test_blank_wheel_cells_carry_forward(wheel_dir):
    tree = load_emotion_wheel(wheel_dir).wheels["wheel2"]
    # wheel2.xlsx starts: Fearful / Scared / Helpless, then blank / blank / Frightened, then blank / Anxious / ...
    assert tree["fearful"]["scared"][:2] == ["helpless", "frightened"]
    assert "overwhelmed" in tree["fearful"]["anxious"]


def test_missing_wheel_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="lacks .*format.csv"):
        load_emotion_wheel(tmp_path)


def test_empty_prediction_scores_zero(wheel_dir):
    gold = rows(["happy", "sad", "angry"], "reference")
    result = flat_scores(score("ovmer", rows(["[]", "", []], "prediction"), gold, emotion_wheel=wheel_dir))
    assert result["f_score"] == 0.0 and result["precision"] == 0.0 and result["recall"] == 0.0
    assert result["n_pred_empty"] == 3 and result["n_scored_wheel1"] == 3


def test_unmappable_words_are_dropped(wheel_dir):
    gold = rows(["happy", "neutral, xyzzy", "sad"], "reference")
    pred = rows([["happy", "xyzzy", "self-blame"], ["happy"], "[sad, qwerty]"], "prediction")
    result = flat_scores(score("ovmer", pred, gold, emotion_wheel=wheel_dir))
    # Sample 2's gold maps to nothing: skipped. Unknown predicted words do not lower precision.
    assert result["n_scored_wheel1"] == 2
    assert result["precision"] == result["recall"] == result["f_score"] == 1.0
    all_unmappable = score(
        "ovmer", rows([["happy"]], "prediction"), rows(["neutral"], "reference"), emotion_wheel=wheel_dir
    )
    assert all_unmappable["metrics"]["f_score"] is None and all_unmappable["meta"]["n_scored_wheel1"] == 0


def test_free_text_predictions_use_templates_and_extractor(wheel_dir):
    gold = rows(["worried, sad", "happy", "angry"], "reference")
    pred = rows(
        [
            "The character's emotional state is worried, and slightly sad.",
            "The most likely label is happy.",
            "He shouts at his friend and he is clearly furious about the delay.",
        ],
        "prediction",
    )
    result = score("ovmer", pred, gold, emotion_wheel=wheel_dir)
    assert result["meta"]["n_pred_template"] == 2 and result["meta"]["n_pred_extractor"] == 1
    assert result["meta"]["extractor"].startswith("lexicon-v1")
    assert result["metrics"]["recall"] == 1.0


def test_label_list_detection():
    assert looks_like_label_list("happy") and looks_like_label_list("happy.") and looks_like_label_list("[a, b c d e]")
    assert looks_like_label_list("worried, sad, self-blame")
    assert not looks_like_label_list("The most likely label is happy.")
    assert not looks_like_label_list("He looks happy today")
    assert split_label_string("[ 'Happy', \"sad\" , ]") == ["Happy", "sad"]
    assert split_label_string("") == [] and split_label_string("[]") == []


def test_scoring_is_consistent_on_random_samples(wheel_dir):
    """Precision/recall of every grouping equal a direct set computation with the per-grouping maps."""
    wheel = load_emotion_wheel(wheel_dir)
    vocabulary = sorted(wheel.vocabulary())[:3000] + ["neutral", "xyzzy"]
    rng = random.Random(0)
    gold = [rng.sample(vocabulary, rng.randint(0, 4)) for _ in range(200)]
    pred = [rng.sample(vocabulary, rng.randint(0, 5)) for _ in range(200)]
    result = flat_scores(score("ovmer", rows(pred, "prediction"), rows(gold, "reference"), emotion_wheel=wheel))
    for grouping in ("m1", "m2", "wheel4_level2"):
        mapping = wheel.grouping_map(grouping)
        precision, recall = [], []
        for g, p in zip(gold, pred):
            gs, ps = {mapping[w] for w in g if w in mapping}, {mapping[w] for w in p if w in mapping}
            if gs:
                precision.append(len(gs & ps) / len(ps) if ps else 0.0)
                recall.append(len(gs & ps) / len(gs) if ps else 0.0)
        assert result[f"{grouping}_precision"] == pytest.approx(sum(precision) / len(precision))
        assert result[f"{grouping}_recall"] == pytest.approx(sum(recall) / len(recall))


# ---------------------------------------------------------------------------------------------------------------------
# MER
# ---------------------------------------------------------------------------------------------------------------------


def test_mer_hit_rate_skips_neutral(wheel_dir):
    gold = rows(["happy", "worried", "neutral", "angry"], "reference")
    pred = rows(["[joyful]", "The most likely label is anxious.", "neutral", "sad"], "prediction")
    result = flat_scores(score("mer", pred, gold, emotion_wheel=wheel_dir))
    assert result["n_skipped"] == 1
    assert all(result[f"n_skipped_{w}"] == 1 for w in WHEELS)
    # joyful ~ happy and anxious ~ worried on every level-1 wheel; sad is not angry.
    assert result["hit_rate"] == pytest.approx(2 / 3)
    assert result["wheel1_hit_rate"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------------------------------
# Ids
# ---------------------------------------------------------------------------------------------------------------------


def test_missing_ids_are_listed_with_counts():
    references = [{"id": i, "reference": "Complain"} for i in range(20)]
    predictions = [{"id": str(i), "prediction": "Complain"} for i in range(8)]  # ints and strings compare equal
    with pytest.raises(ValueError) as info:
        score("mir", predictions, references)
    message = str(info.value)
    assert "references without a prediction: 12 (" in message
    assert "'8', '9', '10', '11', '12', '13', '14', '15', '16', '17', ...)" in message
    assert "'18'" not in message


def test_duplicate_and_unexpected_ids():
    references = [{"id": "a", "reference": "Thank"}, {"id": "b", "reference": "Greet"}]
    predictions = [
        {"id": "a", "prediction": "Thank"},
        {"id": "a", "prediction": "Thank"},
        {"id": "b", "prediction": "Greet"},
        {"id": "zz", "prediction": "Greet"},
    ]
    with pytest.raises(ValueError, match=r"duplicate ids in predictions: 1 \('a'\).*without a reference: 1 \('zz'\)"):
        score("mir", predictions, references)
    with pytest.raises(ValueError, match="has no 'prediction' key"):
        score("mir", [{"id": "a", "text": "x"}], [{"id": "a", "reference": "x"}])


# ---------------------------------------------------------------------------------------------------------------------
# MSA
# ---------------------------------------------------------------------------------------------------------------------


def test_msa_drops_zero_valence_and_only_positive_counts():
    references = rows([0.0, 1.2, -0.8, 0, 2.0, -1.4, "0.6"], "reference")
    predictions = rows(
        ["positive", "Positive.", "neutral", "negative", "The sentiment is not positive", "positive", "neutral"],
        "prediction",
    )
    result = flat_scores(score("msa", predictions, references))
    assert result["n_dropped_zero_valence"] == 2 and result["n_scored"] == 5
    # Kept: gold  +  -  +  -  +  ; pred  +  -  -  +  -   ("neutral" and "not positive" are not positive).
    assert result["accuracy"] == pytest.approx(2 / 5)
    # positive: P=1/2 R=1/3 F=0.4 (support 3); negative: P=1/3 R=1/2 F=0.4 (support 2).
    assert result["weighted_f1"] == pytest.approx(0.4)
    assert result["n_pred_positive"] == 2


def test_msa_rejects_non_numeric_references():
    with pytest.raises(ValueError, match="valence number"):
        score("msa", rows(["positive"], "prediction"), rows(["great"], "reference"))


# ---------------------------------------------------------------------------------------------------------------------
# MIR
# ---------------------------------------------------------------------------------------------------------------------


def load_mintrec(name):
    path = MINTREC_DIR / name
    if not path.is_file():
        pytest.skip(f"MIntRec test annotations not found at {path} (third-party data, only in the workplace)")
    items = json.loads(path.read_text(encoding="utf-8"))
    ids = [Path(item["videos"][0]).stem for item in items]
    return ids, [item["messages"][1]["content"] for item in items]


@pytest.mark.parametrize("name, n_labels", [("MIntRec_test.json", 20), ("MIntRec2_test.json", 30)])
def test_mir_on_real_mintrec(name, n_labels):
    ids, gold = load_mintrec(name)
    references = [{"id": i, "reference": g} for i, g in zip(ids, gold)]
    perfect = flat_scores(score("mir", [{"id": i, "prediction": g} for i, g in zip(ids, gold)], references))
    for key in ("accuracy", "weighted_f1", "weighted_precision", "macro_f1"):
        assert perfect[key] == 1.0
    assert perfect["n_labels"] == n_labels and "lower-cased" in perfect["normalization"]

    # Case / whitespace / underscores do not matter.
    noisy = [f"  {g.upper().replace(' ', '_')}. " for g in gold]
    assert (
        flat_scores(score("mir", [{"id": i, "prediction": p} for i, p in zip(ids, noisy)], references))["accuracy"]
        == 1.0
    )

    shuffled = gold[:]
    random.Random(0).shuffle(shuffled)
    worse = flat_scores(score("mir", [{"id": i, "prediction": p} for i, p in zip(ids, shuffled)], references))
    for key in ("accuracy", "weighted_f1", "weighted_precision", "macro_f1"):
        assert 0.0 <= worse[key] < 0.5


def test_mir_label_found_in_free_text_and_out_of_set():
    references = rows(["Ask for help", "Complain", "Thank"], "reference")
    predictions = rows(["The intent is: ask for help.", "I think they complain", "banana"], "prediction")
    result = flat_scores(score("mir", predictions, references))
    assert result["n_pred_label_found_in_text"] == 2 and result["n_pred_out_of_set"] == 1
    assert result["accuracy"] == pytest.approx(2 / 3)
    # Macro F1 over the 3 gold labels: 1, 1, 0 — the out-of-set prediction adds no class.
    assert result["macro_f1"] == pytest.approx(2 / 3)


def test_classification_scores_match_hand_computation():
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "x"]
    scores = classification_scores(y_true, y_pred)
    # a: P=1 R=2/3 F=.8; b: P=1/2 R=1/2 F=.5; c: P=0 R=0 F=0; x: support 0.
    assert scores["accuracy"] == pytest.approx(3 / 6)
    assert scores["weighted_precision"] == pytest.approx((3 * 1 + 2 * 0.5 + 0) / 6)
    assert scores["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 0) / 6)
    assert scores["macro_f1"] == pytest.approx((0.8 + 0.5 + 0) / 3)


# ---------------------------------------------------------------------------------------------------------------------
# ERG
# ---------------------------------------------------------------------------------------------------------------------


def erg_answer(emotion, reply="It sounds hard, I am here for you."):
    return (
        "<think>Firstly, the event scenario of this conversation is: a hard week\n"
        f"Secondly, the emotion of the speaker is {emotion}\n"
        "Thirdly, the emotion cause is work\nFourthly, the goal to response is to comfort</think>\n" + reply
    )


def test_every_avamerg_label_has_a_coarse_class():
    assert len(AVAMERG_LABELS) == len(set(AVAMERG_LABELS)) == 25
    for label in AVAMERG_LABELS:
        assert COARSE_CLASS[label] in COARSE_CLASSES
    # The labels the authors' scorer raises KeyError on, with our documented classes.
    assert COARSE_CLASS["conflicted"] == COARSE_CLASS["overwhelm"] == COARSE_CLASS["weary"] == "sad"
    assert COARSE_CLASS["confused"] == COARSE_CLASS["confusion"] == "sad"
    assert COARSE_CLASS["helpless"] == "fear" and COARSE_CLASS["embarrassed"] == "disgusted"


def test_erg_hit_rate_over_all_25_labels():
    references = [{"id": lab, "reference": {"emotion": lab, "response": "It sounds hard."}} for lab in AVAMERG_LABELS]
    exact = [{"id": lab, "prediction": erg_answer(lab)} for lab in AVAMERG_LABELS]
    result = flat_scores(score("erg", exact, references))
    assert result["emotion_accuracy"] == 1.0 and result["coarse_hit_rate"] == 1.0
    assert result["n_gold_emotion_unmapped"] == 0

    # Same coarse class, different word: a hit but not accurate. An unknown word: a counted miss, no KeyError.
    swapped = {"worry": "worried", "helpless": "afraid", "proud": "joyful", "weary": "blorft"}
    predictions = [{"id": lab, "prediction": erg_answer(swapped.get(lab, lab))} for lab in AVAMERG_LABELS]
    result = flat_scores(score("erg", predictions, references))
    assert result["emotion_accuracy"] == pytest.approx(21 / 25)
    assert result["coarse_hit_rate"] == pytest.approx(24 / 25)
    assert result["n_pred_emotion_unmapped"] == 1


def test_erg_generation_metrics():
    references = rows(
        [
            {"emotion": "sad", "response": "That sounds really tough."},
            {"speaker_emotion": "proud", "reply": "You must be proud of yourself!"},
        ],
        "reference",
    )
    predictions = rows([erg_answer("sad", "That sounds really tough."), "proud"], "prediction")
    result = flat_scores(score("erg", predictions, references))
    assert result["emotion_accuracy"] == 1.0
    assert result["distinct_1"] == 1.0  # "that sounds really tough." and "proud": all unigrams unique per reply
    assert result["corpus_distinct_1"] == 1.0
    assert 0.0 < result["bleu"] < 1.0 and 0.0 < result["rouge_l"] < 1.0
    identical = flat_scores(
        score("erg", rows([erg_answer("sad", "That sounds really tough.")], "prediction"), references[:1])
    )
    assert identical["bleu"] == pytest.approx(1.0) and identical["rouge_l"] == pytest.approx(1.0)
    assert "BLEU" in identical["bleu_signature"] or "nrefs" in identical["bleu_signature"]


def test_distinct_n_per_response_and_corpus():
    responses = ["a a b", "a b", ""]
    one = distinct_n(responses, 1)
    assert one["per_response"] == pytest.approx((2 / 3 + 1) / 2)  # the empty reply has no n-gram: skipped
    assert one["corpus"] == pytest.approx(2 / 5)
    two = distinct_n(responses, 2)
    assert two["per_response"] == pytest.approx(1.0) and two["corpus"] == pytest.approx(2 / 3)


def test_mer_closed_set_accuracy_needs_no_wheel():
    from modeling_nanoemox.evaluation import score

    predictions = [
        {"id": "a", "prediction": "The most likely label is happy."},
        {"id": "b", "prediction": "sad"},
        {"id": "c", "prediction": "The most likely label is angry."},
        {"id": "d", "prediction": "I cannot tell."},
    ]
    references = [{"id": i, "reference": r} for i, r in zip("abcd", ["happy", "sad", "worried", "neutral"])]
    result = score("mer", predictions, references)
    assert result["metrics"]["accuracy"] == pytest.approx(0.5)
    assert "hit_rate" not in result["metrics"]
    assert result["meta"]["closed_set_n_pred_out_of_set"] == 2  # "angry" is not a gold label here, nor "I cannot tell"


def test_erg_reads_the_speaker_emotion_of_our_chain_of_empathy():
    from modeling_nanoemox.evaluation.scoring import extract_speaker_emotion

    answer = "<think>1. Event scenario: lost keys. 2. Speaker emotion: frustrated. 3. Emotion cause: x. 4. Goal: y.</think> Oh no."
    assert extract_speaker_emotion(answer) == "frustrated"
    authors_phrase = "<think>2. Speaker emotion: The emotion of the speaker is sad.</think> I'm sorry."
    assert extract_speaker_emotion(authors_phrase) == "sad"


def test_offline_fallbacks_for_ovmer_and_eri():
    from modeling_nanoemox.evaluation import score

    ovmer = score(
        "ovmer",
        [{"id": 1, "prediction": "The character's emotional state is happy, excited."},
         {"id": 2, "prediction": "I think she might be upset about it"}],
        [{"id": 1, "reference": ["happy", "joyful"]}, {"id": 2, "reference": "sad"}],
        emotion_wheel="none",
    )  # fmt: skip
    assert ovmer["metrics"]["exact_precision"] == pytest.approx(0.25)
    assert ovmer["metrics"]["exact_recall"] == pytest.approx(0.25)
    assert ovmer["meta"]["n_pred_free_text_unscored"] == 1
    eri = score("eri", [{"id": 1, "prediction": "she smiles, happy"}], [{"id": 1, "reference": "she smiles, happy"}],
                judge="none")  # fmt: skip
    assert eri["metrics"]["rouge_l"] == pytest.approx(1.0) and "lexical" in eri["meta"]["judge"]
