"""acne.history: records kept in the visitor's browser, their validation on the way back (reload,
import), and the words for a trend and for a before/after comparison. Plain data, no models."""
from __future__ import annotations

import base64
import datetime as dt
import io
import json

import numpy as np
import pytest
from PIL import Image

from acne import history
from acne.history import HistoryError
from acne.report import GraderResult, Lesion, Report


def make_report(severity="Moderate", lesions=34, count_grade="Moderate", image_size=(640, 480), region=None) -> Report:
    scores = {"Clear": 0.05, "Mild": 0.15, "Moderate": 0.6, "Severe": 0.2}
    report = Report(image_size=image_size, severity=severity, severity_scores=scores,
                    grader=GraderResult(model="tiny", level=2, level_scores={"level 2": 0.6}), segmenter="tiny",
                    lesions=[Lesion((0, 0, 4, 4), (2.0, 2.0), 16, 0.9)] * lesions, count_grade=count_grade)
    if region is not None:
        report.region = region   # the lead's Report.region (not on this branch's Report yet)
    return report


def entry(date, count, severity="Moderate", **extra) -> dict:
    return history.validate_entry({"date": date, "lesion_count": count, "severity": severity,
                                   "count_grade": severity, **extra})


def tiny_thumbnail() -> str:
    return history.make_thumbnail(np.full((300, 200, 3), 120, np.uint8))


# --------------------------------------------------------------------------- records

def test_a_record_holds_only_the_small_facts():
    record = history.build_record(make_report(), date="2025-03-01", note="  week 4\nof adapalene  ")
    assert set(record) == {"id", "date", "kind", "views", "severity", "scores", "lesion_count", "view_counts",
                           "count_grade", "region", "note"}
    assert record["date"] == "2025-03-01" and record["kind"] == "photo" and record["severity"] == "Moderate"
    assert record["lesion_count"] == 34 and record["count_grade"] == "Moderate"
    assert record["scores"] == {"Clear": 0.05, "Mild": 0.15, "Moderate": 0.6, "Severe": 0.2}
    assert record["region"] == {"width": 640, "height": 480, "found_by": "whole"}
    assert record["note"] == "week 4 of adapalene"
    assert "thumbnail" not in record   # only when the visitor asks for it
    json.dumps(record)


def test_the_region_comes_from_the_report_when_it_has_one():
    region = {"box": [100, 50, 400, 450], "found_by": "face"}
    record = history.build_record(make_report(region=region), date="2025-03-01")
    assert record["region"] == {"width": 300, "height": 400, "found_by": "face"}
    as_dict = {**make_report().to_dict(), "region": region}    # the API's JSON works the same
    assert history.build_record(as_dict, date="2025-03-01")["region"]["found_by"] == "face"


def test_a_photo_that_was_not_assessed_is_not_saved_as_a_grade():
    report = make_report()
    report.severity = None   # the lead's "not assessed" state (no skin in the photo)
    with pytest.raises(HistoryError, match="not assessed"):
        history.build_record(report, date="2025-03-01")


def test_the_thumbnail_is_a_small_jpeg_data_url():
    thumbnail = tiny_thumbnail()
    assert thumbnail.startswith("data:image/jpeg;base64,") and len(thumbnail) < history.MAX_THUMBNAIL_CHARS
    image = Image.open(io.BytesIO(base64.b64decode(thumbnail.split(",", 1)[1])))
    assert max(image.size) == history.THUMBNAIL_SIDE and not image.getexif()
    record = history.build_record(make_report(), date="2025-03-01", thumbnail=thumbnail)
    assert record["thumbnail"] == thumbnail


@pytest.mark.parametrize("value, expected", [
    ("2025-03-01", "2025-03-01"), ("2025/3/1", "2025-03-01"), (" 2025-03-01 ", "2025-03-01"),
    ("2025-03-01T10:00:00", "2025-03-01"), (dt.date(2025, 3, 1), "2025-03-01")])
def test_dates_are_read_in_a_few_spellings(value, expected):
    assert history.parse_date(value) == expected


