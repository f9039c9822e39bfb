"""The severity grader's network: any transformers image classifier whose labels are 'level N'.

The default is the Hub ViT imfarzanansari/skintelligent-acne (levels -1..3); when it cannot be had
(offline and not cached, or the Hub unreachable) `load_classifier` falls back to the embedded grader in
weights/grader (our counting grader, acne.count_model; levels 0..3).

The labels come from config.json and the preprocessing from a checked, cached spec (see `light_spec`)
when there is one, so a warm ONNX start imports neither transformers nor torchvision: both are loaded
only when the torch module or the image processor is first asked for.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import WeightsCorruptError, WeightsMissingError
from ..runtime import Lazy, default_cache_dir, fingerprint, state_dict_fingerprint
from ..severity import parse_level
from . import hub

log = logging.getLogger(__name__)

FIX = ("Get the Hub model once while online (it is then cached), train our own with "
       "`python scripts/train_grader.py` (it writes weights/grader), or point ACNE_GRADER / "
       "ACNE_GRADER_FALLBACK at a folder saved with save_pretrained.")


class GraderLabelError(ValueError):
    """The model's id2label does not follow the 'level N' scheme: a configuration error, never a fallback."""


@dataclass
class ClassifierModel:
    """A loaded grader network. `module.get()` is the torch classifier (fp32, eval) and
    `processor.get()` the transformers image processor, both built on first use; `preprocess(rgb)`
    gives the 1x3xHxW float32 pixel values the model reads; `weights_key.get()` fingerprints the weights."""
    name: str
    labels: list[str]
    levels: list[int]
    module: Lazy
    processor: Lazy
    preprocess: Callable
    spec: dict | None          # the checked light preprocessing in use, or None (the processor runs)
    weights_key: Lazy
    has_density: bool          # a counting grader: its forward pass also gives a lesion density map


def load_classifier(name: str | os.PathLike, *, fallback: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None) -> ClassifierModel:
    """Load a grader from a Hub id or a save_pretrained folder; if that cannot be had, the fallback.

    Args:
        name: Hub id or folder of the preferred grader.
        fallback: folder (or Hub id) used when `name` cannot be loaded; one INFO line says so.
        cache_dir: where the checked preprocessing spec is cached (default: ACNE_CACHE_DIR's default).
    Returns:
        a ClassifierModel.
    Raises:
        GraderLabelError: labels are not 'level N' (never a fallback: the configuration is wrong).
        WeightsMissingError / WeightsCorruptError: neither model could be loaded; says how to fix it.
    """
    name = str(name)
    try:
        return _load_one(name, cache_dir)
    except GraderLabelError:
        raise
    except Exception as primary_exc:  # noqa: BLE001 - OSError offline, missing files, bad weights...
        if fallback is None or str(fallback) == name:
            raise _as_weights_error(name, primary_exc) from primary_exc
        try:
            model = _load_one(str(fallback), cache_dir)
        except GraderLabelError:
            raise
        except Exception as fallback_exc:  # noqa: BLE001
            raise WeightsMissingError(
                f"No severity grader could be loaded. Primary {name!r}: {_reason(name, primary_exc)}. "
                f"Fallback {str(fallback)!r}: {_reason(str(fallback), fallback_exc)}. {FIX}") from fallback_exc
        if hub.is_hub_id(name) and isinstance(primary_exc, OSError) and not isinstance(primary_exc, WeightsMissingError):
            why = "the Hub is offline (HF_HUB_OFFLINE)" if hub.hub_offline() else "the Hub model is not reachable"
            log.info("Severity grader: using the embedded grader %s; %s (%s).", fallback, why, name)
        else:
            log.warning("Severity grader %r could not be loaded (%s); using the fallback %r.",
                        name, hub.short_error(primary_exc), str(fallback))
        return model


