# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Face-detector benchmark on real faces that ship in installed packages, with ground truth by construction.

    python benchmarks/bench_faces.py [--detectors mtcnn opencv-haar ...] [--lfw 18] [--roll-search on|off|both]

Faces: scikit-image's astronaut (face at x, y, w, h = 178, 83, 95, 95), matplotlib's `sample_data/grace_hopper.jpg`
(face measured once: `GRACE_HOPPER_FACE`) and the faces of scikit-image's LFW subset (25×25 face crops, upscaled;
the tile is the face box). Each face is warped (scale, roll about the face's centre) with its head-and-shoulders
surroundings onto a background cut from scikit-image's face-free sample images (rocket, coffee, a cat, Hubble,
tissue), in 1280×720 and 640×360 frames: face widths 1/20 … 1/2 of the frame width, rolls 0, 15 and 30° (left
placement rolls one way, right placement the other), two faces in one frame, and frames with no face. The ground
truth of a rolled face is the upright box of the face's size centred on its centre.

A detector runs the way the processor runs it: `detect_faces` on the frame (roll search included for frontal-only
detectors). A face counts as found when a detection has IoU ≥ 0.5 with it (greedy matching, one detection per
face); every unmatched detection is a false positive. Times are per frame on one core (torch and OpenCV threads 1),
after one warm-up frame. Requires scikit-image and matplotlib (`pip install scikit-image matplotlib`) and each
detector's package (see the README's face-detection section).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ASTRONAUT_FACE = (178.0, 83.0, 95.0, 95.0)
GRACE_HOPPER_FACE = (170.0, 140.0, 195.0, 195.0)  # forehead to chin, cheek to cheek, like the astronaut's
WIDTHS = (1 / 20, 1 / 14, 1 / 10, 1 / 7, 1 / 5, 1 / 3, 1 / 2)
ROLLS = (0.0, 15.0, 30.0)
RESOLUTIONS = ((720, 1280), (360, 640))


def load_faces():
    """(name, RGB image, face box) of the two portraits, and the LFW subset's face tiles (grey → RGB)."""
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        hopper = np.asarray(Image.open(handle).convert("RGB"))
    portraits = [("astronaut", data.astronaut(), ASTRONAUT_FACE), ("hopper", hopper, GRACE_HOPPER_FACE)]
    lfw = (data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # the first 100 are faces
    return portraits, [np.repeat(tile[..., None], 3, 2) for tile in lfw]


def backgrounds():
    from skimage import data

    return [data.rocket(), data.coffee(), data.chelsea(), data.hubble_deep_field(), data.immunohistochemistry()]


def background_frame(images, index: int, shape) -> np.ndarray:
    import cv2

    image = images[index % len(images)]
    height, width = shape
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def paste_face(frame, image, face, width: float, roll: float, centre, context=(1.0, 0.8, 1.0, 1.4)):
    """Warps `image` so that its `face` box becomes `width` wide, rolled `roll` degrees about its centre, centred at
    `centre`; only the head-and-shoulders region (`context`: left, top, right, bottom in face sizes) is pasted.
    Returns the face's ground-truth box (upright, the face's size, centred on it)."""
    import cv2

    x, y, w, h = face
    scale = width / w
    matrix = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), roll, scale)
    matrix[:, 2] += np.asarray(centre) - (x + w / 2, y + h / 2)
    mask = np.zeros(image.shape[:2], np.uint8)
    left, top, right, bottom = context
    x0, y0 = int(max(0, x - left * w)), int(max(0, y - top * h))
    x1, y1 = int(min(image.shape[1], x + w + right * w)), int(min(image.shape[0], y + h + bottom * h))
    mask[y0:y1, x0:x1] = 255
    size = (frame.shape[1], frame.shape[0])
    warped = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    warped_mask = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_NEAREST) > 0
    frame[warped_mask] = warped[warped_mask]
    return (centre[0] - width / 2, centre[1] - h * scale / 2, width, h * scale)


