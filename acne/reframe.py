"""Close-ups re-framed as phone photos, for tests and evaluation (not used by the analysis).

ACNE04's photos are close-ups in which a half face fills the frame. Visitors upload phone photos in
which the face fills a third to a half of a large frame, off centre, in a room. `reframe` builds such a
photo from a close-up: the close-up, scaled, on a generated background, with hard or soft borders,
and returns where it went so that lesion positions can be mapped from one to the other.

    photo, placement = reframe(closeup, rng=np.random.default_rng(0))
    x, y = placement.to_frame(x_closeup, y_closeup)
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FRAMES = ((1512, 2016), (2016, 1512), (1080, 1920), (3024, 4032), (1600, 1200))
BACKGROUNDS = ("plain", "textured", "room")
BORDERS = ("hard", "soft")

# Colours of walls, fabrics and furniture seen behind people (RGB), light and dark, warm and cool.
_WALLS = ((236, 236, 232), (200, 205, 210), (128, 128, 130), (70, 105, 160), (40, 40, 45), (95, 140, 105),
          (225, 215, 190), (180, 190, 200))
_FURNITURE = ((60, 45, 35), (110, 80, 55), (50, 60, 90), (150, 150, 150), (30, 30, 30), (120, 30, 40))


@dataclass(frozen=True)
class Placement:
    """Where the close-up went: its top-left corner in the frame and the scale applied to it."""
    x0: int
    y0: int
    scale: float
    frame: tuple[int, int]   # (width, height) of the re-framed photo

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        return self.x0 + x * self.scale, self.y0 + y * self.scale

    def box(self, closeup_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The close-up's box (x0, y0, x1, y1) in frame pixels."""
        w, h = closeup_size
        return (self.x0, self.y0, self.x0 + round(w * self.scale), self.y0 + round(h * self.scale))


