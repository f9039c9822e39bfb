"""My progress and Whole face in-process (acne.web.progress) with the tiny models: the browser-kept
history survives a server restart, saving, the whole-face handlers and their uploads, the chat's
trend. (test_history_browser.py and test_api_views.py drive the same code end to end.)"""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from acne import history
from acne.web import build_app
from acne.web.handlers import WebApp
from acne.web.progress import STORAGE_KEY, STORAGE_SECRET, ProgressUI
from acne.web.text import compare_html, history_list_html
from app_process import Request, upload_copy


class RecordingAssistant:
    name = "recording test assistant"

    def __init__(self) -> None:
        self.profiles = []

    def stream(self, message, history, report=None, profile=None):
        self.profiles.append(profile)
        yield "ok"


@pytest.fixture
def web_app(tiny_analyzer, tiny_settings, temp_folder):
    return WebApp(tiny_analyzer, RecordingAssistant(), tiny_settings)


@pytest.fixture
def progress(web_app):
    with gr.Blocks():
        yield ProgressUI(web_app)


def unique_upload(folder: Path, source: Path | bytes, name: str) -> Path:
    """An upload of `source`; a photo gets its name appended (a file no other test uploaded)."""
    return upload_copy(folder, source, name, tweak=b"" if isinstance(source, bytes) else b"\x00" + name.encode())


def no_progress(*args, **kwargs) -> None:
    return None


def test_the_history_is_readable_after_a_server_restart(tiny_analyzer, tiny_settings, temp_folder):
    # gr.BrowserState's default key and secret are random per start: the stored history would be lost.
    found = []
    for _ in range(2):
        web = build_app(tiny_analyzer, RecordingAssistant(), tiny_settings)
        demo = web.demo
        try:
            ours = [b for b in demo.blocks.values() if isinstance(b, gr.BrowserState) and b.storage_key == STORAGE_KEY]
            assert len(ours) == 1   # (the ChatInterface has a BrowserState of its own)
            found.append((ours[0].storage_key, ours[0].secret))
            info = demo.get_api_info()["named_endpoints"]
            assert len(info["/chat"]["parameters"]) == 5       # the chat's API is unchanged
            assert [p["parameter_name"] for p in info["/analyze_views"]["parameters"]] == ["left", "front", "right"]
        finally:
            web.close()
    assert found[0] == found[1] == (STORAGE_KEY, STORAGE_SECRET)


def test_save_to_my_history(progress, web_app, temp_folder, example_photo):
    upload = unique_upload(temp_folder, example_photo, "a.jpg")
    outputs = web_app.analyze_ui(str(upload), False, Request("s1"), progress=no_progress)
    report, shown = outputs[7], outputs[6]

    state, message = progress.save_photo(report, shown, history.empty(), "2025-01-05", "week 0", False)
    assert message.startswith("✓ Saved for 2025-01-05") and "My progress" in message
    (saved,) = state["entries"]
    assert saved["lesion_count"] == report.lesion_count and saved["severity"] == report.severity
    assert saved["note"] == "week 0" and "thumbnail" not in saved

    state, _ = progress.save_photo(report, shown, state, "2025-02-16", "", True)
    assert state["entries"][1]["thumbnail"].startswith("data:image/jpeg;base64,")

    skipped, message = progress.save_photo(None, None, state, "2025-02-16", "", False)
    assert isinstance(skipped, type(gr.skip())) and "Analyse a photo first" in message
    _, message = progress.save_photo(report, shown, state, "16/02/2025", "", False)
    assert message.startswith("⚠️") and "year-month-day" in message


def test_render_draws_the_trend_list_and_comparison(progress):
    entries = [history.validate_entry({"date": d, "severity": s, "lesion_count": n, "note": note})
               for d, s, n, note in (("2025-01-01", "Moderate", 34, "<b>start</b>"), ("2025-02-12", "Mild", 18, ""))]
    state = {"entries": entries}
    (trend, count_plot, grade_plot, listing, before, after, compare, entry, _, _, sentence,
     chat_note) = progress.render(state)
    assert "Lesions down from 34 to 18 over 6 weeks" in trend
    assert count_plot["visible"] and len(count_plot["value"]) == 2
    assert "<b>2</b> saved results" in listing and "&lt;b&gt;start&lt;/b&gt;" in listing and "<b>start</b>" not in listing
    assert (before["value"], after["value"]) == (entries[0]["id"], entries[1]["id"])
    assert "Lesions down from 34 to 18 over 6 weeks (-16, -47%)." in compare
    assert sentence.startswith("lesions down from 34 to 18") and sentence in chat_note
    empty = progress.render(history.empty())
    assert empty[0] == "" and not empty[1]["visible"] and "history is empty" in empty[3] and empty[10] is None
    assert "Save two results" in compare_html(None, None) and "history is empty" in history_list_html([])


