"""Media decoding (`media_nanoemox`) and face detection / cropping (`face_detection_nanoemox`), below the processor."""

import logging
import threading

import av
import numpy as np
import pytest

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


class ContainerProxy:
    """A PyAV container that forwards everything to the real one; subclasses wrap a method to observe or break it."""

    def __init__(self, container):
        self._container = container

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._container.__exit__(*exc)


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

    class CountingContainer(ContainerProxy):
        def decode(self, *args, **kwargs):
            for item in self._container.decode(*args, **kwargs):
                decoded_counts.append(1)
                yield item

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


# ---- a clip decoded in two parts at once (two threads, from two keyframes) ----------------------------------------


def keyframed_clip(path, count=60, fps=10, keyframe_every=12):
    """A clip whose red channel encodes the frame index (×4) with a keyframe every `keyframe_every` frames."""
    frames = np.zeros((count, 48, 64, 3), np.uint8)
    frames[..., 0] = (np.arange(count) * 4)[:, None, None]
    frames[:, 10:20, :, 1] = 200  # a moving bar, so that frames reference each other
    for index in range(count):
        frames[index] = np.roll(frames[index], index, axis=1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": str(keyframe_every), "bf": "3"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def cut_with(monkeypatch, wrap=lambda container: container):
    """Records the cuts `_split_point` chooses; `wrap` replaces the second part's container."""
    cuts, real = [], media._split_point

    def spy(source, stream, targets):
        found = real(source, stream, targets)
        cuts.append(None if found is None else found[0])
        return None if found is None else (found[0], wrap(found[1]))

    monkeypatch.setattr(media, "_split_point", spy)
    return cuts


def one_pass(path, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(media, "_split_point", lambda *args: None)
        return media.decode_video(path, num_frames=8)


def test_a_clip_decoded_in_two_parts_gives_the_frames_of_one_pass(tmp_path, monkeypatch):
    path = keyframed_clip(tmp_path / "gop.mp4")
    reference = one_pass(path, monkeypatch)
    cuts = cut_with(monkeypatch)
    threads = threading.active_count()
    decoded = media.decode_video(path, num_frames=8)
    assert cuts == [4]  # targets 0 … 5.25 s, keyframes every 1.2 s: the second part decodes 2.4 → 5.25 s
    assert threading.active_count() == threads
    assert np.array_equal(decoded.frames, reference.frames)
    assert decoded.timestamps.tolist() == reference.timestamps.tolist() == [0, 0.7, 1.5, 2.2, 3.0, 3.7, 4.5, 5.2]
    assert np.round(decoded.frames[:, :, :, 0].mean(axis=(1, 2)) / 4).astype(int).tolist() == [
        0, 7, 15, 22, 30, 37, 45, 52
    ]  # fmt: skip


class BrokenContainer(ContainerProxy):
    """A second part's container whose demuxing fails after a few packets with `error`."""

    def __init__(self, container, error):
        super().__init__(container)
        self._error = error

    def demux(self, *args, **kwargs):
        for count, packet in enumerate(self._container.demux(*args, **kwargs)):
            if count == 3:
                raise self._error
            yield packet


@pytest.mark.parametrize(
    "error",
    [av.error.InvalidDataError(1094995529, "Invalid data"), av.FFmpegError(1, "boom")],
    ids=["damage", "error"],
)
def test_a_second_part_that_fails_is_dropped_for_the_one_pass(tmp_path, monkeypatch, caplog, error):
    path = keyframed_clip(tmp_path / "gop.mp4")
    reference = one_pass(path, monkeypatch)
    cuts = cut_with(monkeypatch, lambda container: BrokenContainer(container, error))
    with caplog.at_level(logging.WARNING):
        decoded = media.decode_video(path, num_frames=8)
    assert cuts == [4] and not caplog.records  # the one pass met no damage, so nothing is reported
    assert np.array_equal(decoded.frames, reference.frames)
    assert decoded.timestamps.tolist() == reference.timestamps.tolist()


def test_an_error_in_the_first_part_is_raised_and_stops_the_second(tmp_path, monkeypatch):
    path = keyframed_clip(tmp_path / "gop.mp4")
    cuts = cut_with(monkeypatch)
    real_pick = media._TimedFramePicker.pick

    def failing_pick(self, target):
        if self.stop is None and target > 2:  # the first part's picker (the second one has a stop event)
            raise av.FFmpegError(1, "boom")
        return real_pick(self, target)

    monkeypatch.setattr(media._TimedFramePicker, "pick", failing_pick)
    threads = threading.active_count()
    with pytest.raises(
        media.MediaDecodeError, match=r"gop.mp4: the video stream cannot be decoded \(\[Errno 1\] boom"
    ):
        media.decode_video(path, num_frames=8)
    assert cuts == [4] and threading.active_count() == threads


def test_a_clip_with_one_keyframe_is_read_in_one_pass(tmp_path, monkeypatch):
    cuts = cut_with(monkeypatch)
    path = write_clip(tmp_path / "count.mp4", indexed_frames(24), fps=10)
    assert red_index(media.decode_video(path, num_frames=8).frames).tolist() == [0, 3, 6, 9, 12, 15, 18, 21]
    assert cuts == [None]
