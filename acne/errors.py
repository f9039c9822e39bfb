"""Errors about model weights, shared by the segmenter and the grader loaders."""
from __future__ import annotations


class WeightsMissingError(FileNotFoundError):
    """Model weights cannot be found (or read). The message names what is missing and how to get it."""

    def __str__(self) -> str:  # FileNotFoundError would otherwise print "[Errno ...]" forms
        return self.args[0] if self.args else "model weights are missing"


class WeightsCorruptError(WeightsMissingError):
    """The weights files exist but cannot be read (truncated download, wrong file, bad JSON).

    A subclass of WeightsMissingError so that callers handle "no usable weights" in one place.
    """