def test_the_chat_handler_passes_the_trend(web_app):
    list(web_app.chat("Is it getting better?", [], None, "", "", "", "", "lesions down from 34 to 18 over 6 weeks"))
    assert web_app.assistant.profiles[-1].progress == "lesions down from 34 to 18 over 6 weeks"
    list(web_app.chat("Hello", [], None, "", "", "", ""))
    assert web_app.assistant.profiles[-1] is None


def test_whole_face_api_handler_deletes_every_upload(progress, temp_folder, example_photos):
    left = unique_upload(temp_folder, example_photos[0], "left.jpg")
    front = unique_upload(temp_folder, b"not a photo\n" * 20, "front.jpg")
    right = unique_upload(temp_folder, example_photos[1], "right.jpg")
    summary = progress.analyze_views_api(str(left), str(front), str(right))
    assert [v["view"] for v in summary["views"]] == ["left", "right"]
    assert "front photo could not be analysed" in summary["message"]
    assert not any(p.exists() for p in (left, front, right))
    with pytest.raises(gr.Error, match="No photo was sent"):
        progress.analyze_views_api(None, None, None)
    broken = unique_upload(temp_folder, b"not a photo\n" * 20, "only.jpg")
    with pytest.raises(gr.Error, match="could not be analysed"):
        progress.analyze_views_api(None, str(broken), None)


def test_whole_face_in_the_page_then_saved(progress, temp_folder, example_photos):
    left = unique_upload(temp_folder, example_photos[0], "l.jpg")
    right = unique_upload(temp_folder, example_photos[2], "r.jpg")
    markdown, gallery, summary, result, *cleared, status = progress.analyse_views_ui(
        str(left), None, str(right), Request("s1"), progress=no_progress)
    assert markdown.startswith("### Whole face: ") and "| Left side |" in markdown and "| Right side |" in markdown
    assert len(gallery["value"]) == 2 and all(Path(path).is_file() for path, _ in gallery["value"])
    assert cleared == [None, None, None] and not left.exists() and not right.exists()
    state, message = progress.save_views(result, history.empty(), "2025-03-01", "", True)
    (saved,) = state["entries"]
    assert saved["kind"] == "face" and saved["views"] == ["left", "right"]
    assert saved["lesion_count"] == summary["total_lesions"] and saved["severity"] == summary["severity"]
    assert saved["thumbnail"].startswith("data:image/jpeg;base64,") and message.startswith("✓ Saved")
    with pytest.raises(gr.Error, match="Add at least one photo"):
        progress.analyse_views_ui(None, None, None, Request("s1"), progress=no_progress)


def test_change_delete_import_and_delete_all_handlers(progress):
    entries = [history.validate_entry({"date": d, "severity": "Mild", "lesion_count": n})
               for d, n in (("2025-01-01", 12), ("2025-02-01", 9))]
    state = {"entries": entries}
    assert progress.pick_entry(state, entries[0]["id"]) == ("2025-01-01", "")
    state, message = progress.update_entry(state, entries[0]["id"], "2024-12-30", "start")
    assert message == "✓ Entry changed." and history.find(state, entries[0]["id"])["date"] == "2024-12-30"
    _, message = progress.update_entry(state, None, "2024-12-30", "")
    assert message == "⚠️ Choose an entry first."
    exported = history.export_text(state)
    state, message = progress.delete_entry(state, entries[1]["id"])
    assert len(state["entries"]) == 1 and message == "✓ Entry deleted."
    empty, confirm, message = progress.delete_all(state)
    assert empty == history.empty() and confirm["visible"] is False and "Deleted 1 saved result:" in message
    restored, message = progress.import_history(exported, empty)
    assert len(restored["entries"]) == 2 and message == "✓ Imported 2 entries."
    _, message = progress.import_history("<html>", empty)
    assert message.startswith("⚠️ This file is not a history file")
    _, message = progress.import_history(None, empty)   # the file chooser was cancelled
    assert message == "No file was chosen."
