# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Face detection, main-face tracking and temporal completion on real faces (numpy frames, no processor)."""

import numpy as np
import pytest

from nanoemox_processing.face_detection_nanoemox import (
    FACE_DETECTORS,
    FACE_SOURCES,
    FaceDetector,
    box_iou,
    build_face_detector,
    detect_and_track,
    logger,
)

ASTRONAUT_FACE = np.array([178.0, 83.0, 95.0, 95.0])
# Measured once, by eye and by every detector of the benchmark (IoU 0.70-0.89 with each): forehead to chin.
GRACE_HOPPER_FACE = np.array([170.0, 140.0, 195.0, 195.0])


@pytest.fixture(scope="module")
def mtcnn():
    return build_face_detector("mtcnn")


@pytest.fixture(scope="module")
def astronaut():
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


@pytest.fixture(scope="module")
def hopper():
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


class Scripted(FaceDetector):
    """Returns the boxes it is given for each call, in order (frame by frame)."""

    name = "scripted"
    upright_only = False

    def __init__(self, per_frame):
        super().__init__(max_side=None)
        self.per_frame, self.calls = [np.asarray(b, np.float32).reshape(-1, 4) for b in per_frame], 0

    def _detect(self, frame):
        boxes = self.per_frame[self.calls]
        self.calls += 1
        return boxes


def _warnings(caplog_records):
    return [r for r in caplog_records if r.levelname == "WARNING"]


def test_registry_and_sources():
    assert FACE_SOURCES == ("none", "detected", "completed")
    assert {"mtcnn", "opencv-haar", "opencv-haar-default", "opencv-haar-profile", "skimage-lbp", "dlib-hog"} <= set(
        FACE_DETECTORS
    )
    with pytest.raises(ValueError, match="Unknown face detector 'nope'"):
        build_face_detector("nope")


def test_astronaut_clip_all_frames(mtcnn, astronaut):
    frames = np.stack([astronaut] * 8)
    track = detect_and_track(frames, mtcnn, size=112)
    assert track.crops.shape == (8, 112, 112, 3) and track.crops.dtype == np.uint8
    assert list(track.source) == ["detected"] * 8
    ious = [box_iou(ASTRONAUT_FACE, box[None])[0] for box in track.face_boxes]
    assert min(ious) >= 0.5, ious
    # The crop is the margin-expanded square around the face, not the face itself.
    assert np.all(track.crop_boxes[:, 2] > track.face_boxes[:, 2])


def test_grace_hopper_clip_in_a_larger_frame(mtcnn, hopper):
    # 720p frames, the portrait pasted at an offset that moves a little from frame to frame.
    frames, truth = [], []
    for index in range(4):
        frame = np.full((720, 1280, 3), 90, np.uint8)
        x0, y0 = 300 + 20 * index, 60
        frame[y0 : y0 + 600, x0 : x0 + 512] = hopper
        frames.append(frame)
        truth.append(GRACE_HOPPER_FACE + [x0, y0, 0, 0])
    track = detect_and_track(np.stack(frames), mtcnn)
    assert list(track.source) == ["detected"] * 4
    for box, expected in zip(track.face_boxes, truth):
        assert box_iou(expected, box[None])[0] >= 0.6
        # Tolerance on the centre: within 10 % of the face's size.
        assert np.abs((box[:2] + box[2:] / 2) - (expected[:2] + expected[2:] / 2)).max() <= 0.1 * expected[2]


def test_rolled_face_found_by_frontal_detector_via_roll_search(astronaut):
    import cv2

    centre = tuple(float(v) for v in ASTRONAUT_FACE[:2] + ASTRONAUT_FACE[2:] / 2)
    rolled = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D(centre, 30, 1.0), (512, 512))
    haar = build_face_detector("opencv-haar")
    assert len(haar.detect(rolled)) == 0 or box_iou(ASTRONAUT_FACE, haar.detect(rolled)).max() < 0.5
    track = detect_and_track(rolled[None], haar)
    assert track.source[0] == "detected"
    assert box_iou(ASTRONAUT_FACE, track.face_boxes[:1])[0] >= 0.5


def test_rolled_face_mtcnn(mtcnn, astronaut):
    import cv2

    centre = tuple(float(v) for v in ASTRONAUT_FACE[:2] + ASTRONAUT_FACE[2:] / 2)
    rolled = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D(centre, -30, 1.0), (512, 512))
    track = detect_and_track(rolled[None], mtcnn)
    assert box_iou(ASTRONAUT_FACE, track.face_boxes[:1])[0] >= 0.5


