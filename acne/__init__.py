"""Acne Detection AI: a lesion map and a severity grade for a face photo. Not a medical device.

    import acne
    analyzer = acne.load_analyzer()          # models load once
    report = analyzer.analyze("photo.jpg")   # a Report: plain data, report.to_json()

Names are imported on first use, so `import acne.config` (or the chat package) stays light: torch,
transformers and segmentation-models-pytorch load only when the analyzer is needed.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "load_analyzer": "analysis", "Analyzer": "analysis", "Analysis": "analysis",
    "Report": "report", "Lesion": "report", "GraderResult": "report", "DISCLAIMER": "report",
    "InvalidImageError": "imaging", "load_image": "imaging",
    "Settings": "config",
    "WeightsMissingError": "errors",
}
__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports lazily
    from .analysis import Analysis, Analyzer, load_analyzer
    from .config import Settings
    from .errors import WeightsMissingError
    from .imaging import InvalidImageError, load_image
    from .report import DISCLAIMER, GraderResult, Lesion, Report


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'acne' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
