# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Corpus adapters: the real MIntRec / MIntRec2.0 / EMER files, and small files in each other corpus's format."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from modeling_nanoemox.data import ManifestError, Sample, load_manifest, write_manifest
from modeling_nanoemox.data.adapters import (
    SEVEN_LABELS,
    parse_label_list,
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
from modeling_nanoemox.data.chain_of_empathy import parse_chain_of_empathy
from nanoemox_processing.prompts_nanoemox import AVAMERG_LABELS, CREMA_D_LABELS, MINTREC2_INTENTS, MINTREC_INTENTS

# The released MIntRec annotations capitalise the intents ("Ask for help"); the label sets are lower case.
MINTREC_LABELS = tuple(intent.capitalize() for intent in MINTREC_INTENTS)
MINTREC2_LABELS = tuple(intent.capitalize() for intent in MINTREC2_INTENTS)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MINTREC_DIR = SHARED_DATA / "mintrec"
EMER_GT = SHARED_DATA / "emer" / "gt-eng.csv"
REPO = Path(__file__).resolve().parents[1]

needs_mintrec = pytest.mark.skipif(
    not MINTREC_DIR.is_dir(), reason=f"MIntRec test files not found at {MINTREC_DIR} (outside this workplace)"
)
needs_emer = pytest.mark.skipif(not EMER_GT.is_file(), reason=f"EMER gt-eng.csv not found at {EMER_GT}")

MINTREC_CASES = [
    pytest.param("MIntRec_test.json", 1, 445, MINTREC_INTENTS, MINTREC_LABELS, id="mintrec"),
    pytest.param("MIntRec2_test.json", 2, 1044, MINTREC2_INTENTS, MINTREC2_LABELS, id="mintrec2"),
]


def _recipe(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ---- MIntRec / MIntRec2.0 (real test files) ---------------------------------------------------------------------


@needs_mintrec
@pytest.mark.parametrize("file_name, version, count, intents, released", MINTREC_CASES)
def test_mintrec_real_files(file_name, version, count, intents, released):
    path = MINTREC_DIR / file_name
    rows = json.loads(path.read_text(encoding="utf-8"))
    samples = read_mintrec(path, version=version)

    assert len(samples) == len(rows) == count
    assert samples.skipped == {} and samples.untargeted == []
    stems = [Path(row["videos"][0]).stem for row in rows]
    assert [s.id for s in samples] == stems  # ids are the clip file stems, in file order
    assert len(set(stems)) == count
    for sample, row in zip(samples, rows):
        assert sample.task == "mir" and sample.dataset == ("MIntRec" if version == 1 else "MIntRec2")
        assert sample.candidates == list(intents)
        assert sample.target in intents  # spelled as in the candidate list the prompt shows
        assert sample.reference == row["messages"][1]["content"] in released  # the gold as released
        assert sample.target == sample.reference.lower()
        assert sample.text == row["messages"][0]["content"].strip()
        assert sample.video == f"video/{sample.id}.mp4" and sample.audio is None
    assert {s.reference for s in samples} <= set(released)
    if version == 2:  # the ten MIntRec2.0-only intents do occur
        assert {s.target for s in samples} - set(MINTREC_INTENTS)


@needs_mintrec
@pytest.mark.parametrize("file_name, version, count, intents, released", MINTREC_CASES)
def test_mintrec_round_trip_reports_every_missing_clip(tmp_path, file_name, version, count, intents, released):
    samples = read_mintrec(MINTREC_DIR / file_name, version=version)
    manifest = write_manifest(samples, tmp_path / "manifest.jsonl")
    media_root = tmp_path / "media"  # empty: no clip exists

    loaded, report = load_manifest(manifest, media_root=media_root, on_missing="skip")
    assert loaded == []
    assert report.skipped == count
    assert list(report.missing_media) == [s.id for s in samples]
    first = samples[0]
    assert report.missing_media[first.id] == [str(media_root / "video" / f"{first.id}.mp4")]

    with pytest.raises(ManifestError, match=rf"{count} samples name media files that do not exist") as error:
        load_manifest(manifest, media_root=media_root, on_missing="error")
    assert all(sample.id in str(error.value) for sample in samples[:10])

    # With three clips present, exactly those three load, with paths resolved under the media root.
    for sample in samples[:3]:
        _touch(media_root / sample.video)
    loaded, report = load_manifest(manifest, media_root=media_root, on_missing="skip")
    assert [s.id for s in loaded] == [s.id for s in samples[:3]] and report.skipped == count - 3
    for original, back in zip(samples[:3], loaded):
        assert back.video == str(media_root / original.video)
        assert (back.text, back.candidates, back.target, back.reference) == (
            original.text,
            original.candidates,
            original.target,
            original.reference,
        )


def test_mintrec_unknown_intent_and_bad_rows_are_reported(tmp_path):
    rows = [
        {"messages": [{"content": "hi"}, {"content": "Greet"}], "videos": ["/x/video/a_1.mp4"]},
        {"messages": [{"content": "hm"}, {"content": "Ponder"}], "videos": ["/x/video/a_2.mp4"]},
        {"messages": [{"content": "no video"}, {"content": "Greet"}]},
        {"messages": [{"content": "again"}, {"content": "thank"}], "videos": ["/y/a_1.mp4"]},
    ]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    samples = read_mintrec(path)
    assert [s.id for s in samples] == ["a_1"]
    assert set(samples.skipped) == {"a_2", "row 2", "a_1"}
    assert "Ponder" in samples.skipped["a_2"] and "duplicate" in samples.skipped["a_1"]
    with pytest.raises(ValueError, match="version must be 1"):
        read_mintrec(path, version=3)


# ---- EMER (real gt-eng.csv) -------------------------------------------------------------------------------------


@needs_emer
def test_emer_real_file():
    from modeling_nanoemox.evaluation import read_emer_references

    with EMER_GT.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    samples = read_emer(EMER_GT)
    assert len(samples) == len(rows) == 100 and not samples.skipped
    for sample, row in zip(samples, rows):
        assert sample.id == row["names"] and sample.task == "eri" and sample.dataset == "EMER"
        assert sample.target == row["reasons"].strip()
        assert sample.reference["rationale"] == row["reasons"].strip()
        assert sample.reference["emotion"] == row["emotions"]
        assert sample.text == (row["subtitles"].strip() or None)
        assert sample.video == f"video/{row['names']}.mp4"
    # The same references the evaluation reads from the file itself.
    references = {r["id"]: r["reference"] for r in read_emer_references(EMER_GT)}
    assert all(references[s.id]["rationale"] == s.reference["rationale"] for s in samples)


def test_emer_missing_columns_and_rows(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("names,emotions,subtitles\nsample_1,happy,hi\n", encoding="utf-8")
    with pytest.raises(ValueError, match="reasons"):
        read_emer(path)
    path.write_text('names,emotions,subtitles,reasons\nsample_1,happy,hi,"He smiles."\nsample_2,sad,,\n,x,y,z\n')
    samples = read_emer(path)
    assert [s.id for s in samples] == ["sample_1"] and set(samples.skipped) == {"sample_2", "line 4"}


# ---- CREMA-D ----------------------------------------------------------------------------------------------------


def test_crema_d_folder(tmp_path):
    folder = tmp_path / "AudioWAV"
    names = ("1001_DFA_ANG_XX", "1002_IEO_HAP_HI", "1091_WSI_SAD_LO", "1040_ITH_SAD_X", "1003_TIE_XYZ_XX", "readme")
    for name in names:
        _touch(folder / f"{name}.wav")
    samples = read_crema_d(folder)
    by_id = {s.id: s for s in samples}
    assert set(by_id) == {"1001_DFA_ANG_XX", "1002_IEO_HAP_HI", "1091_WSI_SAD_LO", "1040_ITH_SAD_X"}
    assert set(samples.skipped) == {"1003_TIE_XYZ_XX", "readme"}
    anger = by_id["1001_DFA_ANG_XX"]
    assert (anger.task, anger.dataset, anger.reference) == ("mer", "CREMA-D", "anger")
    assert anger.target == "The most likely label is anger."
    assert anger.candidates == list(CREMA_D_LABELS) == ["anger", "disgust", "fear", "happy", "neutral", "sad"]
    assert anger.audio == "AudioWAV/1001_DFA_ANG_XX.wav" and anger.video is None
    assert anger.text == "Don't forget a jacket."
    assert by_id["1091_WSI_SAD_LO"].reference == "sad"
    assert read_crema_d(folder, with_sentence=False, video_dir="VideoFlash")[0].video.startswith("VideoFlash/")


def test_crema_d_list_and_authors_json(tmp_path):
    listing = tmp_path / "files.csv"
    listing.write_text("filename\n1001_DFA_NEU_XX.wav\n1001_DFA_FEA_XX\nbroken\n", encoding="utf-8")
    samples = read_crema_d(listing)
    assert [s.reference for s in samples] == ["neutral", "fear"]
    assert samples[1].audio == "AudioWAV/1001_DFA_FEA_XX.wav" and set(samples.skipped) == {"broken"}

    rows = [
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "disgust"}],
         "audios": ["/home/x/crema_d/audio/Disgust_1010_ITS_DIS_XX.wav"]},
        {"messages": [{"role": "user", "content": ""}], "audios": ["/a.wav"]},
    ]  # fmt: skip
    path = tmp_path / "crema_d_annotations.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    samples = read_crema_d(path, audio_dir="audio")
    assert [(s.id, s.reference, s.audio) for s in samples] == [
        ("Disgust_1010_ITS_DIS_XX", "disgust", "audio/Disgust_1010_ITS_DIS_XX.wav")
    ]
    assert list(samples.skipped) == ["row 1"]