def test_two_faces_main_face_kept(mtcnn, astronaut, hopper):
    import cv2

    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[60:572, 40:552] = astronaut  # face 95 px wide
    small = cv2.resize(hopper, (200, 234), interpolation=cv2.INTER_AREA)  # face about 76 px wide
    frame[200:434, 900:1100] = small
    detections = mtcnn.detect(frame)
    assert len(detections) == 2
    track = detect_and_track(np.stack([frame] * 3), mtcnn)
    main = ASTRONAUT_FACE + [40, 60, 0, 0]
    assert all(box_iou(main, box[None])[0] >= 0.5 for box in track.face_boxes)


def test_false_detection_in_some_frames_does_not_capture_the_track():
    face, false = [178, 83, 95, 95], [250, 89, 197, 197]  # the case: a larger box on the neck and shuttle
    detector = Scripted([[face, false] if index in (2, 3) else [face] for index in range(8)])
    track = detect_and_track(np.zeros((8, 512, 512, 3), np.uint8), detector)
    np.testing.assert_allclose(track.face_boxes, np.tile(face, (8, 1)))
    assert list(track.source) == ["detected"] * 8


def test_face_missed_in_some_frames_is_completed_and_flagged():
    detector = Scripted([[100, 100, 50, 50], [], [], [130, 100, 50, 50], [], [140, 110, 60, 60], [], []])
    frames = np.zeros((8, 360, 640, 3), np.uint8)
    track = detect_and_track(frames, detector)
    assert (
        list(track.source)
        == ["detected", "completed", "completed", "detected", "completed", "detected"] + ["completed"] * 2
    )
    np.testing.assert_allclose(track.face_boxes[1], [110, 100, 50, 50])  # interpolated
    np.testing.assert_allclose(track.face_boxes[4], [135, 105, 55, 55])
    np.testing.assert_allclose(track.face_boxes[7], [140, 110, 60, 60])  # carried from the last detection
    assert np.all(track.crop_boxes[:, 2] > 0)


def test_detect_every_other_frame_completes_the_rest():
    detector = Scripted([[100, 100, 50, 50], [110, 100, 50, 50], [120, 100, 50, 50], [130, 100, 50, 50]])
    track = detect_and_track(np.zeros((6, 360, 640, 3), np.uint8), detector, detect_every=2)
    assert detector.calls == 4  # frames 0, 2, 4 and the last one
    assert list(track.source) == ["detected", "completed", "detected", "completed", "detected", "detected"]
    np.testing.assert_allclose(track.face_boxes[1], [105, 100, 50, 50])


def test_single_detection_carries_the_clip(mtcnn, astronaut):
    frames = np.stack([astronaut] + [np.full_like(astronaut, 128)] * 5)
    track = detect_and_track(frames, mtcnn)
    assert list(track.source) == ["detected"] + ["completed"] * 5
    assert all(box_iou(ASTRONAUT_FACE, box[None])[0] >= 0.5 for box in track.face_boxes)


def test_no_face_clip_falls_back_to_whole_frames_with_one_warning(mtcnn):
    from transformers.testing_utils import CaptureLogger

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 180, 320, 3), dtype=np.uint8)
    with CaptureLogger(logger) as captured:
        track = detect_and_track(frames, mtcnn, size=64)
    assert captured.out.count("No face found") == 1
    assert list(track.source) == ["none"] * 4 and not track.found
    np.testing.assert_allclose(track.face_boxes, 0)
    np.testing.assert_allclose(track.crop_boxes, np.tile([0, 0, 320, 180], (4, 1)))
    assert track.crops.shape == (4, 64, 64, 3)


def test_small_frames_are_detected_at_full_resolution():
    seen = []

    class Recorder(FaceDetector):
        def _detect(self, frame):
            seen.append(frame.shape)
            return np.zeros((0, 4), np.float32)

    Recorder().detect(np.zeros((512, 512, 3), np.uint8))
    Recorder().detect(np.zeros((720, 1280, 3), np.uint8))
    assert seen == [(512, 512, 3), (360, 640, 3)]


