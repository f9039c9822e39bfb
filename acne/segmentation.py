"""Lesion segmentation: a ResNet34-UNet probability map, split into individual lesions.

The UNet has channel 0 = lesion probability and, optionally, channel 1 = a lesion-centre heat map.
Peaks of the centre map (or, with one channel, of the distance transform of the mask) seed a
watershed, so touching lesions are counted separately instead of merging into one blob.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import WeightsCorruptError, WeightsMissingError
from .report import Lesion
from . import imaging, runtime
from .runtime import Lazy

log = logging.getLogger(__name__)

__all__ = ["build_unet", "LesionSegmenter", "Segmentation", "find_lesions", "render_overlay",
           "WeightsMissingError", "WeightsCorruptError"]

IMAGENET_MEAN = np.array(imaging.IMAGENET_MEAN, dtype=np.float32)
IMAGENET_STD = np.array(imaging.IMAGENET_STD, dtype=np.float32)
_MEAN_255 = IMAGENET_MEAN * 255
_STD_255 = IMAGENET_STD * 255
PAD_MULTIPLE = 32  # UNet-ResNet34 downsamples 5 times: sizes divisible by 32 keep the skips aligned

FIX = ("Train it with `python scripts/train_segmenter.py` (it writes weights/segmenter), or point "
       "ACNE_SEGMENTER at a folder with config.json + model.safetensors (or a Hugging Face Hub id).")

# Defaults when a weights folder has no inference.json; inference.json values override them.
DEFAULT_INFERENCE = {
    "threshold": 0.5,          # lesion probability above which a pixel is lesion
    "center_threshold": 0.3,   # centre-heat-map peak height that makes a lesion
    "input_size": 640,         # long side fed to the UNet
    "min_area_px": 10,         # smallest lesion kept without a centre map, in UNet-input pixels
    "min_distance_px": 2,      # peaks closer than this (UNet pixels) are one lesion (5x5 window, as in training)
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def build_unet(classes: int = 2) -> torch.nn.Module:
    """The architecture we train and ship: smp Unet with a ResNet34 encoder, no pretrained download."""
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=classes)


@dataclass
class Segmentation:
    probability: np.ndarray          # HxW float32 lesion probability at input resolution
    mask: np.ndarray                 # HxW bool, pixels of the lesions found
    lesions: list[Lesion]
    timings_ms: dict[str, float] = field(default_factory=dict)


class LesionSegmenter:
    """`model` is the torch UNet; with an ONNX Runtime `runner` it may be None and is then loaded by
    `model_loader` only if someone asks for `.model` (predictions use the runner)."""

    def __init__(self, model: torch.nn.Module | None, *, name: str,
                 channels: list[str] | tuple[str, ...] = ("lesion",),
                 input_size: int = 640, threshold: float = 0.5, center_threshold: float = 0.3,
                 min_area_px: int = 10, min_distance_px: int = 2, device: str = "cpu",
                 runner=None, model_loader=None, dtype: torch.dtype = torch.float32):
        if not channels or channels[0] != "lesion":
            raise ValueError(f"segmenter channels must start with 'lesion', got {channels!r}")
        if input_size < PAD_MULTIPLE:
            raise ValueError(f"segmenter input size must be at least {PAD_MULTIPLE}, got {input_size}")
        if model is None and (runner is None or model_loader is None):
            raise ValueError("LesionSegmenter needs a torch model, or an ONNX runner and a model_loader")
        self.device = torch.device(device)
        self.dtype = dtype              # float32, or bfloat16 on CPUs that compute it natively
        self._model = Lazy(lambda: self._prepare(model_loader()), None if model is None else self._prepare(model))
        self.runner = runner            # acne.runtime.OnnxModel giving logits, or None
        self.backend = "onnx" if runner is not None else ("bf16" if dtype == torch.bfloat16 else "torch")
        self.name = name
        self.channels = list(channels)
        self.input_size = int(input_size)
        self.threshold = float(threshold)
        self.center_threshold = float(center_threshold)
        self.min_area_px = int(min_area_px)
        self.min_distance_px = int(min_distance_px)

    def __repr__(self) -> str:
        return (f"LesionSegmenter({self.name!r}, channels={self.channels}, input_size={self.input_size}, "
                f"threshold={self.threshold}, backend={self.backend!r})")

    def _prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.float().eval().to(self.device, memory_format=torch.channels_last)
        return _bf16_body(model) if self.dtype == torch.bfloat16 else model

    @property
    def model(self) -> torch.nn.Module:
        """The torch UNet (loaded on first use when predictions run on ONNX Runtime)."""
        return self._model.get()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, size: int | None = None,
                        threshold: float | None = None, device: str = "cpu", backend: str = "torch",
                        cache_dir: str | os.PathLike | None = None,
                        threads: int | None = None) -> "LesionSegmenter":
        """Load from a save_pretrained folder or a Hub id (config.json + model.safetensors + inference.json).

        `size` / `threshold` override the values stored in inference.json. backend="onnx" runs the
        UNet on ONNX Runtime (exported once into `cache_dir`, see acne.runtime); if that fails, one
        log line and PyTorch. backend="bf16": PyTorch in bfloat16.
        """
        name = str(name_or_path)
        path = Path(name).expanduser()
        if path.is_dir():
            for filename in ("config.json", "model.safetensors"):
                if not (path / filename).is_file():
                    raise WeightsMissingError(
                        f"Segmenter weights are incomplete: {path / filename} is missing. {FIX}")
            settings = _read_inference_json(path / "inference.json")
            source = str(path)
        elif not _HUB_ID.match(name) or path.is_absolute() or name.startswith((".", "~")):
            raise WeightsMissingError(f"Segmenter weights not found: the folder {path} does not exist. {FIX}")
        else:
            settings = _read_inference_json(_hub_file(name, "inference.json"))
            source = name

        def load_model() -> torch.nn.Module:
            import segmentation_models_pytorch as smp  # slow to import: only once the files are there

            try:
                # huggingface_hub prints "Loading weights from local directory" to stdout: keep stdout
                # clean for the CLI's JSON lines.
                with contextlib.redirect_stdout(io.StringIO()):
                    return smp.from_pretrained(source, encoder_weights=None)
            except Exception as exc:  # noqa: BLE001 - every failure becomes one clear message
                if path.is_dir():
                    raise WeightsCorruptError(
                        f"Segmenter weights in {path} could not be read ({_short(exc)}); the files may be "
                        f"damaged or incomplete. {FIX}") from exc
                raise WeightsMissingError(
                    f"Segmenter {name!r} is not a local folder and could not be loaded from the Hugging "
                    f"Face Hub ({_short(exc)}). {FIX}") from exc

        input_size = int(size or settings["input_size"])
        model = runner = None
        # With the ONNX cache warm and a local folder, the channel count comes from config.json and
        # the torch model is never built.
        classes = _config_classes(path / "config.json") if backend == "onnx" and path.is_dir() else None
        if classes is None:
            model = load_model()
            classes = _output_channels(model)
        channels = settings.get("channels") or (["lesion", "center"] if classes >= 2 else ["lesion"])
        if len(channels) != classes:
            raise WeightsCorruptError(
                f"Segmenter {name}: inference.json lists channels {channels} but the model has {classes} "
                f"output channel(s). {FIX}")
        if backend == "onnx":
            runner = _onnx_runner(path, model, load_model, input_size, cache_dir, threads)
            if runner is not None:
                model = None  # predictions run on ONNX Runtime: free the torch copy
            elif model is None:
                model = load_model()
        return cls(
            model, name=name, channels=channels, device=device,
            input_size=input_size,
            threshold=float(threshold if threshold is not None else settings["threshold"]),
            center_threshold=float(settings["center_threshold"]),
            min_area_px=int(settings["min_area_px"]),
            min_distance_px=int(settings["min_distance_px"]),
            runner=runner, model_loader=load_model, dtype=runtime.torch_dtype(backend),
        )

    # ------------------------------------------------------------------ inference
    def predict_maps(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Sigmoid maps at the UNet's (unpadded) resolution: (lesion, centre or None)."""
        h, w = rgb.shape[:2]
        scale = self.input_size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        x = rgb.astype(np.float32)
        x -= _MEAN_255  # in place: same numbers as (x - mean) / std, no temporaries
        x /= _STD_255
        pad_h, pad_w = (-nh) % PAD_MULTIPLE, (-nw) % PAD_MULTIPLE
        if pad_h or pad_w:
            x = cv2.copyMakeBorder(x, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        if self.runner is not None:
            # Logits from ONNX Runtime, sigmoid from torch as on the torch path: saturated maps (1.0)
            # then saturate on the same pixels, which keeps plateau peaks - and lesion counts - alike.
            logits = torch.from_numpy(self.runner(x.transpose(2, 0, 1)[None]))
            with torch.inference_mode():
                prob = torch.sigmoid(logits)[0, :, :nh, :nw].numpy()
        else:
            # HWC memory seen as NCHW is already channels_last: no copy.
            tensor = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).to(self.device)
            with torch.inference_mode():
                prob = torch.sigmoid(self.model(tensor).float())[0, :, :nh, :nw].cpu().numpy()
        center = prob[1] if len(self.channels) > 1 and self.channels[1] == "center" else None
        return np.ascontiguousarray(prob[0]), None if center is None else np.ascontiguousarray(center)

    def predict(self, rgb: np.ndarray) -> Segmentation:
        h, w = rgb.shape[:2]
        t0 = time.perf_counter()
        prob_small, center_small = self.predict_maps(rgb)
        t1 = time.perf_counter()
        labels, found = find_lesions(
            prob_small, center_small, threshold=self.threshold, center_threshold=self.center_threshold,
            min_area_px=self.min_area_px, min_distance=self.min_distance_px)
        sh, sw = prob_small.shape
        lesions = _scale_lesions(found, w / sw, h / sh, w, h)
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


