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


# Report.assessment: how far the verdict can be trusted.
GRADED = "graded"              # a face or skin at a scale the models know
UNRELIABLE = "unreliable"      # graded, but the face is too small for lesions to be seen, or no skin colour
                               # could be read and the whole photo was taken for a close-up (see the warning)
NOT_ASSESSED = "not_assessed"  # no face and no skin: no severity, no advice


@dataclass
class Report:
    image_size: tuple[int, int]      # w, h after EXIF orientation
    severity: str | None             # Clear | Mild | Moderate | Severe; None when not assessed
    severity_scores: dict[str, float]
    grader: GraderResult | None      # None when not assessed
    segmenter: str
    lesions: list[Lesion]            # on skin inside the region, in photo pixels
    count_grade: str | None          # Hayashi band of the lesion count; None when not assessed
    region: dict | None = None       # {"box": [x0, y0, x1, y1] in photo pixels, "found_by": face|skin|whole|none}
    assessment: str = GRADED         # graded | unreliable | not_assessed (see above)
    severity_source: str = "grader"  # what decided the severity: always the grader (kept in the JSON for readers)
    recommendations: list[str] = field(default_factory=list)
    quality_warnings: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    disclaimer: str = DISCLAIMER

    @property
    def lesion_count(self) -> int:
        return len(self.lesions)

    @property
    def assessed(self) -> bool:
        """Was a severity given (possibly marked unreliable)?"""
        return self.severity is not None

    @property
    def grades_agree(self) -> bool:
        return self.severity == self.count_grade

    @property
    def confidence(self) -> float:
        return self.severity_scores.get(self.severity, 0.0) if self.severity else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lesion_count"] = self.lesion_count
        d["grades_agree"] = self.grades_agree if self.assessed else None
        d["image_size"] = list(self.image_size)
        for lesion in d["lesions"]:
            lesion["box"] = list(lesion["box"])
            lesion["center"] = list(lesion["center"])
        return d

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)
