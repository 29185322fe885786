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


def _channels_last(states) -> tuple[dict, dict, dict]:
    """R-Net's and O-Net's conv weights in channels-last memory order. Their inputs are batches of small patches
    that `_patches` builds channels-last, and oneDNN's convolutions and the strided-view pooling run faster on it
    (about 15 % for each network on one core); P-Net's single large map runs as fast either way."""
    import torch

    pnet, rnet, onet = states
    return pnet, *(
        {key: value.contiguous(memory_format=torch.channels_last) if value.ndim == 4 else value
         for key, value in state.items()}
        for state in (rnet, onet)
    )  # fmt: skip


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
            return _channels_last(
                torch.load(os.path.join(folder, f"{net}.pt"), map_location="cpu", weights_only=True) for net in _NETS
            )
        if all(os.path.isfile(os.path.join(folder, f"{net}.lz4")) for net in _NETS):
            import joblib

            return _channels_last(
                _from_keras_arrays(net, joblib.load(os.path.join(folder, f"{net}.lz4"))) for net in _NETS
            )
    raise ImportError(
        "The MTCNN face detector needs its weights: `pip install mtcnn` (a nanoemox dependency; TensorFlow is not "
        "needed) or `pip install --no-deps facenet-pytorch`, or pass `weights_dir=`."
    )


def _max_pool(x, kernel: int, stride: int = 2):
    """`max_pool2d(x, kernel, stride, ceil_mode=True)` as running maxima of strided views, rows then columns: the
    same numbers, 4-6x faster than `max_pool2d` on one CPU core for the cascade's small NCHW maps."""
    import torch
    import torch.nn.functional as F

    height, width = x.shape[-2:]
    out_h, out_w = -(-(height - kernel) // stride) + 1, -(-(width - kernel) // stride) + 1
    pad_h, pad_w = (out_h - 1) * stride + kernel - height, (out_w - 1) * stride + kernel - width
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=float("-inf"))
    rows = x[..., 0 : (out_h - 1) * stride + 1 : stride, :]
    for offset in range(1, kernel):
        rows = torch.maximum(rows, x[..., offset : offset + (out_h - 1) * stride + 1 : stride, :])
    out = rows[..., 0 : (out_w - 1) * stride + 1 : stride]
    for offset in range(1, kernel):
        out = torch.maximum(out, rows[..., offset : offset + (out_w - 1) * stride + 1 : stride])
    return out


def _pnet(w: dict, x):  # x (1, 3, H, W) → reg (1, 4, H', W'), face probability (1, H', W')
    import torch.nn.functional as F

    x = F.prelu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"]), w["prelu1.weight"])
    x = _max_pool(x, 2)
    x = F.prelu(F.conv2d(x, w["conv2.weight"], w["conv2.bias"]), w["prelu2.weight"])
    x = F.prelu(F.conv2d(x, w["conv3.weight"], w["conv3.bias"]), w["prelu3.weight"])
    prob = F.conv2d(x, w["conv4_1.weight"], w["conv4_1.bias"]).softmax(1)[:, 1]
    return F.conv2d(x, w["conv4_2.weight"], w["conv4_2.bias"]), prob


def _rnet(w: dict, x):  # x (N, 3, 24, 24) → reg (N, 4), face probability (N,)
    import torch.nn.functional as F

    x = F.prelu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"]), w["prelu1.weight"])
    x = _max_pool(x, 3)
    x = F.prelu(F.conv2d(x, w["conv2.weight"], w["conv2.bias"]), w["prelu2.weight"])
    x = _max_pool(x, 3)
    x = F.prelu(F.conv2d(x, w["conv3.weight"], w["conv3.bias"]), w["prelu3.weight"])
    x = x.permute(0, 3, 2, 1).reshape(len(x), -1)  # the Caffe original's memory order
    x = F.prelu(F.linear(x, w["dense4.weight"], w["dense4.bias"]), w["prelu4.weight"])
    prob = F.linear(x, w["dense5_1.weight"], w["dense5_1.bias"]).softmax(1)[:, 1]
    return F.linear(x, w["dense5_2.weight"], w["dense5_2.bias"]), prob


