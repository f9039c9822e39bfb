"""The four-class severity scheme: one table, the Hayashi count bands, and the advice per class."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

CLASSES = ("Clear", "Mild", "Moderate", "Severe")

# Grader level -> four-class scheme. skintelligent-acne has levels -1..3; our own grader 0..3.
LEVEL_TO_CLASS = {-1: "Clear", 0: "Clear", 1: "Mild", 2: "Moderate", 3: "Severe", 4: "Severe"}

# Hayashi bands as ACNE04 uses them: lesions on the half face, upper bound inclusive.
HAYASHI_BANDS = ((5, "Clear"), (20, "Mild"), (50, "Moderate"))

_LEVEL_RE = re.compile(r"^\s*level\s*(-?\d+)\s*$", re.IGNORECASE)


def parse_level(label: str) -> int:
    """'level -1' -> -1. Raises ValueError for labels outside the scheme."""
    match = _LEVEL_RE.match(str(label))
    if not match:
        raise ValueError(f"grader label {label!r} is not of the form 'level N'")
    level = int(match.group(1))
    if level not in LEVEL_TO_CLASS:
        raise ValueError(f"grader label {label!r}: level {level} is outside -1..4")
    return level


def level_to_class(level: int) -> str:
    return LEVEL_TO_CLASS[level]


def class_scores(level_scores: dict[str, float]) -> dict[str, float]:
    """Sum the grader's level probabilities into the four classes (normalised to 1)."""
    scores = dict.fromkeys(CLASSES, 0.0)
    for label, p in level_scores.items():
        scores[level_to_class(parse_level(label))] += float(p)
    total = sum(scores.values())
    if total > 0:
        scores = {k: v / total for k, v in scores.items()}
    return scores


def count_grade(lesion_count: int) -> str:
    for upper, name in HAYASHI_BANDS:
        if lesion_count <= upper:
            return name
    return "Severe"


def class_index(name: str) -> int:
    return CLASSES.index(name)


@dataclass(frozen=True)
class CountCombiner:
    """Severity from the grader's four class scores and the lesion count together.

    A multinomial logistic regression over [log p(Clear..Severe), log(1 + lesion count)] (standardised),
    fitted on ACNE04 train by scripts/fit_combination.py. It is only meaningful for the exact grader
    and segmenter weights it was fitted on: `fitted_on` holds their fingerprints.
    """
    mean: tuple[float, ...]
    std: tuple[float, ...]
    coef: tuple[tuple[float, ...], ...]
    intercept: tuple[float, ...]
    fitted_on: tuple[tuple[str, str], ...]   # (("grader", fingerprint), ("segmenter", fingerprint))

    @classmethod
    def from_dict(cls, data: dict) -> "CountCombiner":
        model, n = data["model"], len(CLASSES) + 1
        combiner = cls(tuple(map(float, model["mean"])), tuple(map(float, model["std"])),
                       tuple(tuple(map(float, row)) for row in model["coef"]),
                       tuple(map(float, model["intercept"])), tuple(sorted(data["fitted_on"].items())))
        if (len(combiner.mean) != n or len(combiner.std) != n or len(combiner.intercept) != len(CLASSES)
                or len(combiner.coef) != len(CLASSES) or any(len(row) != n for row in combiner.coef)
                or min(combiner.std) <= 0):
            raise ValueError("the combination model has the wrong shape")
        return combiner

    def scores(self, class_probs: dict[str, float], lesion_count: int) -> dict[str, float]:
        x = [math.log(min(1.0, max(1e-6, class_probs[name]))) for name in CLASSES] + [math.log1p(lesion_count)]
        z = [(v - m) / s for v, m, s in zip(x, self.mean, self.std)]
        logits = [b + sum(w * v for w, v in zip(row, z)) for row, b in zip(self.coef, self.intercept)]
        top = max(logits)
        e = [math.exp(v - top) for v in logits]
        return {name: v / sum(e) for name, v in zip(CLASSES, e)}


RECOMMENDATIONS = {
    "Clear": [
        "Keep a gentle routine: a mild cleanser twice a day and a non-comedogenic moisturiser.",
        "Use a broad-spectrum sunscreen (SPF 30+) every morning.",
        "For an occasional spot, a 2.5% benzoyl peroxide or 2% salicylic acid spot treatment is enough.",
    ],
    "Mild": [
        "Try an over-the-counter benzoyl peroxide (2.5–5%) or adapalene 0.1% gel; start every other night.",
        "Give a new treatment 8–12 weeks before judging it; expect some dryness at first.",
        "Don't pick or squeeze spots: it raises the risk of marks and scars.",
        "Use a non-comedogenic moisturiser and a daily sunscreen, especially with retinoids.",
    ],
    "Moderate": [
        "See a doctor or dermatologist: moderate acne often needs prescription treatment "
        "(topical combinations or oral medication).",
        "Meanwhile, benzoyl peroxide plus adapalene is a well-supported over-the-counter combination.",
        "Keep the routine gentle: harsh scrubs and over-washing make inflammation worse.",
        "Don't pick: inflamed lesions scar more easily.",
    ],
    "Severe": [
        "Please see a dermatologist soon: severe acne, especially painful nodules or cysts, "
        "can scar and usually needs prescription treatment.",
        "Until then, keep to a gentle cleanser and moisturiser and avoid picking or squeezing.",
        "Seek care promptly if lesions are very painful, spreading fast, or come with fever.",
    ],
}


def recommendations(severity: str) -> list[str]:
    return list(RECOMMENDATIONS[severity])


def band_text(grade: str) -> str:
    """The lesion-count band of a count-based grade, in words (e.g. "6–20 lesions; ...")."""
    # stand-in until the core branch lands
    lower = 0
    for upper, name in HAYASHI_BANDS:
        if name == grade:
            return f"{lower}–{upper} lesions; Hayashi bands are for a half-face photo"
        lower = upper + 1
    return f"more than {HAYASHI_BANDS[-1][0]} lesions; Hayashi bands are for a half-face photo"
