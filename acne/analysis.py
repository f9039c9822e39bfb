"""One photo in, one Report out.

    photo -> region (face, skin patch or the whole close-up) -> skin check on the region -> segmenter and
    grader on the region -> lesions on skin, back in photo pixels -> Report

    No skin colour, or a patch that is not skin: the whole photo, if the check is sure it is a skin close-up
    (grey or tinted light; graded, marked unreliable), else no grade.

load_analyzer builds the models once and turns them into runners (acne.fastpath); Analyzer.run only runs them.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import cv2
import numpy as np

from . import fastpath, runtime
from .config import PROJECT_DIR, Settings
from .errors import WeightsMissingError
from .grader import SeverityGrader, fixed_input_example
from .imaging import ImageSource, load_image, quality_warnings
from .lesions import render_overlay, to_photo
from .models import cards, load_classifier, load_unet
from .region import COLOURLESS_WARNING, Region, RegionFinder, region_warnings
from .report import GRADED, NOT_ASSESSED, UNRELIABLE, GraderResult, Report
from .segmenter import LesionSegmenter, Segmentation
from .models.skin import load_skin_check as load_skin_model
from .skin import SkinCheck
from .severity import CLASSES, class_scores, count_grade, recommendations

log = logging.getLogger(__name__)

REGION_COLOUR = (40, 200, 255)   # the analysed region's outline (RGB): light blue, apart from the red lesions
PROBE_PHOTO = PROJECT_DIR / "images" / "examples" / "acne04_valid_grade2_0.jpg"   # what `auto` times


@dataclass
class Analysis:
    """One analysed photo. It holds the photo and the analysed crop for the length of the request only."""
    report: Report
    image: np.ndarray          # HxWx3 uint8 RGB, EXIF-oriented: the whole photo
    mask: np.ndarray           # HxW bool lesion pixels (only inside the region, on skin)
    probability: np.ndarray    # HxW float32 lesion probability (0 outside the region)
    region: Region
    crop: np.ndarray | None = None          # the region's pixels the models read (None: not assessed)
    density: np.ndarray | None = None       # the counting grader's density map from the same forward pass
    explainer: Callable | None = field(default=None, repr=False)   # SeverityGrader.explain

    def overlay(self, alpha: float = 0.45, boxes: bool = False, outline: bool = True) -> np.ndarray:
        """The whole photo with the lesion mask tinted and outlined (optionally each lesion's box), and
        the analysed region outlined when it is not the whole photo. Returns a new RGB array."""
        image = render_overlay(self.image, self.mask, self.report.lesions if boxes else None, alpha=alpha)
        if outline and self.region.found_by in ("face", "skin"):
            x0, y0, x1, y1 = self.region.box
            thickness = max(2, round(max(image.shape[:2]) / 400))
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), REGION_COLOUR, thickness, cv2.LINE_AA)
        return image

    def heatmap(self) -> np.ndarray:
        """Where the grader looked: HxW float32 in 0..1 over the whole photo, 0 outside the analysed region
        (and everywhere when the photo was not assessed). The counting grader's density map comes from
        the analysis's own forward pass; other graders are explained now, on the analysed crop."""
        heat = np.zeros(self.image.shape[:2], np.float32)
        if self.crop is not None and self.explainer is not None:
            x0, y0, x1, y1 = self.region.box
            heat[y0:y1, x0:x1] = self.explainer(self.crop, self.density)
        return heat


class Analyzer:
    """Runs the region finder and both models on photos. Made by load_analyzer.

    Args:
        segmenter, grader, regions, skin_check: ready runners of the four models (skin_check None: every
            region is taken for skin; load_analyzer uses that only to time the two models).
        max_pixels: larger photos are refused (acne.imaging.load_image).
        threads: inference threads of this process.
        parallel: run the segmenter and the grader side by side, each on half the threads.
        choice: how the fast path was chosen (acne.fastpath.Choice), for describe().
    """

    def __init__(self, segmenter: LesionSegmenter, grader: SeverityGrader, regions: RegionFinder,
                 skin_check: SkinCheck | None, *, max_pixels: int = 50_000_000, threads: int = 1, parallel: bool = False,
                 choice: fastpath.Choice | None = None):
        self.segmenter, self.grader, self.regions, self.skin_check = segmenter, grader, regions, skin_check
        self.max_pixels = max_pixels
        self.threads = threads
        self.choice = choice or fastpath.Choice(segmenter.backend, parallel, "forced")
        # OpenMP thread counts are per thread (new threads copy the last one set anywhere): each worker
        # pins its share once; work in the caller's thread (the heat map) asks for all threads again.
        self._pool = None if not parallel else ThreadPoolExecutor(
            2, thread_name_prefix="acne-model", initializer=runtime.pin_torch_threads,
            initargs=(max(1, threads // 2),))

    def __repr__(self) -> str:
        return f"Analyzer(segmenter={self.segmenter.name!r}, grader={self.grader.name!r})"

    @property
    def parallel(self) -> bool:
        """Do the segmenter and the grader run side by side?"""
        return self._pool is not None

    def describe(self) -> dict:
        """What the UI shows about the models, so it never opens weight folders.

        Returns:
            {"segmenter": {"name", "short_name", "input_size", "figures_markdown"}, "grader": {same keys},
             "backend": the runner in use ("torch", "bf16" or "onnx"), "parallel": bool}
        """
        return {"segmenter": cards.card(self.segmenter.name, self.segmenter.input_size),
                "grader": cards.card(self.grader.name, self.grader.input_size),
                "backend": self.segmenter.backend, "parallel": self.parallel}

    def run(self, image: ImageSource) -> Analysis:
        """Analyse one photo.

        Args:
            image: a path, bytes, PIL image or HxWx3 uint8 RGB array.
        Returns:
            an Analysis: the Report, the photo with its lesion mask and probability map, and heatmap().
        Raises:
            InvalidImageError: unreadable, empty or too large input.
        """
        t0 = time.perf_counter()
        rgb = load_image(image, max_pixels=self.max_pixels)
        t1 = time.perf_counter()
        region = self.regions.find(rgb)
        t2 = time.perf_counter()
        whole = (0, 0, int(rgb.shape[1]), int(rgb.shape[0]))
        is_skin, check_ms = False, 0.0
        if region.found:
            crop = region.crop(rgb)
            is_skin, check_ms, models = self._check_then_models(crop)
        colourless = False
        if not is_skin and region.found_by in ("none", "skin") and self.skin_check is not None:
            # Colour found no skin, or only a patch that is not skin: a close-up in grey, dim or tinted light
            # shows little skin colour. The whole photo is then analysed if the check, at its stricter
            # close-up bar, is sure it is skin (one more check on the photo; models only if it passes).
            start = time.perf_counter()
            colourless = self.skin_check.is_closeup(rgb)
            check_ms = round(check_ms + _ms(start, time.perf_counter()), 1)
            if colourless:
                region, crop, is_skin = Region(whole, "whole"), rgb, True
                models = self.run_models(crop)
        if not is_skin:   # no skin, or skin's colours but not skin (fur, coffee, a spacesuit)
            return self._not_assessed(rgb, Region(whole, "none"),
                                      {"decode": _ms(t0, t1), "region": _ms(t1, t2), "skin_check": check_ms})
        segmentation, (graded, density), model_ms = models
        warnings = quality_warnings(crop)
        lesions, mask, probability = to_photo(segmentation, region, rgb.shape)
        severity_scores = class_scores(graded.level_scores)
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
            assessment=UNRELIABLE if region.too_small or colourless else GRADED,
            recommendations=recommendations(severity),
            quality_warnings=region_warnings(region) + ([COLOURLESS_WARNING] if colourless else []) + warnings,
        )
        t4 = time.perf_counter()
        report.timings_ms = {
            "decode": _ms(t0, t1),
            "region": _ms(t1, t2),
            "skin_check": check_ms,           # side by side, it overlaps `models` (it ran before the segmenter)
            "segment": model_ms["segment"],   # per model; side by side, segment and grade overlap in `models`
            "postprocess": round(segmentation.timings_ms.get("postprocess", 0.0), 1),  # part of segment
            "grade": model_ms["grade"],
            "models": model_ms["models"],     # wall time of both models
            "total": _ms(t0, t4),
        }
        return Analysis(report=report, image=rgb, mask=mask, probability=probability, region=region,
                        crop=crop, density=density, explainer=self._explain)

    def analyze(self, image: ImageSource) -> Report:
        """Analyse one photo (as `run`); returns only its Report."""
        return self.run(image).report

    def explain(self, image: ImageSource) -> np.ndarray:
        """The heat map of `run(image).heatmap()`: HxW float32 in 0..1 over the whole photo."""
        return self.run(image).heatmap()

    def run_models(self, crop: np.ndarray) -> tuple[Segmentation, tuple[GraderResult, np.ndarray | None], dict]:
        """Both models on a region's crop, one after the other or side by side.

        Returns:
            (Segmentation, (GraderResult, density map or None), {"segment", "grade", "models"} in ms:
            per-model times and the wall time of both).
        """
        start = time.perf_counter()
        if self._pool is None:
            segmentation, segment_ms = self._segment(crop)
            graded, grade_ms = self._grade(crop)
        else:  # side by side; both read the crop, neither writes it. The grader (the longer) goes first: a
            # skin check already queued then runs before the segmenter, on the same thread.
            grading = self._pool.submit(self._grade, crop)
            segmenting = self._pool.submit(self._segment, crop)
            segmentation, segment_ms = segmenting.result()
            graded, grade_ms = grading.result()
        return segmentation, graded, {"segment": segment_ms, "grade": grade_ms,
                                      "models": _ms(start, time.perf_counter())}

    def close(self) -> None:
        """Stop the worker threads of side-by-side mode (the Analyzer still runs, one model after the other)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _segment(self, crop: np.ndarray) -> tuple[Segmentation, float]:
        start = time.perf_counter()
        segmentation = self.segmenter.predict(crop)
        return segmentation, _ms(start, time.perf_counter())

    def _check_then_models(self, crop: np.ndarray):
        """The skin check and, if the crop is skin, both models: (is_skin, check ms, run_models' answer or None)."""
        if self._pool is not None and self.skin_check is not None:
            # Side by side: the check runs first on one thread, then the segmenter there, while the grader
            # runs on the other (the longer model: the check costs little wall time). A region that is not
            # skin then throws both models' answers away.
            checking = self._pool.submit(self._check, crop)
            models = self.run_models(crop)
            is_skin, check_ms = checking.result()
            return is_skin, check_ms, models if is_skin else None
        is_skin, check_ms = self._check(crop)   # one after the other: no model runs on what is not skin
        return is_skin, check_ms, self.run_models(crop) if is_skin else None

    def _check(self, crop: np.ndarray) -> tuple[bool, float]:
        if self.skin_check is None:
            return True, 0.0
        start = time.perf_counter()
        is_skin = self.skin_check.is_skin(crop)
        return is_skin, _ms(start, time.perf_counter())

    def _grade(self, crop: np.ndarray) -> tuple[tuple[GraderResult, np.ndarray | None], float]:
        start = time.perf_counter()
        graded = self.grader.grade(crop)
        return graded, _ms(start, time.perf_counter())

    def _explain(self, crop: np.ndarray, density: np.ndarray | None) -> np.ndarray:
        if self._pool is not None:
            runtime.set_torch_threads(self.threads)
        return self.grader.explain(crop, density)

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


def load_analyzer(settings: Settings | None = None, **overrides) -> Analyzer:
    """Build the models once and choose how they run.

    Args:
        settings: Settings (default: Settings.from_env()).
        overrides: replace Settings fields, e.g. load_analyzer(segmenter="dir", backend="onnx").
    Returns:
        a ready Analyzer. With backend or parallel "auto", the first start on a machine times the
        candidates on a probe photo (a few seconds; acne.fastpath.choose) and later starts reuse the choice.
    Raises:
        WeightsMissingError: naming every missing model (segmenter, grader, face detector) and how to get it.
        ValueError: an unknown ACNE_BACKEND or ACNE_PARALLEL.
    """
    settings = settings or Settings.from_env()
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    # Threads that suit the machine: a 2-CPU container must not run 16 threads.
    threads = runtime.resolve_threads(settings.torch_threads)
    backends = fastpath.candidates(settings.backend)
    parallels = fastpath.parallel_modes(settings.parallel, threads)
    runtime.set_torch_threads(threads)

    problems: list[str] = []
    built: dict = {}
    for what, load in (("Lesion segmenter", lambda: load_unet(settings.segmenter)),
                       ("Severity grader", lambda: load_classifier(settings.grader, fallback=settings.grader_fallback,
                                                                   cache_dir=settings.cache_dir)),
                       ("Face detector", lambda: RegionFinder.from_pretrained(settings.face_detector, threads=threads)),
                       ("Skin check", lambda: load_skin_model(settings.skin_check))):
        try:
            built[what] = load()
        except WeightsMissingError as exc:
            problems.append(f"{what}: {exc}")
    if problems:
        raise WeightsMissingError("Model weights are missing or unreadable.\n" + "\n".join(
            f"- {problem}" for problem in problems))
    unet, classifier = built["Lesion segmenter"], built["Severity grader"]
    regions, skin_model = built["Face detector"], built["Skin check"]

    # A fixed input shape: what the ONNX export is checked on and what a bf16 runner times its attention on.
    grader_example = fixed_input_example(classifier) if {"onnx", "bf16"} & set(backends) else None
    skin_example = skin_model.preprocess(np.zeros((8, 8, 3), np.uint8)).numpy()
    runners: dict = {}

    def runner(model, backend: str, model_threads: int):
        # ONNX Runtime sessions own their thread count; torch runners read it per calling thread.
        if model is classifier and backend == "onnx" and grader_example is None:
            backend = "torch"   # the input shape depends on the photo: an export would not cover it
        key = (id(model), backend, model_threads if backend == "onnx" else 0)
        if key not in runners:
            example = (grader_example if model is classifier else skin_example if model is skin_model else
                       _unet_example(settings.seg_size or unet.settings["input_size"]))
            runners[key] = fastpath.make_runner(model, backend, threads=model_threads, cache_dir=settings.cache_dir,
                                                example=example)
        return runners[key]

    def build(backend: str, parallel: bool) -> Analyzer:
        model_threads = max(1, threads // 2) if parallel else threads
        segmenter = LesionSegmenter(unet, runner(unet, backend, model_threads), size=settings.seg_size,
                                    threshold=settings.seg_threshold)
        grader = SeverityGrader(classifier, runner(classifier, backend, model_threads))
        # The skin check runs alone, before the models, on every thread.
        skin_check = SkinCheck(skin_model, runner(skin_model, backend, threads))
        return Analyzer(segmenter, grader, regions, skin_check, max_pixels=settings.max_pixels, threads=threads,
                        parallel=parallel)

    probe = load_image(PROBE_PHOTO) if PROBE_PHOTO.is_file() else None

    def measure(backend: str, parallel: bool):
        analyzer = build(backend, parallel)
        # Timed as a request runs them: the skin check, then both models. Side by side, the check overlaps the
        # grader, which is most of what that mode saves; timing the models alone misses it.
        start = time.perf_counter()
        _, _, models = analyzer._check_then_models(probe)   # the probe photo is a close-up of skin
        segmentation, (graded, _), _ = models or analyzer.run_models(probe)
        wall_ms = _ms(start, time.perf_counter())
        analyzer.close()
        scores = class_scores(graded.level_scores)
        return wall_ms, SimpleNamespace(report=SimpleNamespace(severity=max(CLASSES, key=scores.get),
                                                          severity_scores=scores, lesions=segmentation.lesions),
                                   mask=segmentation.mask)

    if probe is None:
        backends, parallels = backends[:1], parallels[:1]   # nothing to time on: the plain choice
    key = dict(fastpath.machine_key(threads), segmenter=unet.weights_key.get(), grader=classifier.weights_key.get(),
               seg_size=settings.seg_size or unet.settings["input_size"])
    choice = fastpath.choose(backends, parallels, measure, lambda ref, cand: runtime.agreement([(ref, cand)])["passed"],
                             key=key, cache_dir=settings.cache_dir)
    analyzer = build(choice.backend, choice.parallel)
    analyzer.choice = choice
    runners.clear()   # the candidates not chosen are freed
    if choice.backend != "torch":   # the fp32 modules were the guard's reference: built again if ever needed
        unet.module.release()
        classifier.module.release()
        skin_model.module.release()
    log.info("Loaded %r (%s, %s)", analyzer, choice.backend,
             f"side by side, {max(1, threads // 2)} thread(s) each" if choice.parallel else f"{threads} threads")
    return analyzer


def _unet_example(input_size: int) -> np.ndarray:
    # The export's check input: a square at the padded input size (height and width stay dynamic).
    side = -(-input_size // 32) * 32
    return np.random.default_rng(0).standard_normal((1, 3, side, side), dtype=np.float32)


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1e3, 1)
