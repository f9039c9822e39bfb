"""Several views of one face (left, front, right): one whole-face summary from the per-view reports.

Clinical global grading rates a face by its most affected area, so the most affected view decides
the whole-face grade. Hayashi's count bands are for one half-face view, so the count grade is the
worst view's band (not a band of the total), and the total is reported as a number only.

    records = [("left", {"ok": True, **report.to_dict()}), ("front", {"ok": False, "error": "…"}), …]
    summary = summarize(records)      # plain JSON: used by the web page, the API and the CLI

A view that failed is listed in `failed` with its message; the summary uses the others. A view that
was not assessed (severity None: e.g. no skin in the photo) is listed with its report but does not
take part in the grade.
"""
from __future__ import annotations

from typing import Any, Iterable

from acne.report import DISCLAIMER
from acne.severity import CLASSES, class_index

VIEW_NAMES = ("left", "front", "right")
MAX_VIEWS = len(VIEW_NAMES)
VIEW_TITLES = {"left": "left side", "front": "front", "right": "right side"}


def view_title(name: str) -> str:
    return VIEW_TITLES.get(name, name)


def _grade(value: Any) -> str | None:
    return value if isinstance(value, str) and value in CLASSES else None


def _and(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def summarize(records: Iterable[tuple[str, dict]]) -> dict:
    """Per-view records -> the whole-face summary.

    Each record is ("left" | "front" | "right" | any name, record) where record is either
    {"ok": True, <Report.to_dict() fields>, optional "file"/"overlay"/"mask"} or
    {"ok": False, "error": "<plain message>", optional "file"}.
    """
    views: list[dict] = []
    failed: list[dict] = []
    for name, record in records:
        extra = {k: record[k] for k in ("file", "overlay", "mask") if k in record}
        if record.get("ok", True) and "error" not in record:
            report = {k: v for k, v in record.items() if k not in ("ok", "file", "overlay", "mask")}
            views.append({"view": name, **extra, "report": report})
        else:
            failed.append({"view": name, **extra, "error": str(record.get("error") or "It could not be analysed.")})

    assessed = [v for v in views if _grade(v["report"].get("severity")) is not None]
    not_assessed = [v["view"] for v in views if v not in assessed]
    counts = {v["view"]: int(v["report"].get("lesion_count", len(v["report"].get("lesions") or [])))
              for v in assessed}
    grades = {v["view"]: v["report"]["severity"] for v in assessed}

    worst = max(assessed, key=lambda v: (class_index(v["report"]["severity"]), counts[v["view"]]), default=None)
    count_grades = [g for v in assessed if (g := _grade(v["report"].get("count_grade"))) is not None]
    levels = [class_index(g) for g in grades.values()]
    disagree = bool(levels) and max(levels) - min(levels) > 1

    notes: list[str] = []
    for item in failed:
        notes.append(f"The {view_title(item['view'])} photo could not be analysed: {item['error']}")
    if not_assessed:
        notes.append(f"The {_and([view_title(n) for n in not_assessed])} "
                     f"{'photo was' if len(not_assessed) == 1 else 'photos were'} not assessed "
                     "(no grade), so the summary leaves "
                     f"{'it' if len(not_assessed) == 1 else 'them'} out.")
    if worst is not None and (failed or not_assessed):
        used = [view_title(v["view"]) for v in assessed]
        notes.append(f"The whole-face summary uses the {_and(used)} "
                     f"{'view' if len(used) == 1 else 'views'}.")
    if disagree:
        spread = ", ".join(f"{view_title(name)}: {grade}" for name, grade in grades.items())
        notes.append(f"The views disagree by more than one grade ({spread}). Acne is often uneven across the "
                     "face, but check that the photos are similar in light and distance. The whole-face grade "
                     "follows the most affected view.")
    if worst is None:
        notes.insert(0, "No view could be graded, so there is no whole-face result."
                     if views or failed else "No photos were given.")

    return {
        "severity": worst["report"]["severity"] if worst else None,
        "decided_by": worst["view"] if worst else None,
        "count_grade": max(count_grades, key=class_index) if count_grades else None,
        "grades": grades,
        "lesion_counts": counts,
        "total_lesions": sum(counts.values()),
        "views_disagree": disagree,
        "analysed": len(views),
        "failed": failed,
        "not_assessed": not_assessed,
        "message": " ".join(notes),
        "views": views,
        "disclaimer": DISCLAIMER,
    }


def summary_sentence(summary: dict) -> str:
    """One line: 'Whole face: Moderate (decided by the left side); 12 + 30 + 8 = 50 lesions.'"""
    if summary.get("severity") is None:
        return "Whole face: no grade."
    counts = summary["lesion_counts"]
    total = (" + ".join(str(n) for n in counts.values()) + f" = {summary['total_lesions']}"
             if len(counts) > 1 else str(summary["total_lesions"]))
    return (f"Whole face: {summary['severity']} (decided by the {view_title(summary['decided_by'])}); "
            f"{total} lesions.")
