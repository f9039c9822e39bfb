"""The history in words and rows: what changed between two results, the trend, the charts' rows, labels."""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from ..severity import class_index
from .store import entries_by_date

def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def duration_words(first: str, last: str) -> str:
    """The time from date `first` to date `last` (ISO), e.g. 'over 6 weeks', 'on the same day'."""
    days = (dt.date.fromisoformat(last) - dt.date.fromisoformat(first)).days
    if days <= 0:
        return "on the same day"
    if days < 14:
        return f"over {_plural(days, 'day')}"
    if days < 120:
        return f"over {_plural(round(days / 7), 'week')}"
    return f"over {_plural(round(days / 30.44), 'month')}"


def count_change_words(before: int, after: int) -> str:
    """'down from 34 to 18' / 'up from 5 to 12' / 'about the same (34 and 33)' / 'unchanged at 7'."""
    if before == after:
        return f"unchanged at {after}"
    if abs(after - before) <= max(2, round(0.1 * before)):
        return f"about the same ({before}, then {after})"
    return f"{'down' if after < before else 'up'} from {before} to {after}"


def grade_change_words(before: str | None, after: str | None) -> str:
    """A change of grade in words: 'Moderate → Mild, one grade better', 'unchanged (Mild)',
    'not comparable' when either is None."""
    if before is None or after is None:
        return "not comparable"
    steps = class_index(after) - class_index(before)
    if steps == 0:
        return f"unchanged ({after})"
    direction = "better" if steps < 0 else "worse"
    amount = "one grade" if abs(steps) == 1 else f"{abs(steps)} grades"
    return f"{before} → {after}, {amount} {direction}"


def _series(entry: dict) -> tuple:
    return entry["kind"], tuple(entry["views"])


def series_name(entry: dict) -> str:
    """What an entry measures: 'One photo' or 'Whole face (N views)'."""
    if entry["kind"] == "face":
        return f"Whole face ({len(entry['views'])} view{'s' if len(entry['views']) != 1 else ''})"
    return "One photo"


def _area(entry: dict) -> int | None:
    region = entry.get("region")
    return region["width"] * region["height"] if region else None


def comparability_notes(before: dict, after: dict) -> list[str]:
    """Why two entries may not compare well (different kinds, very different analysed areas);
    empty when they do."""
    notes = []
    if _series(before) != _series(after):
        notes.append(f"These entries measure different things ({series_name(before).lower()} and "
                     f"{series_name(after).lower()}): compare them with care.")
    a, b = _area(before), _area(after)
    if a and b and max(a, b) > 2 * min(a, b):
        notes.append("The analysed areas differ a lot in size, so the photos were probably taken from different "
                     "distances or angles: the counts are hard to compare. Similar photos (same light, distance "
                     "and side of the face) compare best.")
    return notes


def compare(before: dict, after: dict) -> dict:
    """Two entries, in date order, in words: {"lines": [...], "notes": [...], "sentence": str}."""
    if after["date"] < before["date"]:
        before, after = after, before
    when = duration_words(before["date"], after["date"])
    count = count_change_words(before["lesion_count"], after["lesion_count"])
    delta = after["lesion_count"] - before["lesion_count"]
    percent = f", {delta / before['lesion_count']:+.0%}" if before["lesion_count"] and delta else ""
    lines = [f"Lesions {count} {when}" + (f" ({delta:+d}{percent})." if delta else "."),
             f"Severity: {grade_change_words(before['severity'], after['severity'])}."]
    if before.get("count_grade") and after.get("count_grade"):
        lines.append(f"Count-based grade: {grade_change_words(before['count_grade'], after['count_grade'])}.")
    return {"before": before, "after": after, "lines": lines, "notes": comparability_notes(before, after),
            "sentence": " ".join(lines)}


def trend(state: Any) -> dict | None:
    """The change from the first to the last saved result of the same kind as the latest one, when
    they are on different days: {"sentence", "first", "last", "entries", ...}; None otherwise."""
    entries = entries_by_date(state)
    if not entries:
        return None
    latest = entries[-1]
    series = [e for e in entries if _series(e) == _series(latest)]
    first, last = series[0], series[-1]
    if first["date"] == last["date"]:
        return None
    when = duration_words(first["date"], last["date"])
    words = f"lesions {count_change_words(first['lesion_count'], last['lesion_count'])} {when}"
    grade = grade_change_words(first["severity"], last["severity"])
    sentence = (f"{words}; severity {grade} ({len(series)} saved results from {first['date']} to "
                f"{last['date']}")
    if latest["kind"] == "face":
        sentence += f", whole face from {len(latest['views'])} views"
    sentence += ")"
    return {"sentence": sentence, "first": first, "last": last, "entries": len(series),
            "notes": comparability_notes(first, last)}


def trend_sentence(state: Any) -> str | None:
    """trend(state)'s sentence, or None."""
    found = trend(state)
    return found["sentence"] if found else None


def chart_rows(state: Any) -> list[dict]:
    """One row per entry, for the charts: date, lesions, severity (name and 0..3), series."""
    return [{"Date": e["date"], "Lesions": e["lesion_count"], "Severity": e["severity"],
             "Severity level": class_index(e["severity"]), "Count grade": e.get("count_grade") or "",
             "Series": series_name(e)} for e in entries_by_date(state)]


def entry_label(entry: dict) -> str:
    """A short line for drop-downs: '2025-03-01 · Moderate · 34 lesions · week 4'."""
    parts = [entry["date"], entry["severity"], _plural(entry["lesion_count"], "lesion")]
    if entry["kind"] == "face":
        parts.append("whole face")
    if entry.get("note"):
        parts.append(entry["note"][:40] + ("…" if len(entry["note"]) > 40 else ""))
    return " · ".join(parts)


def labels(entries: Iterable[dict]) -> list[tuple[str, str]]:
    """(label, id) pairs of `entries`, for a drop-down."""
    return [(entry_label(e), e["id"]) for e in entries]
