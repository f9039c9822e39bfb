"""My progress: the records a visitor keeps in their own browser, as plain data (no Gradio here).

The web app stores a history in the visitor's browser (localStorage, through gr.BrowserState); the
server never writes it anywhere. Every value that comes back from the browser (a reload, an imported
file) passes through normalise() / parse_import() first: only the fields below, with checked types
and ranges, ever reach the page or the chat.

    state = empty()
    entry = build_record(report, date="2025-03-01", note="week 4 of adapalene")
    state, message = add_entry(state, entry)
    trend_sentence(state)  # 'lesions down from 34 to 18 over 6 weeks (…)' once there are two dates

A record (one saved result):
    id            12 hex digits
    date          "YYYY-MM-DD" (the visitor may change it)
    kind          "photo" (one photo) or "face" (the whole-face summary of several views)
    views         the views of a "face" record, e.g. ["left", "front", "right"]; [] for a photo
    severity      Clear | Mild | Moderate | Severe (results that were not assessed are not saved)
    scores        {class: probability}, 3 decimals
    lesion_count  lesions found (for "face": the total over the views)
    view_counts   {view: lesions} for "face" records
    count_grade   Hayashi band of the count (for "face": the worst view's band)
    region        {"width", "height", "found_by"}: the size of the analysed area in photo pixels
    note          optional, at most MAX_NOTE_CHARS characters
    thumbnail     optional data:image/jpeg;base64 URL of a small overlay (only when the visitor asks)
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import io
import json
import re
import uuid
from typing import Any, Iterable

from acne.severity import CLASSES, class_index

FORMAT = "acne-detection-ai/history"
VERSION = 1
MAX_ENTRIES = 500
MAX_NOTE_CHARS = 200
THUMBNAIL_SIDE = 128
MAX_THUMBNAIL_CHARS = 40_000        # a 128 px JPEG is about 5,000 characters of base64
MAX_IMPORT_CHARS = 5_000_000        # an exported file with MAX_ENTRIES entries and thumbnails fits
MAX_STATE_CHARS = 2_500_000         # browsers allow about 5 MB per site; encryption adds about a third
MAX_LESIONS = 100_000
EARLIEST_DATE = dt.date(2000, 1, 1)
KINDS = ("photo", "face")
VIEW_NAMES = ("left", "front", "right")
FOUND_BY = ("face", "skin", "whole")

_ID = re.compile(r"^[0-9a-f]{8,32}$")
_DATE = re.compile(r"^\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T ].*)?\s*$")
_THUMBNAIL = re.compile(r"^data:image/(jpeg|png|webp);base64,([A-Za-z0-9+/]+={0,2})$")
_MAGIC = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n", "webp": b"RIFF"}


class HistoryError(ValueError):
    """A plain-English reason why something cannot be saved or imported."""


# --------------------------------------------------------------------------- small helpers

def empty() -> dict:
    return {"format": FORMAT, "version": VERSION, "entries": []}


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def today() -> dt.date:
    return dt.date.today()


def parse_date(value: Any, *, latest: dt.date | None = None) -> str:
    """'2025-03-01' (also 2025/3/1 or an ISO date-time) -> '2025-03-01'; a plain message otherwise.

    `latest`: the last date allowed (default: tomorrow, since the visitor's day may be ahead of ours)."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        date = value
    else:
        match = _DATE.match(str(value or ""))
        if not match:
            raise HistoryError("Please give the date as year-month-day, for example 2025-03-01.")
        try:
            date = dt.date(*(int(part) for part in match.groups()))
        except ValueError:
            raise HistoryError(f"{str(value).strip()[:20]} is not a real date.") from None
    latest = latest or today() + dt.timedelta(days=1)
    if date > latest:
        raise HistoryError("The date is in the future. Please give the day the photo was taken.")
    if date < EARLIEST_DATE:
        raise HistoryError(f"The date is before {EARLIEST_DATE.year}. Please check it.")
    return date.isoformat()


def clean_note(value: Any) -> str:
    """One line of printable text, at most MAX_NOTE_CHARS characters."""
    if value is None:
        return ""
    text = " ".join(str(value).split())
    text = "".join(ch for ch in text if ch.isprintable())
    return text[:MAX_NOTE_CHARS].strip()


def _grade(value: Any) -> str | None:
    return value if isinstance(value, str) and value in CLASSES else None


def _scores(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    out: dict[str, float] = {}
    for name in CLASSES:
        p = value.get(name)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            return {}
        out[name] = round(float(p), 3)
    return out


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_LESIONS:
        return value
    return None


def region_of(report: Any) -> dict | None:
    """The analysed area's size: the report's region box when it has one, else the whole photo."""
    region = _get(report, "region")
    box = _get(region, "box") if region is not None else None
    found_by = _get(region, "found_by") if region is not None else None
    try:
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            width, height = x1 - x0, y1 - y0
        else:
            width, height = (int(v) for v in _get(report, "image_size"))
            found_by = "whole"
    except (TypeError, ValueError):
        return None
    if width <= 0 or height <= 0:
        return None
    return {"width": width, "height": height, "found_by": found_by if found_by in FOUND_BY else "whole"}


def _region(value: Any) -> dict | None:
    if not isinstance(value, dict):
        return None
    width, height = _count(value.get("width")), _count(value.get("height"))
    if not width or not height:
        return None
    found_by = value.get("found_by")
    return {"width": width, "height": height, "found_by": found_by if found_by in FOUND_BY else "whole"}


# --------------------------------------------------------------------------- thumbnails

def make_thumbnail(image: Any, side: int = THUMBNAIL_SIDE) -> str:
    """A small JPEG of an RGB array, a PIL image or an image file, as a data URL (no metadata)."""
    import numpy as np
    from PIL import Image

    if isinstance(image, np.ndarray):
        picture = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    elif isinstance(image, Image.Image):
        picture = image.convert("RGB")
    else:
        with Image.open(image) as opened:
            picture = opened.convert("RGB")
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnail(value: Any) -> str | None:
    """A data URL of a small image, checked: right prefix, valid base64, the image's magic bytes."""
    if not isinstance(value, str) or len(value) > MAX_THUMBNAIL_CHARS:
        return None
    match = _THUMBNAIL.match(value)
    if not match:
        return None
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not data.startswith(_MAGIC[match.group(1)]):
        return None
    return value


# --------------------------------------------------------------------------- building records

def build_record(report: Any, *, date: Any = None, note: Any = "", thumbnail: str | None = None) -> dict:
    """A record of one photo's analysis (a Report or its to_dict()). Raises HistoryError when the
    photo was not assessed (no severity): there is no grade to follow over time."""
    severity = _grade(_get(report, "severity"))
    if severity is None:
        raise HistoryError("This photo was not assessed (no grade), so there is nothing to save.")
    count = _get(report, "lesion_count")
    if count is None:
        count = len(_get(report, "lesions") or [])
    record = {
        "id": new_id(),
        "date": parse_date(date if date not in (None, "") else today()),
        "kind": "photo",
        "views": [],
        "severity": severity,
        "scores": _scores(_get(report, "severity_scores")),
        "lesion_count": _count(count) or 0,
        "view_counts": {},
        "count_grade": _grade(_get(report, "count_grade")),
        "region": region_of(report),
        "note": clean_note(note),
    }
    if thumbnail:
        record["thumbnail"] = _thumbnail(thumbnail)
    return validate_entry(record)


def build_face_record(summary: dict, *, date: Any = None, note: Any = "", thumbnail: str | None = None) -> dict:
    """A record of a whole-face summary (acne.views.summarize)."""
    severity = _grade(summary.get("severity"))
    if severity is None:
        raise HistoryError("None of the views was assessed, so there is no whole-face grade to save.")
    deciding = next((v["report"] for v in summary.get("views", []) if v.get("view") == summary.get("decided_by")),
                    {})
    counts = {name: n for name, n in (summary.get("lesion_counts") or {}).items()}
    record = {
        "id": new_id(),
        "date": parse_date(date if date not in (None, "") else today()),
        "kind": "face",
        "views": list(counts),
        "severity": severity,
        "scores": _scores(deciding.get("severity_scores")),
        "lesion_count": _count(summary.get("total_lesions")) or 0,
        "view_counts": counts,
        "count_grade": _grade(summary.get("count_grade")),
        "region": region_of(deciding) if deciding else None,
        "note": clean_note(note),
    }
    if thumbnail:
        record["thumbnail"] = _thumbnail(thumbnail)
    return validate_entry(record)


def validate_entry(raw: Any) -> dict:
    """One record from anywhere (our own, the browser, an imported file) -> a clean record.
    Raises HistoryError naming the first problem. Unknown fields are dropped."""
    if not isinstance(raw, dict):
        raise HistoryError("an entry is not an object")
    date = parse_date(raw.get("date"))
    severity = _grade(raw.get("severity"))
    if severity is None:
        raise HistoryError("an entry has no valid severity (Clear, Mild, Moderate or Severe)")
    count = _count(raw.get("lesion_count"))
    if count is None:
        raise HistoryError("an entry has no valid lesion count")
    kind = raw.get("kind") if raw.get("kind") in KINDS else "photo"
    views = [v for v in raw.get("views") or [] if v in VIEW_NAMES] if kind == "face" else []
    view_counts: dict[str, int] = {}
    if kind == "face" and isinstance(raw.get("view_counts"), dict):
        for name in VIEW_NAMES:
            n = _count(raw["view_counts"].get(name))
            if n is not None:
                view_counts[name] = n
    entry_id = raw.get("id")
    record = {
        "id": entry_id if isinstance(entry_id, str) and _ID.match(entry_id) else new_id(),
        "date": date,
        "kind": kind,
        "views": list(dict.fromkeys(views)),
        "severity": severity,
        "scores": _scores(raw.get("scores")),
        "lesion_count": count,
        "view_counts": view_counts,
        "count_grade": _grade(raw.get("count_grade")),
        "region": _region(raw.get("region")),
        "note": clean_note(raw.get("note")),
    }
    thumbnail = _thumbnail(raw.get("thumbnail"))
    if thumbnail:
        record["thumbnail"] = thumbnail
    return record


# --------------------------------------------------------------------------- the whole history

def normalise(state: Any) -> dict:
    """Whatever the browser sent back -> a clean history (bad entries and duplicates dropped)."""
    entries = state.get("entries") if isinstance(state, dict) else state if isinstance(state, list) else []
    out = empty()
    seen: set[str] = set()
    for raw in (entries or [])[:MAX_ENTRIES]:
        try:
            entry = validate_entry(raw)
        except HistoryError:
            continue
        if entry["id"] in seen:
            continue
        seen.add(entry["id"])
        out["entries"].append(entry)
    return out


def size_of(state: dict) -> int:
    return len(json.dumps(state, separators=(",", ":")))


def entries_by_date(state: Any) -> list[dict]:
    """Oldest first; entries of one day in the order they were saved."""
    return sorted(normalise(state)["entries"], key=lambda e: e["date"])


def find(state: Any, entry_id: str | None) -> dict | None:
    return next((e for e in normalise(state)["entries"] if e["id"] == entry_id), None)


def add_entry(state: Any, entry: dict) -> tuple[dict, str]:
    """The history with `entry` added, and a message. Raises HistoryError when it is full."""
    state = normalise(state)
    entry = validate_entry(entry)
    for old in state["entries"]:
        if _same_result(old, entry) and old["date"] == entry["date"]:
            return state, f"This result is already in your history (saved for {entry['date']})."
    if len(state["entries"]) >= MAX_ENTRIES:
        raise HistoryError(f"Your history is full ({MAX_ENTRIES} entries). Delete some old entries first "
                           "(you can download a copy before).")
    state["entries"].append(entry)
    message = ""
    if size_of(state) > MAX_STATE_CHARS and "thumbnail" in entry:
        del entry["thumbnail"]
        message = " There was no room left for the picture, so it was saved without it."
    if size_of(state) > MAX_STATE_CHARS:
        raise HistoryError("Your history is too large for this browser. Delete some entries with pictures "
                           "first (you can download a copy before).")
    n = len(state["entries"])
    return state, f"Saved for {entry['date']}. Your history has {n} entr{'y' if n == 1 else 'ies'}.{message}"


def _same_result(a: dict, b: dict) -> bool:
    keys = ("kind", "severity", "scores", "lesion_count", "count_grade", "view_counts", "region")
    return all(a.get(k) == b.get(k) for k in keys)


def update_entry(state: Any, entry_id: str | None, *, date: Any, note: Any) -> dict:
    state = normalise(state)
    for entry in state["entries"]:
        if entry["id"] == entry_id:
            entry["date"] = parse_date(date)
            entry["note"] = clean_note(note)
            return state
    raise HistoryError("Choose an entry first.")


def delete_entry(state: Any, entry_id: str | None) -> dict:
    state = normalise(state)
    kept = [e for e in state["entries"] if e["id"] != entry_id]
    if len(kept) == len(state["entries"]):
        raise HistoryError("Choose an entry first.")
    state["entries"] = kept
    return state


def parse_import(text: Any, current: Any) -> tuple[dict, str]:
    """An exported history file's text, merged into the current history. Returns (history, message);
    raises HistoryError with a plain message when the file is not a usable history."""
    if not isinstance(text, str) or not text.strip():
        raise HistoryError("The file is empty.")
    if len(text) > MAX_IMPORT_CHARS:
        raise HistoryError(f"The file is too large for a history file (more than {MAX_IMPORT_CHARS // 1_000_000} MB).")
    try:
        data = json.loads(text)
    except ValueError:
        raise HistoryError("This file is not a history file from Acne Detection AI (it is not JSON).") from None
    if isinstance(data, dict):
        if data.get("format") not in (None, FORMAT) or not isinstance(data.get("entries"), list):
            raise HistoryError("This file is not a history file from Acne Detection AI "
                               "(it has no list of entries).")
        raw_entries = data["entries"]
    elif isinstance(data, list):
        raw_entries = data
    else:
        raise HistoryError("This file is not a history file from Acne Detection AI.")

    state = normalise(current)
    ids = {e["id"] for e in state["entries"]}
    added = duplicates = 0
    problems: list[str] = []
    for number, raw in enumerate(raw_entries, start=1):
        try:
            entry = validate_entry(raw)
        except HistoryError as exc:
            problems.append(f"entry {number}: {exc}")
            continue
        if entry["id"] in ids or any(_same_result(e, entry) and e["date"] == entry["date"] for e in state["entries"]):
            duplicates += 1
            continue
        if len(state["entries"]) >= MAX_ENTRIES:
            problems.append(f"entry {number}: the history is full ({MAX_ENTRIES} entries)")
            continue
        state["entries"].append(entry)
        ids.add(entry["id"])
        added += 1
    if size_of(state) > MAX_STATE_CHARS:
        for entry in state["entries"]:  # the pictures are what takes room: drop them all
            entry.pop("thumbnail", None)
        problems.append("pictures were left out: they would not fit in this browser")
    if not added and not duplicates:
        raise HistoryError("No usable entries in this file" + (f" ({problems[0]})." if problems else "."))
    parts = [f"Imported {added} entr{'y' if added == 1 else 'ies'}."]
    if duplicates:
        parts.append(f"{duplicates} {'was' if duplicates == 1 else 'were'} already in your history.")
    if problems:
        shown = "; ".join(problems[:3]) + ("; …" if len(problems) > 3 else "")
        parts.append(f"Skipped: {shown}.")
    return state, " ".join(parts)


def export_text(state: Any) -> str:
    """The history as the JSON file the page downloads (the browser builds the same from its copy)."""
    return json.dumps(normalise(state), indent=2, ensure_ascii=False)


# --------------------------------------------------------------------------- words

def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def duration_words(first: str, last: str) -> str:
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
    if entry["kind"] == "face":
        return f"Whole face ({len(entry['views'])} view{'s' if len(entry['views']) != 1 else ''})"
    return "One photo"


def _area(entry: dict) -> int | None:
    region = entry.get("region")
    return region["width"] * region["height"] if region else None


def comparability_notes(before: dict, after: dict) -> list[str]:
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
    return [(entry_label(e), e["id"]) for e in entries]
