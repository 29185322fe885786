# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Face detection, main-face tracking with temporal completion, and cropping for the face branch.

FaceXFormer was trained on face crops, so the processor finds the clip's main face in every sampled frame and crops
it with a margin. One call does it all:

    track = detect_and_track(frames, detector, size=224, margin=0.25)

    frames      (T, H, W, 3) uint8 RGB, the sampled frames (any resolution; pixels below are these frames' pixels)
    detector    a `FaceDetector`, e.g. `build_face_detector("mtcnn")`; see `FACE_DETECTORS`
    → FaceTrack
      face_boxes  (T, 4) float32  the main face (x, y, w, h), detected or completed; (0, 0, 0, 0) where source is none
      crop_boxes  (T, 4) float32  the region actually cropped (the margin-expanded square clipped to the frame; the
                                  whole frame where source is none)
      source      (T,)   str      one of FACE_SOURCES = ("none", "detected", "completed")
      crops       (T, S, S, 3) uint8  what the face encoder sees

What it does, in order:
1. Detection (`detect_faces`): the detector runs on each frame, at full resolution up to `max_side` (640 by
   default, so 512-pixel frames are not shrunk) and on a copy shrunk to `max_side` above that. A frontal-only
   detector (`upright_only`) also searches a few rolls (±15°, then ±30°) on a frame where the unrotated pass found
   nothing — and only while fewer than half the clip's frames have a face, since completion covers the rest.
2. Tracking (`track_main_face`): detections are linked across frames into tracks (overlap or nearby centre with a
   similar size, gaps allowed); the main face is the track with the largest sum over frames of sqrt(box area), i.e.
   the face that recurs, large faces first among those that recur equally — not the largest box seen once.
3. Completion (`complete_track`): a frame where the main face was missed takes the box interpolated between its
   nearest detected neighbours (carried from the nearest one at the clip's ends), flagged "completed"; one
   detection carries the clip.
4. Cropping (`crop_faces`): a square of side max(w, h) * (1 + 2 * margin) centred on the face, resized to S; parts
   outside the frame are black. A clip with no face at all gets whole frames, letterboxed (source "none"), and
   one warning.

Detectors are pluggable (`FACE_DETECTORS`); each one's weights ship inside a PyPI package, nothing is downloaded at
run time. `benchmarks/bench_faces.py` measures them; the README quotes the table. Callers whose data is already
cropped (e.g. with OpenFace) pass the crops and skip detection. Heavy libraries (cv2, torch, dlib, skimage,
mediapipe) are imported inside functions: importing this module costs nothing.
"""

from dataclasses import dataclass

import numpy as np
from transformers.utils import logging

logger = logging.get_logger(__name__)

FACE_SOURCES = ("none", "detected", "completed")
DEFAULT_ROLLS = (15.0, -15.0, 30.0, -30.0)


# ---- detectors ------------------------------------------------------------------------------------------------


class FaceDetector:
    """
    Interface of a face detector: `detect(frame)` → `(num_faces, 4)` float32 boxes `(x, y, w, h)` in the frame's
    pixels, `detect_many(frames)` → one such array per frame. Subclasses implement `_detect` on a frame whose longest
    side is at most `max_side` (larger frames are shrunk with area averaging and the boxes scaled back), or
    `_detect_many` on a batch of such frames. `upright_only` tells `detect_faces` to search rolled copies of a frame
    where nothing was found.
    """

    name: str = ""
    upright_only: bool = True

    def __init__(self, max_side: int | None = 640):
        self.max_side = max_side

    def detect(self, frame: np.ndarray) -> np.ndarray:
        return self.detect_many([frame])[0]

    def detect_many(self, frames) -> list[np.ndarray]:
        """`detect` of each frame. Frames of one size go to `_detect_many` together, which a detector that can batch
        a clip's frames (MTCNN) overrides; the default runs `_detect` frame by frame."""
        import cv2

        if not len(frames):
            return []
        height, width = frames[0].shape[:2]
        if any(frame.shape[:2] != (height, width) for frame in frames):
            return [self.detect(frame) for frame in frames]
        scale = 1.0
        if self.max_side and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            frames = [cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for frame in frames]
        found = self._detect_many(np.stack([np.ascontiguousarray(frame) for frame in frames]))
        return [np.asarray(boxes, np.float32).reshape(-1, 4) / scale for boxes in found]

    def _detect(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _detect_many(self, frames: np.ndarray) -> list[np.ndarray]:
        return [self._detect(frame) for frame in frames]


class OpenCVHaarFaceDetector(FaceDetector):
    """
    An OpenCV Haar cascade shipped in the `opencv-python-headless` (< 5) wheel, run on a grey, histogram-equalised
    frame. `cascade`: "frontalface_alt2" (default), "frontalface_default" or "profileface" (run on the frame and its
    mirror image, since the cascade knows one side only).
    """

    name = "opencv-haar"

    def __init__(
        self,
        cascade: str = "frontalface_alt2",
        max_side: int | None = 640,
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        min_size: int = 20,
    ):
        super().__init__(max_side)
        import cv2

        self._cascade = cv2.CascadeClassifier(f"{cv2.data.haarcascades}haarcascade_{cascade}.xml")
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV's Haar cascade {cascade!r} is missing from this install (OpenCV 5 has none).")
        self.mirror = cascade == "profileface"
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def _detect(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        kwargs = dict(scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_size,) * 2)
        boxes = np.asarray(self._cascade.detectMultiScale(grey, **kwargs), np.float32).reshape(-1, 4)
        if self.mirror:
            mirrored = np.asarray(self._cascade.detectMultiScale(grey[:, ::-1].copy(), **kwargs), np.float32)
            mirrored = mirrored.reshape(-1, 4)
            mirrored[:, 0] = grey.shape[1] - mirrored[:, 0] - mirrored[:, 2]
            boxes = _merge_overlapping(np.concatenate([boxes, mirrored]))
        return boxes


class OpenCVHaarDefaultFaceDetector(OpenCVHaarFaceDetector):
    name = "opencv-haar-default"

    def __init__(self, max_side: int | None = 640, min_neighbors: int = 5, **kwargs):
        super().__init__("frontalface_default", max_side=max_side, min_neighbors=min_neighbors, **kwargs)


class OpenCVHaarProfileFaceDetector(OpenCVHaarFaceDetector):
    name = "opencv-haar-profile"

    def __init__(self, max_side: int | None = 640, **kwargs):
        super().__init__("profileface", max_side=max_side, **kwargs)


class SkimageLBPFaceDetector(FaceDetector):
    """scikit-image's LBP frontal-face cascade (`skimage.data.lbp_frontal_face_cascade_filename()`, in its wheel)."""

    name = "skimage-lbp"

    def __init__(self, max_side: int | None = 640, scale_factor: float = 1.2, step_ratio: float = 1.0, min_size=20):
        super().__init__(max_side)
        from skimage import data
        from skimage.feature import Cascade

        self._cascade = Cascade(data.lbp_frontal_face_cascade_filename())
        self.scale_factor, self.step_ratio, self.min_size = scale_factor, step_ratio, min_size

    def _detect(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        found = self._cascade.detect_multi_scale(
            img=grey,
            scale_factor=self.scale_factor,
            step_ratio=self.step_ratio,
            min_size=(self.min_size,) * 2,
            max_size=grey.shape,
        )
        return np.asarray([(d["c"], d["r"], d["width"], d["height"]) for d in found], np.float32).reshape(-1, 4)


class DlibHOGFaceDetector(FaceDetector):
    """dlib's HOG + linear SVM frontal detector (`dlib-bin` wheel; finds faces of about 80 px and up per
    `upsample` doubling: 1 finds 40 px)."""

    name = "dlib-hog"

    def __init__(self, max_side: int | None = 640, upsample: int = 1):
        super().__init__(max_side)
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self.upsample = upsample

    def _detect(self, frame: np.ndarray) -> np.ndarray:
        rects = self._detector(frame, self.upsample)
        return np.asarray([(r.left(), r.top(), r.width(), r.height()) for r in rects], np.float32).reshape(-1, 4)


class MTCNNFaceDetector(FaceDetector):
    """
    MTCNN (three-stage CNN cascade) run by this package's own torch code (`mtcnn_nanoemox.py`) with the weights of
    the `mtcnn` wheel (a dependency; TensorFlow is not needed), or of `pip install --no-deps facenet-pytorch`, or
    of `weights_dir`. Tolerates moderate roll, so no roll search by default. `min_face_size` is in pixels of the
    (shrunk) detection frame; by default `min_face_fraction` of its longest side (1/16: 40 px at 640, which still
    finds the benchmark's 1/20-width faces), at least 20 px — the P-Net pyramid's cost grows with
    (1 / min_face_size)².

    `detect_many` splits the frames into as many contiguous parts as PyTorch has intra-op threads (at most
    `threads`, when given) and runs each part's cascade on a thread of its own with one intra-op thread, at most
    `batch_size` frames in flight in all. Why: the cascade's small convolutions scale poorly over intra-op threads
    (8 720p frames: about 1.2 cores busy out of 2), while parts side by side keep every core busy; and a cascade
    always run on one intra-op thread gives the same boxes on every machine, whatever its core count (two intra-op
    threads move P-Net's and O-Net's outputs by up to 3e-5 px). Peak resident memory of the processor at 640 px
    grows with the frames in flight: 579–592 MB with 2, 594–618 MB with 4, 628 MB with 8
    (`benchmarks/bench_processor.py`; target < 600 MB).
    """

    name = "mtcnn"
    upright_only = False

    def __init__(
        self,
        max_side: int | None = 640,
        min_face_size: float | None = None,
        min_face_fraction: float = 1 / 16,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        min_score: float = 0.9,
        weights_dir: str | None = None,
        batch_size: int = 2,
        threads: int | None = None,
    ):
        super().__init__(max_side)
        from .mtcnn_nanoemox import load_mtcnn_weights

        if batch_size < 1 or (threads is not None and threads < 1):
            raise ValueError(f"batch_size and threads must be at least 1, got {batch_size} and {threads}.")
        self._weights = load_mtcnn_weights(weights_dir)
        self.min_face_size, self.min_face_fraction = min_face_size, min_face_fraction
        self.thresholds, self.min_score = tuple(thresholds), min_score
        self.batch_size, self.threads = batch_size, threads

    def _detect_many(self, frames: np.ndarray) -> list[np.ndarray]:
        import torch

        from .mtcnn_nanoemox import detect_mtcnn_batch
        from .threads_nanoemox import run_on_one_thread_each

        min_face_size = self.min_face_size or max(20.0, max(frames.shape[1:3]) * self.min_face_fraction)
        workers = min(self.threads or torch.get_num_threads(), self.batch_size, len(frames))
        step = -(-self.batch_size // workers)

        def detect(part: np.ndarray) -> list:
            found = []
            for start in range(0, len(part), step):
                found += detect_mtcnn_batch(part[start : start + step], self._weights, min_face_size, self.thresholds)
            return found

        found = [item for part in run_on_one_thread_each(detect, np.array_split(frames, workers)) for item in part]
        return [boxes[scores >= self.min_score] for boxes, scores in found]


class MediaPipeFaceDetector(FaceDetector):
    """MediaPipe's BlazeFace, full-range model (`model_selection=1`, faces up to about 5 m away);
    `mediapipe` 0.10.x ships it (newer releases ship no model, and 0.10.21 needs numpy < 2 and protobuf < 5)."""

    name = "mediapipe"
    upright_only = False

    def __init__(self, max_side: int | None = 640, min_confidence: float = 0.5):
        super().__init__(max_side)
        from mediapipe.python.solutions import face_detection

        self._detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)

    def _detect(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        result = self._detector.process(frame)
        boxes = []
        for detection in result.detections or []:
            box = detection.location_data.relative_bounding_box
            boxes.append((box.xmin * width, box.ymin * height, box.width * width, box.height * height))
        return np.asarray(boxes, np.float32).reshape(-1, 4)


FACE_DETECTORS = {
    cls.name: cls
    for cls in (
        MTCNNFaceDetector,
        OpenCVHaarFaceDetector,
        OpenCVHaarDefaultFaceDetector,
        OpenCVHaarProfileFaceDetector,
        SkimageLBPFaceDetector,
        DlibHOGFaceDetector,
        MediaPipeFaceDetector,
    )
}
DEFAULT_FACE_DETECTOR = "mtcnn"


def build_face_detector(name: str = DEFAULT_FACE_DETECTOR, **kwargs) -> FaceDetector:
    if name not in FACE_DETECTORS:
        raise ValueError(f"Unknown face detector {name!r}; available: {sorted(FACE_DETECTORS)}.")
    return FACE_DETECTORS[name](**kwargs)


# ---- geometry -------------------------------------------------------------------------------------------------


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one `(x, y, w, h)` box with each of `(N, 4)` boxes → `(N,)`."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    intersection = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-9), 0.0)


def _merge_overlapping(boxes: np.ndarray, min_iou: float = 0.3) -> np.ndarray:
    """Keeps the larger of two boxes overlapping by `min_iou` or more."""
    kept: list[np.ndarray] = []
    for box in sorted(boxes, key=lambda b: -b[2] * b[3]):
        if not kept or box_iou(box, np.stack(kept)).max() < min_iou:
            kept.append(box)
    return np.asarray(kept, np.float32).reshape(-1, 4)


def _rotated_detections(frame: np.ndarray, detector: FaceDetector, angle: float) -> np.ndarray:
    """Detects on the frame rotated by `angle` degrees about its centre; boxes come back as upright boxes of the
    same size centred on the face's centre in the original frame."""
    import cv2

    height, width = frame.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    rotated = cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR)
    boxes = detector.detect(rotated)
    if not len(boxes):
        return boxes
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    inverse = cv2.invertAffineTransform(matrix)
    original = centres @ inverse[:, :2].T + inverse[:, 2]
    return np.concatenate([original - boxes[:, 2:] / 2, boxes[:, 2:]], 1).astype(np.float32)


def detect_faces(
    frames: np.ndarray, detector: FaceDetector, rolls: tuple[float, ...] | None = None
) -> list[np.ndarray]:
    """
    Detections per frame, `[(num_faces, 4)] * T`. Frames where the unrotated pass found nothing are searched at
    `rolls` degrees (default `DEFAULT_ROLLS` for an `upright_only` detector, none otherwise), one magnitude at a
    time (both signs: ±15°, then ±30°; the magnitude that last worked first), stopping at the first magnitude that
    finds a face; skipped when at least half the frames already have a face (completion fills the rest).
    """
    if rolls is None:
        rolls = DEFAULT_ROLLS if detector.upright_only else ()
    detections = detector.detect_many(frames)
    if rolls and sum(len(d) > 0 for d in detections) * 2 < len(frames):
        groups = list(dict.fromkeys(abs(angle) for angle in rolls))
        for index, frame in enumerate(frames):
            if len(detections[index]):
                continue
            for magnitude in list(groups):
                found = [_rotated_detections(frame, detector, a) for a in rolls if abs(a) == magnitude]
                boxes = np.concatenate(found) if found else np.zeros((0, 4), np.float32)
                if len(boxes):
                    detections[index] = _merge_overlapping(boxes)
                    groups.remove(magnitude)
                    groups.insert(0, magnitude)
                    break
    return detections


# ---- tracking and completion ----------------------------------------------------------------------------------


def _same_face(reference: np.ndarray, box: np.ndarray, min_iou: float) -> bool:
    if box_iou(reference, box[None])[0] >= min_iou:
        return True
    ref_side, side = np.sqrt(reference[2] * reference[3]), np.sqrt(box[2] * box[3])
    distance = np.hypot(*((reference[:2] + reference[2:] / 2) - (box[:2] + box[2:] / 2)))
    return 2 / 3 <= side / max(ref_side, 1e-6) <= 3 / 2 and distance <= 0.5 * ref_side


def link_tracks(detections: list[np.ndarray], min_iou: float = 0.25) -> list[dict[int, np.ndarray]]:
    """
    Links per-frame detections into tracks `{frame index: box}`: frame by frame, each detection (largest first)
    joins the track whose latest box is the same face — IoU ≥ `min_iou`, or a centre within half a face with a
    size within 1.5× — best IoU first; otherwise it starts a new track. Tracks survive missed frames.
    """
    tracks: list[dict[int, np.ndarray]] = []
    for index, boxes in enumerate(detections):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        taken: set[int] = set()
        for box in sorted(boxes, key=lambda b: -b[2] * b[3]):
            candidates = [
                (box_iou(track[max(track)], box[None])[0], number)
                for number, track in enumerate(tracks)
                if number not in taken and _same_face(track[max(track)], box, min_iou)
            ]
            if candidates:
                number = max(candidates)[1]
                tracks[number][index] = box
            else:
                number = len(tracks)
                tracks.append({index: box})
            taken.add(number)
    return tracks


def track_main_face(detections: list[np.ndarray], min_iou: float = 0.25) -> list[np.ndarray | None]:
    """
    The main face's box in each frame (None where it was not detected): the linked track (`link_tracks`) with the
    largest sum over its frames of sqrt(w * h) — a face seen in every frame beats a larger box seen once or twice,
    and of two faces seen equally often the larger wins.
    """
    tracks = link_tracks(detections, min_iou)
    result: list[np.ndarray | None] = [None] * len(detections)
    if not tracks:
        return result
    main = max(tracks, key=lambda track: sum(float(np.sqrt(b[2] * b[3])) for b in track.values()))
    for index, box in main.items():
        result[index] = box
    return result


def complete_track(track: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """
    Fills frames where the main face was missed: linear interpolation between the nearest detected frames on both
    sides, or the nearest detected box at the clip's ends.

    Returns:
        boxes `(T, 4)` float32 (zeros where the clip has no detection at all) and source `(T,)` from FACE_SOURCES.
    """
    count = len(track)
    found = [index for index, box in enumerate(track) if box is not None]
    boxes = np.zeros((count, 4), np.float32)
    source = np.full(count, "none", dtype=object)
    if not found:
        return boxes, source.astype(str)
    known = np.stack([track[index] for index in found]).astype(np.float32)
    for column in range(4):
        # np.interp carries the end values outwards, which is the "nearest neighbour" rule at the clip's ends.
        boxes[:, column] = np.interp(np.arange(count), found, known[:, column])
    source[:] = "completed"
    source[found] = "detected"
    return boxes, source.astype(str)


# ---- cropping -------------------------------------------------------------------------------------------------


@dataclass
class FaceCrops:
    """
    Attributes:
        crops (`np.ndarray` of shape `(num_frames, size, size, 3)`, `uint8`): what the face encoder sees.
        boxes (`np.ndarray` of shape `(num_frames, 4)`): the region cropped from each frame, `(x, y, w, h)` in the
            frame's pixels (the whole frame where there is no face).
        detected (`np.ndarray` of shape `(num_frames,)`, bool): whether a face box was used in that frame.
    """

    crops: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray


def crop_faces(frames: np.ndarray, track: list[np.ndarray | None], size: int, margin: float = 0.25) -> FaceCrops:
    """
    Crops a square of side `max(w, h) * (1 + 2 * margin)` centred on each face box and resizes it to `size`; a frame
    without a box contributes the whole frame, letterboxed to a square. Parts of a square outside the frame are
    black.
    """
    import cv2

    crops, boxes, detected = [], [], []
    for frame, face in zip(frames, track):
        height, width = frame.shape[:2]
        found = face is not None
        if not found:
            face = np.array([0.0, 0.0, width, height], np.float32)
        face_margin = margin if found else 0.0
        side = max(1, int(round(max(face[2], face[3]) * (1 + 2 * face_margin))))
        x0 = int(round(face[0] + face[2] / 2 - side / 2))
        y0 = int(round(face[1] + face[3] / 2 - side / 2))
        cx0, cy0 = min(max(x0, 0), width), min(max(y0, 0), height)
        cx1, cy1 = max(min(x0 + side, width), cx0), max(min(y0 + side, height), cy0)
        if cx1 - cx0 == side and cy1 - cy0 == side:
            region = frame[cy0:cy1, cx0:cx1]  # inside the frame: a view, no copy
        else:
            region = np.zeros((side, side, 3), np.uint8)
            region[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = frame[cy0:cy1, cx0:cx1]
        # Area averaging when shrinking, bilinear when enlarging (area would act like nearest-neighbour there).
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        crops.append(cv2.resize(region, (size, size), interpolation=interpolation))
        boxes.append((float(cx0), float(cy0), float(cx1 - cx0), float(cy1 - cy0)))
        detected.append(found)
    return FaceCrops(np.stack(crops), np.asarray(boxes, np.float32), np.asarray(detected))


# ---- the one call ---------------------------------------------------------------------------------------------


@dataclass
class FaceTrack:
    """
    The main face of a clip (see the module docstring). Boxes are `(x, y, w, h)` in the pixels of the frames given
    to `detect_and_track`; multiply by the frames' scale to get original-video pixels.

    Attributes:
        face_boxes (`(T, 4)` float32): the face, detected or completed; zeros where `source` is "none".
        crop_boxes (`(T, 4)` float32): the region cropped (the whole frame where `source` is "none").
        source (`(T,)` str): per frame, one of `FACE_SOURCES`.
        crops (`(T, S, S, 3)` uint8): the crops.
        detections (list of `(N_t, 4)` float32): every face the detector found, per frame.
    """

    face_boxes: np.ndarray
    crop_boxes: np.ndarray
    source: np.ndarray
    crops: np.ndarray
    detections: list

    @property
    def found(self) -> bool:
        """Whether the clip has a face at all (otherwise the crops are whole frames)."""
        return bool((self.source != "none").any())


def detect_and_track(
    frames: np.ndarray,
    detector: FaceDetector,
    size: int = 224,
    margin: float = 0.25,
    rolls: tuple[float, ...] | None = None,
    warn: bool = True,
    detect_every: int = 1,
) -> FaceTrack:
    """
    Detects, tracks, completes and crops the main face of a clip.

    Args:
        frames (`np.ndarray` of shape `(T, H, W, 3)`, `uint8`, RGB): the clip's sampled frames.
        detector (`FaceDetector`): e.g. `build_face_detector("mtcnn")`.
        size (`int`): side of the square crops.
        margin (`float`): margin around the face on each side, as a fraction of the face's larger side.
        rolls (`tuple[float, ...]`, *optional*): angles searched when nothing was found (see `detect_faces`).
        warn (`bool`): log one warning when the clip has no face at all (the crops are then whole frames).
        detect_every (`int`): run the detector on every n-th frame only (the first, then every n-th, and the last);
            the others are completed from their neighbours (source "completed"). 2 halves the detection time.
    """
    count = len(frames)
    chosen = sorted({*range(0, count, max(1, detect_every)), count - 1}) if count else []
    # Every frame searched (the default): the clip itself, not a copy of it.
    found = detect_faces(frames if len(chosen) == count else frames[chosen], detector, rolls)
    detections = [np.zeros((0, 4), np.float32) for _ in range(count)]
    for index, boxes in zip(chosen, found):
        detections[index] = boxes
    face_boxes, source = complete_track(track_main_face(detections))
    track = [box if kind != "none" else None for box, kind in zip(face_boxes, source)]
    cropped = crop_faces(frames, track, size, margin)
    result = FaceTrack(face_boxes, cropped.boxes, source, cropped.crops, detections)
    if warn and not result.found:
        logger.warning(f"No face found in any of the {len(frames)} frames: the face branch sees whole frames.")
    return result
