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

Modules: records.py (one record: built from a report, or checked), store.py (the whole history: add,
change, delete, import, export), words.py (comparisons, the trend, the charts' rows).
"""
from __future__ import annotations

from .records import (EARLIEST_DATE, FORMAT, KINDS, MAX_ENTRIES, MAX_IMPORT_CHARS, MAX_LESIONS, MAX_NOTE_CHARS,
                      MAX_STATE_CHARS, MAX_THUMBNAIL_CHARS, THUMBNAIL_SIDE, VERSION, HistoryError, build_face_record,
                      build_record, clean_note, empty, make_thumbnail, new_id, parse_date, region_of, today,
                      validate_entry)
from .store import (add_entry, delete_entry, entries_by_date, export_text, find, normalise, parse_import, size_of,
                    update_entry)
from .words import (chart_rows, compare, comparability_notes, count_change_words, duration_words, entry_label,
                    grade_change_words, labels, series_name, trend, trend_sentence)

__all__ = [
    "EARLIEST_DATE", "FORMAT", "KINDS", "MAX_ENTRIES", "MAX_IMPORT_CHARS", "MAX_LESIONS", "MAX_NOTE_CHARS",
    "MAX_STATE_CHARS", "MAX_THUMBNAIL_CHARS", "THUMBNAIL_SIDE", "VERSION", "HistoryError", "build_face_record",
    "build_record", "clean_note", "empty", "make_thumbnail", "new_id", "parse_date", "region_of", "today",
    "validate_entry", "add_entry", "delete_entry", "entries_by_date", "export_text", "find", "normalise",
    "parse_import", "size_of", "update_entry", "chart_rows", "compare", "comparability_notes",
    "count_change_words", "duration_words", "entry_label", "grade_change_words", "labels", "series_name", "trend",
    "trend_sentence",
]
