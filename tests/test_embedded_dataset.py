"""recipes/embedded/dataset.py, the generated dataset of the embedded run: determinism, tasks, media the processor
reads, legible expressions, emotional prosody, the conflicting-cue rule and the chance levels."""

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from modeling_nanoemox.data import load_manifest, parse_chain_of_empathy
from nanoemox_processing.media_nanoemox import decode_audio
from nanoemox_processing.prompts_nanoemox import MER_LABELS, TASK_NAMES

# Recipe code is not installed: imported as `recipes/p2e.py` imports it, with recipes/ on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
from embedded.dataset import (  # noqa: E402
    EMOTIONS,
    EXPRESSIONS,
    INTENTS,
    OVMER_WORDS,
    POLARITY,
    SCENE_TYPES,
    TASK_EMOTIONS,
    Identity,
    build_synthetic_dataset,
    emotional_voice,
    label_from_cues,
    render_face,
    tokenizer_texts,
)

EMOTION_WHEEL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emotion_wheel"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small build (seconds): 42 training and 24 test samples."""
    output = tmp_path_factory.mktemp("synthetic")
    result = build_synthetic_dataset(output, num_train=42, num_test=24, seed=3)
    return output, result


def _manifest(result, split):
    samples, report = load_manifest(result[split], on_missing="error")
    assert report.skipped == 0
    return samples


def _cues(output) -> dict:
    return {row["id"]: row for row in map(json.loads, (output / "cues.jsonl").read_text().splitlines())}


