"""The lesion segmenter at work: a photo crop in, a probability map and its lesions out.

The UNet gives channel 0 = lesion probability and, optionally, channel 1 = a lesion-centre heat map;
acne.lesions splits the map into lesions. Building the network is acne.models' job, choosing how it
runs acne.fastpath's: this class only runs a ready runner.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import imaging
from .lesions import find_lesions, scale_lesions
from .models.unet import PAD_MULTIPLE, UNetModel
from .report import Lesion

__all__ = ["LesionSegmenter", "Segmentation"]



@dataclass
class Segmentation:
    probability: np.ndarray          # HxW float32 lesion probability at input resolution
    mask: np.ndarray                 # HxW bool, pixels of the lesions found
    lesions: list[Lesion]
    timings_ms: dict[str, float] = field(default_factory=dict)


class LesionSegmenter:
    """Runs a segmenter network.

    Args:
        model: the built network (acne.models.load_unet).
        runner: acne.fastpath runner for it.
        size: long side fed to the UNet (None: inference.json's input_size).
        threshold: lesion probability threshold (None: inference.json's).
    """

    def __init__(self, model: UNetModel, runner, *, size: int | None = None, threshold: float | None = None):
        settings = model.settings
        if not model.channels or model.channels[0] != "lesion":
            raise ValueError(f"segmenter channels must start with 'lesion', got {model.channels!r}")
        self.input_size = int(size or settings["input_size"])
        if self.input_size < PAD_MULTIPLE:
            raise ValueError(f"segmenter input size must be at least {PAD_MULTIPLE}, got {self.input_size}")
        self.built, self.runner = model, runner
        self.name = model.name
        self.channels = list(model.channels)
        self.threshold = float(threshold if threshold is not None else settings["threshold"])
        self.center_threshold = float(settings["center_threshold"])
        self.min_area_px = int(settings["min_area_px"])
        self.min_distance_px = int(settings["min_distance_px"])

    def __repr__(self) -> str:
        return (f"LesionSegmenter({self.name!r}, channels={self.channels}, input_size={self.input_size}, "
                f"threshold={self.threshold}, backend={self.backend!r})")

    @property
    def backend(self) -> str:
        """The runner's backend: torch, bf16 or onnx."""
        return self.runner.backend

    @property
    def model(self):
        """The torch UNet in fp32 (built on first use when the runner does not need it)."""
        return self.built.module.get()

    def inputs(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The network input for an RGB crop: (1x3xHxW float32, padded to a multiple of 32; the unpadded (h, w))."""
        h, w = rgb.shape[:2]
        scale = self.input_size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        x = rgb.astype(np.float32)
        x -= imaging.IMAGENET_MEAN_255  # in place: same numbers as (x - mean) / std, no temporaries
        x /= imaging.IMAGENET_STD_255
        pad_h, pad_w = (-nh) % PAD_MULTIPLE, (-nw) % PAD_MULTIPLE
        if pad_h or pad_w:
            x = cv2.copyMakeBorder(x, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        # HWC memory seen as NCHW is already channels_last: no copy.
        return x.transpose(2, 0, 1)[None], (nh, nw)

    def predict_maps(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Sigmoid maps at the UNet's (unpadded) resolution for an RGB crop: (lesion, centre or None)."""
        import torch

        x, (nh, nw) = self.inputs(rgb)
        logits = self.runner(torch.from_numpy(x))["logits"]
        with torch.inference_mode():
            # The sigmoid in torch on every backend: saturated maps (1.0) saturate on the same pixels,
            # which keeps plateau peaks - and lesion counts - alike.
            prob = torch.sigmoid(logits)[0, :, :nh, :nw].numpy()
        center = prob[1] if len(self.channels) > 1 and self.channels[1] == "center" else None
        return np.ascontiguousarray(prob[0]), None if center is None else np.ascontiguousarray(center)

    def predict(self, rgb: np.ndarray) -> Segmentation:
        """Segment an RGB crop (HxWx3 uint8). Returns a Segmentation at the crop's resolution."""
        h, w = rgb.shape[:2]
        t0 = time.perf_counter()
        prob_small, center_small = self.predict_maps(rgb)
        t1 = time.perf_counter()
        labels, found = find_lesions(
            prob_small, center_small, threshold=self.threshold, center_threshold=self.center_threshold,
            min_area_px=self.min_area_px, min_distance=self.min_distance_px)
        sh, sw = prob_small.shape
        lesions = scale_lesions(found, w / sw, h / sh, w, h)
        if (sh, sw) != (h, w):
            probability = cv2.resize(prob_small, (w, h), interpolation=cv2.INTER_LINEAR)
            # The kept lesions' pixels, upsampled smoothly (bilinear, then halfway) rather than blockily.
            lesion_pixels = np.where(labels > 0, 255, 0).astype(np.uint8)
            mask = cv2.resize(lesion_pixels, (w, h), interpolation=cv2.INTER_LINEAR) >= 128
        else:
            probability, mask = prob_small, labels > 0
        t2 = time.perf_counter()
        return Segmentation(probability=probability, mask=mask, lesions=lesions,
                            timings_ms={"infer": (t1 - t0) * 1e3, "postprocess": (t2 - t1) * 1e3})


def load_segmenter(name: str, *, size: int | None = None, threshold: float | None = None, backend: str = "torch",
                   cache_dir=None, threads: int | None = None) -> LesionSegmenter:
    """Load a segmenter and run it on a fixed backend (load_analyzer chooses the backend by measurement).

    Args:
        name: save_pretrained folder or Hub id (config.json + model.safetensors + inference.json).
        size, threshold: override inference.json's input_size / threshold.
        backend: "torch", "bf16" or "onnx" (exported once into `cache_dir`; a failed export: torch).
        threads: ONNX Runtime threads (default: acne.runtime.resolve_threads()).
    Returns:
        a LesionSegmenter.
    Raises:
        WeightsMissingError / WeightsCorruptError, naming the files and the fix.
    """
    from . import fastpath, runtime
    from .models.unet import load_unet

    model = load_unet(name)
    side = -(-int(size or model.settings["input_size"]) // PAD_MULTIPLE) * PAD_MULTIPLE
    example = np.random.default_rng(0).standard_normal((1, 3, side, side), dtype=np.float32)
    runner = fastpath.make_runner(model, backend, threads=runtime.resolve_threads(threads or 0),
                                  cache_dir=cache_dir, example=example)
    return LesionSegmenter(model, runner, size=size, threshold=threshold)