def build_frames(lfw_count: int):
    """[(frame, ground-truth boxes (G, 4), tags)] for every case."""
    portraits, lfw = load_faces()
    images = backgrounds()
    cases = []
    for shape in RESOLUTIONS:
        height, width = shape
        res = f"{width}x{height}"
        for name, image, face in portraits:
            aspect = face[3] / face[2]
            for fraction in WIDTHS:
                for roll in ROLLS:
                    for side, sign in (("left", 1), ("right", -1)):
                        frame = background_frame(images, len(cases), shape)
                        face_width = fraction * width
                        half_height = face_width * aspect / 2
                        cx = (0.3 if side == "left" else 0.7) * width
                        cy = float(np.clip(0.45 * height, half_height, height - half_height))
                        box = paste_face(frame, image, face, face_width, sign * roll, (cx, cy))
                        tags = dict(res=res, kind="portrait", source=name, fraction=fraction, roll=roll)
                        cases.append((frame, np.asarray([box]), tags))
        # Two faces: the astronaut left (larger) and Grace Hopper right.
        for fractions in ((1 / 6, 1 / 8), (1 / 4, 1 / 6), (1 / 8, 1 / 10), (1 / 5, 1 / 5)):
            frame = background_frame(images, len(cases), shape)
            boxes = [
                paste_face(
                    frame, portraits[0][1], portraits[0][2], fractions[0] * width, 0.0, (0.27 * width, 0.45 * height)
                ),
                paste_face(
                    frame, portraits[1][1], portraits[1][2], fractions[1] * width, 0.0, (0.73 * width, 0.45 * height)
                ),
            ]
            cases.append((frame, np.asarray(boxes), dict(res=res, kind="two", fraction=fractions[0], roll=0.0)))
        for index in range(8):
            frame = background_frame(images, index, shape)
            if index >= len(images):  # a shifted crop of each background too
                frame = np.roll(frame, width // 3, axis=1)
            cases.append((frame, np.zeros((0, 4)), dict(res=res, kind="none", fraction=0.0, roll=0.0)))
        for index in range(lfw_count):
            frame = background_frame(images, index + 2, shape)
            fraction = (1 / 20, 1 / 10, 1 / 6)[index % 3]
            tile = lfw[index * 100 // max(lfw_count, 1)]
            box = paste_face(
                frame, tile, (0.0, 0.0, 25.0, 25.0), fraction * width, 0.0, (0.4 * width, 0.5 * height), (0, 0, 0, 0)
            )
            cases.append((frame, np.asarray([box]), dict(res=res, kind="lfw", fraction=fraction, roll=0.0)))
    return cases


def match(detections: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> tuple[int, int]:
    """Greedy one-to-one matching → (faces found, false positives)."""
    from nanoemox_processing.face_detection_nanoemox import box_iou

    free = list(range(len(detections)))
    found = 0
    for box in truth:
        if not free:
            break
        overlaps = box_iou(box, detections[free])
        best = int(overlaps.argmax())
        if overlaps[best] >= threshold:
            found += 1
            free.pop(best)
    return found, len(free)


def evaluate(name: str, cases, rolls=None) -> dict:
    from nanoemox_processing.face_detection_nanoemox import build_face_detector, detect_faces

    detector = build_face_detector(name)
    detect_faces(cases[0][0][None], detector, rolls)  # warm-up
    rows = []
    for frame, truth, tags in cases:
        start = time.process_time()
        detections = detect_faces(frame[None], detector, rolls)[0]
        elapsed = time.process_time() - start
        found, false = match(detections, truth)
        rows.append((tags, len(truth), found, false, elapsed))

    def recall(keep):
        selected = [(n, f) for tags, n, f, _, _ in rows if keep(tags)]
        total = sum(n for n, _ in selected)
        return sum(f for _, f in selected) / total if total else float("nan")

    def portrait(tags, roll, low=0.1 - 1e-9, high=1.0):
        return tags["kind"] == "portrait" and tags["roll"] == roll and low <= tags["fraction"] <= high

    return {
        "frontal ≥1/10": recall(lambda t: portrait(t, 0.0)),
        "frontal <1/10": recall(lambda t: portrait(t, 0.0, 0.0, 0.1 - 1e-9)),
        "roll 15°": recall(lambda t: portrait(t, 15.0)),
        "roll 30°": recall(lambda t: portrait(t, 30.0)),
        "LFW": recall(lambda t: t["kind"] == "lfw"),
        "two faces": recall(lambda t: t["kind"] == "two"),
        "FP/frame": sum(r[3] for r in rows) / len(rows),
        "ms 720p": 1000 * np.mean([r[4] for r in rows if r[0]["res"] == "1280x720"]),
        "ms 360p": 1000 * np.mean([r[4] for r in rows if r[0]["res"] == "640x360"]),
    }


def main() -> int:
    from nanoemox_processing.face_detection_nanoemox import FACE_DETECTORS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", default=list(FACE_DETECTORS), help="names in FACE_DETECTORS")
    parser.add_argument("--lfw", type=int, default=18, help="LFW faces per resolution")
    parser.add_argument(
        "--roll-search",
        choices=("on", "off", "both"),
        default="on",
        help="frontal-only detectors with the processor's roll search, without it, or both",
    )
    args = parser.parse_args()

    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cases = build_frames(args.lfw)
    counts = {kind: sum(t["kind"] == kind for _, _, t in cases) for kind in ("portrait", "two", "none", "lfw")}
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores visible; 1 thread used)")
    print(f"frames: {len(cases)} ({counts}); recall at IoU ≥ 0.5; detection frame longest side ≤ 640 px")
    columns = [
        "frontal ≥1/10",
        "frontal <1/10",
        "roll 15°",
        "roll 30°",
        "LFW",
        "two faces",
        "FP/frame",
        "ms 720p",
        "ms 360p",
    ]
    print("| detector | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    runs = [(name, None) for name in args.detectors] if args.roll_search != "off" else []
    if args.roll_search != "on":
        runs += [(name, ()) for name in args.detectors if FACE_DETECTORS[name].upright_only]
    for name, rolls in runs:
        label = name + (" (no roll search)" if rolls == () else "")
        try:
            result = evaluate(name, cases, rolls)
        except (ImportError, RuntimeError, OSError) as error:
            print(f"| {label} | skipped: {type(error).__name__}: {str(error).splitlines()[0][:120]} |")
            continue
        cells = [f"{result[c]:.2f}" if not c.startswith("ms") else f"{result[c]:.1f}" for c in columns]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