# ---- M3ED -------------------------------------------------------------------------------------------------------


def _m3ed_annotation():
    def utterance(speaker, text, emotion):
        return {
            "StartTime": "00:00:01.000",
            "EndTime": "00:00:02.000",
            "Speaker": speaker,
            "Text": text,
            "EmoAnnotation": {"EmoAnnotator1": [emotion], "final_mul_emo": [emotion], "final_main_emo": emotion},
        }

    speakers = {"A": {"Name": "Li", "Age": "young", "Gender": "female"}, "B": {"Name": "Wang", "Gender": "male"}}
    return {
        "anjia": {
            "anjia_1": {
                "SpeakerInfo": speakers,
                "Dialog": {
                    "anjia_1_1": utterance("A", "你好。", "Neutral"),
                    "anjia_1_2": utterance("B", "太好了！", "Happy"),
                    "anjia_1_3": utterance("A", "怎么会这样", "Anger"),
                    "anjia_1_4": utterance("B", "嗯", "Contempt"),
                },
            }
        },
        "shaonianpai": {
            "shaonianpai_2": {
                "SpeakerInfo": speakers,
                "Dialog": {"shaonianpai_2_1": utterance("B", "我好难过", "Sad"), "shaonianpai_2_2": {"Text": "?"}},
            }
        },
    }


