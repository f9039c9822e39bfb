"""One photo in, one Report out.

    photo -> region (face, skin patch or the whole close-up; none: no grade) -> segmenter and grader on
    the region -> lesions on skin, back in photo pixels -> Report

The models load once (load_analyzer); Analyzer.run only runs them.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from . import runtime
from .config import Settings
from .errors import WeightsMissingError
from .grading import SeverityGrader
from .imaging import ImageSource, load_image, quality_warnings
from .region import Region, RegionFinder, region_warnings
from .report import GRADED, NOT_ASSESSED, UNRELIABLE, Lesion, Report
from .segmentation import LesionSegmenter, Segmentation, render_overlay
from .severity import CLASSES, CountCombiner, class_scores, count_grade, recommendations

log = logging.getLogger(__name__)

REGION_COLOUR = (40, 200, 255)   # the analysed region's outline (RGB): light blue, apart from the red lesions


@dataclass
class Analysis:
    report: Report
    image: np.ndarray          # HxWx3 uint8 RGB, EXIF-oriented: the whole photo
    mask: np.ndarray           # HxW bool lesion pixels (only inside the region, on skin)
    probability: np.ndarray    # HxW float32 lesion probability (0 outside the region)
    region: Region
    # stand-in until the core branch lands: the grader's explain(), bound by Analyzer.run.
    _explain: Callable[[np.ndarray], np.ndarray] | None = dataclasses.field(default=None, repr=False, compare=False)

    def heatmap(self) -> np.ndarray:
        """HxW float32 map in 0..1 of where the grader looked, in photo pixels (0 outside the analysed
        region, and everywhere when the photo was not assessed). Computed from the analysed array."""
        # stand-in until the core branch lands
        if self._explain is None:
            return np.zeros(self.image.shape[:2], np.float32)
        return self._explain(self.image)

    def overlay(self, alpha: float = 0.45, boxes: bool = False, outline: bool = True) -> np.ndarray:
        """The whole photo with the lesion mask tinted and outlined (optionally each lesion's box), and
        the analysed region outlined when it is not the whole photo."""
        image = render_overlay(self.image, self.mask, self.report.lesions if boxes else None, alpha=alpha)
        if outline and self.region.found_by in ("face", "skin"):
            x0, y0, x1, y1 = self.region.box
            thickness = max(2, round(max(image.shape[:2]) / 400))
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), REGION_COLOUR, thickness, cv2.LINE_AA)
        return image


class Analyzer:
    def __init__(self, segmenter: LesionSegmenter, grader: SeverityGrader, regions: RegionFinder, *,
                 max_pixels: int = 50_000_000,
                 combiner: CountCombiner | None = None, parallel_threads: int = 0, threads: int = 0):
        self.segmenter = segmenter
        self.grader = grader
        self.regions = regions
        self.max_pixels = max_pixels
        self.combiner = combiner   # severity from grader scores + lesion count, when fitted for these weights
        # parallel_threads > 0: both models run at once, each in a worker thread on that many threads.
        # OpenMP thread counts are per thread (and new threads copy the last one set anywhere), so work
        # run in the caller's thread, the heat map, asks for all `threads` again.
        self._threads = threads
        self._pool = None if parallel_threads <= 0 else ThreadPoolExecutor(
            2, thread_name_prefix="acne-model", initializer=runtime.pin_torch_threads, initargs=(parallel_threads,))

    def __repr__(self) -> str:
        return f"Analyzer(segmenter={self.segmenter.name!r}, grader={self.grader.name!r})"

    @property
    def parallel(self) -> bool:
        """Do the segmenter and the grader run at the same time (ACNE_PARALLEL)?"""
        return self._pool is not None

    def run(self, image: ImageSource) -> Analysis:
        """Analyse one photo (path, bytes, PIL image or RGB array). Raises InvalidImageError on bad input.

        Returns an Analysis: the Report, and the photo with its lesion mask and probability map.
        """
        t0 = time.perf_counter()
        rgb = load_image(image, max_pixels=self.max_pixels)
        t1 = time.perf_counter()
        region = self.regions.find(rgb)
        t2 = time.perf_counter()
        if not region.found:
            return self._not_assessed(rgb, region, {"decode": _ms(t0, t1), "region": _ms(t1, t2)})
        crop = region.crop(rgb)
        if self._pool is None:
            segmentation, segment_ms, warnings = self._segment(crop)
            graded, grade_ms = _timed(self.grader.predict, crop)
        else:  # both read the crop, neither writes it
            segmenting = self._pool.submit(self._segment, crop)
            graded, grade_ms = self._pool.submit(_timed, self.grader.predict, crop).result()
            segmentation, segment_ms, warnings = segmenting.result()
        t3 = time.perf_counter()
        lesions, mask, probability = _to_photo(segmentation, region, rgb.shape)
        severity_scores, source = class_scores(graded.level_scores), "grader"
        if self.combiner is not None:
            severity_scores, source = self.combiner.scores(severity_scores, len(lesions)), "grader+count"
        severity = max(CLASSES, key=lambda name: severity_scores[name])
        report = Report(
            image_size=(int(rgb.shape[1]), int(rgb.shape[0])),
            severity=severity,
            severity_scores=severity_scores,
            grader=graded,
            segmenter=self.segmenter.name,
            lesions=lesions,
            count_grade=count_grade(len(lesions)),
            region=region.to_dict(),
            assessment=UNRELIABLE if region.too_small else GRADED,
            severity_source=source,
            recommendations=recommendations(severity),
            quality_warnings=region_warnings(region) + warnings,
        )
        t4 = time.perf_counter()
        report.timings_ms = {
            "decode": _ms(t0, t1),
            "region": _ms(t1, t2),
            "segment": segment_ms,
            "postprocess": round(segmentation.timings_ms.get("postprocess", 0.0), 1),  # part of segment
            "grade": grade_ms,       # overlaps segment when the models run in parallel
            "models": _ms(t2, t3),   # wall time of segment + grade
            "total": _ms(t0, t4),
        }
        return Analysis(report=report, image=rgb, mask=mask, probability=probability, region=region,
                        _explain=self.explain)

    def _not_assessed(self, rgb: np.ndarray, region: Region, timings: dict) -> Analysis:
        # Neither model runs: a grade of a wall or a landscape would be a verdict we cannot stand behind.
        start = time.perf_counter()
        report = Report(
            image_size=(int(rgb.shape[1]), int(rgb.shape[0])), severity=None, severity_scores={},
            grader=None, segmenter=self.segmenter.name, lesions=[], count_grade=None,
            region=region.to_dict(), assessment=NOT_ASSESSED, recommendations=[],
            quality_warnings=region_warnings(region) + quality_warnings(rgb))
        report.timings_ms = {**timings, "segment": 0.0, "postprocess": 0.0, "grade": 0.0, "models": 0.0}
        report.timings_ms["total"] = round(sum(timings.values()) + _ms(start, time.perf_counter()), 1)
        h, w = rgb.shape[:2]
        return Analysis(report=report, image=rgb, mask=np.zeros((h, w), bool),
                        probability=np.zeros((h, w), np.float32), region=region)

    def _segment(self, rgb: np.ndarray):
        # The photo-quality checks ride with the segmenter: in parallel they run while the (slower) grader does.
        segmentation, ms = _timed(self.segmenter.predict, rgb)
        return segmentation, ms, quality_warnings(rgb)

    def describe(self) -> dict:
        """The loaded models as plain data, for the About tab.

        Returns:
            {"segmenter": {"name", "short_name", "input_size", "figures_markdown"}, "grader": {same keys},
            "backend": str, "parallel": bool}.
        """
        # stand-in until the core branch lands
        from .cards import describe_model

        backends = dict.fromkeys([self.segmenter.backend, self.grader.backend])
        return {"segmenter": describe_model(self.segmenter), "grader": describe_model(self.grader),
                "backend": "/".join(backends), "parallel": self.parallel}

    def analyze(self, image: ImageSource) -> Report:
        return self.run(image).report

    def explain(self, image: ImageSource) -> np.ndarray:
        """HxW float32 heat map in 0..1 of what the grader looked at, over the whole oriented photo (0
        outside the analysed region, and everywhere when the photo could not be assessed)."""
        if self._pool is not None and self._threads:
            runtime.set_torch_threads(self._threads)
        rgb = load_image(image, max_pixels=self.max_pixels)
        region = self.regions.find(rgb)
        heat = np.zeros(rgb.shape[:2], np.float32)
        if region.found:
            x0, y0, x1, y1 = region.box
            heat[y0:y1, x0:x1] = self.grader.explain(region.crop(rgb))
        return heat


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
    backend = runtime.resolve_backend(settings.backend)
    per_model = runtime.parallel_threads(settings.parallel, threads, backend)
    runtime.set_torch_threads(threads)
    options = {"backend": backend, "cache_dir": settings.cache_dir, "threads": per_model or threads}

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
    regions = None
    try:
        regions = RegionFinder.from_pretrained(settings.face_detector)
    except WeightsMissingError as exc:
        problems.append(f"Face detector: {exc}")
    if problems:
        raise WeightsMissingError("Model weights are missing or unreadable.\n" + "\n".join(
            f"- {problem}" for problem in problems))
    analyzer = Analyzer(segmenter, grader, regions, max_pixels=settings.max_pixels,
                        combiner=_load_combiner(settings.combiner, segmenter, grader), parallel_threads=per_model,
                        threads=threads)
    log.info("Loaded %r (%s)", analyzer,
             f"in parallel, {per_model} thread(s) each" if per_model else f"{threads} threads")
    return analyzer


def _load_combiner(path: str | None, segmenter: LesionSegmenter, grader: SeverityGrader) -> CountCombiner | None:
    """The fitted grader + count combination, if there is one for exactly these weights; else None (the
    grader alone decides). An unusable file is logged, never fatal: the grader alone is a sound answer."""
    if not path or path.strip().lower() in ("off", "none", "0", "false"):
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        if file != Path(Settings.combiner):
            log.warning("ACNE_COMBINER: %s does not exist; severity comes from the grader alone.", file)
        return None
    try:
        data = json.loads(file.read_text())
        combiner = CountCombiner.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("Severity combination %s is unreadable (%s); severity comes from the grader alone.",
                    file, type(exc).__name__)
        return None
    loaded = {"grader": runtime.weights_fingerprint(grader.name),
              "segmenter": runtime.weights_fingerprint(segmenter.name)}
    if dict(combiner.fitted_on) != loaded:
        log.info("Severity combination %s was fitted for other model weights: the grader alone decides.", file)
        return None
    return combiner


def _to_photo(segmentation: Segmentation, region: Region, shape) -> tuple[list[Lesion], np.ndarray, np.ndarray]:
    """The region's lesions that lie on skin, and the mask and probability map, in whole-photo pixels."""
    x0, y0, x1, y1 = region.box
    h, w = shape[:2]
    # A close-up is what the segmenter was trained on, lesions anywhere in it included (the colour test
    # misses inflamed and shadowed skin); in a face or skin region, skin keeps lesions off clothes and walls.
    on_skin = (np.ones((y1 - y0, x1 - x0), bool) if region.found_by == "whole"
               else region.skin_in(region.box, (w, h)))
    lesions = []
    for lesion in segmentation.lesions:
        cx, cy = lesion.center
        if on_skin[min(y1 - y0 - 1, int(cy)), min(x1 - x0 - 1, int(cx))]:
            bx0, by0, bx1, by1 = lesion.box
            lesions.append(dataclasses.replace(lesion, box=(bx0 + x0, by0 + y0, bx1 + x0, by1 + y0),
                                               center=(round(cx + x0, 1), round(cy + y0, 1))))
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = segmentation.mask & on_skin
    if region.found_by == "whole":
        return lesions, mask, segmentation.probability
    probability = np.zeros((h, w), np.float32)
    probability[y0:y1, x0:x1] = segmentation.probability
    return lesions, mask, probability


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, _ms(start, time.perf_counter())


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1e3, 1)
