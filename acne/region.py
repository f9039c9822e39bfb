"""Where to look: the part of a photo that both models analyse.

The models were trained on ACNE04 close-ups, in which a half face fills the frame. A phone photo shows
a face in a third of the frame with a room around it, and some uploads show no person at all. So,
before either model runs:

- no skin at all                         -> nothing to grade  (found_by "none")
- a face is found                        -> the face, with forehead and jaw (found_by "face")
- no face, but a clear patch of skin     -> that patch        (found_by "skin")
- either fills the photo (a close-up)    -> the whole photo   (found_by "whole")

The region is then cut out and analysed as a close-up, and the skin mask keeps lesions off hair,
clothes and walls. Everything here runs on a copy of at most DETECT_SIDE pixels, so it costs the
same for a 12-megapixel photo as for a small one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from .face import FaceDetector

DETECT_SIDE = 480            # long side of the copy on which faces and skin are found
FACE_PX = 40                 # faces searched for first on that copy: 1/12 of its long side and up (cheap)
MIN_FACE_PX = 16             # then, if none, down to 1/30 (a face far away: too small to grade, but a face)
NO_SKIN = 0.001              # less skin than this fraction of the photo: nothing to look for
CLOSEUP_SIDE = 0.60          # a region this close to the photo's own size (each side): analyse it all
CLOSEUP_SKIN = 0.30          # no face, but skin over this fraction of the photo and across it: a close-up
MIN_SKIN_PATCH = 0.01        # a skin patch smaller than this fraction of the photo is not a region
SMALL_FACE = 0.20            # in a close-up, a face narrower than this fraction of the short side is doubtful:
SURE_FACE = 0.95             # it counts only at this detector score (ears and nostrils score under 0.90)
FACE_MIN_SKIN = 0.25         # a face box holding less skin than this is not a face to grade
MIN_REGION_SIDE = 320        # a region narrower than this (photo pixels) shows lesions only a few pixels wide
# Around the face detector's box, as fractions of its size, then squared: ACNE04's close-ups frame a face
# so, and the models grade at that scale (chosen on re-framed ACNE04 train photos, weights/face_detector).
FACE_MARGIN = {"left": 0.15, "right": 0.15, "top": 0.10, "bottom": 0.0}
SKIN_MARGIN = 0.06           # around a skin patch, as a fraction of its larger side
SKIN_REACH = 0.04            # lesions are kept this far (fraction of the photo's long side) from skin colour


@dataclass(frozen=True)
class Region:
    """The analysed part of a photo. box: (x0, y0, x1, y1) in photo pixels, x1 and y1 exclusive."""
    box: tuple[int, int, int, int]
    found_by: str            # "whole" | "face" | "skin" | "none"
    skin: np.ndarray | None = None   # bool skin mask of the whole photo at detection scale (None: no skin)

    @property
    def found(self) -> bool:
        return self.found_by != "none"

    @property
    def size(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box
        return x1 - x0, y1 - y0

    @property
    def too_small(self) -> bool:
        """Is the region so small in the photo that lesions would be only a few pixels wide?"""
        return self.found and min(self.size) < MIN_REGION_SIDE

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        return rgb[y0:y1, x0:x1]

    def skin_in(self, box: tuple[int, int, int, int], photo_size: tuple[int, int]) -> np.ndarray:
        """Bool mask, box-sized (rows, columns), of the box's pixels on skin or within a lesion's reach of it."""
        x0, y0, x1, y1 = box
        if self.skin is None:
            return np.zeros((y1 - y0, x1 - x0), bool)
        sh, sw = self.skin.shape
        sx, sy = sw / photo_size[0], sh / photo_size[1]
        # Nearest detection-scale pixel of every box pixel: index arithmetic, no full-size resize.
        cols = np.minimum(((np.arange(x0, x1) + 0.5) * sx).astype(np.intp), sw - 1)
        rows = np.minimum(((np.arange(y0, y1) + 0.5) * sy).astype(np.intp), sh - 1)
        return self.skin[np.ix_(rows, cols)]

    def to_dict(self) -> dict:
        return {"box": list(self.box), "found_by": self.found_by}


class RegionFinder:
    """Finds the region to analyse in a photo; holds the face detector, loaded once."""

    def __init__(self, detector: FaceDetector):
        self.detector = detector

    @classmethod
    def from_pretrained(cls, face_detector: str | os.PathLike, threads: int = 1) -> "RegionFinder":
        """Load the face detector from its weights folder (see acne.face), to search with `threads` threads."""
        return cls(FaceDetector.from_pretrained(face_detector, threads=threads))

    def find(self, rgb: np.ndarray) -> Region:
        """The region of an RGB photo (HxWx3 uint8) to analyse, and where its skin is.

        Returns a Region whose found_by is "whole", "face", "skin" or "none" (no face and no skin: no
        grade can be given).
        """
        h, w = rgb.shape[:2]
        small, scale = _detection_copy(rgb)
        skin = skin_mask(small)
        if skin.mean() < NO_SKIN:
            return Region((0, 0, w, h), "none", None)
        # Lesions are red: their centres may fall just outside the skin-colour box, so allow a margin.
        reach = _grow(skin, max(3, round(SKIN_REACH * max(small.shape[:2]))))
        patch = _largest_patch(skin)
        closeup = patch is not None and _closeup(skin, patch)
        face = _largest_face(self.detector, small, skin, closeup)
        if face is not None:
            return self._region(_square(_expand(face, FACE_MARGIN)), "face", small.shape, scale, w, h, reach)
        if patch is None:
            return Region((0, 0, w, h), "none", None)
        if closeup:
            return Region((0, 0, w, h), "whole", reach)
        x, y, pw, ph = patch
        m = SKIN_MARGIN * max(pw, ph)
        return self._region(_square((x - m, y - m, x + pw + m, y + ph + m)), "skin", small.shape, scale, w, h, reach)

    @staticmethod
    def _region(box, found_by: str, shape, scale: float, w: int, h: int, reach: np.ndarray) -> Region:
        x0, y0, x1, y1 = box = _clip(box, shape)
        if (x1 - x0) >= CLOSEUP_SIDE * shape[1] and (y1 - y0) >= CLOSEUP_SIDE * shape[0]:
            return Region((0, 0, w, h), "whole", reach)   # the face fills the photo: a close-up
        return Region(_to_photo(box, scale, w, h), found_by, reach)


def _closeup(skin: np.ndarray, patch: tuple[int, int, int, int]) -> bool:
    """Does skin fill the photo, as in a close-up: much of it skin, one patch across most of it?"""
    _, _, pw, ph = patch
    return skin.mean() >= CLOSEUP_SKIN and min(pw / skin.shape[1], ph / skin.shape[0]) >= CLOSEUP_SIDE


def _detection_copy(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """A copy with long side <= DETECT_SIDE, and its scale. Strided first: area-averaging all of a
    12-megapixel photo would cost more than everything else here together."""
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(h, w))
    if scale == 1.0:
        return rgb, 1.0
    step = max(1, int(1 / scale) // 2)
    strided = np.ascontiguousarray(rgb[::step, ::step])
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(strided, size, interpolation=cv2.INTER_AREA), size[0] / w


def skin_mask(rgb: np.ndarray) -> np.ndarray:
    """Bool mask of skin-coloured pixels: the classic YCrCb box (Chai & Ngan), with specks removed.

    Colour only: it finds skin of any tone in daylight and indoor light, and also wood, sand and fur of
    the same colours; it finds no skin in a grey-scale photo.
    """
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    # Cr up to 180 rather than the classic 173: inflamed, acne-covered cheeks are redder than the box.
    mask = cv2.inRange(ycrcb, (40, 133, 77), (250, 180, 127))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return mask > 0


def _largest_face(detector: FaceDetector, small: np.ndarray, skin: np.ndarray, closeup: bool):
    """The largest detected face whose box holds skin, as (x, y, w, h) on `small`, or None. Faces from
    FACE_PX pixels up and, if none, from MIN_FACE_PX.

    In a close-up (colour says skin fills the frame) the detector also finds ears and nostrils, small and
    unsure: there faces are searched from SMALL_FACE of the short side and, if none, from FACE_PX, where
    only those it is sure of count (a real face in front of a skin-coloured wall or floor)."""
    # The search costs about the square of 1/min_face: most photos end with the first, cheap pass.
    if closeup:
        doubtful = SMALL_FACE * min(small.shape[:2])
        faces = [f for f in detector.detect(small, min_face=max(FACE_PX, int(doubtful))) if f[2] - f[0] >= doubtful]
        faces = faces or [f for f in detector.detect(small, min_face=FACE_PX) if f[4] >= SURE_FACE]
    else:
        faces = detector.detect(small, min_face=FACE_PX) or detector.detect(small, min_face=MIN_FACE_PX)
    for x0, y0, x1, y1, _ in sorted(faces, key=lambda f: (f[2] - f[0]) * (f[3] - f[1]), reverse=True):
        box = skin[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))]
        if box.size and box.mean() >= FACE_MIN_SKIN:   # a face printed on a shirt, a statue, a grey photo
            return x0, y0, x1 - x0, y1 - y0
    return None


def _largest_patch(skin: np.ndarray) -> tuple[int, int, int, int] | None:
    closed = cv2.morphologyEx(skin.view(np.uint8), cv2.MORPH_CLOSE,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    if n < 2:
        return None
    i = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = (int(v) for v in stats[i])
    if area < MIN_SKIN_PATCH * skin.size:
        return None
    return x, y, w, h


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    return cv2.dilate(cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_CLOSE, kernel), kernel) > 0


def _expand(face: tuple[int, int, int, int], margin: dict) -> tuple[float, float, float, float]:
    x, y, w, h = face
    return x - margin["left"] * w, y - margin["top"] * h, x + w + margin["right"] * w, y + h + margin["bottom"] * h


def _square(box) -> tuple[float, float, float, float]:
    """The square around a box's centre with the box's longer side: the models know square close-ups (the
    grader squeezes any crop into a square)."""
    x0, y0, x1, y1 = box
    half = max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - half, cy - half, cx + half, cy + half


def _clip(box, shape) -> tuple[float, float, float, float]:
    h, w = shape[:2]
    x0, y0, x1, y1 = box
    return max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)


def _to_photo(box, scale: float, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (v / scale for v in box)
    x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    x1, y1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


NOT_ASSESSED_MESSAGE = (
    "No face or skin could be found in this photo, so no acne grade is given. Please upload a well-lit "
    "colour photo of the face (or of the affected skin), taken close enough that the skin fills much of "
    "the frame.")


COLOURLESS_WARNING = (
    "Little skin colour could be made out in this photo (grey, dim or tinted light), so the whole photo was "
    "analysed as a close-up of the skin and this grade is marked unreliable. If the face fills only part of "
    "the photo, the grade may be off: please retake it closer, in daylight.")


def region_warnings(region: Region) -> list[str]:
    """Plain-English warnings about the region: empty when it is fit to grade."""
    if not region.found:
        return [NOT_ASSESSED_MESSAGE]
    if region.too_small:
        what = "face" if region.found_by == "face" else "skin area" if region.found_by == "skin" else "photo"
        return [f"The {what} is too small in this photo (about {min(region.size)} pixels across) for acne "
                "spots to be seen: they would be only a few pixels wide, so this grade is unreliable and "
                "lesions may be missed. Please retake the photo closer (or zoomed in), so the face fills "
                "most of the frame, in good light."]
    return []
