"""Is the analysed region skin? The check between the region and the models.

The region finder works on colour: wood, sand, fur, a coffee cup and an orange spacesuit have skin's
colours, and both models grade whatever they are shown. A linear head on the grader's frozen DINOv2
backbone (acne.models.skin) tells skin close-ups and faces from everything else; what it rejects gets
no grade, as a photo without skin gets none.

    check = load_skin_check("weights/skin_check")
    check.is_skin(crop)          # True / False
    check.is_closeup(photo)      # a whole photo that is a skin close-up beyond doubt (a stricter bar)
"""
from __future__ import annotations

import numpy as np

from .models.skin import LABELS, SkinCheckModel

__all__ = ["SkinCheck", "load_skin_check"]


class SkinCheck:
    """Runs a skin check network.

    Args:
        model: the loaded network (acne.models.skin.load_skin_check).
        runner: acne.fastpath runner for it.
    """

    def __init__(self, model: SkinCheckModel, runner):
        self.built, self.runner = model, runner
        self.name, self.threshold = model.name, model.threshold

    def __repr__(self) -> str:
        return f"SkinCheck({self.name!r}, threshold={self.threshold}, backend={self.runner.backend!r})"

    def probability(self, rgb: np.ndarray) -> float:
        """P(skin) of an RGB crop (HxWx3 uint8): a face or a skin close-up near 1, anything else near 0."""
        import torch

        logits = self.runner(self.built.preprocess(rgb))["logits"][0].float()
        return float(torch.softmax(logits, dim=-1)[LABELS.index("skin")])

    def is_skin(self, rgb: np.ndarray) -> bool:
        """Is the crop skin the models can grade (P(skin) at or above the threshold)?"""
        return self.probability(rgb) >= self.threshold

    def is_closeup(self, rgb: np.ndarray) -> bool:
        """Is a whole photo a skin close-up beyond doubt (P(skin) at or above the stricter close-up
        threshold)? Asked only when colour found no skin to analyse; False when the check has no such bar."""
        bar = self.built.closeup_threshold
        return bar is not None and self.probability(rgb) >= bar


def load_skin_check(folder, *, backend: str = "torch", threads: int | None = None, cache_dir=None) -> SkinCheck:
    """Load a skin check and run it on a fixed backend.

    Args:
        folder: the skin check's folder (weights/skin_check).
        backend: "torch", "bf16" or "onnx" (exported once into `cache_dir`).
        threads: ONNX Runtime threads (default: acne.runtime.resolve_threads()).
    Returns:
        a SkinCheck.
    Raises:
        WeightsMissingError / WeightsCorruptError, with a message that says how to fix it.
    """
    from . import fastpath, runtime
    from .models.skin import load_skin_check as load_model

    model = load_model(folder)
    example = model.preprocess(np.zeros((8, 8, 3), np.uint8)).numpy()
    runner = fastpath.make_runner(model, backend, threads=runtime.resolve_threads(threads or 0), cache_dir=cache_dir,
                                  example=example)
    return SkinCheck(model, runner)