@pytest.mark.parametrize("value, message", [
    ("01.03.2025", "year-month-day"), ("yesterday", "year-month-day"), ("2025-02-30", "not a real date"),
    ("1999-12-31", "before 2000")])
def test_bad_dates_get_a_plain_message(value, message):
    with pytest.raises(HistoryError, match=message):
        history.parse_date(value)


def test_a_future_date_is_refused_but_the_visitors_tomorrow_is_fine():
    history.parse_date(history.today() + dt.timedelta(days=1))   # time zones: their day may be ahead
    with pytest.raises(HistoryError, match="future"):
        history.parse_date(history.today() + dt.timedelta(days=3))


# --------------------------------------------------------------------------- validation

def test_validation_keeps_known_fields_and_drops_the_rest():
    raw = {"id": "abcdef012345", "date": "2025-01-05", "severity": "Mild", "lesion_count": 12, "count_grade": "Mild",
           "scores": {"Clear": 0.1, "Mild": 0.7, "Moderate": 0.1, "Severe": 0.1}, "note": "ok",
           "script": "<script>alert(1)</script>", "__proto__": {"x": 1}}
    clean = history.validate_entry(raw)
    assert clean["id"] == "abcdef012345" and "script" not in clean and "__proto__" not in clean


@pytest.mark.parametrize("change, reason", [
    ({"severity": "Terrible"}, "severity"), ({"severity": None}, "severity"), ({"lesion_count": -1}, "lesion count"),
    ({"lesion_count": "12"}, "lesion count"), ({"lesion_count": True}, "lesion count"), ({"date": "soon"}, "date"),
    ({"lesion_count": 10**9}, "lesion count")])
def test_invalid_entries_are_refused(change, reason):
    raw = {"date": "2025-01-05", "severity": "Mild", "lesion_count": 12, **change}
    with pytest.raises(HistoryError, match=reason.split()[0]):
        history.validate_entry(raw)


def test_hostile_values_are_neutralised():
    raw = {"id": "../../etc", "date": "2025-01-05", "severity": "Mild", "lesion_count": 12,
           "note": "x" * 1000 + "\u0000\u202e", "scores": {"Clear": 5, "Mild": 0.1},
           "thumbnail": "javascript:alert(1)", "region": {"width": -3, "height": 10},
           "kind": "face", "views": ["left", "<b>", "left"], "view_counts": {"left": 3, "nose": 4}}
    clean = history.validate_entry(raw)
    assert history.records._ID.match(clean["id"]) and clean["id"] != "../../etc"
    assert len(clean["note"]) == history.MAX_NOTE_CHARS and "\u0000" not in clean["note"]
    assert clean["scores"] == {} and clean["region"] is None and "thumbnail" not in clean
    assert clean["views"] == ["left"] and clean["view_counts"] == {"left": 3}


@pytest.mark.parametrize("thumbnail", [
    "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",          # SVG can carry script: never
    "data:image/jpeg;base64,not base64!!",
    "data:image/jpeg;base64," + base64.b64encode(b"<html>not a jpeg</html>").decode(),
    "data:image/jpeg;base64," + "A" * history.MAX_THUMBNAIL_CHARS])
def test_only_real_small_images_pass_as_thumbnails(thumbnail):
    raw = {"date": "2025-01-05", "severity": "Mild", "lesion_count": 1, "thumbnail": thumbnail}
    assert "thumbnail" not in history.validate_entry(raw)


def test_normalise_drops_bad_entries_and_duplicates_and_accepts_garbage():
    good = entry("2025-01-05", 10)
    state = {"entries": [good, good, {"date": "bad"}, "text", None]}
    assert history.normalise(state)["entries"] == [good]
    for garbage in (None, "test", 3, [], {"entries": "x"}):   # e.g. BrowserState's example value "test"
        assert history.normalise(garbage) == history.empty()


# --------------------------------------------------------------------------- add, change, delete