def _load_one(name: str, cache_dir) -> ClassifierModel:
    source = hub.resolve(name)
    folder = source.folder
    hub.check_weights(folder if not source.is_hub else None)
    if folder is not None and not source.is_hub and not _has_weights(folder):
        # Said now: the model itself is built on first use, where a missing file would surface late.
        raise WeightsMissingError(f"no weights in {folder} (model.safetensors is missing)")
    config = _read_config(folder) if folder is not None else None
    if config is None:  # a Hub model being downloaded: transformers reads its config
        from transformers import AutoConfig

        register_our_models()
        config = AutoConfig.from_pretrained(source.source, **source.kwargs).to_dict()
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    labels = [id2label.get(i, f"LABEL_{i}") for i in range(len(id2label) or 2)]
    try:
        levels = [parse_level(label) for label in labels]
    except ValueError as exc:
        raise GraderLabelError(
            f"Grader {name}: {exc}. Its config.json must map every class to a label "
            f"'level -1' ... 'level 3' (id2label); found {labels}.") from None

    def build_module():
        import torch
        from transformers import AutoModelForImageClassification

        register_our_models()
        # transformers' "Loading weights" progress bar on every start says nothing a user needs.
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        return AutoModelForImageClassification.from_pretrained(
            source.source, dtype=torch.float32, **source.kwargs).float().eval()

    def build_processor():
        from transformers import AutoImageProcessor

        register_our_models()
        return AutoImageProcessor.from_pretrained(source.source, **source.kwargs)

    module, processor = Lazy(build_module), Lazy(build_processor)
    files = hub.weight_files(folder)
    weights_key = Lazy(lambda: fingerprint(*files) if files else state_dict_fingerprint(module.get()))
    spec_file = _spec_path(folder, cache_dir)
    spec = _read_spec(spec_file, labels)
    if spec is None:
        spec = _check_and_store_spec(processor.get(), spec_file, labels, name)
    if spec is not None:
        preprocess = lambda rgb: light_preprocess(spec, rgb)  # noqa: E731
    else:
        preprocess = lambda rgb: processor_inputs(processor.get(), rgb)  # noqa: E731
    return ClassifierModel(name=name, labels=labels, levels=levels, module=module, processor=processor,
                           preprocess=preprocess, spec=spec, weights_key=weights_key,
                           has_density=config.get("model_type") == "acne-dinov2-count-grader")


def register_our_models() -> None:
    """Make transformers' Auto classes know our counting grader's model_type (idempotent)."""
    from ..count_model import register

    register()


def processor_inputs(processor, rgb: np.ndarray):
    """The transformers processor's pixel values for an RGB array: 1x3xHxW float32 tensor."""
    import torch
    from PIL import Image

    return processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"].to(torch.float32)


def _has_weights(folder: Path) -> bool:
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    return any((folder / name).is_file() for name in names)


def _read_config(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # transformers then reports the problem in its own words
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------- the transformers-free preprocessing
#
# transformers' image processors import torchvision, which imports torch._dynamo: about half of a
# warm start and 250 MB of memory. For the common processors (a fixed-size resize, rescale,
# normalise) the same tensor ops are run here, and only where they reproduce the processor's output
# bit for bit on check images (checked once, the result cached with the weights' fingerprint).

def light_preprocess(spec: dict, rgb: np.ndarray):
    """What the TorchvisionBackend processor does for `spec`: uint8 CHW, antialiased resize, then
    the fused rescale + normalise.

    Args:
        spec: from `light_spec`.
        rgb: HxWx3 uint8.
    Returns:
        1x3xHxW float32 tensor.
    """
    import torch

    image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).unsqueeze(0)  # a fresh CHW copy
    height, width = spec["size"]
    if tuple(image.shape[-2:]) != (height, width):
        mode = spec["mode"]
        native = mode == "bicubic" or torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
        x = image if native else image.to(torch.float32)
        x = torch.nn.functional.interpolate(x, size=[height, width], mode=mode, align_corners=False,
                                            antialias=True)
        image = x if native else x.round_().to(torch.uint8)
    mean = torch.tensor(spec["mean"]) * (1.0 / spec["rescale_factor"])
    std = torch.tensor(spec["std"]) * (1.0 / spec["rescale_factor"])
    return image.to(torch.float32).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


