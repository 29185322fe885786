import logging

import av
import numpy as np
import pytest
import torch
from transformers import AutoProcessor

import nanoemox_processing.media_nanoemox as media
from modeling_nanoemox.synthetic import photo_clip_frames, real_face_photo, synthetic_voice, write_clip
from nanoemox_processing import MediaDecodeError, MediaError, MediaNotFoundError, NanoEmoXProcessor
from nanoemox_processing.face_detection_nanoemox import OpenCVHaarFaceDetector, crop_faces, track_main_face
from nanoemox_processing.prompts_nanoemox import MINTREC2_INTENTS, TASKS


def indexed_frames(count, height=48, width=64):
    """Frames whose red channel encodes their index (×10), so sampling can be checked after h264."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    frames[..., 0] = (np.arange(count) * 10 % 250)[:, None, None]
    return frames


def red_index(video_frames):
    return np.round(video_frames[:, :, :, 0].mean(axis=(1, 2)) / 10).astype(int)


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    """A 2 s talking-head clip made from a real photograph, with a synthetic voice."""
    path = tmp_path_factory.mktemp("media") / "face.mp4"
    frames, boxes = photo_clip_frames(real_face_photo(), 50, (360, 640))
    write_clip(path, frames, fps=25, audio=synthetic_voice(2.0, pitch_hz=180), channels=2)
    return path, boxes


# ---- frames -----------------------------------------------------------------------------------------------------


def test_frames_are_sampled_uniformly_from_a_file(tmp_path):
    path = write_clip(tmp_path / "count.mp4", indexed_frames(20), fps=10)
    decoded = media.decode_video(path, num_frames=8)
    assert red_index(decoded.frames).tolist() == [0, 2, 5, 7, 10, 12, 15, 17]
    assert decoded.original_size == (48, 64) and decoded.scale == 1.0


def test_a_clip_shorter_than_eight_frames_repeats_its_last_frame(tmp_path):
    path = write_clip(tmp_path / "short.mp4", indexed_frames(3), fps=25)
    assert red_index(media.decode_video(path, num_frames=8).frames).tolist() == [0, 1, 2, 2, 2, 2, 2, 2]


def test_an_hour_long_video_is_read_by_seeking(tmp_path, monkeypatch):
    path = tmp_path / "hour.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1, options={"g": "60", "preset": "ultrafast"})
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=8000)
        audio.layout = "mono"
        image = np.zeros((32, 32, 3), np.uint8)
        for second in range(3600):
            image[:] = second % 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        minute = (3000 * np.sin(np.arange(8000 * 60) / 8000 * 2 * np.pi * 200)).astype(np.int16)[None]
        for _ in range(60):
            frame = av.AudioFrame.from_ndarray(minute, format="s16", layout="mono")
            frame.sample_rate = 8000
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)

    decoded_counts = []
    original_open = media.open_container

    class CountingContainer:
        def __init__(self, container):
            self._container = container

        def decode(self, *args, **kwargs):
            for item in self._container.decode(*args, **kwargs):
                decoded_counts.append(1)
                yield item

        def __getattr__(self, name):
            return getattr(self._container, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._container.__exit__(*exc)

    monkeypatch.setattr(media, "open_container", lambda source: CountingContainer(original_open(source)))
    decoded = media.decode_video(path, num_frames=8)
    assert decoded.timestamps.tolist() == [0, 450, 900, 1350, 1800, 2250, 2700, 3150]
    assert len(decoded_counts) < 8 * 60  # at most one keyframe interval per frame, not 3600 frames
    decoded_counts.clear()
    duration = media.audio_duration(path)
    waveform = media.decode_audio(path, 16000, media.clip_spans(duration, 8, 2.0))
    assert waveform.shape == (8 * 32000,)
    assert len(decoded_counts) < 8 * 20  # a few packets per clip, not an hour of audio


@pytest.mark.parametrize("size", [(1, 1), (4320, 7680)], ids=["1x1", "8K"])
def test_tiny_and_huge_frames(tiny_processor, size):
    frames = np.full((2, *size, 3), 127, np.uint8)
    inputs = tiny_processor(videos=frames, text="hi", task="msa")
    image = tiny_processor.image_processor.crop_size["height"]
    assert inputs["pixel_values_videos"].shape == (1, 8, 3, image, image)
    assert inputs["face_boxes"][0, 0].tolist() == [0.0, 0.0, float(size[1]), float(size[0])]
    assert not inputs["face_detected"].any()


def test_8k_video_file_is_decoded_at_a_capped_resolution(tmp_path):
    path = write_clip(tmp_path / "8k.mp4", np.full((3, 4320, 7680, 3), 90, np.uint8), fps=25)
    decoded = media.decode_video(path, num_frames=8, max_side=1280)
    assert decoded.frames.shape == (8, 720, 1280, 3)
    assert decoded.original_size == (4320, 7680) and decoded.scale == 6.0


# ---- faces --------------------------------------------------------------------------------------------------------


def test_detector_finds_the_face_in_a_real_photograph():
    photo = real_face_photo()  # 600×512 portrait; the face spans roughly x 150–380, y 100–330
    boxes = OpenCVHaarFaceDetector().detect(photo)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert 120 < x < 200 and 70 < y < 150 and 180 < w < 260


def test_main_face_is_tracked_and_a_missed_frame_falls_back_to_the_whole_frame():
    main = np.array([100, 100, 80, 80], np.float32)
    other = np.array([300, 50, 40, 40], np.float32)
    detections = [np.stack([main, other]), np.stack([other, main + 5]), np.zeros((0, 4)), np.stack([other])]
    track = track_main_face(detections)
    assert track[0].tolist() == main.tolist() and track[1].tolist() == (main + 5).tolist()
    assert track[2] is None and track[3] is None
    frames = np.zeros((4, 240, 320, 3), np.uint8)
    crops = crop_faces(frames, track, size=32, margin=0.25)
    assert crops.crops.shape == (4, 32, 32, 3)
    assert crops.detected.tolist() == [True, True, False, False]
    assert crops.boxes[0].tolist() == [80.0, 80.0, 120.0, 120.0]  # 80 px face + 25% margin each side, centred
    assert crops.boxes[2].tolist() == [0.0, 0.0, 320.0, 240.0]


def test_video_from_a_real_face_with_a_voice(tiny_processor, face_clip):
    path, drawn = face_clip
    inputs = tiny_processor(videos=path, text="How are you?", task="mer")
    assert inputs["face_detected"].all()
    assert inputs["audio_mask"].tolist() == [True] and inputs["video_mask"].tolist() == [True]
    boxes = inputs["face_boxes"][0]
    # Each crop lies inside the drawn photograph and is a square (not clipped by the frame edge).
    assert torch.all(boxes[:, 2] == boxes[:, 3])
    centres_x = boxes[:, 0] + boxes[:, 2] / 2
    assert torch.all((centres_x > torch.tensor(drawn[:, 0]).min()) & (centres_x < 640))
    audio = inputs["audio_values"][0]
    assert audio.shape == (8, 32000)
    torch.testing.assert_close(audio.mean(dim=1), torch.zeros(8), atol=1e-3, rtol=0)
    torch.testing.assert_close(audio.std(dim=1), torch.ones(8), atol=1e-2, rtol=0)


def test_caller_supplied_crops_skip_detection(tiny_processor, monkeypatch):
    monkeypatch.setattr(OpenCVHaarFaceDetector, "detect", lambda *_: pytest.fail("detector must not run"))
    frames = (np.random.default_rng(0).random((8, 64, 64, 3)) * 255).astype(np.uint8)
    crops = np.full((8, 50, 50, 3), 200, np.uint8)
    inputs = tiny_processor(videos=frames, faces=crops, text="hi", task="msa")
    assert inputs["face_detected"].all()
    values = inputs["face_pixel_values"][0, :, 0]
    expected = (200 / 255 - 0.485) / 0.229
    torch.testing.assert_close(values, torch.full_like(values, expected), atol=1e-4, rtol=0)


# ---- audio ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, rate", [(1, 8000), (2, 44100), (6, 48000), (8, 96000)])
def test_audio_of_any_channel_count_and_rate(tmp_path, tiny_processor, channels, rate):
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * 3)) / rate).astype(np.float32)
    path = write_clip(
        tmp_path / "tone.wav", audio=tone, sampling_rate=rate, channels=channels, audio_codec="pcm_s16le"
    )
    waveform = media.decode_audio(path, 16000)
    assert abs(len(waveform) - 48000) <= 400
    spectrum = np.abs(np.fft.rfft(waveform[8000:40000]))
    assert abs(np.argmax(spectrum) * 16000 / 32000 - 440) < 2  # the tone survives downmix and resampling
    inputs = tiny_processor(audio=str(path), text="hm", task="msa")
    assert inputs["audio_values"].shape == (1, 8, 32000)
    multichannel = np.stack([tone] * channels) if channels > 1 else tone
    from_array = tiny_processor(audio=(multichannel, rate), text="hm", task="msa")["audio_values"]
    assert from_array.shape == (1, 8, 32000)


def test_audio_clips_overlap_when_short_and_pad_under_two_seconds():
    rate = 16000
    ramp = np.arange(4 * rate, dtype=np.float32)
    clips = media.split_clips(ramp, rate, 8, 2.0)
    assert clips.shape == (8, 32000)
    starts = clips[:, 0] / rate
    np.testing.assert_allclose(starts, np.arange(8) * 2 / 7, atol=1e-3)
    short = media.split_clips(np.ones(8000, np.float32), rate, 8, 2.0)
    assert (short[:, :8000] == 1).all() and (short[:, 8000:] == 0).all()


def test_silent_audio_and_a_tiny_clip(tmp_path, tiny_processor, caplog):
    path = write_clip(tmp_path / "blip.mp4", indexed_frames(2), fps=25, audio=np.zeros(800, np.float32))
    with caplog.at_level(logging.WARNING):
        inputs = tiny_processor(videos=path, text="", task="mer")
    assert inputs["pixel_values_videos"].shape[1] == 8
    assert inputs["audio_values"].abs().max() == 0
    assert "silent" in caplog.text


# ---- bad input ------------------------------------------------------------------------------------------------


def test_missing_file(tiny_processor, tmp_path):
    with pytest.raises(MediaNotFoundError, match="missing.mp4: no such file"):
        tiny_processor(videos=tmp_path / "missing.mp4", task="mer")
    assert issubclass(MediaNotFoundError, FileNotFoundError)


def test_corrupt_truncated_and_renamed_files(tiny_processor, tmp_path):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "notes.mp4").write_text("this is a text file\n" * 20)
    full = write_clip(tmp_path / "full.mp4", indexed_frames(40), fps=20, audio=synthetic_voice(2.0)).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(full[: len(full) // 2])  # the index (moov) is at the end: unusable
    for name in ("noise.mp4", "notes.mp4", "cut.mp4"):
        with pytest.raises(MediaDecodeError, match=f"{name}: not a readable media file"):
            tiny_processor(videos=tmp_path / name, task="mer")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaDecodeError, match="empty"):
        tiny_processor(videos=tmp_path / "empty.mp4", task="mer")


def test_truncated_streamable_file_uses_what_decodes(tiny_processor, tmp_path, caplog):
    full = write_clip(tmp_path / "full.mkv", indexed_frames(40), fps=20).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(full[: len(full) // 2])
    inputs = tiny_processor(videos=tmp_path / "cut.mkv", task="mer")
    assert inputs["pixel_values_videos"].shape[1] == 8


def test_audio_only_file_and_zero_frame_video(tiny_processor, tmp_path, caplog):
    voice = synthetic_voice(1.0)
    audio_only = write_clip(tmp_path / "voice.m4a", audio=voice)
    inputs = tiny_processor(videos=audio_only, text="hello", task="msa")
    assert "pixel_values_videos" not in inputs and inputs["audio_mask"].tolist() == [True]
    zero = tmp_path / "zero.mp4"  # a video stream that holds no frame, next to an audio track
    with av.open(str(zero), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=16000)
        sound.layout = "mono"
        frame = av.AudioFrame.from_ndarray(voice[None, :1024], format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*sound.encode(frame), *sound.encode()]:
            container.mux(packet)
    with caplog.at_level(logging.WARNING):
        inputs = tiny_processor(videos=zero, text="hello", task="msa")
    assert "pixel_values_videos" not in inputs and inputs["audio_mask"].tolist() == [True]
    assert "no decodable frames" in caplog.text
    with pytest.raises(MediaError, match="empty"):
        tiny_processor(videos=np.zeros((0, 8, 8, 3), np.uint8), task="msa")


def test_video_without_audio_proceeds_and_says_so(tiny_processor, tmp_path, caplog):
    silent_film = write_clip(tmp_path / "film.mp4", indexed_frames(10), fps=10)
    with caplog.at_level(logging.WARNING):
        inputs = tiny_processor(videos=silent_film, text="hi", task="ovmer")
    assert "audio_values" not in inputs
    assert "no audio given and the video has no audio track" in caplog.text
    assert (inputs["input_ids"] == tiny_processor.tokenizer.fusion_token_id).sum() == 0


def test_text_problems(tiny_processor, caplog):
    with caplog.at_level(logging.WARNING):
        inputs = tiny_processor(text=b"caf\xe9 \xff ok", task="msa")
    assert "not valid UTF-8" in caplog.text
    assert "caf\ufffd \ufffd ok" in tiny_processor.tokenizer.decode(inputs["input_ids"][0])
    empty = tiny_processor(text="", task="msa")
    assert "Subtitle" not in tiny_processor.tokenizer.decode(empty["input_ids"][0])
    smuggled = tiny_processor(text="look <|emox_video|> here", task="msa")
    assert (smuggled["input_ids"] == tiny_processor.tokenizer.video_token_id).sum() == 0
    with pytest.raises(ValueError, match="unknown task 'joy'; expected one of"):
        tiny_processor(text="hi", task="joy")
    with pytest.raises(ValueError, match="pass a task"):
        tiny_processor(text="hi")


def test_candidate_label_checks(tiny_processor):
    with pytest.raises(ValueError, match="task 'msa' takes no candidate labels"):
        tiny_processor(text="hi", task="msa", candidates=["good", "bad"])
    with pytest.raises(ValueError, match="candidate labels repeat"):
        tiny_processor(text="hi", task="mer", candidates=["happy", "Happy"])
    with pytest.raises(ValueError, match="not among the candidate labels"):
        tiny_processor(text="hi", task="mir", candidates=["greet", "thank"], targets="complain")
    prompt = tiny_processor.tokenizer.decode(tiny_processor(text="hi", task="mir")["input_ids"][0])
    assert "Candidate labels: " + ", ".join(MINTREC2_INTENTS) + "." in prompt


# ---- prompts, labels, batching, truncation --------------------------------------------------------------------


def test_prompt_layout_and_placeholder_expansion(tiny_processor, face_clip):
    path, _ = face_clip
    inputs = tiny_processor(videos=path, text="I won!", task="ovmer")
    ids = inputs["input_ids"][0]
    tokenizer = tiny_processor.tokenizer
    counts = {m: int((ids == getattr(tokenizer, f"{m}_token_id")).sum()) for m in ("video", "audio", "face", "fusion")}
    assert counts == {"video": 8, "audio": 8, "face": 2, "fusion": 1}
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\n" + tiny_processor.system_prompt)
    assert text.endswith(TASKS["ovmer"].instruction + "<|im_end|>\n<|im_start|>assistant\n")
    assert 'Subtitle: "I won!"' in text


def test_every_task_builds_a_prompt(tiny_processor):
    for task in TASKS:
        inputs = tiny_processor(text="hello", task=task)
        assert TASKS[task].instruction.split(".")[0] in tiny_processor.tokenizer.decode(inputs["input_ids"][0])
    erg = tiny_processor.tokenizer.decode(tiny_processor(text="hi", task="erg")["input_ids"][0])
    assert "<think></think>" in erg and "event scenario" in erg


def test_training_labels_mask_everything_but_the_answer(tiny_processor):
    inputs = tiny_processor(text=["so good", "bad"], task="msa", targets=["positive", "negative"])
    assert (inputs["attention_mask"][:, 0] == 1).all()  # right padding for training
    tokenizer = tiny_processor.tokenizer
    for row, answer in enumerate(["positive", "negative"]):
        labels = inputs["labels"][row]
        kept = labels[labels != -100]
        assert tokenizer.decode(kept) == answer + tokenizer.eos_token
        positions = (labels != -100).nonzero().flatten()
        assert inputs["input_ids"][row, positions].tolist() == kept.tolist()


def test_batches_pad_left_for_generation_and_carry_presence_masks(tiny_processor):
    frames = (np.random.default_rng(1).random((8, 40, 40, 3)) * 255).astype(np.uint8)
    inputs = tiny_processor(
        videos=[frames, None],
        audio=[None, (np.ones(16000, np.float32) * 0.1, 16000)],
        text=["a long subtitle with many words in it", "short"],
        task=["mer", "msa"],
    )
    assert inputs["video_mask"].tolist() == [True, False]
    assert inputs["audio_mask"].tolist() == [False, True]
    assert inputs["pixel_values_videos"][1].abs().sum() == 0
    assert (inputs["attention_mask"][:, -1] == 1).all() and (inputs["attention_mask"][:, 0] == 0).any()
    with pytest.raises(ValueError, match="disagree on the batch size"):
        tiny_processor(text=["a", "b"], task=["msa", "mer", "mir"])


def test_truncation_trims_history_then_text_and_never_placeholders(tiny_processor, face_clip):
    path, _ = face_clip
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "blah " * 30} for i in range(12)
    ]
    long_text = "word " * 400
    inputs = tiny_processor(videos=path, text=long_text, task="erg", history=history, max_length=300)
    ids = inputs["input_ids"][0]
    assert len(ids) <= 300
    assert int((ids == tiny_processor.tokenizer.video_token_id).sum()) == 8
    decoded = tiny_processor.tokenizer.decode(ids)
    assert "turn 0" not in decoded and "Current input" in decoded
    with pytest.raises(ValueError, match=r"tokens without any subtitle or dialogue, \d+ over the budget of 40"):
        tiny_processor(videos=path, text=long_text, task="erg", history=history, max_length=40)


def test_chat_template_and_free_chat(tiny_processor):
    conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "How do I sound?"}]}]
    rendered = tiny_processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert rendered.count(tiny_processor.tokenizer.audio_token) == 1
    wave = (np.sin(np.arange(16000) / 10).astype(np.float32), 16000)
    inputs = tiny_processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, audio=wave
    )
    assert int((inputs["input_ids"] == tiny_processor.tokenizer.audio_token_id).sum()) == 8
    assert (tiny_processor.chat_template or "").startswith("{%- for message in messages %}")


def test_processor_round_trip_and_answer_split(tiny_processor, tmp_path):
    tiny_processor.save_pretrained(tmp_path)
    assert (tmp_path / "chat_template.jinja").is_file()
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is NanoEmoXProcessor
    assert (loaded.num_frames, loaded.num_video_tokens, loaded.face_detector) == (8, 8, "opencv-haar")
    assert loaded.face_image_processor.image_mean == pytest.approx([0.485, 0.456, 0.406])
    a = tiny_processor(text="same", task="mer")
    b = loaded(text="same", task="mer")
    assert a["input_ids"].tolist() == b["input_ids"].tolist()
    assert NanoEmoXProcessor.split_chain_of_empathy("<think> sad </think> I'm here.") == ("sad", "I'm here.")


def test_a_folder_of_frames_is_a_video(tiny_processor, tmp_path):
    from PIL import Image

    folder = tmp_path / "clip"
    folder.mkdir()
    for index, frame in enumerate(indexed_frames(16)):
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    (folder / "notes.txt").write_text("not a frame")
    decoded = tiny_processor._load_video(folder)
    assert red_index(decoded.frames).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    inputs = tiny_processor(videos=folder, task="mer")
    assert inputs["video_mask"].tolist() == [True] and "audio_values" not in inputs
