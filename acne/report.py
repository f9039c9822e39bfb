"""The result of one analysis, as plain data that serialises to JSON."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

DISCLAIMER = (
    "This is not a medical diagnosis. Acne Detection AI is an educational tool, not a medical "
    "device; see a dermatologist for painful, severe or worsening acne."
)


@dataclass
class Lesion:
    box: tuple[int, int, int, int]   # x0, y0, x1, y1 in input-image pixels (x1, y1 exclusive)
    center: tuple[float, float]      # x, y in input-image pixels
    area_px: int
    score: float                     # peak lesion probability


@dataclass
class GraderResult:
    model: str                       # the model actually used (Hub id or folder)
    level: int                       # the grader's own level, e.g. -1..3
    level_scores: dict[str, float]   # label -> probability, as the model names them


@dataclass
class Report:
    image_size: tuple[int, int]      # w, h after EXIF orientation
    severity: str                    # Clear | Mild | Moderate | Severe (see severity_source)
    severity_scores: dict[str, float]
    grader: GraderResult
    segmenter: str
    lesions: list[Lesion]
    count_grade: str                 # Hayashi band of the lesion count
    severity_source: str = "grader"  # "grader+count": a combination fitted on train decided (see README)
    recommendations: list[str] = field(default_factory=list)
    quality_warnings: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    disclaimer: str = DISCLAIMER

    @property
    def lesion_count(self) -> int:
        return len(self.lesions)

    @property
    def grades_agree(self) -> bool:
        return self.severity == self.count_grade

    @property
    def confidence(self) -> float:
        return self.severity_scores.get(self.severity, 0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lesion_count"] = self.lesion_count
        d["grades_agree"] = self.grades_agree
        d["image_size"] = list(self.image_size)
        for lesion in d["lesions"]:
            lesion["box"] = list(lesion["box"])
            lesion["center"] = list(lesion["center"])
        return d

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)