def test_add_change_and_delete():
    state, message = history.add_entry(history.empty(), history.build_record(make_report(), date="2025-01-05"))
    assert "Saved for 2025-01-05" in message and "1 entry" in message
    state, message = history.add_entry(state, history.build_record(make_report(lesions=18), date="2025-02-16"))
    assert "2 entries" in message
    first, second = history.entries_by_date(state)
    state = history.update_entry(state, first["id"], date="2025-01-02", note="before adapalene")
    assert history.find(state, first["id"])["note"] == "before adapalene"
    assert history.entries_by_date(state)[0]["date"] == "2025-01-02"
    state = history.delete_entry(state, first["id"])
    assert [e["id"] for e in state["entries"]] == [second["id"]]
    with pytest.raises(HistoryError, match="Choose an entry"):
        history.delete_entry(state, "nothing")


def test_saving_the_same_result_twice_for_the_same_day_is_noticed():
    record = history.build_record(make_report(), date="2025-01-05")
    state, _ = history.add_entry(history.empty(), record)
    again = history.build_record(make_report(), date="2025-01-05")
    state, message = history.add_entry(state, again)
    assert "already in your history" in message and len(state["entries"]) == 1


def test_a_full_history_says_so(monkeypatch):
    monkeypatch.setattr(history.store, "MAX_ENTRIES", 2)   # the limit add_entry reads
    state = {"entries": [entry("2025-01-01", 1), entry("2025-01-02", 2)]}
    with pytest.raises(HistoryError, match="full"):
        history.add_entry(state, entry("2025-01-03", 3))


# --------------------------------------------------------------------------- export and import

def test_export_then_import_restores_the_history():
    state = {"entries": [entry("2025-01-05", 34, note="start"), entry("2025-02-16", 18, "Mild", thumbnail=tiny_thumbnail())]}
    text = history.export_text(state)
    restored, message = history.parse_import(text, history.empty())
    assert restored == history.normalise(state) and message == "Imported 2 entries."
    again, message = history.parse_import(text, restored)
    assert again == restored and "2 were already in your history" in message


def test_import_merges_and_reports_skipped_entries():
    current = {"entries": [entry("2025-01-05", 34)]}
    text = json.dumps({"format": history.FORMAT, "version": 1, "entries": [
        entry("2025-02-16", 18), {"date": "2025-03-01", "severity": "Awful", "lesion_count": 3}]})
    state, message = history.parse_import(text, current)
    assert len(state["entries"]) == 2
    assert "Imported 1 entry." in message and "Skipped: entry 2" in message and "severity" in message


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("hello", "not JSON"), ('{"name": "something else"}', "no list of entries"),
    ('{"format": "other-app", "entries": []}', "no list of entries"), ("42", "not a history file"),
    ('{"entries": [{"date": "x"}]}', "No usable entries")])
def test_import_refuses_files_that_are_not_histories(text, message):
    with pytest.raises(HistoryError, match=message):
        history.parse_import(text, history.empty())


def test_import_refuses_oversized_files():
    with pytest.raises(HistoryError, match="too large"):
        history.parse_import("[" + " " * history.MAX_IMPORT_CHARS + "]", history.empty())


# --------------------------------------------------------------------------- words

@pytest.mark.parametrize("first, last, words", [
    ("2025-01-01", "2025-01-01", "on the same day"), ("2025-01-01", "2025-01-02", "over 1 day"),
    ("2025-01-01", "2025-01-11", "over 10 days"), ("2025-01-01", "2025-02-12", "over 6 weeks"),
    ("2025-01-01", "2025-03-26", "over 12 weeks"), ("2025-01-01", "2025-07-01", "over 6 months")])
def test_durations_in_words(first, last, words):
    assert history.duration_words(first, last) == words


