"""The whole history: cleaning what the browser sent back, adding, changing, deleting, importing, exporting."""
from __future__ import annotations

import json
from typing import Any

from .records import (FORMAT, MAX_ENTRIES, MAX_IMPORT_CHARS, MAX_STATE_CHARS, HistoryError, clean_note, empty,
                      parse_date, validate_entry)

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
    """The history's size in characters of compact JSON (what the browser stores)."""
    return len(json.dumps(state, separators=(",", ":")))


def entries_by_date(state: Any) -> list[dict]:
    """Oldest first; entries of one day in the order they were saved."""
    return sorted(normalise(state)["entries"], key=lambda e: e["date"])


def find(state: Any, entry_id: str | None) -> dict | None:
    """The entry with id `entry_id` in the (cleaned) history, or None."""
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
    """The history with entry `entry_id`'s date and note changed. Raises HistoryError when no such
    entry exists or the date is not a usable date."""
    state = normalise(state)
    for entry in state["entries"]:
        if entry["id"] == entry_id:
            entry["date"] = parse_date(date)
            entry["note"] = clean_note(note)
            return state
    raise HistoryError("Choose an entry first.")


def delete_entry(state: Any, entry_id: str | None) -> dict:
    """The history without entry `entry_id`. Raises HistoryError when no such entry exists."""
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