def _onet(w: dict, x):  # x (N, 3, 48, 48) → reg (N, 4), face probability (N,)
    import torch.nn.functional as F

    x = F.prelu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"]), w["prelu1.weight"])
    x = _max_pool(x, 3)
    x = F.prelu(F.conv2d(x, w["conv2.weight"], w["conv2.bias"]), w["prelu2.weight"])
    x = _max_pool(x, 3)
    x = F.prelu(F.conv2d(x, w["conv3.weight"], w["conv3.bias"]), w["prelu3.weight"])
    x = _max_pool(x, 2)
    x = F.prelu(F.conv2d(x, w["conv4.weight"], w["conv4.bias"]), w["prelu4.weight"])
    x = x.permute(0, 3, 2, 1).reshape(len(x), -1)
    x = F.prelu(F.linear(x, w["dense5.weight"], w["dense5.bias"]), w["prelu5.weight"])
    prob = F.linear(x, w["dense6_1.weight"], w["dense6_1.bias"]).softmax(1)[:, 1]
    return F.linear(x, w["dense6_2.weight"], w["dense6_2.bias"]), prob


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, use_min: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression on `(N, 4)` x1, y1, x2, y2 boxes; returns the kept indices, best first.

    Overlaps are computed a block of 256 boxes (in score order) against all at a time, so the greedy pass costs one
    vector operation per kept box and memory stays at 256 × N whatever P-Net proposes."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[order, k] for k in range(4))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    removed = np.zeros(len(order), bool)
    keep = []
    for start in range(0, len(order), 256):
        rows = slice(start, start + 256)
        w = np.clip(np.minimum(x2[rows, None], x2) - np.maximum(x1[rows, None], x1) + 1, 0, None)
        h = np.clip(np.minimum(y2[rows, None], y2) - np.maximum(y1[rows, None], y1) + 1, 0, None)
        inter = w * h
        union = np.minimum(areas[rows, None], areas) if use_min else areas[rows, None] + areas - inter
        suppress = inter / union > threshold
        for offset, i in enumerate(range(start, min(start + 256, len(order)))):
            if not removed[i]:
                keep.append(i)
                removed |= suppress[offset]
    return order[np.asarray(keep, np.int64)]


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
        if x1 >= 0 and y1 >= 0 and x1 + side_w <= width and y1 + side_h <= height:
            patch = image[y1 : y1 + side_h, x1 : x1 + side_w]  # inside the image: a view, no copy
        else:
            patch = np.zeros((side_h, side_w, 3), np.uint8)
            cx0, cy0, cx1, cy1 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
            if cx1 > cx0 and cy1 > cy0:
                patch[cy0 - y1 : cy1 - y1, cx0 - x1 : cx1 - x1] = image[cy0:cy1, cx0:cx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    out -= 127.5
    out *= 0.0078125
    # (N, H, W, 3) seen as (N, 3, H, W): channels-last memory, which R-Net and O-Net are laid out for.
    return torch.from_numpy(out).permute(0, 3, 1, 2)


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
    return detect_mtcnn_batch(image[None], weights, min_face_size, thresholds, factor)[0]


def _split(values: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    return np.split(values, np.cumsum(counts)[:-1])


def detect_mtcnn_batch(
    images: np.ndarray,
    weights: tuple[dict, dict, dict],
    min_face_size: float = 20.0,
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    factor: float = 0.709,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """
    Runs the cascade on `B` RGB `uint8` images of one size `(B, H, W, 3)` (a clip's frames) together: each network
    sees one batch per pyramid level (P-Net) or per stage (R-Net, O-Net) instead of one per image, which costs less
    per frame and lets intra-op threads share the work; the candidates of each image are filtered and suppressed on
    their own, so each image's result is the one `detect_mtcnn` gives it.

    Returns:
        per image, boxes `(N, 4)` float32 `(x, y, w, h)` in the image's pixels and scores `(N,)` (O-Net's face
        probability).
    """
    import cv2
    import torch

    pnet_w, rnet_w, onet_w = weights
    count, height, width = images.shape[:3]
    results = [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)) for _ in range(count)]
    scale = 12.0 / min_face_size
    scales = []
    while min(height, width) * scale >= 12:
        scales.append(scale)
        scale *= factor
    with torch.inference_mode():
        # Stage 1: P-Net, fully convolutional over an image pyramid; each output cell is a 12-pixel window.
        # The pyramid is built level from level (bilinear, ≤ 1/0.709 per step), which is cheaper than resizing
        # the full image with area averaging at every scale.
        candidates = [[] for _ in range(count)]
        levels = list(images)
        for scale in scales:
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            shrink = size[0] / levels[0].shape[1]
            interpolation = cv2.INTER_AREA if shrink < 0.5 else cv2.INTER_LINEAR
            levels = [cv2.resize(level, size, interpolation=interpolation) for level in levels]
            pixels = np.stack(levels).astype(np.float32)
            pixels -= 127.5
            pixels *= 0.0078125
            x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
            reg, prob = _pnet(pnet_w, x.contiguous())
            prob, reg = prob.numpy(), reg.numpy()
            for k in range(count):
                ys, xs = np.nonzero(prob[k] >= thresholds[0])
                if not len(ys):
                    continue
                cells = np.stack([xs, ys], 1).astype(np.float32)
                q1, q2 = np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale)
                boxes = np.concatenate([q1, q2], 1)
                score, offsets = prob[k, ys, xs], reg[k, :, ys, xs]
                keep = nms(boxes, score, 0.5)
                candidates[k].append(np.concatenate([boxes[keep], score[keep, None], offsets[keep]], 1))
        proposals = []
        for k in range(count):
            stage = np.concatenate(candidates[k]) if candidates[k] else np.zeros((0, 9), np.float32)
            stage = stage[nms(stage[:, :4], stage[:, 4], 0.7)]
            proposals.append(_square(_regress(stage[:, :4], stage[:, 5:9], plus_one=False)))
        # Stage 2: R-Net refines and rejects on 24² patches.
        proposals = _refine(images, proposals, rnet_w, _rnet, 24, thresholds[1])
        # Stage 3: O-Net on 48² patches; its boxes are the output.
        for k, boxes in enumerate(proposals):
            proposals[k] = _square(boxes)
        counts = [len(boxes) for boxes in proposals]
        if not sum(counts):
            return results
        patches = torch.cat([_patches(image, boxes, 48) for image, boxes in zip(images, proposals) if len(boxes)])
        reg, prob = _onet(onet_w, patches)
        for k, (boxes, reg_k, prob_k) in enumerate(zip(proposals, _split(reg.numpy(), counts),
                                                       _split(prob.numpy(), counts))):  # fmt: skip
            passed = prob_k > thresholds[2]
            if not passed.any():
                continue
            boxes, score = _regress(boxes[passed], reg_k[passed]), prob_k[passed]
            keep = nms(boxes, score, 0.7, use_min=True)
            boxes, score = boxes[keep], score[keep]
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], 1)
            results[k] = xywh.astype(np.float32), score.astype(np.float32)
    return results


def _refine(images, proposals: list[np.ndarray], weights: dict, net, size: int, threshold: float) -> list[np.ndarray]:
    """R-Net's pass over every image's proposals in one batch: per image, the boxes above `threshold`, suppressed
    and regressed (square boxes in, boxes out)."""
    import torch

    counts = [len(boxes) for boxes in proposals]
    if not sum(counts):
        return proposals
    patches = torch.cat([_patches(image, boxes, size) for image, boxes in zip(images, proposals) if len(boxes)])
    reg, prob = net(weights, patches)
    refined = []
    for boxes, reg_k, prob_k in zip(proposals, _split(reg.numpy(), counts), _split(prob.numpy(), counts)):
        passed = prob_k > threshold
        boxes, score, reg_k = boxes[passed], prob_k[passed], reg_k[passed]
        keep = nms(boxes, score, 0.7)
        refined.append(_regress(boxes[keep], reg_k[keep]))
    return refined
