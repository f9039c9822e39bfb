"""The lesion segmenter's network: a ResNet34-UNet (segmentation-models-pytorch) and its inference.json.

`load_unet` reads a save_pretrained folder (or a Hub id): the settings, the output channels and the
weights' fingerprint come from the files; the torch module itself is built on first use, so a warm
ONNX start never imports smp.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsCorruptError, WeightsMissingError
from ..runtime import Lazy, fingerprint, state_dict_fingerprint
from . import hub

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


def build_unet(classes: int = 2):
    """The architecture we train and ship: smp Unet with a ResNet34 encoder, no pretrained download.

    Args:
        classes: output channels (1: lesion; 2: lesion and lesion-centre heat map).
    Returns:
        an untrained torch module.
    """
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=classes)


@dataclass
class UNetModel:
    """A loaded segmenter network: its name, its settings (inference.json over DEFAULT_INFERENCE),
    its output channels, the torch module (`module.get()`, built on first use, fp32, eval) and the
    fingerprint of its weights (`weights_key.get()`)."""
    name: str
    settings: dict
    channels: list[str]
    module: Lazy
    weights_key: Lazy


def load_unet(name: str) -> UNetModel:
    """Load the segmenter network from a save_pretrained folder or a Hub id.

    Args:
        name: folder with config.json + model.safetensors (+ inference.json), or a Hub id.
    Returns:
        a UNetModel.
    Raises:
        WeightsMissingError: files missing, or a Hub id that cannot be had (message says how to fix it).
        WeightsCorruptError: unreadable weights, or an inference.json with invalid values.
    """
    name = str(name)
    try:
        source = hub.resolve(name, ("config.json", "model.safetensors"), probe_hub=False)
    except WeightsMissingError as exc:
        text = str(exc)
        if text.endswith("is missing"):
            raise WeightsMissingError(f"Segmenter weights are incomplete: {text}. {FIX}") from None
        raise WeightsMissingError(f"Segmenter weights not found: {text}. {FIX}") from None
    except OSError as exc:
        raise WeightsMissingError(f"Segmenter {name!r} is not a local folder and could not be loaded from the "
                                  f"Hugging Face Hub ({hub.short_error(exc)}). {FIX}") from None
    folder = source.folder if not source.is_hub else None
    try:
        hub.check_weights(folder)
    except Exception as exc:  # noqa: BLE001 - a damaged or truncated file: say so now, not at first use
        raise WeightsCorruptError(f"Segmenter weights in {folder} could not be read ({hub.short_error(exc)}); "
                                  f"the files may be damaged or incomplete. {FIX}") from None
    settings = read_inference_json(folder / "inference.json" if folder else hub.hub_file(name, "inference.json"))

    def build():
        import segmentation_models_pytorch as smp  # slow to import: only once the files are there

        try:
            # huggingface_hub prints "Loading weights from local directory" to stdout: keep stdout
            # clean for the CLI's JSON lines.
            with contextlib.redirect_stdout(io.StringIO()):
                return smp.from_pretrained(source.source, encoder_weights=None).float().eval()
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear message
            if folder is not None:
                raise WeightsCorruptError(
                    f"Segmenter weights in {folder} could not be read ({hub.short_error(exc)}); the files may be "
                    f"damaged or incomplete. {FIX}") from exc
            raise WeightsMissingError(
                f"Segmenter {name!r} is not a local folder and could not be loaded from the Hugging "
                f"Face Hub ({hub.short_error(exc)}). {FIX}") from exc

    module = Lazy(build)
    classes = _config_classes(folder / "config.json") if folder is not None else None
    if classes is None:  # the channel count from the model itself (Hub ids, unusual configs)
        classes = _output_channels(module.get())
    channels = settings.get("channels") or (["lesion", "center"] if classes >= 2 else ["lesion"])
    if len(channels) != classes:
        raise WeightsCorruptError(
            f"Segmenter {name}: inference.json lists channels {channels} but the model has {classes} "
            f"output channel(s). {FIX}")
    files = hub.weight_files(folder)
    weights_key = Lazy(lambda: fingerprint(*files) if files else state_dict_fingerprint(module.get()))
    return UNetModel(name=name, settings=settings, channels=list(channels), module=module, weights_key=weights_key)


def read_inference_json(path: Path | None) -> dict:
    """DEFAULT_INFERENCE updated with a folder's inference.json (when there is one). Raises
    WeightsCorruptError naming the file when it is not JSON or holds an invalid value."""
    settings = dict(DEFAULT_INFERENCE)
    if path is None or not Path(path).is_file():
        return settings
    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsCorruptError(f"{path} could not be read as JSON ({hub.short_error(exc)}). {FIX}") from exc
    if not isinstance(stored, dict):
        raise WeightsCorruptError(f"{path} should hold a JSON object. {FIX}")
    stored = {k: v for k, v in stored.items() if v is not None}
    problem = _inference_problem(stored)
    if problem:  # caught here, a bad value names its file instead of failing later without context
        raise WeightsCorruptError(f"{path} holds an invalid value: {problem}. {FIX}")
    settings.update(stored)
    return settings


def _inference_problem(stored: dict) -> str | None:
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


def _config_classes(config_json: Path) -> int | None:
    try:
        classes = json.loads(config_json.read_text(encoding="utf-8")).get("classes")
    except (OSError, ValueError, AttributeError):
        return None  # the model loader reports unreadable files properly
    return int(classes) if isinstance(classes, int) and classes > 0 else None


def _output_channels(model) -> int:
    config = getattr(model, "config", None) or {}
    if "classes" in config:
        return int(config["classes"])
    return int(model.segmentation_head[0].out_channels)