def test_m3ed_annotation_json_and_split(tmp_path):
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(_m3ed_annotation(), ensure_ascii=False), encoding="utf-8")
    samples = read_m3ed(path)
    assert [s.id for s in samples] == ["A_anjia_1_1", "B_anjia_1_2", "A_anjia_1_3", "B_shaonianpai_2_1"]
    assert [s.reference for s in samples] == ["neutral", "happy", "anger", "sad"]
    assert set(samples.skipped) == {"B_anjia_1_4", "shaonianpai_2_2"}
    first = samples[0]
    assert first.audio == "modality_speech/A_anjia_1_1.wav" and first.text == "你好。"
    assert first.candidates == list(SEVEN_LABELS) and first.target == "The most likely label is neutral."

    movies = tmp_path / "movie_list_test.txt"
    movies.write_text("shaonianpai\n", encoding="utf-8")
    assert [s.id for s in read_m3ed(path, movies=movies)] == ["B_shaonianpai_2_1"]
    with pytest.raises(ValueError, match="none of the 1 requested movies"):
        read_m3ed(path, movies=["other_show"])


# ---- CAER and FERV39k -------------------------------------------------------------------------------------------


def test_caer_split_folder(tmp_path):
    split = tmp_path / "CAER" / "validation"
    _touch(split / "Anger" / "0001.avi")
    _touch(split / "Anger" / "0002.avi")
    _touch(split / "Angry" / "0001.mp4")  # CAER-S spelling
    _touch(split / "Surprise" / "0001.avi")
    _touch(split / "Surprise" / "notes.txt")  # not a clip: ignored
    _touch(split / "misc" / "0001.avi")
    samples = read_caer(split)
    assert [(s.id, s.reference) for s in samples] == [
        ("validation_Anger_0001", "anger"),
        ("validation_Anger_0002", "anger"),
        ("validation_Angry_0001", "anger"),
        ("validation_Surprise_0001", "surprise"),
    ]
    assert samples[0].video == "validation/Anger/0001.avi"
    assert samples[-1].target == "The most likely label is surprise." and samples[-1].candidates == list(SEVEN_LABELS)
    assert list(samples.skipped) == ["misc"]
    # Relative to the CAER root, the paths resolve.
    manifest = write_manifest(samples, tmp_path / "caer.jsonl")
    loaded, report = load_manifest(manifest, media_root=tmp_path / "CAER", on_missing="error")
    assert len(loaded) == 4 and report.skipped == 0


