"""ACNE04 (640 x 640 export) for training and evaluation (scripts/): records, masks, splits.

The data set is read from ../shared/data/acne04 (or ACNE04_DIR); it is never copied into the repo.
Lesion masks are derived from the boxes as filled inscribed ellipses (the data set has no pixel masks).
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "acne04"
LESION_TYPES = ("whitehead_blackhead", "papules", "pustules", "nodules_cysts")


def data_root() -> Path:
    """The ACNE04 folder: ACNE04_DIR, else ../shared/data/acne04 beside the repository."""
    return Path(os.environ.get("ACNE04_DIR", DEFAULT_ROOT))


@dataclass
class Record:
    """One ACNE04 photo: its path, source photo, Hayashi grade, size and lesion boxes (x0, y0, x1, y1)."""
    path: Path
    source: str
    grade: int                 # Hayashi grade 0..3
    boxes: np.ndarray          # N x 4 float32, x0 y0 x1 y1 (pixels)
    categories: np.ndarray     # N int64
    width: int
    height: int


def load_split(split: str, root: Path | None = None) -> list[Record]:
    """The records of `split` (train, valid or test) under `root` (default data_root()), in file order."""
    root = root or data_root()
    coco = json.loads((root / "annotations" / f"{split}.json").read_text())
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    records = []
    for im in coco["images"]:
        anns = by_image.get(im["id"], [])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=np.float32).reshape(-1, 4)
        cats = np.array([a["category_id"] for a in anns], dtype=np.int64)
        records.append(Record(root / "images" / im["file_name"], im["source"], int(im["grade"]),
                              boxes, cats, int(im["width"]), int(im["height"])))
    return records


def read_rgb(path: Path) -> np.ndarray:
    """The photo at `path` as an HxWx3 uint8 RGB array. Raises OSError when it cannot be read."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def ellipse_mask(boxes: np.ndarray, height: int, width: int, scale: float = 1.0) -> np.ndarray:
    """Filled ellipses inscribed in the boxes, uint8 0/1."""
    mask = np.zeros((height, width), np.uint8)
    for x0, y0, x1, y1 in boxes * scale:
        center = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
        axes = (max(1, int(round((x1 - x0) / 2))), max(1, int(round((y1 - y0) / 2))))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 1, thickness=-1)
    return mask


def by_source(records: list[Record]) -> dict[str, list[Record]]:
    """Records grouped by source photo (the export versions of one photo together)."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[r.source].append(r)
    return dict(groups)
