"""Media decoding (`media_nanoemox`) and face detection / cropping (`face_detection_nanoemox`), below the processor."""

import av
import numpy as np

import nanoemox_processing.media_nanoemox as media
from modeling_nanoemox.synthetic import real_face_photo, write_clip
from nanoemox_processing.face_detection_nanoemox import OpenCVHaarFaceDetector, crop_faces, track_main_face


def indexed_frames(count, height=48, width=64):
    """Frames whose red channel encodes their index (×10), so sampling can be checked after h264."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    frames[..., 0] = (np.arange(count) * 10 % 250)[:, None, None]
    return frames


def red_index(video_frames):
    return np.round(video_frames[:, :, :, 0].mean(axis=(1, 2)) / 10).astype(int)


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


def test_8k_video_file_is_decoded_at_a_capped_resolution(tmp_path):
    path = write_clip(tmp_path / "8k.mp4", np.full((3, 4320, 7680, 3), 90, np.uint8), fps=25)
    decoded = media.decode_video(path, num_frames=8, max_side=1280)
    assert decoded.frames.shape == (8, 720, 1280, 3)
    assert decoded.original_size == (4320, 7680) and decoded.scale == 6.0


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


def test_audio_clips_overlap_when_short_and_pad_under_two_seconds():
    rate = 16000
    ramp = np.arange(4 * rate, dtype=np.float32)
    clips = media.split_clips(ramp, rate, 8, 2.0)
    assert clips.shape == (8, 32000)
    starts = clips[:, 0] / rate
    np.testing.assert_allclose(starts, np.arange(8) * 2 / 7, atol=1e-3)
    short = media.split_clips(np.ones(8000, np.float32), rate, 8, 2.0)
    assert (short[:, :8000] == 1).all() and (short[:, 8000:] == 0).all()