def _decoded(path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame `(T, H, W, 3)` and every audio sample of a clip."""
    import av

    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    return frames, audio


def _pitch_hz(waveform: np.ndarray, sampling_rate: int = 16000) -> float:
    """Median autocorrelation pitch over the voiced 40 ms frames."""
    frame, hop = 640, 320
    energy = [np.sqrt(np.mean(waveform[i : i + frame] ** 2)) for i in range(0, len(waveform) - frame, hop)]
    threshold = 0.3 * max(energy)
    pitches = []
    for k, start in enumerate(range(0, len(waveform) - frame, hop)):
        if energy[k] < threshold:
            continue
        x = waveform[start : start + frame] - waveform[start : start + frame].mean()
        corr = np.correlate(x, x, "full")[frame - 1 :]
        low, high = sampling_rate // 400, sampling_rate // 60
        pitches.append(sampling_rate / (low + int(np.argmax(corr[low:high]))))
    return float(np.median(pitches))


def test_same_seed_same_data_any_worker_count(dataset, tmp_path):
    output, result = dataset
    again = build_synthetic_dataset(tmp_path / "again", num_train=42, num_test=24, seed=3, num_workers=2)
    for name in ("train.jsonl", "test.jsonl", "cues.jsonl", "chance.json"):
        assert (output / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    media = sorted(p.relative_to(output) for p in (output / "media").rglob("*.mkv"))
    assert len(media) == 42 + 24
    for path in media:
        # Matroska headers carry a random segment id, so the decoded pictures and samples are compared.
        first, second = _decoded(output / path), _decoded(tmp_path / "again" / path)
        assert all(np.array_equal(a, b) for a, b in zip(first, second)), path
    assert again["counts"] == result["counts"]

    small = {"num_train": 6, "num_test": 6}
    first = build_synthetic_dataset(tmp_path / "seed3", seed=3, **small)
    other = build_synthetic_dataset(tmp_path / "seed4", seed=4, **small)
    assert first["train"].read_text() != other["train"].read_text()
    assert first["test"].read_text() != other["test"].read_text()


def test_every_task_in_both_splits_with_targets_and_references(dataset):
    output, result = dataset
    for split in ("train", "test"):
        samples = _manifest(result, split)
        assert Counter(s.task for s in samples).keys() == set(TASK_NAMES)
        assert result["counts"][split] == dict(sorted(Counter(s.task for s in samples).items()))
        for s in samples:
            assert s.dataset == f"synthetic-{s.task}" and Path(s.video).is_file()
            assert s.target and s.reference is not None
            if s.task == "mer":
                assert s.reference in MER_LABELS and s.text is None
                assert s.target == f"The most likely label is {s.reference}."
            elif s.task == "ovmer":
                assert s.text is None and "neutral" not in s.reference
                assert s.target == f"The character's emotional state is {', '.join(s.reference)}."
                assert set(s.reference) <= {w for words in OVMER_WORDS.values() for w in words}
            elif s.task == "msa":
                assert isinstance(s.reference, float) and 1.0 <= abs(s.reference) <= 3.0
                assert s.target == ("positive" if s.reference > 0 else "negative") and s.text
            elif s.task == "mir":
                assert s.candidates == list(INTENTS) and s.target == s.reference in INTENTS and s.text
            elif s.task == "eri":
                assert s.target == s.reference and s.reference.startswith("The ") and s.text
                assert s.reference.rsplit("Therefore, the person feels ", 1)[1].rstrip(".") in {
                    "happy", "sad", "angry", "worried", "surprised", "disgusted", "neutral"
                }  # fmt: skip
            else:
                assert 1 <= len(s.history) <= 3 and s.text
                assert s.history[-1]["role"] == "assistant"
                parsed = parse_chain_of_empathy(s.target)
                assert parsed["speaker_emotion"] == s.reference["emotion"]
                assert parsed["response"] == s.reference["response"]
                for step in ("event_scenario", "emotion_cause", "goal_to_response"):
                    assert parsed[step] == s.reference[step]


def test_targets_scored_as_predictions_are_perfect(dataset):
    """The references are what `nanoemox eval score` expects, and the targets are answers it reads correctly."""
    from modeling_nanoemox.evaluation.scoring import score

    _, result = dataset
    samples = _manifest(result, "test")
    expected = {"mer": "accuracy", "msa": "accuracy", "mir": "accuracy", "erg": "emotion_accuracy"}
    for task, metric in expected.items():
        rows = [s for s in samples if s.task == task]
        predictions = [{"id": s.id, "prediction": s.target} for s in rows]
        references = [{"id": s.id, "reference": s.reference} for s in rows]
        assert score(task, predictions, references)["metrics"][metric] == 1.0, task
    if EMOTION_WHEEL.is_dir():
        rows = [s for s in samples if s.task == "ovmer"]
        predictions = [{"id": s.id, "prediction": s.target} for s in rows]
        references = [{"id": s.id, "reference": s.reference} for s in rows]
        metrics = score("ovmer", predictions, references, emotion_wheel=EMOTION_WHEEL)["metrics"]
        assert metrics["f_score"] == pytest.approx(1.0)


def test_test_split_is_held_out(dataset):
    output, result = dataset
    summary = json.loads((output / "summary.json").read_text())
    train_people = {json.dumps(p, sort_keys=True) for p in summary["identities"]["train"]}
    assert not train_people & {json.dumps(p, sort_keys=True) for p in summary["identities"]["test"]}
    cues = _cues(output)
    said = {split: {c["utterance"] for c in cues.values() if c["split"] == split} for split in ("train", "test")}
    assert not said["train"] & said["test"]
    ids = [s.id for split in ("train", "test") for s in _manifest(result, split)]
    assert len(ids) == len(set(ids))


def _task_inputs(processor, samples):
    """The samples as the recipe feeds them: task messages with the clip, its face crops, its own audio track,
    batched."""
    conversations = [
        processor.build_task_messages(
            s.task,
            text=s.text,
            history=s.history,
            candidates=s.candidates,
            target=s.target,
            video=s.video,
            faces=s.faces,
        )
        for s in samples
    ]
    return processor.apply_chat_template(
        conversations, tokenize=True, return_dict=True, padding=True, load_audio_from_video=True, return_face_info=True
    )


def test_clips_decode_with_the_processor(dataset, tiny_processor):
    from nanoemox_processing.processing_nanoemox import FACE_SOURCES

    _, result = dataset
    samples = _manifest(result, "test")
    one_per_task = [next(s for s in samples if s.task == task) for task in TASK_NAMES]
    inputs = _task_inputs(tiny_processor, one_per_task)
    batch = len(one_per_task)
    assert inputs["pixel_values_videos"].shape == (batch, 8, 3, 32, 32)
    assert inputs["face_pixel_values"].shape == (batch, 8, 3, 32, 32)
    assert inputs["audio_values"].shape == (batch, 8, 32000)  # every clip has its own audio track
    assert inputs["audio_values"].abs().amax(dim=(1, 2)).min() > 0  # every clip has a voice
    # The manifest's face crops: every frame has the face (no detector runs on the drawn faces).
    assert bool((inputs["face_source"] == FACE_SOURCES.index("detected")).all())


def test_mp4_option_writes_h264_aac_clips(tmp_path, tiny_processor):
    import av

    result = build_synthetic_dataset(tmp_path, num_train=6, num_test=6, media_format="mp4")
    sample = _manifest(result, "train")[0]
    with av.open(sample.video) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
    inputs = _task_inputs(tiny_processor, [sample])
    assert inputs["pixel_values_videos"].shape[0] == inputs["audio_values"].shape[0] == 1


def test_expressions_are_legible_at_32_px_on_new_people():
    """A nearest-centroid classifier on 32×32 edge maps, fitted on some people, recognises others' expressions."""
    import cv2

    def edge_maps(seed, people):
        rng = np.random.default_rng(seed)
        features, labels = [], []
        for _ in range(people):
            identity = Identity.sample(rng)
            for emotion in EMOTIONS:
                frame = render_face(identity, EXPRESSIONS[emotion].scaled(rng.uniform(0.8, 1.0)), 112)
                grey = cv2.resize(frame, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32).mean(-1)
                edges = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
                features.append((edges / edges.mean()).ravel())
                labels.append(emotion)
        return np.array(features), np.array(labels)

    x_train, y_train = edge_maps(0, 12)
    x_test, y_test = edge_maps(1, 6)
    centroids = np.stack([x_train[y_train == e].mean(0) for e in EMOTIONS])
    predicted = np.array(EMOTIONS)[np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    assert (predicted == y_test).mean() >= 3 / len(EMOTIONS)  # chance is 1/7

    # The mouth region tells smiles, frowns and open mouths apart for the same person.
    identity = Identity.sample(np.random.default_rng(5))
    faces = {e: render_face(identity, EXPRESSIONS[e], 112).astype(np.float32) for e in EMOTIONS}
    for emotion in EMOTIONS:
        if emotion != "neutral":
            assert np.abs(faces[emotion] - faces["neutral"]).mean() > 1.0, emotion
    dark = {e: (faces[e][70:100, 35:77].mean(-1) < 90).mean() for e in ("surprise", "neutral")}
    assert dark["surprise"] > dark["neutral"] + 0.05  # an open mouth


def test_prosody_follows_the_emotion():
    for pitch in (115.0, 140.0, 165.0):
        voices = {e: emotional_voice(e, pitch, seed=int(pitch)) for e in EMOTIONS}
        pitches = {e: _pitch_hz(v) for e, v in voices.items()}
        loudness = {e: float(np.sqrt(np.mean(v**2))) for e, v in voices.items()}
        assert pitches["happy"] > pitches["neutral"] > pitches["sad"]
        assert pitches["surprise"] > pitches["happy"]
        assert pitches["sad"] == pytest.approx(0.78 * pitch, rel=0.1)
        assert loudness["angry"] > loudness["happy"] > loudness["neutral"] > loudness["sad"]
    # Between people too: every happy voice is higher than every sad one, whoever speaks.
    assert _pitch_hz(emotional_voice("happy", 115.0, intensity=0.8)) > _pitch_hz(emotional_voice("sad", 165.0))


def test_clip_voices_follow_their_cue(dataset):
    output, result = dataset
    cues = _cues(output)
    pitch = {}
    for sample in _manifest(result, "train"):
        voice = cues[sample.id]["voice"]
        if voice in ("happy", "sad"):
            pitch.setdefault(voice, []).append(_pitch_hz(decode_audio(sample.video, 16000)))
    assert min(pitch["happy"]) > max(pitch["sad"])


def test_conflicting_cues_follow_the_rule(dataset):
    output, result = dataset
    summary = json.loads((output / "summary.json").read_text())
    cues = _cues(output)
    samples = {s.id: s for split in ("train", "test") for s in _manifest(result, split)}
    for split in ("train", "test"):
        kinds = Counter(c["scene_type"] for c in cues.values() if c["split"] == split)
        assert set(kinds) <= set(SCENE_TYPES)
        assert kinds["congruent"] and sum(kinds.values()) > kinds["congruent"], (split, kinds)
    for sample_id, cue in cues.items():
        sample = samples[sample_id]
        assert cue["label"] == label_from_cues(cue["face"], cue["voice"])
        kind = cue["scene_type"]
        if kind == "congruent":
            assert cue["face"] == cue["voice"] == cue["label"]
        elif kind == "masked_smile":
            assert cue["face"] == "happy" and cue["voice"] in ("sad", "angry")
        elif kind == "poker_face":
            assert cue["face"] == "neutral" and cue["voice"] != "neutral"
        else:
            assert cue["voice"] == "neutral" and cue["face"] != "neutral"
        assert cue["label"] in TASK_EMOTIONS[sample.task]
        if sample.task == "mir":
            assert (sample.reference == "taunt") == (kind == "masked_smile")
        if sample.task == "msa":
            assert np.sign(sample.reference) == POLARITY[cue["label"]]
        if sample.task == "mer":
            assert sample.reference == cue["label"]
    # The media show the cues, not the label: a conflicting clip's voice is the voice cue's, sample for sample.
    people = summary["identities"]
    conflicting = [c for c in cues.values() if c["scene_type"] != "congruent"][:4]
    for cue in conflicting:
        fields = people[cue["split"]][cue["identity"]]
        person = Identity(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        expected = emotional_voice(cue["voice"], person.pitch_hz, 2.0, 16000, cue["intensity"], seed=cue["seed"])
        decoded = decode_audio(samples[cue["id"]].video, 16000)
        assert np.abs(decoded[: len(expected)] - expected).max() < 1e-3


def test_rule_checks_its_inputs():
    assert label_from_cues("happy", "sad") == "sad"
    assert label_from_cues("sad", "neutral") == "sad"
    assert label_from_cues("neutral", "neutral") == "neutral"
    with pytest.raises(ValueError, match="face_emotion must be one of"):
        label_from_cues("joyful", "sad")


def test_chance_levels_match_the_label_distribution(dataset):
    output, result = dataset
    chance = json.loads((output / "chance.json").read_text())
    assert chance == result["chance_levels"]
    assert set(chance) == {"mer", "msa", "mir", "erg"}  # ovmer and the MER hit rate need the emotion wheel
    train, test = _manifest(result, "train"), _manifest(result, "test")

    def majority_share(task, label_of):
        counts = Counter(label_of(s) for s in train if s.task == task)
        majority = min(counts, key=lambda label: (-counts[label], label))
        gold = [label_of(s) for s in test if s.task == task]
        return gold.count(majority) / len(gold)

    sign = lambda s: "positive" if s.reference > 0 else "negative"  # noqa: E731
    assert chance["mer"]["accuracy"] == pytest.approx(max(1 / 6, majority_share("mer", lambda s: s.reference)))
    assert chance["mir"]["accuracy"] == pytest.approx(
        max(1 / len(INTENTS), majority_share("mir", lambda s: s.reference))
    )
    assert chance["msa"]["accuracy"] == pytest.approx(max(1 / 2, majority_share("msa", sign)))
    emotions = {s.reference["emotion"] for s in train if s.task == "erg"}
    erg_share = majority_share("erg", lambda s: s.reference["emotion"])
    assert chance["erg"]["emotion_accuracy"] == pytest.approx(max(1 / len(emotions), erg_share))
    for task, metrics in chance.items():
        assert all(0.0 <= value < 1.0 for value in metrics.values()), (task, metrics)


@pytest.mark.skipif(not EMOTION_WHEEL.is_dir(), reason="needs ../shared/data/emotion_wheel")
def test_chance_levels_with_the_emotion_wheel(tmp_path):
    result = build_synthetic_dataset(tmp_path, num_train=12, num_test=12, emotion_wheel=EMOTION_WHEEL)
    assert set(result["chance_levels"]["mer"]) == {"accuracy", "weighted_f1", "macro_f1", "hit_rate"}
    assert set(result["chance_levels"]["ovmer"]) == {"f_score", "precision", "recall"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_train": 5}, "at least 6 samples per split"),
        ({"task_weights": {"mer": 1.0, "chat": 1.0}}, "task_weights must map tasks"),
        ({"conflict_rate": 1.5}, "conflict_rate must be in"),
        ({"image_size": 33}, "image_size must be an even number"),
        ({"media_format": "avi"}, "media_format must be one of"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_synthetic_dataset(tmp_path, **{"num_train": 12, "num_test": 12, **kwargs})


def test_the_word_banks_make_the_embedded_tokenizer_shorter():
    """`tokenizer_texts()` feeds the embedded run's tokenizer (`embedded.towers.build_start_model`): its texts then
    take fewer tokens than with the library's tiny tokenizer alone."""
    from modeling_nanoemox.tiny import build_tiny_tokenizer

    texts = tokenizer_texts()
    assert len(texts) > 100 and all(isinstance(text, str) and text for text in texts)
    plain, embedded = build_tiny_tokenizer(), build_tiny_tokenizer(extra_texts=texts)

    def count(tokenizer):
        return sum(len(tokenizer(text)["input_ids"]) for text in texts)

    assert count(embedded) < 0.8 * count(plain)


def test_face_crops_follow_the_drawn_face(tmp_path):
    """Each clip's face track is written as the manifest's `faces` (the processor then needs no detector), cropped
    around the face the renderer drew, and `after_render` runs once per clip with the clip's paths."""
    from embedded.dataset import FACE_CROP_SIZE, expression_frames, face_box

    seen = []
    built = build_synthetic_dataset(
        tmp_path, num_train=6, num_test=6, seed=1, image_size=64, fps=4,
        after_render=lambda path, faces: seen.append((Path(path).name, Path(faces).name)) or len(seen),
    )  # fmt: skip
    samples, _ = load_manifest(tmp_path / "train.jsonl")
    assert len(seen) == 12 and len(built["rendered"]) == 12
    for sample in samples:
        crops = np.load(sample.faces)
        assert crops.shape == (8, FACE_CROP_SIZE, FACE_CROP_SIZE, 3) and crops.dtype == np.uint8
    identity = Identity.sample(np.random.default_rng(0))
    frames, boxes = expression_frames(identity, "happy", num_frames=4, fps=4, size=64, return_boxes=True)
    x, y, w, h = boxes[0]
    assert 0 < x < 32 < x + w < 64 and 0 < y < 32 < y + h < 64  # the face sits around the frame centre
    assert np.allclose(face_box(identity, 64), boxes[0], atol=2)  # head bob: at most a pixel or two
    skin = frames[0, int(y + h / 2), int(x + w / 2)].astype(int)
    assert np.abs(skin - np.array(identity.background)).sum() > 30  # inside the box is face, not background