def test_ferv39k_setup_file(tmp_path):
    setup = tmp_path / "train_All.csv"
    setup.write_text("Action/Sad/0010 Sad\nTalk/Angry/0002\nDaily Life/Angry/0007 Angry\nNews/Happy/0001 Joyful\n\n")
    samples = read_ferv39k(setup)
    assert [(s.id, s.reference) for s in samples] == [("Action_Sad_0010", "sad"), ("Daily Life_Angry_0007", "anger")]
    assert set(samples.skipped) == {"line 2", "News_Happy_0001"}
    assert samples[0].video == "2_ClipsforFaceCrop/Action/Sad/0010" and samples[0].faces is None
    faces = read_ferv39k(setup, media_field="faces", clips_dir="frames")
    assert faces[0].faces == "frames/Action/Sad/0010" and faces[0].video is None
    assert read_ferv39k(setup, video_ext=".mp4")[0].video.endswith("0010.mp4")
    with pytest.raises(ValueError, match="media_field"):
        read_ferv39k(setup, media_field="audio")


def test_caer_ferv39k_authors_json(tmp_path):
    rows = [
        {"messages": [{"content": ""}, {"content": "Angry"}], "videos": ["/d/video/clip_a.avi"]},
        {"messages": [{"content": ""}, {"content": "happy"}], "videos": ["/d/video/clip_b.mp4"]},
    ]
    path = tmp_path / "caer_ferv39k_ann.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    samples = read_ferv39k(path, dataset="CAER_FERV39K")
    assert [(s.id, s.video, s.reference, s.dataset) for s in samples] == [
        ("clip_a", "2_ClipsforFaceCrop/clip_a.avi", "anger", "CAER_FERV39K"),
        ("clip_b", "2_ClipsforFaceCrop/clip_b.mp4", "happy", "CAER_FERV39K"),
    ]
    assert read_caer(path)[0].video == "video/clip_a.avi"


# ---- MER-Caption+ and MERR-Fine ---------------------------------------------------------------------------------