def reframe(closeup: np.ndarray, *, rng: np.random.Generator, frame: tuple[int, int] | None = None,
            face_fraction: float | None = None, background: str | None = None,
            border: str | None = None) -> tuple[np.ndarray, Placement]:
    """Paste an RGB close-up into a phone-sized frame.

    closeup: HxWx3 uint8. frame: (width, height), else one of FRAMES. face_fraction: the close-up's
    width as a fraction of the frame's short side (0.40-0.50 when None). background: plain | textured |
    room. border: hard (pasted) or soft (feathered into the background). Each unset choice is drawn from
    `rng`. Returns the photo (frame height x width x 3, uint8) and the Placement.
    """
    width, height = frame or FRAMES[rng.integers(len(FRAMES))]
    fraction = face_fraction if face_fraction is not None else rng.uniform(0.40, 0.50)
    background = background or BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    border = border or BORDERS[rng.integers(len(BORDERS))]
    h0, w0 = closeup.shape[:2]
    scale = fraction * min(width, height) / w0
    w1, h1 = round(w0 * scale), round(h0 * scale)
    # Off centre: anywhere that keeps the close-up inside the frame, away from the exact middle.
    x0 = int(rng.integers(0, width - w1 + 1))
    y0 = int(rng.integers(0, height - h1 + 1))
    photo = make_background(background, width, height, rng)
    face = cv2.resize(closeup, (w1, h1), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    if border == "hard":
        photo[y0:y0 + h1, x0:x0 + w1] = face
    else:
        alpha = feather_mask(w1, h1)[:, :, None]
        patch = photo[y0:y0 + h1, x0:x0 + w1].astype(np.float32)
        photo[y0:y0 + h1, x0:x0 + w1] = np.rint(alpha * face + (1 - alpha) * patch).astype(np.uint8)
    return photo, Placement(x0, y0, scale, (width, height))


def make_background(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A plain wall, a textured surface or a room-like scene (wall, floor, furniture, a window)."""
    wall = np.array(_WALLS[rng.integers(len(_WALLS))], np.float32)
    if kind == "plain":
        shade = np.linspace(1.04, 0.94, height, dtype=np.float32)[:, None, None]   # light falls off
        return np.clip(wall * shade + np.zeros((height, width, 3), np.float32), 0, 255).astype(np.uint8)
    if kind == "textured":
        small = rng.normal(0, 1, (max(2, height // 24), max(2, width // 24), 1)).astype(np.float32)
        blotches = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)[:, :, None]
        weave = (np.sin(np.arange(width, dtype=np.float32) / rng.uniform(2, 6))[None, :, None]
                 * np.sin(np.arange(height, dtype=np.float32) / rng.uniform(2, 6))[:, None, None])
        grain = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
        image = wall + 22 * blotches + 12 * weave + grain
        return np.clip(image, 0, 255).astype(np.uint8)
    if kind == "room":
        image = np.empty((height, width, 3), np.float32)
        horizon = int(height * rng.uniform(0.6, 0.8))
        image[:horizon] = wall * np.linspace(1.05, 0.9, horizon, dtype=np.float32)[:, None, None]
        floor = np.array(_FURNITURE[rng.integers(len(_FURNITURE))], np.float32)
        planks = (np.sin(np.arange(width, dtype=np.float32) / 9.0) * 8)[None, :, None]
        image[horizon:] = floor + planks
        for _ in range(int(rng.integers(2, 5))):   # furniture, frames, a door
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            w, h = int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3))
            image[y:y + h, x:x + w] = np.array(_FURNITURE[rng.integers(len(_FURNITURE))], np.float32)
        x, y = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height // 3))
        image[y:y + height // 4, x:x + width // 4] = (235, 240, 250)   # a bright window
        image += rng.normal(0, 4, (height, width, 1)).astype(np.float32)
        return np.clip(cv2.GaussianBlur(image, (0, 0), 1.5), 0, 255).astype(np.uint8)
    raise ValueError(f"background must be one of {BACKGROUNDS}, got {kind!r}")


def feather_mask(width: int, height: int) -> np.ndarray:
    """1 in the middle, fading to 0 at the borders over about a tenth of the size (a vignette)."""
    ramp = max(2, min(width, height) // 10)
    x = np.minimum(np.arange(width), np.arange(width)[::-1]).astype(np.float32) / ramp
    y = np.minimum(np.arange(height), np.arange(height)[::-1]).astype(np.float32) / ramp
    return np.clip(np.minimum(y[:, None], x[None, :]), 0, 1)


@dataclass
class FramingCase:
    """One close-up with its labels: the Hayashi grade (0..3) and lesion boxes (N x 4, x0 y0 x1 y1)."""
    rgb: np.ndarray
    grade: int
    boxes: np.ndarray


def framing_figures(analyzer, cases: list[FramingCase], *, seed: int = 0) -> dict:
    """Analyse each close-up and a re-framed copy of it; compare severities and lesions.

    Re-framings cycle through every frame size, background and border kind, each off centre with the
    face at 40-50% of the frame (seeded). Lesion centres found on the re-framed photo are mapped back
    into the close-up's pixels and matched to the boxes as scripts/evaluate.py matches them.
    Returns {"closeup": {...}, "reframed": {...}, "same_severity": float, "found_by": {...}, "n": int}.
    """
    from .metrics import classification_figures, match_lesions, prf
    from .severity import CLASSES

    rng = np.random.default_rng(seed)
    kinds = [(f, b, e) for f in FRAMES for b in BACKGROUNDS for e in BORDERS]
    out = {name: {"pred": [], "tp": 0, "n_pred": 0, "n_true": 0} for name in ("closeup", "reframed")}
    found_by: dict[str, int] = {}
    grades, same, photos = [], 0, []
    for i, case in enumerate(cases):
        frame, background, border = kinds[i % len(kinds)]
        photo, placement = reframe(case.rgb, rng=rng, frame=frame, background=background, border=border)
        closeup, framed = analyzer.analyze(case.rgb), analyzer.analyze(photo)
        found_by[framed.region["found_by"]] = found_by.get(framed.region["found_by"], 0) + 1
        grades.append(case.grade)
        same += closeup.severity == framed.severity
        photos.append({"grade": case.grade, "closeup": [closeup.severity, closeup.lesion_count,
                                                        closeup.region["found_by"]],
                       "reframed": [framed.severity, framed.lesion_count, framed.region["found_by"]],
                       "kind": [f"{frame[0]}x{frame[1]}", background, border], "placed": placement.box(
                           (case.rgb.shape[1], case.rgb.shape[0])), "region": framed.region["box"]})
        for name, report, to_closeup in (("closeup", closeup, lambda x, y: (x, y)),
                                         ("reframed", framed, lambda x, y: ((x - placement.x0) / placement.scale,
                                                                            (y - placement.y0) / placement.scale))):
            centres = np.array([to_closeup(*lesion.center) for lesion in report.lesions], np.float32)
            out[name]["tp"] += match_lesions(centres, case.boxes)
            out[name]["n_pred"] += len(report.lesions)
            out[name]["n_true"] += len(case.boxes)
            # Not assessed counts as wrong: -1 matches no grade.
            out[name]["pred"].append(CLASSES.index(report.severity) if report.severity else -1)
    figures = {}
    for name, o in out.items():
        graded = [(t, p) for t, p in zip(grades, o["pred"])]
        cls = classification_figures([t for t, _ in graded], [max(p, 0) for _, p in graded])
        cls["accuracy"] = float(np.mean([t == p for t, p in graded]))
        figures[name] = {"severity_accuracy": cls["accuracy"], "macro_f1": cls["macro_f1"], "mae": cls["mae"],
                         "lesion": prf(o["tp"], o["n_pred"], o["n_true"]), "not_assessed": o["pred"].count(-1)}
    return {**figures, "same_severity": same / max(1, len(cases)), "found_by": found_by, "n": len(cases),
            "photos": photos}
