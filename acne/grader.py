"""The severity grader at work: a photo crop in, the grader's level and its scores out.

Building the network is acne.models' job, choosing how it runs acne.fastpath's: this class only runs
a ready runner. A counting grader (acne.count_model) also returns its lesion density map from the same
forward pass: the heat map of what the grade sums.
"""
from __future__ import annotations

import threading

import numpy as np

from . import explain
from .models.classifier import ClassifierModel, probe_image
from .report import GraderResult

__all__ = ["SeverityGrader", "fixed_input_example"]


class SeverityGrader:
    """Runs a grader network.

    Args:
        model: the built network (acne.models.load_classifier).
        runner: acne.fastpath runner for it.
    """

    def __init__(self, model: ClassifierModel, runner):
        self.built, self.runner = model, runner
        self.name = model.name
        self.labels, self.levels = list(model.labels), list(model.levels)
        self._explain_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SeverityGrader({self.name!r}, labels={self.labels}, backend={self.backend!r})"

    @property
    def backend(self) -> str:
        """The runner's backend: torch, bf16 or onnx."""
        return self.runner.backend

    @property
    def input_size(self) -> int | None:
        """The long side of the model's input in pixels, when the preprocessing fixes it (else None)."""
        spec = self.built.spec
        if spec is not None:
            return max(spec["size"])
        example = fixed_input_example(self.built)
        return None if example is None else int(max(example.shape[-2:]))

    @property
    def model(self):
        """The torch classifier in fp32 (built on first use when the runner does not need it)."""
        return self.built.module.get()

    @property
    def processor(self):
        """The transformers image processor (loaded on first use when the checked light path replaces it)."""
        return self.built.processor.get()

    def inputs(self, rgb: np.ndarray):
        """The model's pixel values for an RGB crop: 1x3xHxW float32 tensor."""
        return self.built.preprocess(rgb)

    def grade(self, rgb: np.ndarray) -> tuple[GraderResult, np.ndarray | None]:
        """Grade an RGB crop (HxWx3 uint8).

        Returns:
            (GraderResult, the lesion density map over the model's input grid as float32, or None for
            graders without one).
        """
        import torch

        outputs = self.runner(self.inputs(rgb))
        probs = torch.softmax(outputs["logits"][0].float(), dim=-1).tolist()
        best = int(np.argmax(probs))
        density = outputs.get("density")
        result = GraderResult(model=self.name, level=self.levels[best],
                              level_scores={label: float(p) for label, p in zip(self.labels, probs)})
        return result, None if density is None else density[0].float().numpy()

    def predict(self, rgb: np.ndarray) -> GraderResult:
        """Grade an RGB crop; the GraderResult of `grade`."""
        return self.grade(rgb)[0]

    def explain(self, rgb: np.ndarray, density: np.ndarray | None = None) -> np.ndarray:
        """Where the grader looked: HxW float32 heat map in 0..1 at the crop's resolution.

        Args:
            rgb: the crop that was graded.
            density: the density map `grade` returned for it, if any: then no model runs again.
        Returns:
            the density map, else attention rollout (ViT-like models) or occlusion sensitivity, both
            computed now with one more forward pass (the torch model, built on first use).
        """
        with self._explain_lock:
            if density is None:
                module = getattr(self.runner, "module", None) or self.built.module.get()
                heat = explain.model_heat(self.runner.forward, module, self.inputs(rgb), self.built.has_density)
            else:
                heat = density
            return explain.to_input_frame(explain.normalise(heat), rgb.shape[1], rgb.shape[0],
                                          self.built.processor if self.built.spec is None else None)


def fixed_input_example(model: ClassifierModel) -> np.ndarray | None:
    """The pixel values of a probe image when the preprocessing gives every photo the same input shape
    (an ONNX export has a fixed shape), else None."""
    shapes = {tuple(model.preprocess(probe_image(h, w)).shape) for h, w in ((480, 640), (640, 480), (300, 300))}
    return model.preprocess(probe_image(480, 640)).numpy() if len(shapes) == 1 else None


def load_grader(name: str, *, fallback: str | None = None, backend: str = "torch", cache_dir=None,
                threads: int | None = None) -> SeverityGrader:
    """Load a grader and run it on a fixed backend (load_analyzer chooses the backend by measurement).

    Args:
        name: Hub id or save_pretrained folder.
        fallback: used when `name` cannot be had (one INFO line says so).
        backend: "torch", "bf16" or "onnx" (exported once into `cache_dir`; a failed export, or an input
            shape that depends on the photo: torch).
        threads: ONNX Runtime threads (default: acne.runtime.resolve_threads()).
    Returns:
        a SeverityGrader.
    Raises:
        GraderLabelError, WeightsMissingError / WeightsCorruptError.
    """
    from . import fastpath, runtime
    from .models.classifier import load_classifier

    model = load_classifier(name, fallback=fallback, cache_dir=cache_dir)
    example = fixed_input_example(model) if backend in ("onnx", "bf16") else None
    runner = fastpath.make_runner(model, backend if example is not None or backend != "onnx" else "torch",
                                  threads=runtime.resolve_threads(threads or 0), cache_dir=cache_dir, example=example)
    return SeverityGrader(model, runner)