# ---------------------------------------------------------------------- post-processing

BF16_DECODER_BLOCKS = 3   # of the UNet's 5 decoder blocks, the 3 coarsest run in bf16 too


def _bf16_body(model: torch.nn.Module) -> torch.nn.Module:
    """The UNet's encoder and its coarse decoder blocks in bfloat16; the two finest decoder blocks and the
    head in fp32: lesion centres are read off small peaks at full resolution, and bf16 rounding there moved
    lesion counts (the accuracy guard caught it). A model without an `encoder` runs wholly in bf16."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        parts = [model]
    else:
        blocks = getattr(getattr(model, "decoder", None), "blocks", None)
        parts = [encoder] + (list(blocks)[:BF16_DECODER_BLOCKS] if isinstance(blocks, torch.nn.ModuleList) else [])

    def cast(value, dtype):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(dtype)
        if isinstance(value, (list, tuple)):
            return type(value)(cast(v, dtype) for v in value)
        return value

    for part in parts:
        part.to(torch.bfloat16)
        part.register_forward_pre_hook(
            lambda _m, args, kwargs: (cast(args, torch.bfloat16), {k: cast(v, torch.bfloat16) for k, v in kwargs.items()}),
            with_kwargs=True)
        part.register_forward_hook(lambda _m, _args, out: cast(out, torch.float32))
    return model


def find_lesions(probability: np.ndarray, center: np.ndarray | None = None, *, threshold: float = 0.5,
                 center_threshold: float = 0.3, min_area_px: int = 10,
                 min_distance: int = 2) -> tuple[np.ndarray, list[Lesion]]:
    """Split a lesion probability map into lesions, in the map's own pixel coordinates.

    With a centre heat map, every peak >= center_threshold is one lesion (as the training script
    counts them when it calibrates center_threshold); lesion pixels (and the centre blobs) are
    assigned to the peaks by a watershed, and lesion-mask regions without any peak are dropped.
    Without one, seeds are the peaks of the mask's distance transform, a region without a seed is one
    lesion, and lesions under min_area_px are dropped. Either way touching lesions stay apart.
    Returns (label image int32, 0 = background; lesions, most certain first).
    """
    prob = np.asarray(probability, dtype=np.float32)
    mask = prob >= threshold
    if center is not None:
        relief = np.asarray(center, dtype=np.float32)
        centre_blobs = relief >= center_threshold
        peaks = _local_maxima(relief, min_distance) & centre_blobs
        support = mask | centre_blobs
    else:
        support = mask
    if not support.any():
        return np.zeros(prob.shape, np.int32), []
    support_u8 = support.view(np.uint8)
    n_regions, regions, stats, _ = cv2.connectedComponentsWithStats(support_u8, connectivity=8)
    if center is None:
        relief = cv2.distanceTransform(support_u8, cv2.DIST_L2, 5)
        peaks = _local_maxima(relief, min_distance) & support
    # Adjacent peak pixels (a plateau) are one seed.
    n_seeds, seeds = cv2.connectedComponents(peaks.view(np.uint8), connectivity=8)

    seed_region = np.zeros(n_seeds, np.int32)
    seed_region[seeds[peaks]] = regions[peaks]
    seeds_per_region = np.bincount(seed_region[1:], minlength=n_regions)
    seeds_per_region[0] = 0
    # A region with one seed is one lesion.
    region_label = np.zeros(n_regions, np.int32)
    single = np.flatnonzero(seeds_per_region[seed_region] == 1)
    single = single[single > 0]
    region_label[seed_region[single]] = single
    if center is None:  # no centre map: a region without a distance peak is still a lesion
        unseeded = np.flatnonzero(seeds_per_region == 0)
        unseeded = unseeded[unseeded > 0]
        region_label[unseeded] = np.arange(n_seeds, n_seeds + unseeded.size, dtype=np.int32)
    labels = region_label[regions]
    # Regions holding several seeds (touching lesions) are split by flooding from the seeds.
    for r in np.flatnonzero(seeds_per_region >= 2):
        x, y, w, h = (int(v) for v in stats[r, :4])
        window = (slice(y, y + h), slice(x, x + w))
        region = regions[window] == r
        labels[window][region] = _flood(relief[window], region, np.where(region, seeds[window], 0))[region]

    return _lesion_table(labels, prob, min_area_px if center is None else 1)


def _local_maxima(values: np.ndarray, radius: int) -> np.ndarray:
    size = 2 * max(1, int(radius)) + 1
    return values >= cv2.dilate(values, np.ones((size, size), np.uint8))


def _flood(relief: np.ndarray, region: np.ndarray, seeds: np.ndarray, levels: int = 24) -> np.ndarray:
    """Watershed by immersion: lower the level step by step, growing each seed's label through the
    pixels above the level (geodesic dilation inside `region`). Returns int32 labels."""
    # Labels live as float32 (exact below 2**24) so cv2.dilate needs no conversions, and the
    # unlabelled set is kept up to date instead of recomputed: same result, a fraction of the work.
    labels = seeds.astype(np.float32)
    unlabelled = labels == 0
    values = relief[region]
    kernel = np.ones((3, 3), np.uint8)
    for level in np.linspace(float(values.max()), float(values.min()), levels):
        todo = region & (relief >= level) & unlabelled
        while todo.any():
            grown = cv2.dilate(labels, kernel)
            new = todo & (grown > 0)
            if not new.any():
                break
            labels[new] = grown[new]
            unlabelled[new] = False
            todo[new] = False
    return labels.astype(np.int32)


def _lesion_table(labels: np.ndarray, prob: np.ndarray, min_area_px: int) -> tuple[np.ndarray, list[Lesion]]:
    n = int(labels.max())
    if n == 0:
        return labels, []
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs]
    area = np.bincount(ids, minlength=n + 1)
    x0 = np.full(n + 1, np.iinfo(np.int64).max)
    y0 = x0.copy()
    x1 = np.full(n + 1, -1)
    y1 = x1.copy()
    np.minimum.at(x0, ids, xs)
    np.minimum.at(y0, ids, ys)
    np.maximum.at(x1, ids, xs)
    np.maximum.at(y1, ids, ys)
    score = np.zeros(n + 1, np.float32)
    np.maximum.at(score, ids, prob[ys, xs])
    cx = np.bincount(ids, weights=xs, minlength=n + 1) / np.maximum(area, 1)
    cy = np.bincount(ids, weights=ys, minlength=n + 1) / np.maximum(area, 1)

    kept = np.flatnonzero(area >= max(1, min_area_px))
    kept = kept[kept > 0]
    kept = kept[np.argsort(-score[kept], kind="stable")]   # most certain first
    relabel = np.zeros(n + 1, np.int32)
    relabel[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    lesions = [Lesion(box=(int(x0[i]), int(y0[i]), int(x1[i]) + 1, int(y1[i]) + 1),
                      center=(float(cx[i]), float(cy[i])), area_px=int(area[i]), score=float(score[i]))
               for i in kept]
    return relabel[labels], lesions


def _scale_lesions(lesions: list[Lesion], sx: float, sy: float, width: int, height: int) -> list[Lesion]:
    """Map lesions from UNet pixels to input pixels (areas are estimates: area x sx x sy)."""
    if sx == 1 and sy == 1:
        return [_round_lesion(lesion) for lesion in lesions]
    out = []
    for lesion in lesions:
        x0, y0, x1, y1 = lesion.box
        out.append(_round_lesion(Lesion(
            box=(max(0, math.floor(x0 * sx)), max(0, math.floor(y0 * sy)),
                 min(width, math.ceil(x1 * sx)), min(height, math.ceil(y1 * sy))),
            center=((lesion.center[0] + 0.5) * sx - 0.5, (lesion.center[1] + 0.5) * sy - 0.5),
            area_px=max(1, round(lesion.area_px * sx * sy)),
            score=lesion.score)))
    return out


def _round_lesion(lesion: Lesion) -> Lesion:
    return Lesion(box=lesion.box, center=(round(lesion.center[0], 1), round(lesion.center[1], 1)),
                  area_px=lesion.area_px, score=round(float(lesion.score), 4))


# ---------------------------------------------------------------------- drawing

def render_overlay(rgb: np.ndarray, mask: np.ndarray, lesions: list[Lesion] | None = None,
                   color: tuple[int, int, int] = (255, 0, 80), alpha: float = 0.45) -> np.ndarray:
    """The photo with lesion pixels tinted and outlined (and lesion boxes, if given). Returns a new RGB array."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        tint = np.asarray(color, dtype=np.float32)
        out[mask] = (out[mask].astype(np.float32) * (1.0 - alpha) + tint * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thickness = max(1, round(max(out.shape[:2]) / 600))
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), thickness, cv2.LINE_AA)
    for lesion in lesions or ():
        x0, y0, x1, y1 = lesion.box
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 0), 1, cv2.LINE_AA)
    return out


