"""Severity grading with any transformers image classifier whose labels are 'level N'.

The default is the Hub ViT imfarzanansari/skintelligent-acne (levels -1..3); when it cannot be
loaded (offline, no cache) the grader falls back to our own model in weights/grader (levels 0..3).
"""
from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import WeightsCorruptError, WeightsMissingError
from .report import GraderResult
from .severity import parse_level

__all__ = ["SeverityGrader", "GraderLabelError", "WeightsMissingError"]

log = logging.getLogger(__name__)

FIX = ("Get the Hub model once while online (it is then cached), train our own with "
       "`python scripts/train_grader.py` (it writes weights/grader), or point ACNE_GRADER / "
       "ACNE_GRADER_FALLBACK at a folder saved with save_pretrained.")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class GraderLabelError(ValueError):
    """The model's id2label does not follow the 'level N' scheme: a configuration error, never a fallback."""


class SeverityGrader:
    def __init__(self, model: torch.nn.Module, processor, *, name: str, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = model.float().eval().to(self.device)
        self.processor = processor
        self.name = name
        config = model.config
        id2label = {int(k): v for k, v in (config.id2label or {}).items()}
        self.labels = [id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
        try:
            self.levels = [parse_level(label) for label in self.labels]
        except ValueError as exc:
            raise GraderLabelError(
                f"Grader {name}: {exc}. Its config.json must map every class to a label "
                f"'level -1' ... 'level 3' (id2label); found {self.labels}.") from None
        self._explain_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SeverityGrader({self.name!r}, labels={self.labels})"

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_path: str | os.PathLike, *, fallback: str | os.PathLike | None = None,
             device: str = "cpu") -> "SeverityGrader":
        """Load a Hub id or a save_pretrained folder; if that fails, log one line and load `fallback`."""
        name = str(name_or_path)
        try:
            return cls._load_one(name, device)
        except GraderLabelError:
            raise
        except Exception as primary_exc:  # noqa: BLE001 - OSError offline, missing files, bad weights...
            if fallback is None or str(fallback) == name:
                raise _as_weights_error(name, primary_exc) from primary_exc
            try:
                grader = cls._load_one(str(fallback), device)
            except GraderLabelError:
                raise
            except Exception as fallback_exc:  # noqa: BLE001
                raise WeightsMissingError(
                    f"No severity grader could be loaded. Primary {name!r}: {_reason(name, primary_exc)}. "
                    f"Fallback {str(fallback)!r}: {_reason(str(fallback), fallback_exc)}. {FIX}"
                ) from fallback_exc
            log.warning("Severity grader %r could not be loaded (%s); using the fallback %r.",
                        name, _short(primary_exc), str(fallback))
            return grader

    @classmethod
    def _load_one(cls, name: str, device: str) -> "SeverityGrader":
        path = Path(name).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise WeightsMissingError(f"{path / 'config.json'} is missing")
            source, kwargs = str(path), {"local_files_only": True}
        elif not _HUB_ID.match(name) or path.is_absolute() or name.startswith((".", "~")):
            raise WeightsMissingError(f"the folder {path} does not exist")
        else:
            source, kwargs = name, {}
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(source, dtype=torch.float32, **kwargs)
        processor = AutoImageProcessor.from_pretrained(source, **kwargs)
        return cls(model, processor, name=name, device=device)

    # ------------------------------------------------------------------ inference
    def _inputs(self, rgb: np.ndarray) -> torch.Tensor:
        from PIL import Image

        batch = self.processor(images=Image.fromarray(rgb), return_tensors="pt")
        return batch["pixel_values"].to(self.device, torch.float32)

    def predict(self, rgb: np.ndarray) -> GraderResult:
        pixel_values = self._inputs(rgb)
        with torch.inference_mode():
            logits = self.model(pixel_values=pixel_values).logits[0].float()
        probs = torch.softmax(logits, dim=-1).tolist()
        best = int(np.argmax(probs))
        return GraderResult(model=self.name, level=self.levels[best],
                            level_scores={label: float(p) for label, p in zip(self.labels, probs)})

    def explain(self, rgb: np.ndarray) -> np.ndarray:
        """HxW float32 heat map in 0..1 at input resolution: where the grader looked.

        Attention rollout (Abnar & Zuidema 2020) for ViT-like models; otherwise occlusion
        sensitivity (a grey square slid over a grid; gradient-free, one batched pass).
        """
        pixel_values = self._inputs(rgb)
        with self._explain_lock, torch.inference_mode():
            heat = self._attention_rollout(pixel_values)
            if heat is None:
                heat = self._occlusion(pixel_values)
        heat = heat - heat.min()
        heat = heat / heat.max() if heat.max() > 0 else heat
        return self._to_input_frame(heat.astype(np.float32), rgb.shape[1], rgb.shape[0])

    def _attention_rollout(self, pixel_values: torch.Tensor) -> np.ndarray | None:
        patch = getattr(self.model.config, "patch_size", None)
        if not isinstance(patch, int):
            return None
        impl = getattr(self.model.config, "_attn_implementation", None)
        switched = False
        try:
            if impl not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
                # sdpa returns no attention weights; eager does (same numbers, a little slower).
                self.model.set_attn_implementation("eager")
                switched = True
            attentions = self.model(pixel_values=pixel_values, output_attentions=True).attentions
        except (TypeError, ValueError, NotImplementedError, AttributeError):
            return None
        finally:
            if switched:
                self.model.set_attn_implementation(impl)
        if not attentions or any(a is None for a in attentions):
            return None
        grid_h, grid_w = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
        tokens = attentions[0].shape[-1]
        prefix = tokens - grid_h * grid_w  # CLS (+ register / distillation tokens)
        if prefix < 1:
            return None
        eye = torch.eye(tokens)
        rollout = eye
        for layer in attentions:
            a = layer[0].float().mean(dim=0) + eye  # heads averaged, plus the residual path
            rollout = (a / a.sum(dim=-1, keepdim=True)) @ rollout
        return rollout[0, prefix:].reshape(grid_h, grid_w).numpy()

    def _occlusion(self, pixel_values: torch.Tensor, grid: int = 7, batch: int = 8) -> np.ndarray:
        base = torch.softmax(self.model(pixel_values=pixel_values).logits[0].float(), dim=-1)
        target = int(base.argmax())
        h, w = pixel_values.shape[-2:]
        ys = np.linspace(0, h, grid + 1).astype(int)
        xs = np.linspace(0, w, grid + 1).astype(int)
        drops = []
        cells = [(i, j) for i in range(grid) for j in range(grid)]
        for start in range(0, len(cells), batch):
            chunk = cells[start:start + batch]
            occluded = pixel_values.repeat(len(chunk), 1, 1, 1)
            for k, (i, j) in enumerate(chunk):
                occluded[k, :, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = 0.0  # 0 = the normalised mean colour
            probs = torch.softmax(self.model(pixel_values=occluded).logits.float(), dim=-1)[:, target]
            drops.extend((base[target] - probs).tolist())
        return np.clip(np.array(drops, dtype=np.float32).reshape(grid, grid), 0, None)

    def _to_input_frame(self, heat: np.ndarray, width: int, height: int) -> np.ndarray:
        """Resize a heat map over the model's input back onto the photo, undoing a centre crop."""
        p = self.processor
        crop = getattr(p, "crop_size", None) if getattr(p, "do_center_crop", False) else None
        size = getattr(p, "size", None)
        if crop is None or size is None or crop.get("height") is None:
            return cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
        if size.get("shortest_edge"):
            sx = sy = size.get("shortest_edge") / min(width, height)
        elif size.get("height") and size.get("width"):
            sx, sy = size.get("width") / width, size.get("height") / height
        else:
            return cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
        crop_w, crop_h = crop.get("width"), crop.get("height")
        left = (width * sx - crop_w) / 2 / sx
        top = (height * sy - crop_h) / 2 / sy
        x0, y0 = round(left), round(top)
        x1, y1 = round(left + crop_w / sx), round(top + crop_h / sy)
        patch = cv2.resize(heat, (max(1, x1 - x0), max(1, y1 - y0)), interpolation=cv2.INTER_LINEAR)
        out = np.zeros((height, width), np.float32)
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        out[cy0:cy1, cx0:cx1] = patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        return out


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
        return f"the files in {path} could not be read ({_short(exc)})"
    if isinstance(exc, OSError):
        return ("not a local folder, and not in the Hugging Face cache with the Hub unreachable "
                f"({_short(exc)})")
    return _short(exc)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
