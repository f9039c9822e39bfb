"""One photo in, one Report out: the segmenter and the grader, loaded once, run together."""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from . import runtime
from .config import Settings
from .errors import WeightsMissingError
from .grading import SeverityGrader
from .imaging import ImageSource, load_image, quality_warnings
from .report import Report
from .segmentation import LesionSegmenter, render_overlay
from .severity import CLASSES, class_scores, count_grade, recommendations

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    report: Report
    image: np.ndarray          # HxWx3 uint8 RGB, EXIF-oriented: what was analysed
    mask: np.ndarray           # HxW bool lesion pixels
    probability: np.ndarray    # HxW float32 lesion probability

    def overlay(self, alpha: float = 0.45, boxes: bool = False) -> np.ndarray:
        """The photo with the lesion mask tinted and outlined (optionally each lesion's box)."""
        return render_overlay(self.image, self.mask, self.report.lesions if boxes else None, alpha=alpha)


class Analyzer:
    def __init__(self, segmenter: LesionSegmenter, grader: SeverityGrader, *, max_pixels: int = 50_000_000):
        self.segmenter = segmenter
        self.grader = grader
        self.max_pixels = max_pixels

    def __repr__(self) -> str:
        return f"Analyzer(segmenter={self.segmenter.name!r}, grader={self.grader.name!r})"

    def run(self, image: ImageSource) -> Analysis:
        """Analyse one photo (path, bytes, PIL image or RGB array). Raises InvalidImageError on bad input."""
        t0 = time.perf_counter()
        rgb = load_image(image, max_pixels=self.max_pixels)
        t1 = time.perf_counter()
        segmentation = self.segmenter.predict(rgb)
        t2 = time.perf_counter()
        graded = self.grader.predict(rgb)
        t3 = time.perf_counter()
        severity_scores = class_scores(graded.level_scores)
        severity = max(CLASSES, key=lambda name: severity_scores[name])
        report = Report(
            image_size=(int(rgb.shape[1]), int(rgb.shape[0])),
            severity=severity,
            severity_scores=severity_scores,
            grader=graded,
            segmenter=self.segmenter.name,
            lesions=segmentation.lesions,
            count_grade=count_grade(len(segmentation.lesions)),
            recommendations=recommendations(severity),
            quality_warnings=quality_warnings(rgb),
        )
        t4 = time.perf_counter()
        report.timings_ms = {
            "decode": _ms(t0, t1),
            "segment": _ms(t1, t2),
            "postprocess": round(segmentation.timings_ms.get("postprocess", 0.0), 1),  # part of segment
            "grade": _ms(t2, t3),
            "total": _ms(t0, t4),
        }
        return Analysis(report=report, image=rgb, mask=segmentation.mask, probability=segmentation.probability)

    def analyze(self, image: ImageSource) -> Report:
        return self.run(image).report

    def explain(self, image: ImageSource) -> np.ndarray:
        """HxW float32 heat map in 0..1 of what the grader looked at (same size as the oriented photo)."""
        return self.grader.explain(load_image(image, max_pixels=self.max_pixels))


def load_analyzer(settings: Settings | None = None, **overrides) -> Analyzer:
    """Load both models once. `overrides` replace Settings fields, e.g. load_analyzer(segmenter="dir").

    Raises WeightsMissingError naming every missing model (segmenter and grader) and how to get it.
    """
    settings = settings or Settings.from_env()
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    # Threads that suit the machine (a 2-CPU container must not run 16 threads), and ONNX Runtime
    # when it is installed: both compute the same fp32 numbers as plain PyTorch.
    threads = runtime.resolve_threads(settings.torch_threads)
    runtime.set_torch_threads(threads)
    options = {"backend": runtime.resolve_backend(settings.backend), "cache_dir": settings.cache_dir,
               "threads": threads}

    problems: list[str] = []
    segmenter = grader = None
    try:
        segmenter = LesionSegmenter.from_pretrained(
            settings.segmenter, size=settings.seg_size, threshold=settings.seg_threshold, **options)
    except WeightsMissingError as exc:
        problems.append(f"Lesion segmenter: {exc}")
    try:
        grader = SeverityGrader.load(settings.grader, fallback=settings.grader_fallback, int8=settings.int8,
                                     **options)
    except WeightsMissingError as exc:
        problems.append(f"Severity grader: {exc}")
    if problems:
        raise WeightsMissingError("Model weights are missing or unreadable.\n" + "\n".join(
            f"- {problem}" for problem in problems))
    analyzer = Analyzer(segmenter, grader, max_pixels=settings.max_pixels)
    log.info("Loaded %r (%d threads)", analyzer, threads)
    return analyzer


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1e3, 1)