def _write_csv(path: Path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_mer_caption_plus_folder(tmp_path):
    root = tmp_path / "mer2025-dataset"
    root.mkdir()
    _write_csv(
        root / "track2_train_mercaptionplus.csv",
        ["name", "openset"],
        [["sample_0001", "['happy', 'excited', 'happy']"], ["sample_0002", "[]"], ["sample_0003", "worried, sad"]],
    )
    _write_csv(
        root / "track3_train_mercaptionplus.csv",
        ["name", "reason"],
        [["sample_0001", "She smiles broadly and laughs."], ["sample_0002", "His face is calm."], ["sample_0003", ""]],
    )
    _write_csv(root / "subtitle_chieng.csv", ["name", "chinese", "english"], [["sample_0001", "太好了", "Great!"]])

    samples = read_mer_caption_plus(root)
    by_id = {s.id: s for s in samples}
    assert list(by_id) == [
        "sample_0001-ovmer",
        "sample_0001-eri",
        "sample_0002-ovmer",
        "sample_0002-eri",
        "sample_0003-ovmer",
    ]
    assert list(samples.skipped) == ["sample_0003-eri"]
    ov = by_id["sample_0001-ovmer"]
    assert ov.task == "ovmer" and ov.reference == ["happy", "excited"]
    assert ov.target == "The character's emotional state is happy, excited."
    assert ov.text == "Great!" and ov.video == "video/sample_0001.mp4" and ov.dataset == "MER-Caption+"
    assert by_id["sample_0002-ovmer"].reference == ["neutral"]  # empty list → neutral, as the authors do
    assert by_id["sample_0002-ovmer"].text is None
    eri = by_id["sample_0001-eri"]
    assert eri.task == "eri" and eri.target == "She smiles broadly and laughs."
    assert eri.reference == {"rationale": "She smiles broadly and laughs."}

    only_labels = read_mer_caption_plus(root / "track2_train_mercaptionplus.csv", label_types=["ovlabel"])
    assert [s.id for s in only_labels] == ["sample_0001", "sample_0002", "sample_0003"]
    assert read_mer_caption_plus(root, label_types=["description"], subtitle_language="chinese")[0].text == "太好了"
    with pytest.raises(ValueError, match="label_types"):
        read_mer_caption_plus(root, label_types=["caption"])
    assert parse_label_list('["Happy", " grateful ", ""]') == ["happy", "grateful"]


def test_merr_fine(tmp_path):
    data = {
        "sample_00000023": {
            "AU_list": ["AU04"],
            "visual_prior_list": ["Frowns furrowed"],
            "audio_prior_list": "and his tone sounds negative.",
            "pseu_emotion": "angry",
            "text": "I was originally trying to be quiet.",
            "smp_reason_caption": "A bald man frowns; his tone is negative, likely anger.",
        },
        "sample_00000047": {"pseu_emotion": "surprise", "text": "Oh my.", "smp_reason_caption": ""},
    }
    path = tmp_path / "MERR_fine_grained.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    samples = read_merr_fine(path)
    assert [s.id for s in samples] == ["sample_00000023"] and list(samples.skipped) == ["sample_00000047"]
    sample = samples[0]
    assert (sample.task, sample.dataset, sample.text) == ("eri", "MERR-Fine", "I was originally trying to be quiet.")
    assert sample.target == data["sample_00000023"]["smp_reason_caption"]
    assert sample.reference == {"rationale": sample.target, "emotion": "angry"}
    both = read_merr_fine(path, label_types=["description", "ovlabel"], video_ext=".avi")
    assert [s.id for s in both] == ["sample_00000023-eri", "sample_00000023-ovmer", "sample_00000047-ovmer"]
    assert both[-1].target == "The character's emotional state is surprise." and both[0].video.endswith(".avi")


# ---- AvaMERG ----------------------------------------------------------------------------------------------------


def _avamerg_turn(turn_id, utterances, response, chain):
    history = [{"role": "speaker" if i % 2 == 0 else "listener", "utterance": u} for i, u in enumerate(utterances)]
    turn = {"turn_id": str(turn_id), "context": "job loss", "dialogue_history": history, "response": response}
    if chain is not None:
        turn["chain_of_empathy"] = chain
    return turn


def _chain(emotion):
    return {
        "event_scenario": "The speaker was laid off after ten years.",
        "speaker_emotion": emotion,
        "emotion_cause": "Losing a long-held job.",
        "goal_to_response": "Offer comfort and support.",
    }


def avamerg_conversations():
    """Two conversations in the authors' AvaMERG JSON layout (field names of their avamerg_dataset.py)."""
    said = ["I lost my job today.", "Oh no, I'm so sorry.", "Ten years there.", "That is a long time.", "What now?"]
    replies = ["Oh no, I'm so sorry.", "That is a long time.", "You will find your way."]
    first = {
        "conversation_id": "0007",
        "speaker_profile": {"ID": "12", "age": "adult", "gender": "female"},
        "listener_profile": {"ID": "3"},
        "topic": "work",
        "turns": [
            _avamerg_turn(0, said[:1], replies[0], _chain("sadness")),
            _avamerg_turn(1, said[:3], replies[1], _chain("Disappointment")),
            _avamerg_turn(2, said[:5], replies[2], None),  # no chain of empathy: needs the teacher
        ],
    }
    second = {
        "conversation_id": "0008",
        "speaker_profile": {"ID": "4"},
        "listener_profile": {"ID": "5"},
        "topic": "family",
        "turns": [
            _avamerg_turn(0, ["My son graduated!"], "Congratulations!", _chain("proud")),
            _avamerg_turn(1, ["My son graduated!", "Congratulations!", "I cried."], "Of course!", _chain("joyful")),
        ],
    }
    return [first, second, {"conversation_id": "0009", "turns": []}]


def test_avamerg_one_sample_per_turn(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(avamerg_conversations()), encoding="utf-8")
    samples = read_avamerg(path)
    erg = [s for s in samples if s.task == "erg"]
    mer = {s.id: s for s in samples if s.task == "mer"}

    names = ["dia0007utt0_12", "dia0007utt2_12", "dia0007utt4_12", "dia0008utt0_4", "dia0008utt2_4"]
    assert [s.id for s in erg] == [f"{name}-erg" for name in names]  # one erg sample per turn
    assert list(mer) == [f"{name}-mer" for name in ("dia0007utt0_12", "dia0007utt2_12", "dia0008utt0_4")]
    assert samples.skipped == {
        "conversation 2": "lacks conversation_id, speaker_profile.ID or a list of turns",
        "dia0007utt4_12-mer": "no annotated speaker emotion",
        "dia0008utt2_4-mer": "speaker emotion 'joyful' is not one of the 25 labels",
    }
    assert samples.untargeted == ["dia0007utt4_12-erg"]

    # History grows turn by turn: earlier utterances as user (speaker) / assistant (listener) messages.
    first, second, third = erg[:3]
    assert first.history is None and first.text == "I lost my job today."
    assert second.history == [
        {"role": "user", "content": "I lost my job today."},
        {"role": "assistant", "content": "Oh no, I'm so sorry."},
    ]
    assert second.text == "Ten years there." and len(third.history) == 4 and third.text == "What now?"
    assert first.video == "video/dia0007utt0_12.mp4" and first.audio == "audio/dia0007utt0_12.wav"
    assert first.dataset == "AvaMERG"

    # erg target: the chain of empathy then the reply; reference carries the gold emotion and reply.
    parsed = parse_chain_of_empathy(second.target)
    assert parsed == {**_chain("disappointment"), "response": "That is a long time."}
    assert second.target.startswith("<think>1. Event scenario: ")
    assert second.target.endswith("</think> That is a long time.")
    assert second.reference["emotion"] == "disappointment" and second.reference["response"] == "That is a long time."
    assert second.reference["context"] == "job loss"
    assert third.target is None and third.reference == {"response": "You will find your way.", "context": "job loss"}

    # mer: the speaker's emotion only, from the 25 AvaMERG labels.
    emotion = mer["dia0007utt2_12-mer"]
    assert emotion.candidates == list(AVAMERG_LABELS) and len(emotion.candidates) == 25
    assert emotion.target == "The most likely label is disappointment." and emotion.reference == "disappointment"
    assert emotion.text == "Ten years there." and emotion.history is None  # mer takes no dialogue history

    last = read_avamerg(path, last_turn_only=True, emotion_task=False, video_dir="test_video", audio_dir=None)
    assert [s.id for s in last] == ["dia0007utt4_12-erg", "dia0008utt2_4-erg"]
    assert last[0].video == "test_video/dia0007utt4_12.mp4" and last[0].audio is None


def test_avamerg_round_trip_and_processor_rules(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(avamerg_conversations()), encoding="utf-8")
    samples = read_avamerg(path)
    manifest = write_manifest(samples, tmp_path / "avamerg.jsonl")
    loaded, _ = load_manifest(manifest, media_root=tmp_path, on_missing="skip")
    assert loaded == []
    for sample in samples:
        _touch(tmp_path / sample.video)
        _touch(tmp_path / sample.audio)
    loaded, report = load_manifest(manifest, media_root=tmp_path, on_missing="error")
    assert [s.id for s in loaded] == [s.id for s in samples] and report.skipped == 0
    for sample in loaded:
        # The processor only accepts a history for erg, and a mer target among the candidates.
        assert sample.history is None or sample.task == "erg"
        if sample.task == "mer":
            assert sample.reference in sample.candidates


def test_avamerg_roles_and_bad_turns(tmp_path):
    conversation = {
        "conversation_id": "1",
        "speaker_profile": {"ID": "2"},
        "turns": [
            {"turn_id": "x", "dialogue_history": [{"role": "speaker", "utterance": "a"}]},
            {"turn_id": "1", "dialogue_history": []},
            {"turn_id": "2", "dialogue_history": [{"role": "speaker", "utterance": "a"}, {"role": "listener", "utterance": "b"}]},
            {"turn_id": "3", "dialogue_history": [{"utterance": "a"}, {"utterance": "b"}, {"role": "Speaker", "utterance": "c"}],
             "response": "d", "chain_of_empathy": _chain("lonely")},
        ],
    }  # fmt: skip
    path = tmp_path / "test.json"
    path.write_text(json.dumps([conversation]), encoding="utf-8")
    samples = read_avamerg(path)
    assert [s.id for s in samples] == ["dia1utt6_2-erg", "dia1utt6_2-mer"]
    assert samples[0].history == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert len(samples.skipped) == 3 and "dia1utt4_2" in samples.skipped and "dia1utt2_2" in samples.skipped


# ---- the CLI ----------------------------------------------------------------------------------------------------


@needs_mintrec
def test_prepare_data_cli(tmp_path, capsys):
    prepare = _recipe("prepare_data")
    annotations = str(MINTREC_DIR / "MIntRec_test.json")
    media = tmp_path / "media"
    output = tmp_path / "out" / "mintrec.jsonl"

    args = ["mintrec", "--annotations", annotations, "--output", str(output), "--media_root", str(media)]
    assert prepare.main(args) == 1
    assert "445 samples name media files that do not exist" in capsys.readouterr().err and not output.exists()

    samples = read_mintrec(annotations)
    for sample in samples[:5]:
        _touch(media / sample.video)
    assert prepare.main([*args, "--on_missing", "skip"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 5 and summary["skipped_missing_media"] == 440 and summary["tasks"] == {"mir": 5}
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == [s.id for s in samples[:5]]
    assert rows[0]["video"] == samples[0].video  # written relative to the media root

    assert prepare.main([*args, "--skip_media_check", "--audio_dir", "audio"]) == 0
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 445 and rows[0]["audio"] == f"audio/{rows[0]['id']}.wav"

    with pytest.raises(SystemExit):
        prepare.main([*args, "--movies", "x.txt"])
    assert "--movies does not apply to mintrec" in capsys.readouterr().err


def test_read_corpus_dispatch(tmp_path):
    folder = tmp_path / "AudioWAV"
    _touch(folder / "1001_DFA_ANG_XX.wav")
    assert read_corpus("crema_d", folder)[0] == Sample(
        id="1001_DFA_ANG_XX",
        task="mer",
        dataset="CREMA-D",
        audio="AudioWAV/1001_DFA_ANG_XX.wav",
        text="Don't forget a jacket.",
        candidates=list(CREMA_D_LABELS),
        target="The most likely label is anger.",
        reference="anger",
    )
    with pytest.raises(ValueError, match="unknown corpus"):
        read_corpus("iemocap", folder)
    with pytest.raises(FileNotFoundError):
        read_corpus("emer", tmp_path / "nope.csv")
