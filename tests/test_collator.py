"""The training collator (modeling_nanoemox/training/collator.py) and the processor side of the feature cache."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from modeling_nanoemox.synthetic import photo_clip_frames, real_face_photo, synthetic_voice, write_clip
from modeling_nanoemox.training.collator import NanoEmoXDataCollator
from modeling_nanoemox.training.feature_cache import FeatureCache


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("collator")
    clip, _ = photo_clip_frames(real_face_photo(), 25, (180, 320))
    talking = write_clip(root / "talking.mp4", clip, fps=25, audio=synthetic_voice(1.0))
    voice = write_clip(root / "voice.wav", audio=synthetic_voice(1.0, pitch_hz=220), audio_codec="pcm_s16le")
    return [
        {"id": "a", "task": "msa", "video": str(talking), "text": "so good", "target": "positive"},
        {"id": "b", "task": "mer", "video": str(talking), "audio": str(voice), "target": "The most likely label is sad."},
        {"id": "c", "task": "msa", "audio": str(voice), "text": "meh", "target": "neutral"},
        {"id": "d", "task": "erg", "text": "I lost my job.", "target": "<think> loss </think> I'm sorry.",
         "history": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"}]},
    ]  # fmt: skip


def test_labels_are_the_answer_tokens_only(tiny_processor, rows):
    batch = NanoEmoXDataCollator(tiny_processor)(rows)
    tokenizer = tiny_processor.tokenizer
    assert (batch["attention_mask"][:, 0] == 1).all()  # right padding for training
    for row, sample in enumerate(rows):
        labels = batch["labels"][row]
        kept = labels[labels != -100]
        assert tokenizer.decode(kept) == sample["target"] + "<|im_end|>"
        positions = (labels != -100).nonzero().flatten()
        assert batch["input_ids"][row, positions].tolist() == kept.tolist()
        assert positions.tolist() == list(range(positions[0], positions[-1] + 1))  # one contiguous answer
    # Media hold only the items present, in batch order: 2 videos (a, b), audio of a (track), b (part), c.
    assert batch["pixel_values_videos"].shape[0] == 2 and batch["audio_values"].shape[0] == 3
    with pytest.raises(ValueError, match="need a `target`"):
        NanoEmoXDataCollator(tiny_processor)([{**rows[0], "target": None}])


def test_a_phase_without_audio_reads_no_audio(tiny_processor, rows):
    batch = NanoEmoXDataCollator(tiny_processor, modalities=["video", "face"])(rows[:2])
    assert "audio_values" not in batch
    assert (batch["input_ids"] == tiny_processor.tokenizer.audio_token_id).sum() == 0
    assert (batch["input_ids"] == tiny_processor.tokenizer.fusion_token_id).sum() == 0
    video_only = NanoEmoXDataCollator(tiny_processor, modalities=["video"])(rows[:1])
    assert "face_pixel_values" not in video_only
    with pytest.raises(ValueError, match="unknown modalities"):
        NanoEmoXDataCollator(tiny_processor, modalities=["smell"])


def test_cached_features_give_the_same_tokens_and_labels(tiny_model, tiny_processor, rows, tmp_path):
    samples = [SimpleNamespace(id=r["id"], video=r.get("video"), audio=r.get("audio"), faces=None) for r in rows]
    cache = FeatureCache(tmp_path / "cache")
    assert cache.build(tiny_model, tiny_processor, samples, batch_size=3) == 4
    assert cache.modalities("a") == ["audio", "face", "video"] and cache.modalities("d") == []
    live = NanoEmoXDataCollator(tiny_processor)(rows)
    cached = NanoEmoXDataCollator(tiny_processor, FeatureCache(tmp_path / "cache"))(rows)
    assert torch.equal(live["input_ids"], cached["input_ids"]) and torch.equal(live["labels"], cached["labels"])
    assert "pixel_values_videos" not in cached
    features = cached["tower_features"]
    assert set(features) == {"video", "face", "audio"}
    assert features["video"].shape[0] == 2 and features["face"].shape[0] == 2 and features["audio"].shape[0] == 3
    with torch.no_grad():
        expected = tiny_model.model.get_video_tower_features(live["pixel_values_videos"])
    torch.testing.assert_close(features["video"], expected.float(), atol=1e-5, rtol=1e-5)
    audio_only = NanoEmoXDataCollator(tiny_processor, FeatureCache(tmp_path / "cache").restricted_to(["audio"]))(rows)
    assert set(audio_only["tower_features"]) == {"audio"}
    assert (audio_only["input_ids"] == tiny_processor.tokenizer.video_token_id).sum() == 0
    assert (audio_only["input_ids"] == tiny_processor.tokenizer.audio_token_id).sum() == 3 * 8
    with pytest.raises(ValueError, match="no entry for"):
        NanoEmoXDataCollator(tiny_processor, FeatureCache(tmp_path / "cache"))([{**rows[0], "id": "zzz"}])


def test_long_dialogues_are_trimmed_to_max_length(tiny_processor, rows):
    history = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i} " + "word " * 20} for i in range(200)]
    batch = NanoEmoXDataCollator(tiny_processor, max_length=200)([{**rows[3], "history": history}])
    assert batch["input_ids"].shape[1] <= 200
    assert tiny_processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100]).startswith("<think>")
    assert np.isin(batch["input_ids"][0].numpy(), [tiny_processor.tokenizer.video_token_id]).sum() == 0