# ---------------------------------------------------------------------- helpers

def _read_inference_json(path: Path | None) -> dict:
    settings = dict(DEFAULT_INFERENCE)
    if path is None or not Path(path).is_file():
        return settings
    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsCorruptError(f"{path} could not be read as JSON ({_short(exc)}). {FIX}") from exc
    if not isinstance(stored, dict):
        raise WeightsCorruptError(f"{path} should hold a JSON object. {FIX}")
    stored = {k: v for k, v in stored.items() if v is not None}
    problem = _inference_problem(stored)
    if problem:  # caught here, a bad value names its file instead of failing later without context
        raise WeightsCorruptError(f"{path} holds an invalid value: {problem}. {FIX}")
    settings.update(stored)
    return settings


def _inference_problem(stored: dict) -> str | None:
    """What is wrong with the values of an inference.json, or None."""
    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    for key in ("threshold", "center_threshold"):
        if key in stored and not (number(stored[key]) and 0.0 <= stored[key] <= 1.0):
            return f"{key} must be a number from 0 to 1, got {stored[key]!r}"
    for key, low in (("input_size", PAD_MULTIPLE), ("min_area_px", 0), ("min_distance_px", 0)):
        if key in stored and not (number(stored[key]) and float(stored[key]).is_integer() and stored[key] >= low):
            return f"{key} must be a whole number of at least {low}, got {stored[key]!r}"
    channels = stored.get("channels", ["lesion"])
    if (not isinstance(channels, list) or not channels or channels[0] != "lesion"
            or not all(isinstance(c, str) for c in channels)):
        return f"channels must be a list of names starting with \"lesion\", got {channels!r}"
    return None


