"""Face boxes in a photo: MTCNN (Zhang et al., 2016), three small cascaded CNNs.

The weights are facenet-pytorch's (MIT), converted to weights/face_detector/model.safetensors; the
package itself cannot be installed beside today's torch (it pins torch<2.3), so its three networks and
detection steps are re-written here. It finds faces turned half away, as in ACNE04's photos, where
OpenCV's Haar cascades mostly do not (see weights/face_detector/README.md).

    detector = FaceDetector.from_pretrained("weights/face_detector")
    boxes = detector.detect(rgb)     # [(x0, y0, x1, y1, score), ...] in rgb's pixels, best first
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from . import runtime
from .errors import WeightsCorruptError, WeightsMissingError

FIX = ("The face detector ships with the project in weights/face_detector: restore that folder (git checkout "
       "weights/face_detector), rebuild it with `python scripts/convert_face_detector.py`, or point "
       "ACNE_FACE_DETECTOR at a copy.")

THRESHOLDS = (0.6, 0.7, 0.8)   # PNet, RNet, ONet face probabilities to keep a candidate
PYRAMID_FACTOR = 0.709         # each pyramid level is this much smaller than the last


class PNet(nn.Module):
    """Proposal network: a fully convolutional 12 x 12 face / not-face scan."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 10, 3), nn.PReLU(10), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(10, 16, 3), nn.PReLU(16), nn.Conv2d(16, 32, 3), nn.PReLU(32))
        self.score = nn.Conv2d(32, 2, 1)
        self.box = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.body(x)
        return self.box(x), torch.softmax(self.score(x), dim=1)


class RNet(nn.Module):
    """Refinement network on 24 x 24 crops."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 28, 3), nn.PReLU(28), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(28, 48, 3), nn.PReLU(48), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(48, 64, 2), nn.PReLU(64))
        self.dense = nn.Sequential(nn.Linear(576, 128), nn.PReLU(128))
        self.score = nn.Linear(128, 2)
        self.box = nn.Linear(128, 4)

    def forward(self, x):
        x = self.body(x).permute(0, 3, 2, 1).flatten(1)   # the original (Caffe) weights' order
        x = self.dense(x)
        return self.box(x), torch.softmax(self.score(x), dim=1)


class ONet(nn.Module):
    """Output network on 48 x 48 crops (its landmark head is not needed here)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(64, 128, 2), nn.PReLU(128))
        self.dense = nn.Sequential(nn.Linear(1152, 256), nn.PReLU(256))
        self.score = nn.Linear(256, 2)
        self.box = nn.Linear(256, 4)

    def forward(self, x):
        x = self.body(x).permute(0, 3, 2, 1).flatten(1)
        x = self.dense(x)
        return self.box(x), torch.softmax(self.score(x), dim=1)


