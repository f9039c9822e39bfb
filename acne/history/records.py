"""One saved result of My progress: building it from a report, and checking one that came back from the
browser or a file (only the fields listed in acne/history/__init__.py, with checked types and ranges)."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import io
import re
import uuid
from typing import Any

from ..severity import CLASSES
from ..views import VIEW_NAMES

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
FOUND_BY = ("face", "skin", "whole")

_ID = re.compile(r"^[0-9a-f]{8,32}$")
_DATE = re.compile(r"^\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T ].*)?\s*$")
_THUMBNAIL = re.compile(r"^data:image/(jpeg|png|webp);base64,([A-Za-z0-9+/]+={0,2})$")
_MAGIC = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n", "webp": b"RIFF"}


class HistoryError(ValueError):
    """A plain-English reason why something cannot be saved or imported."""


# --------------------------------------------------------------------------- small helpers

def empty() -> dict:
    """A history with no entries."""
    return {"format": FORMAT, "version": VERSION, "entries": []}


def new_id() -> str:
    """A new random entry id (12 hex digits)."""
    return uuid.uuid4().hex[:12]


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def today() -> dt.date:
    """Today's date on this server (the visitor's may be a day ahead: parse_date allows tomorrow)."""
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