def test_module_import_is_light():
    """The two files import no media or ML library (as remote code they load without the package's __init__)."""
    import subprocess
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "processing"
    code = (
        "import sys, types; package = types.ModuleType('remote'); package.__path__ = [sys.argv[1]]; "
        "sys.modules['remote'] = package; import remote.face_detection_nanoemox, remote.mtcnn_nanoemox; "
        "print(sorted(m for m in ('cv2', 'torch', 'dlib', 'skimage', 'mediapipe', 'mtcnn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_mtcnn_pooling_matches_torch_max_pool():
    import torch
    import torch.nn.functional as F

    from nanoemox_processing.mtcnn_nanoemox import _max_pool

    generator = torch.Generator().manual_seed(0)
    for shape in [(3, 10, 23, 23), (2, 28, 22, 21), (1, 16, 47, 45), (4, 64, 3, 3)]:
        x = torch.randn(shape, generator=generator)
        for kernel in (2, 3):
            expected = F.max_pool2d(x, kernel, 2, ceil_mode=True)
            for layout in (x, x.contiguous(memory_format=torch.channels_last)):
                assert torch.equal(_max_pool(layout, kernel), expected), (shape, kernel)


def test_mtcnn_nms_matches_greedy_reference():
    from nanoemox_processing.mtcnn_nanoemox import nms

    def reference(boxes, scores, threshold, use_min):
        area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)  # noqa: E731
        kept = []
        for i in sorted(range(len(boxes)), key=lambda k: -scores[k]):
            suppressed = False
            for j in kept:
                a, b = boxes[i], boxes[j]
                w = max(min(a[2], b[2]) - max(a[0], b[0]) + 1, 0)
                h = max(min(a[3], b[3]) - max(a[1], b[1]) + 1, 0)
                union = min(area(a), area(b)) if use_min else area(a) + area(b) - w * h
                suppressed |= w * h / union > threshold
            if not suppressed:
                kept.append(i)
        return kept

    rng = np.random.default_rng(0)
    for n in (1, 7, 60, 300):  # 300 spans two of nms's 256-box blocks
        corner = rng.uniform(0, 200, (n, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(5, 60, (n, 2))], 1)
        scores = rng.permutation(n).astype(np.float64)  # distinct scores: the greedy order is unambiguous
        for threshold, use_min in ((0.5, False), (0.7, False), (0.7, True)):
            assert nms(boxes, scores, threshold, use_min).tolist() == reference(boxes, scores, threshold, use_min)


def _four_frame_clip(astronaut, hopper) -> np.ndarray:
    """One 720p clip (shrunk to the detection size): the astronaut at two places, Grace Hopper, no face."""
    import cv2

    frames = np.zeros((4, 720, 1280, 3), np.uint8)
    frames[0, 100:612, 100:612] = astronaut
    frames[1, 150:662, 700:1212] = astronaut
    frames[2, 50:50 + hopper.shape[0] // 2, 300:300 + hopper.shape[1] // 2] = cv2.resize(
        hopper, (hopper.shape[1] // 2, hopper.shape[0] // 2), interpolation=cv2.INTER_AREA
    )
    return frames


def test_mtcnn_batch_of_frames_equals_frame_by_frame(mtcnn, astronaut, hopper):
    frames = _four_frame_clip(astronaut, hopper)
    together = mtcnn.detect_many(frames)
    alone = [mtcnn.detect(frame) for frame in frames]
    assert [len(boxes) for boxes in together] == [len(boxes) for boxes in alone]
    assert all(len(boxes) >= 1 for boxes in together[:3]) and len(together[3]) == 0
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a, b, atol=0.05)
    expected = ASTRONAUT_FACE + [100, 100, 0, 0]
    assert box_iou(expected, together[0]).max() >= 0.5


def test_mtcnn_parts_on_threads_give_the_one_thread_boxes(astronaut, hopper, monkeypatch):
    """With two intra-op threads the clip is split into two parts detected side by side, each on one intra-op thread:
    exactly the boxes of the whole clip on one thread; the caller's thread count is kept and errors surface."""
    import threading

    import torch

    import nanoemox_processing.mtcnn_nanoemox as mtcnn_module

    frames = _four_frame_clip(astronaut, hopper)
    sequential = build_face_detector("mtcnn", batch_size=4, threads=1)
    parallel = build_face_detector("mtcnn", batch_size=4)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        expected = sequential.detect_many(frames)
        torch.set_num_threads(2)
        seen_threads, seen_counts = set(), []
        detect = mtcnn_module.detect_mtcnn_batch

        def recording(images, *args, **kwargs):
            seen_threads.add(threading.current_thread().name)
            seen_counts.append((len(images), torch.get_num_threads()))
            return detect(images, *args, **kwargs)

        monkeypatch.setattr(mtcnn_module, "detect_mtcnn_batch", recording)
        found = parallel.detect_many(frames)
        assert torch.get_num_threads() == 2
        assert len(seen_threads) == 2 and sorted(seen_counts) == [(2, 1), (2, 1)]
        assert [boxes.tolist() for boxes in found] == [boxes.tolist() for boxes in expected]

        def failing(images, *args, **kwargs):
            if threading.current_thread().name == "nanoemox-part":
                raise RuntimeError("part failed")
            return detect(images, *args, **kwargs)

        monkeypatch.setattr(mtcnn_module, "detect_mtcnn_batch", failing)
        with pytest.raises(RuntimeError, match="part failed"):
            parallel.detect_many(frames)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    with pytest.raises(ValueError, match="at least 1"):
        build_face_detector("mtcnn", threads=0)