class FaceDetector:
    """A loaded MTCNN that only runs: `detect(rgb, min_face)` gives face boxes."""

    def __init__(self, pnet: PNet, rnet: RNet, onet: ONet, threads: int = 1):
        self.pnet, self.rnet, self.onet = (net.float().eval() for net in (pnet, rnet, onet))
        # The pyramid's levels are scanned side by side, each on one thread: the same arithmetic as one
        # after the other, so the same faces.
        self._pool = None if threads < 2 else ThreadPoolExecutor(
            threads, thread_name_prefix="acne-face", initializer=runtime.pin_torch_threads, initargs=(1,))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, threads: int = 1) -> "FaceDetector":
        """Load the three networks from `folder`/model.safetensors, to scan with `threads` threads.
        Raises WeightsMissingError or WeightsCorruptError with a message that names the file."""
        from safetensors.torch import load_file

        path = Path(folder).expanduser() / "model.safetensors"
        if not path.is_file():
            raise WeightsMissingError(f"Face detector weights are missing: {path} does not exist. {FIX}")
        nets = {"pnet": PNet(), "rnet": RNet(), "onet": ONet()}
        try:
            state = load_file(str(path))
            for prefix, net in nets.items():
                net.load_state_dict({k[len(prefix) + 1:]: v.float() for k, v in state.items()
                                     if k.startswith(prefix + ".")})
        except Exception as exc:  # noqa: BLE001 - any failure to read them is one clear message
            raise WeightsCorruptError(f"Face detector weights in {path} could not be read "
                                      f"({type(exc).__name__}); the file may be damaged. {FIX}") from exc
        return cls(**nets, threads=threads)

    def detect(self, rgb: np.ndarray, min_face: int = 24) -> list[tuple[float, float, float, float, float]]:
        """Faces at least `min_face` pixels wide in an RGB uint8 image: (x0, y0, x1, y1, score), best first."""
        # Hundreds of tiny convolutions: one thread. A team of two waits at every one of them, and when the
        # other core is busy that costs 20 times the work (measured: 38 ms vs 734 ms per 12 MP photo).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return self._detect(rgb, min_face)
        finally:
            torch.set_num_threads(threads)

    def _detect(self, rgb: np.ndarray, min_face: int) -> list[tuple[float, float, float, float, float]]:
        h, w = rgb.shape[:2]
        image = (rgb.astype(np.float32) - 127.5) * 0.0078125
        boxes = self._propose(image, min_face)
        for net, size, threshold in ((self.rnet, 24, THRESHOLDS[1]), (self.onet, 48, THRESHOLDS[2])):
            if len(boxes) == 0:
                return []
            boxes = _square(boxes)
            crops = torch.from_numpy(np.stack([_crop(image, b, size) for b in boxes])).permute(0, 3, 1, 2)
            offsets, probs = net(crops)
            keep = (probs[:, 1] > threshold).numpy()
            boxes = _regress(boxes[keep, :4], offsets.numpy()[keep])
            boxes = np.concatenate([boxes, probs[:, 1].numpy()[keep, None]], axis=1)
            boxes = boxes[_nms(boxes, 0.7)]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return [tuple(float(v) for v in b) for b in boxes[np.argsort(-boxes[:, 4])]]

    def _propose(self, image: np.ndarray, min_face: int) -> np.ndarray:
        h, w = image.shape[:2]
        scales, scale = [], 12.0 / min_face
        while min(h, w) * scale >= 12:
            scales.append(scale)
            scale *= PYRAMID_FACTOR
        scan = partial(self._scan, image)
        found = [box for box in (map(scan, scales) if self._pool is None else self._pool.map(scan, scales))
                 if box is not None]
        if not found:
            return np.zeros((0, 5), np.float32)
        boxes = np.concatenate(found)
        boxes = boxes[_nms(boxes, 0.7)]
        return np.concatenate([_regress(boxes[:, :4], boxes[:, 5:9]), boxes[:, 4:5]], axis=1)

    def _scan(self, image: np.ndarray, scale: float) -> np.ndarray | None:
        """P-net's candidates at one pyramid level: (x0, y0, x1, y1, score, 4 offsets) rows, or None."""
        h, w = image.shape[:2]
        with torch.inference_mode():   # per thread
            resized = cv2.resize(image, (int(w * scale + 1), int(h * scale + 1)), interpolation=cv2.INTER_AREA)
            offsets, probs = self.pnet(torch.from_numpy(resized).permute(2, 0, 1)[None])
        score = probs[0, 1].numpy()
        ys, xs = np.nonzero(score >= THRESHOLDS[0])
        if not len(ys):
            return None
        # Each output cell sees a 12 x 12 window at stride 2 of the resized image.
        cells = np.stack([xs, ys], axis=1).astype(np.float32)
        q1, q2 = np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale)
        box = np.concatenate([q1, q2, score[ys, xs, None], offsets[0].numpy()[:, ys, xs].T], axis=1)
        return box[_nms(box, 0.5)]


def _nms(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes (x0, y0, x1, y1, score, ...) kept by non-maximum suppression, best first."""
    order = np.argsort(-boxes[:, 4], kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        overlap = w * h / (area[i] + area[rest] - w * h + 1e-9)
        order = rest[overlap <= iou]
    return np.array(keep, dtype=np.intp)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    size = np.concatenate([boxes[:, 2:4] - boxes[:, 0:2]] * 2, axis=1)
    return (boxes + offsets * size).astype(np.float32)


def _square(boxes: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    boxes[:, 0] += (w - side) / 2
    boxes[:, 1] += (h - side) / 2
    boxes[:, 2:4] = boxes[:, 0:2] + side[:, None]
    return boxes


def _crop(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """box (possibly beyond the image) resampled to size x size; the part outside the image is 0."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box[:4])
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    out = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
