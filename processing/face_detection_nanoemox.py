# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Face detection, main-face tracking and cropping for the face branch.

FaceXFormer was trained on face crops, so the processor finds the main face in every sampled frame and crops it
with a margin. Detectors are pluggable; the default is OpenCV's Haar cascade because its weights ship inside the
`opencv-python-headless` wheel (nothing is downloaded at run time) and it runs at about 25 ms a frame on one CPU
core at the default 320-pixel detection size. `mediapipe` (0.10.x, if installed) is more accurate on profile and
small faces. Callers whose data is already cropped (e.g. with OpenFace) pass the crops and skip detection.
"""

from dataclasses import dataclass

import numpy as np
from transformers.utils import logging

logger = logging.get_logger(__name__)


class FaceDetector:
    """Interface of a face detector: `detect(frame)` → `(num_faces, 4)` float boxes `(x, y, w, h)` in pixels."""

    name: str = ""

    def detect(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OpenCVHaarFaceDetector(FaceDetector):
    """
    OpenCV's frontal-face Haar cascade (`haarcascade_frontalface_alt2.xml`, shipped with OpenCV's wheel), run on a
    grey, histogram-equalised copy of the frame whose longest side is `max_side` pixels.
    """

    name = "opencv-haar"

    def __init__(self, max_side: int = 320, scale_factor: float = 1.1, min_neighbors: int = 4, min_size: int = 20):
        import cv2

        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml")
        if self._cascade.empty():
            raise RuntimeError("OpenCV's Haar cascade file is missing from this OpenCV install (OpenCV 5 has none).")
        self.max_side, self.scale_factor, self.min_neighbors, self.min_size = (
            max_side,
            scale_factor,
            min_neighbors,
            min_size,
        )

    def detect(self, frame: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        height, width = frame.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        if min(height, width) * scale < self.min_size:
            return np.zeros((0, 4), np.float32)
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
        grey = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY))
        boxes = self._cascade.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_size,) * 2
        )
        return np.asarray(boxes, np.float32).reshape(-1, 4) / scale


class MediaPipeFaceDetector(FaceDetector):
    """MediaPipe's short-range BlazeFace (`mediapipe` 0.10.x ships it; newer releases ship no model)."""

    name = "mediapipe"

    def __init__(self, min_confidence: float = 0.5):
        from mediapipe.python.solutions import face_detection

        self._detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)

    def detect(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        result = self._detector.process(np.ascontiguousarray(frame))
        boxes = []
        for detection in result.detections or []:
            box = detection.location_data.relative_bounding_box
            boxes.append((box.xmin * width, box.ymin * height, box.width * width, box.height * height))
        return np.asarray(boxes, np.float32).reshape(-1, 4)


FACE_DETECTORS = {
    OpenCVHaarFaceDetector.name: OpenCVHaarFaceDetector,
    MediaPipeFaceDetector.name: MediaPipeFaceDetector,
}


def build_face_detector(name: str, **kwargs) -> FaceDetector:
    if name not in FACE_DETECTORS:
        raise ValueError(f"Unknown face detector {name!r}; available: {sorted(FACE_DETECTORS)}.")
    return FACE_DETECTORS[name](**kwargs)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    intersection = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return intersection / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - intersection)


def track_main_face(detections: list[np.ndarray], min_iou: float = 0.1) -> list[np.ndarray | None]:
    """
    Picks one face per frame belonging to the clip's main person: the largest face of the whole clip anchors the
    track, and every other frame takes the detection that overlaps its already-tracked neighbour best (moving
    outwards from the anchor). A frame where the main face was not detected gets `None` even if other faces were.
    """
    track: list[np.ndarray | None] = [None] * len(detections)
    areas = [boxes[:, 2] * boxes[:, 3] if len(boxes) else np.zeros(0) for boxes in detections]
    if not any(len(a) for a in areas):
        return track
    anchor = max(range(len(detections)), key=lambda i: areas[i].max(initial=0.0))
    track[anchor] = detections[anchor][int(areas[anchor].argmax())]
    for order in (range(anchor + 1, len(detections)), range(anchor - 1, -1, -1)):
        reference = track[anchor]
        for index in order:
            boxes = detections[index]
            if len(boxes):
                overlaps = _iou(reference, boxes)
                if overlaps.max() >= min_iou:
                    track[index] = boxes[int(overlaps.argmax())]
                    reference = track[index]
    return track


@dataclass
class FaceCrops:
    """
    Attributes:
        crops (`np.ndarray` of shape `(num_frames, size, size, 3)`, `uint8`): what the face encoder sees.
        boxes (`np.ndarray` of shape `(num_frames, 4)`): the region cropped from each frame, `(x, y, w, h)` in the
            frame's pixels (the whole frame where no face was found).
        detected (`np.ndarray` of shape `(num_frames,)`, bool): whether the main face was found in that frame.
    """

    crops: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray


def crop_faces(frames: np.ndarray, track: list[np.ndarray | None], size: int, margin: float = 0.25) -> FaceCrops:
    """
    Crops a square of side `max(w, h) * (1 + 2 * margin)` centred on each tracked face and resizes it to `size`;
    a frame without a face contributes the whole frame, letterboxed to a square. Parts of a square outside the
    frame are black.
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
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
        region = np.zeros((side, side, 3), np.uint8)
        region[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = frame[cy0:cy1, cx0:cx1]
        # Area averaging when shrinking, bilinear when enlarging (area would act like nearest-neighbour there).
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        crops.append(cv2.resize(region, (size, size), interpolation=interpolation))
        boxes.append((float(cx0), float(cy0), float(cx1 - cx0), float(cy1 - cy0)))
        detected.append(found)
    return FaceCrops(np.stack(crops), np.asarray(boxes, np.float32), np.asarray(detected))
