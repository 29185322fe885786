# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""MTCNN (Zhang et al., 2016, "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks")
in plain torch + numpy, with the original P/R/O-Net weights that ship inside a PyPI wheel.

Where the weights come from (no download at run time):
- the `mtcnn` wheel (MIT, 1.9 MB, depends only on joblib and lz4; TensorFlow is an optional extra we never need):
  `mtcnn/assets/weights/{pnet,rnet,onet}.lz4`, lists of Keras-layout arrays. This is what `pip install nanoemox`
  brings.
- or the `facenet-pytorch` wheel (`pip install --no-deps facenet-pytorch`; its pins torch < 2.3, numpy < 2 and
  torchvision are not needed): `facenet_pytorch/data/{pnet,rnet,onet}.pt`, torch state dicts.
The two hold the same numbers (checked to 0 difference after transposing the Keras layout). Neither package is
imported: their files are found with `importlib.util.find_spec`. The networks are written functionally from
facenet-pytorch's state-dict names, and the three-stage cascade follows its `detect_face`, with numpy NMS.

torch is imported inside the functions, so importing this module costs nothing.
"""

import importlib.util
import os

import numpy as np

_NETS = ("pnet", "rnet", "onet")
# The order of the arrays in the `mtcnn` wheel's files, as facenet-pytorch state-dict names (the wheel stores the
# box regression before the face probability).
_KERAS_ORDER = {
    "pnet": ["conv1.weight", "conv1.bias", "prelu1.weight", "conv2.weight", "conv2.bias", "prelu2.weight",
             "conv3.weight", "conv3.bias", "prelu3.weight", "conv4_2.weight", "conv4_2.bias", "conv4_1.weight",
             "conv4_1.bias"],
    "rnet": ["conv1.weight", "conv1.bias", "prelu1.weight", "conv2.weight", "conv2.bias", "prelu2.weight",
             "conv3.weight", "conv3.bias", "prelu3.weight", "dense4.weight", "dense4.bias", "prelu4.weight",
             "dense5_2.weight", "dense5_2.bias", "dense5_1.weight", "dense5_1.bias"],
    "onet": ["conv1.weight", "conv1.bias", "prelu1.weight", "conv2.weight", "conv2.bias", "prelu2.weight",
             "conv3.weight", "conv3.bias", "prelu3.weight", "conv4.weight", "conv4.bias", "prelu4.weight",
             "dense5.weight", "dense5.bias", "prelu5.weight", "dense6_2.weight", "dense6_2.bias", "dense6_3.weight",
             "dense6_3.bias", "dense6_1.weight", "dense6_1.bias"],
}  # fmt: skip


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _from_keras_arrays(net: str, arrays: list) -> dict:
    import torch

    state = {}
    for key, array in zip(_KERAS_ORDER[net], arrays, strict=True):
        array = np.asarray(array, np.float32)
        if array.ndim == 4:  # conv (kh, kw, in, out) → (out, in, kh, kw)
            array = array.transpose(3, 2, 0, 1)
        elif array.ndim == 2:  # dense (in, out) → (out, in)
            array = array.T
        state[key] = torch.from_numpy(np.ascontiguousarray(array.reshape(-1) if key.startswith("prelu") else array))
    return state


def load_mtcnn_weights(weights_dir: str | None = None) -> tuple[dict, dict, dict]:
    """The three state dicts, from `weights_dir` (`*.pt` or `*.lz4` files), else the `mtcnn` wheel, else the
    `facenet-pytorch` wheel."""
    import torch

    folders = [weights_dir] if weights_dir else []
    if (found := _package_dir("mtcnn")) is not None:
        folders.append(os.path.join(found, "assets", "weights"))
    if (found := _package_dir("facenet_pytorch")) is not None:
        folders.append(os.path.join(found, "data"))
    for folder in folders:
        if all(os.path.isfile(os.path.join(folder, f"{net}.pt")) for net in _NETS):
            return tuple(
                torch.load(os.path.join(folder, f"{net}.pt"), map_location="cpu", weights_only=True) for net in _NETS
            )
        if all(os.path.isfile(os.path.join(folder, f"{net}.lz4")) for net in _NETS):
            import joblib

            return tuple(_from_keras_arrays(net, joblib.load(os.path.join(folder, f"{net}.lz4"))) for net in _NETS)
    raise ImportError(
        "The MTCNN face detector needs its weights: `pip install mtcnn` (a nanoemox dependency; TensorFlow is not "
        "needed) or `pip install --no-deps facenet-pytorch`, or pass `weights_dir=`."
    )


def _pool2(x):
    """2×2 max pooling, stride 2, ceil mode, as the maximum of four strided views (about 5× faster than
    `max_pool2d` on one CPU core)."""
    import torch
    import torch.nn.functional as F

    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        x = F.pad(x, (0, width % 2, 0, height % 2), value=float("-inf"))
    return torch.maximum(
        torch.maximum(x[..., ::2, ::2], x[..., 1::2, ::2]), torch.maximum(x[..., ::2, 1::2], x[..., 1::2, 1::2])
    )


def _pnet(w: dict, x):  # x (1, 3, H, W) → reg (1, 4, H', W'), face probability (1, H', W')
    import torch.nn.functional as F

    x = F.prelu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"]), w["prelu1.weight"])
    x = _pool2(x)
    x = F.prelu(F.conv2d(x, w["conv2.weight"], w["conv2.bias"]), w["prelu2.weight"])
    x = F.prelu(F.conv2d(x, w["conv3.weight"], w["conv3.bias"]), w["prelu3.weight"])
    prob = F.conv2d(x, w["conv4_1.weight"], w["conv4_1.bias"]).softmax(1)[:, 1]
    return F.conv2d(x, w["conv4_2.weight"], w["conv4_2.bias"]), prob


def _rnet(w: dict, x):  # x (N, 3, 24, 24) → reg (N, 4), face probability (N,)
    import torch.nn.functional as F

    x = F.prelu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"]), w["prelu1.weight"])
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = F.prelu(F.conv2d(x, w["conv2.weight"], w["conv2.bias"]), w["prelu2.weight"])
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = F.prelu(F.conv2d(x, w["conv3.weight"], w["conv3.bias"]), w["prelu3.weight"])
    x = x.permute(0, 3, 2, 1).reshape(len(x), -1)  # the Caffe original's memory order
    x = F.prelu(F.linear(x, w["dense4.weight"], w["dense4.bias"]), w["prelu4.weight"])
    prob = F.linear(x, w["dense5_1.weight"], w["dense5_1.bias"]).softmax(1)[:, 1]
    return F.linear(x, w["dense5_2.weight"], w["dense5_2.bias"]), prob


def _onet(w: dict, x):  # x (N, 3, 48, 48) → reg (N, 4), face probability (N,)
    import torch.nn.functional as F

    x = F.prelu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"]), w["prelu1.weight"])
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = F.prelu(F.conv2d(x, w["conv2.weight"], w["conv2.bias"]), w["prelu2.weight"])
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = F.prelu(F.conv2d(x, w["conv3.weight"], w["conv3.bias"]), w["prelu3.weight"])
    x = F.max_pool2d(x, 2, 2, ceil_mode=True)
    x = F.prelu(F.conv2d(x, w["conv4.weight"], w["conv4.bias"]), w["prelu4.weight"])
    x = x.permute(0, 3, 2, 1).reshape(len(x), -1)
    x = F.prelu(F.linear(x, w["dense5.weight"], w["dense5.bias"]), w["prelu5.weight"])
    prob = F.linear(x, w["dense6_1.weight"], w["dense6_1.bias"]).softmax(1)[:, 1]
    return F.linear(x, w["dense6_2.weight"], w["dense6_2.bias"]), prob


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, use_min: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression on `(N, 4)` x1, y1, x2, y2 boxes; returns the kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1, 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1, 0, None)
        inter = w * h
        overlap = inter / (np.minimum(areas[i], areas[rest]) if use_min else areas[i] + areas[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    boxes = boxes.copy()
    boxes[:, 0] += (w - side) / 2
    boxes[:, 1] += (h - side) / 2
    boxes[:, 2:4] = boxes[:, 0:2] + side[:, None]
    return boxes


def _regress(boxes: np.ndarray, reg: np.ndarray, plus_one: bool = True) -> np.ndarray:
    size = boxes[:, 2:4] - boxes[:, 0:2] + (1 if plus_one else 0)
    out = boxes.copy()
    out[:, 0:2] += reg[:, 0:2] * size
    out[:, 2:4] += reg[:, 2:4] * size
    return out


def _patches(image: np.ndarray, boxes: np.ndarray, size: int):
    """Crops each x1, y1, x2, y2 box (zero outside the image) and resizes to `size`² → `(N, 3, size, size)` input."""
    import cv2
    import torch

    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(np.floor(boxes[:, :4]).astype(int)):
        side_w, side_h = max(x2 - x1, 1), max(y2 - y1, 1)
        patch = np.zeros((side_h, side_w, 3), np.uint8)
        cx0, cy0, cx1, cy1 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if cx1 > cx0 and cy1 > cy0:
            patch[cy0 - y1 : cy1 - y1, cx0 - x1 : cx1 - x1] = image[cy0:cy1, cx0:cx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy((out - 127.5) * 0.0078125).permute(0, 3, 1, 2).contiguous()


def detect_mtcnn(
    image: np.ndarray,
    weights: tuple[dict, dict, dict],
    min_face_size: float = 20.0,
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    factor: float = 0.709,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Runs the cascade on one RGB `uint8` image `(H, W, 3)`.

    Returns:
        boxes `(N, 4)` float32 `(x, y, w, h)` in the image's pixels, and scores `(N,)` (O-Net's face probability).
    """
    import cv2
    import torch

    pnet_w, rnet_w, onet_w = weights
    height, width = image.shape[:2]
    empty = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    scale = 12.0 / min_face_size
    scales = []
    while min(height, width) * scale >= 12:
        scales.append(scale)
        scale *= factor
    with torch.inference_mode():
        # Stage 1: P-Net, fully convolutional over an image pyramid; each output cell is a 12-pixel window.
        # The pyramid is built level from level (bilinear, ≤ 1/0.709 per step), which is cheaper than resizing
        # the full image with area averaging at every scale.
        candidates = []
        level = image
        for scale in scales:
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            shrink = size[0] / level.shape[1]
            level = cv2.resize(level, size, interpolation=cv2.INTER_AREA if shrink < 0.5 else cv2.INTER_LINEAR)
            scaled = level.astype(np.float32)
            x = torch.from_numpy((scaled - 127.5) * 0.0078125).permute(2, 0, 1)[None]
            reg, prob = _pnet(pnet_w, x)
            prob, reg = prob[0].numpy(), reg[0].numpy()
            ys, xs = np.nonzero(prob >= thresholds[0])
            if not len(ys):
                continue
            cells = np.stack([xs, ys], 1).astype(np.float32)
            q1, q2 = np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale)
            boxes = np.concatenate([q1, q2], 1)
            score, offsets = prob[ys, xs], reg[:, ys, xs].T
            keep = nms(boxes, score, 0.5)
            candidates.append(np.concatenate([boxes[keep], score[keep, None], offsets[keep]], 1))
        if not candidates:
            return empty
        stage = np.concatenate(candidates)
        stage = stage[nms(stage[:, :4], stage[:, 4], 0.7)]
        boxes = _square(_regress(stage[:, :4], stage[:, 5:9], plus_one=False))
        # Stage 2: R-Net refines and rejects on 24² patches.
        reg, prob = _rnet(rnet_w, _patches(image, boxes, 24))
        passed = prob.numpy() > thresholds[1]
        if not passed.any():
            return empty
        boxes, score, reg = boxes[passed], prob.numpy()[passed], reg.numpy()[passed]
        keep = nms(boxes, score, 0.7)
        boxes = _square(_regress(boxes[keep], reg[keep]))
        # Stage 3: O-Net on 48² patches; its boxes are the output.
        reg, prob = _onet(onet_w, _patches(image, boxes, 48))
        passed = prob.numpy() > thresholds[2]
        if not passed.any():
            return empty
        boxes, score = _regress(boxes[passed], reg.numpy()[passed]), prob.numpy()[passed]
        keep = nms(boxes, score, 0.7, use_min=True)
        boxes, score = boxes[keep], score[keep]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], 1)
    return xywh.astype(np.float32), score.astype(np.float32)
