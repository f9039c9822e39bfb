"""Lesion maths: a probability map split into lesions, lesions mapped back to photo pixels, and drawing.

Pure numpy / OpenCV on arrays; no model here.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from .report import Lesion

__all__ = ["find_lesions", "local_maxima", "scale_lesions", "to_photo", "render_overlay"]


def find_lesions(probability: np.ndarray, center: np.ndarray | None = None, *, threshold: float = 0.5,
                 center_threshold: float = 0.3, min_area_px: int = 10,
                 min_distance: int = 2) -> tuple[np.ndarray, list[Lesion]]:
    """Split a lesion probability map into lesions, in the map's own pixel coordinates.

    With a centre heat map, every peak >= center_threshold is one lesion (as the training script
    counts them when it calibrates center_threshold); lesion pixels (and the centre blobs) are
    assigned to the peaks by a watershed, and lesion-mask regions without any peak are dropped.
    Without one, seeds are the peaks of the mask's distance transform, a region without a seed is one
    lesion, and lesions under min_area_px are dropped. Either way touching lesions stay apart.
    Returns (label image int32, 0 = background; lesions, most certain first).
    """
    prob = np.asarray(probability, dtype=np.float32)
    mask = prob >= threshold
    if center is not None:
        relief = np.asarray(center, dtype=np.float32)
        centre_blobs = relief >= center_threshold
        peaks = local_maxima(relief, min_distance) & centre_blobs
        support = mask | centre_blobs
    else:
        support = mask
    if not support.any():
        return np.zeros(prob.shape, np.int32), []
    support_u8 = support.view(np.uint8)
    n_regions, regions, stats, _ = cv2.connectedComponentsWithStats(support_u8, connectivity=8)
    if center is None:
        relief = cv2.distanceTransform(support_u8, cv2.DIST_L2, 5)
        peaks = local_maxima(relief, min_distance) & support
    # Adjacent peak pixels (a plateau) are one seed.
    n_seeds, seeds = cv2.connectedComponents(peaks.view(np.uint8), connectivity=8)

    seed_region = np.zeros(n_seeds, np.int32)
    seed_region[seeds[peaks]] = regions[peaks]
    seeds_per_region = np.bincount(seed_region[1:], minlength=n_regions)
    seeds_per_region[0] = 0
    # A region with one seed is one lesion.
    region_label = np.zeros(n_regions, np.int32)
    single = np.flatnonzero(seeds_per_region[seed_region] == 1)
    single = single[single > 0]
    region_label[seed_region[single]] = single
    if center is None:  # no centre map: a region without a distance peak is still a lesion
        unseeded = np.flatnonzero(seeds_per_region == 0)
        unseeded = unseeded[unseeded > 0]
        region_label[unseeded] = np.arange(n_seeds, n_seeds + unseeded.size, dtype=np.int32)
    labels = region_label[regions]
    # Regions holding several seeds (touching lesions) are split by flooding from the seeds.
    for r in np.flatnonzero(seeds_per_region >= 2):
        x, y, w, h = (int(v) for v in stats[r, :4])
        window = (slice(y, y + h), slice(x, x + w))
        region = regions[window] == r
        labels[window][region] = _flood(relief[window], region, np.where(region, seeds[window], 0))[region]

    return _lesion_table(labels, prob, min_area_px if center is None else 1)


def local_maxima(values: np.ndarray, radius: int) -> np.ndarray:
    """Pixels that are the maximum of their (2 * radius + 1)-square window (plateaus included): bool HxW."""
    size = 2 * max(1, int(radius)) + 1
    return values >= cv2.dilate(values, np.ones((size, size), np.uint8))


def _flood(relief: np.ndarray, region: np.ndarray, seeds: np.ndarray, levels: int = 24) -> np.ndarray:
    """Watershed by immersion: lower the level step by step, growing each seed's label through the
    pixels above the level (geodesic dilation inside `region`). Returns int32 labels."""
    # Labels live as float32 (exact below 2**24) so cv2.dilate needs no conversions, and the
    # unlabelled set is kept up to date instead of recomputed: same result, a fraction of the work.
    labels = seeds.astype(np.float32)
    unlabelled = labels == 0
    values = relief[region]
    kernel = np.ones((3, 3), np.uint8)
    for level in np.linspace(float(values.max()), float(values.min()), levels):
        todo = region & (relief >= level) & unlabelled
        while todo.any():
            grown = cv2.dilate(labels, kernel)
            new = todo & (grown > 0)
            if not new.any():
                break
            labels[new] = grown[new]
            unlabelled[new] = False
            todo[new] = False
    return labels.astype(np.int32)


def _lesion_table(labels: np.ndarray, prob: np.ndarray, min_area_px: int) -> tuple[np.ndarray, list[Lesion]]:
    n = int(labels.max())
    if n == 0:
        return labels, []
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs]
    area = np.bincount(ids, minlength=n + 1)
    x0 = np.full(n + 1, np.iinfo(np.int64).max)
    y0 = x0.copy()
    x1 = np.full(n + 1, -1)
    y1 = x1.copy()
    np.minimum.at(x0, ids, xs)
    np.minimum.at(y0, ids, ys)
    np.maximum.at(x1, ids, xs)
    np.maximum.at(y1, ids, ys)
    score = np.zeros(n + 1, np.float32)
    np.maximum.at(score, ids, prob[ys, xs])
    cx = np.bincount(ids, weights=xs, minlength=n + 1) / np.maximum(area, 1)
    cy = np.bincount(ids, weights=ys, minlength=n + 1) / np.maximum(area, 1)

    kept = np.flatnonzero(area >= max(1, min_area_px))
    kept = kept[kept > 0]
    kept = kept[np.argsort(-score[kept], kind="stable")]   # most certain first
    relabel = np.zeros(n + 1, np.int32)
    relabel[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    lesions = [Lesion(box=(int(x0[i]), int(y0[i]), int(x1[i]) + 1, int(y1[i]) + 1),
                      center=(float(cx[i]), float(cy[i])), area_px=int(area[i]), score=float(score[i]))
               for i in kept]
    return relabel[labels], lesions


def scale_lesions(lesions: list[Lesion], sx: float, sy: float, width: int, height: int) -> list[Lesion]:
    """Map lesions from UNet pixels to input pixels (areas are estimates: area x sx x sy)."""
    if sx == 1 and sy == 1:
        return [_round_lesion(lesion) for lesion in lesions]
    out = []
    for lesion in lesions:
        x0, y0, x1, y1 = lesion.box
        out.append(_round_lesion(Lesion(
            box=(max(0, math.floor(x0 * sx)), max(0, math.floor(y0 * sy)),
                 min(width, math.ceil(x1 * sx)), min(height, math.ceil(y1 * sy))),
            center=((lesion.center[0] + 0.5) * sx - 0.5, (lesion.center[1] + 0.5) * sy - 0.5),
            area_px=max(1, round(lesion.area_px * sx * sy)),
            score=lesion.score)))
    return out


def _round_lesion(lesion: Lesion) -> Lesion:
    return Lesion(box=lesion.box, center=(round(lesion.center[0], 1), round(lesion.center[1], 1)),
                  area_px=lesion.area_px, score=round(float(lesion.score), 4))


# ---------------------------------------------------------------------- drawing

def render_overlay(rgb: np.ndarray, mask: np.ndarray, lesions: list[Lesion] | None = None,
                   color: tuple[int, int, int] = (255, 0, 80), alpha: float = 0.45) -> np.ndarray:
    """The photo with lesion pixels tinted and outlined (and lesion boxes, if given). Returns a new RGB array."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        tint = np.asarray(color, dtype=np.float32)
        out[mask] = (out[mask].astype(np.float32) * (1.0 - alpha) + tint * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thickness = max(1, round(max(out.shape[:2]) / 600))
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), thickness, cv2.LINE_AA)
    for lesion in lesions or ():
        x0, y0, x1, y1 = lesion.box
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 0), 1, cv2.LINE_AA)
    return out



def to_photo(segmentation, region: Region, shape) -> tuple[list[Lesion], np.ndarray, np.ndarray]:
    """The region's lesions that lie on skin, and the mask and probability map, in whole-photo pixels.

    Args:
        segmentation: the segmenter's Segmentation of the region's crop.
        region: the acne.region.Region that was cropped.
        shape: the whole photo's shape.
    Returns:
        (lesions in photo pixels, HxW bool mask, HxW float32 probability; 0 outside the region).
    """
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
