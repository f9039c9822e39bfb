"""The four-class severity scheme: one table, the Hayashi count bands, and the advice per class."""
from __future__ import annotations

import re

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


def band_text(grade: str) -> str:
    """The lesion counts of a count-based grade's Hayashi band, in words, e.g. "6–20 lesions; ...".

    Args:
        grade: one of CLASSES.
    Returns:
        the band's range and the reminder that the bands are for a half-face photo.
    """
    lower = 0
    for upper, name in HAYASHI_BANDS:
        if name == grade:
            return f"{lower}–{upper} lesions; Hayashi bands are for a half-face photo"
        lower = upper + 1
    return f"more than {HAYASHI_BANDS[-1][0]} lesions; Hayashi bands are for a half-face photo"


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