def light_spec(processor) -> dict | None:
    """The processor as a spec for `light_preprocess`, or None when it does more than that covers."""
    get = lambda name, default=None: getattr(processor, name, default)  # noqa: E731
    size = get("size") or {}
    size = dict(size) if isinstance(size, dict) else dict(vars(size)) if hasattr(size, "__dict__") else {}
    size = {k: v for k, v in size.items() if v is not None}  # SizeDict (a dataclass) or a plain dict
    resample = int(get("resample", 2) if get("resample") is not None else 2)
    if (get("backend") not in (None, "torchvision") or not get("do_resize", True) or set(size) != {"height", "width"}
            or get("do_center_crop") or get("do_pad") or not get("do_rescale") or not get("do_normalize")
            or resample not in (2, 3) or get("image_mean") is None or get("image_std") is None):
        return None
    mean, std = list(get("image_mean")), list(get("image_std"))
    if len(mean) != 3 or len(std) != 3:
        return None
    return {"size": [int(size["height"]), int(size["width"])], "mode": "bilinear" if resample == 2 else "bicubic",
            "rescale_factor": float(get("rescale_factor")), "mean": [float(v) for v in mean],
            "std": [float(v) for v in std]}


def probe_image(height: int, width: int) -> np.ndarray:
    """A smooth, deterministic colour image (uint8 RGB): input for checks and timings."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)


def _spec_path(folder: Path | None, cache_dir) -> Path | None:
    files = hub.weight_files(folder)
    if files is None:
        return None
    extra = [folder / "preprocessor_config.json"] if (folder / "preprocessor_config.json").is_file() else []
    try:
        from importlib.metadata import version

        versions = f"transformers={version('transformers')},torchvision={version('torchvision')}"
    except Exception:  # noqa: BLE001 - no versions, no light path
        return None
    key = fingerprint(*files, *extra, versions, "light-1")
    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / f"grader-light-{key}.json"


def _read_spec(path: Path | None, labels: list[str]) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("labels") != labels:
            return None
        return {k: record[k] for k in ("size", "mode", "rescale_factor", "mean", "std")}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        log.info("Cached preprocessing %s not usable (%s); checking it again.", path, type(exc).__name__)
        return None


def _check_and_store_spec(processor, path: Path | None, labels: list[str], name: str) -> dict | None:
    """The light preprocessing, if it reproduces the processor exactly on check images here (then cached)."""
    import torch

    spec = light_spec(processor)
    if spec is None:
        return None
    checks = [probe_image(480, 640), probe_image(640, 480), probe_image(300, 300),
              np.random.default_rng(0).integers(0, 256, (513, 701, 3), dtype=np.uint8)]
    for rgb in checks:
        if not torch.equal(light_preprocess(spec, rgb), processor_inputs(processor, rgb)):
            log.info("Grader %s: processor not reproduced exactly; keeping transformers' processor.", name)
            return None
    if path is not None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(dict(spec, labels=labels), indent=1))
            os.replace(tmp, path)
        except OSError as exc:
            log.info("Grader %s: could not cache the preprocessing spec (%s).", name, exc)
    return spec


def _as_weights_error(name: str, exc: BaseException) -> WeightsMissingError:
    if isinstance(exc, WeightsMissingError):
        return type(exc)(f"Severity grader {name!r}: {exc}. {FIX}")
    kind = WeightsCorruptError if Path(name).expanduser().is_dir() else WeightsMissingError
    return kind(f"Severity grader {name!r} could not be loaded: {_reason(name, exc)}. {FIX}")


def _reason(name: str, exc: BaseException) -> str:
    path = Path(name).expanduser()
    if isinstance(exc, WeightsMissingError):
        return str(exc)
    if path.is_dir():
        return f"the files in {path} could not be read ({hub.short_error(exc)})"
    if isinstance(exc, OSError):
        return ("not a local folder, and not in the Hugging Face cache with the Hub unreachable "
                f"({hub.short_error(exc)})")
    return hub.short_error(exc)