def test_the_trend_in_words():
    state = {"entries": [entry("2025-02-12", 18, "Mild"), entry("2025-01-01", 34), entry("2025-01-20", 25)]}
    sentence = history.trend_sentence(state)
    assert sentence.startswith("lesions down from 34 to 18 over 6 weeks")
    assert "Moderate → Mild, one grade better" in sentence and "3 saved results from 2025-01-01 to 2025-02-12" in sentence
    worse = history.trend_sentence({"entries": [entry("2025-01-01", 5, "Clear"), entry("2025-01-15", 40)]})
    assert worse.startswith("lesions up from 5 to 40 over 2 weeks") and "2 grades worse" in worse
    same = history.trend_sentence({"entries": [entry("2025-01-01", 30), entry("2025-01-15", 29)]})
    assert same.startswith("lesions about the same (30, then 29)") and "unchanged (Moderate)" in same


def test_no_trend_without_two_dates():
    assert history.trend_sentence(history.empty()) is None
    assert history.trend_sentence({"entries": [entry("2025-01-01", 30)]}) is None
    assert history.trend_sentence({"entries": [entry("2025-01-01", 30), entry("2025-01-01", 10)]}) is None


def test_the_trend_compares_like_with_like():
    face = {"kind": "face", "views": ["left", "front", "right"], "view_counts": {"left": 10, "front": 5, "right": 9}}
    state = {"entries": [entry("2025-01-01", 30), entry("2025-01-10", 60, **face), entry("2025-02-01", 24),
                         entry("2025-03-01", 40, **face)]}
    sentence = history.trend_sentence(state)   # the latest is a whole-face result: whole-face results only
    assert sentence.startswith("lesions down from 60 to 40 over 7 weeks") and "whole face from 3 views" in sentence


def test_before_after_in_words_and_its_caveats():
    before = entry("2025-01-05", 34, region={"width": 600, "height": 600})
    after = entry("2025-02-16", 18, "Mild", region={"width": 200, "height": 250})
    result = history.compare(after, before)   # either order: described in date order
    assert result["before"]["date"] == "2025-01-05"
    assert result["lines"][0] == "Lesions down from 34 to 18 over 6 weeks (-16, -47%)."
    assert result["lines"][1] == "Severity: Moderate → Mild, one grade better."
    assert any("differ a lot in size" in note for note in result["notes"])


def test_chart_rows():
    rows = history.chart_rows({"entries": [entry("2025-02-16", 18, "Mild"), entry("2025-01-05", 34)]})
    assert [(r["Date"], r["Lesions"], r["Severity"], r["Severity level"]) for r in rows] == [
        ("2025-01-05", 34, "Moderate", 2), ("2025-02-16", 18, "Mild", 1)]


# --------------------------------------------------------------------------- the chat knows the trend

def test_the_chat_prompt_carries_the_trend():
    from acne.chat import Profile
    from acne.chat.prompt import RULES, build_system_prompt

    sentence = history.trend_sentence({"entries": [entry("2025-01-01", 34), entry("2025-02-12", 18, "Mild")]})
    prompt = build_system_prompt(make_report(), Profile(progress=sentence))
    assert prompt.startswith(RULES)
    assert f"- Trend: {sentence}" in prompt and "lesions down from 34 to 18 over 6 weeks" in prompt
    assert "saved in their own browser" in prompt
    assert "Trend:" not in build_system_prompt(make_report(), Profile(age_range="18-24"))
    # One bounded line, whatever reaches it.
    long = build_system_prompt(None, Profile(progress="a\nb " + "x" * 2000))
    line = next(l for l in long.splitlines() if l.startswith("- Trend: "))
    assert line.startswith("- Trend: a b ") and len(line) <= len("- Trend: ") + 400


def test_the_offline_assistant_answers_with_the_trend():
    from acne.chat import Profile
    from acne.chat.offline import OfflineAssistant

    answer = OfflineAssistant().answer("Is my acne getting better?", [], None,
                                       Profile(progress="lesions down from 34 to 18 over 6 weeks"))
    assert "**Your saved progress:** lesions down from 34 to 18 over 6 weeks." in answer
    assert "8 to 12 weeks" in answer or "8–12 weeks" in answer
    assert "saved progress" not in OfflineAssistant().answer("Is my acne getting better?", [], None, None)