def _hub_file(repo_id: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, filename))
    except Exception:  # noqa: BLE001 - optional file; the weights download reports real failures
        return None


def _config_classes(config_json: Path) -> int | None:
    try:
        classes = json.loads(config_json.read_text(encoding="utf-8")).get("classes")
    except (OSError, ValueError, AttributeError):
        return None  # the model loader reports unreadable files properly
    return int(classes) if isinstance(classes, int) and classes > 0 else None


def _onnx_runner(path: Path, model, load_model, input_size: int, cache_dir, threads):
    """The UNet on ONNX Runtime, or None (logged) when that is not possible here."""
    try:
        if path.is_dir():
            weights_key = runtime.fingerprint(path / "config.json", path / "model.safetensors")
        else:
            model = model if model is not None else load_model()
            weights_key = runtime.state_dict_fingerprint(model)
        side = -(-input_size // PAD_MULTIPLE) * PAD_MULTIPLE
        example = np.random.default_rng(0).standard_normal((1, 3, side, side), dtype=np.float32)

        def module():
            return (model if model is not None else load_model()).float().eval()

        return runtime.cached_onnx(cache_dir, runtime.export_key("unet", weights_key), module, example,
                                   threads=runtime.resolve_threads(threads or 0), dynamic_hw=True)
    except WeightsMissingError:
        raise
    except (runtime.ExportError, OSError) as exc:  # ONNX is an optimisation: PyTorch computes the same
        log.warning("Segmenter: ONNX Runtime not used (%s); running on PyTorch.", _short(exc))
        return None


def _output_channels(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None) or {}
    if "classes" in config:
        return int(config["classes"])
    return int(model.segmentation_head[0].out_channels)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
