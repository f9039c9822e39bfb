"""Building and loading the networks; running them is acne.segmenter's and acne.grader's job.

    unet = load_unet("weights/segmenter")              # UNetModel: settings, channels, lazy module
    grader = load_classifier("owner/name", fallback="weights/grader")
    cards.describe(...)                                # names, input sizes, shipped figures for the UI
"""
from __future__ import annotations

from .classifier import ClassifierModel, GraderLabelError, load_classifier, register_our_models
from .hub import Source, is_hub_id, resolve, short_error
from .unet import UNetModel, build_unet, load_unet

__all__ = ["ClassifierModel", "GraderLabelError", "Source", "UNetModel", "build_unet", "is_hub_id",
           "load_classifier", "load_unet", "register_our_models", "resolve", "short_error"]
