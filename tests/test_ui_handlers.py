"""The web app's handlers in-process, with the tiny models: time limit, file housekeeping, chat
wrapper, About figures, launch settings. (The browser and API tests drive the same code end to end.)"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from acne.models.cards import figures_markdown as model_figures
from acne.config import PROJECT_DIR
from acne.upload_guard import UploadGuardMiddleware
from acne.web import build_app, launch_kwargs
from acne.web.handlers import EXAMPLES_DIR, WebApp
from acne.web.photos import SessionFiles
from acne.web.text import about_markdown, summary_markdown
from app_process import Request, upload_copy


class SlowAssistant:
    name = "slow test assistant"

    def __init__(self, pieces: int = 50, delay: float = 0.05) -> None:
        self.pieces, self.delay = pieces, delay

    def stream(self, message, history, report=None, profile=None):
        text = ""
        for i in range(self.pieces):
            time.sleep(self.delay)
            text += f"word{i} "
            yield text


class BrokenAssistant:
    name = "broken test assistant"

    def stream(self, message, history, report=None, profile=None):
        yield "Half an answer"
        raise RuntimeError("socket exploded at /srv/secret/path")


@pytest.fixture
def web_app(tiny_analyzer, tiny_settings, temp_folder):
    return WebApp(tiny_analyzer, SlowAssistant(), tiny_settings)


def test_api_handler_returns_report_and_deletes_the_upload(web_app, temp_folder, example_photo):
    upload = upload_copy(temp_folder, example_photo, tweak=b"\x00unique")
    report, overlay = web_app.analyze_api(str(upload), Request("s1"))
    assert report["severity"] in ("Clear", "Mild", "Moderate", "Severe")
    assert not upload.exists() and not upload.parent.exists()
    assert Path(overlay).is_file() and Path(overlay).is_relative_to(temp_folder)


def test_example_photos_are_never_deleted(web_app, temp_folder, example_photo):
    cached_example = upload_copy(temp_folder, example_photo)  # byte-identical to an example
    web_app.analyze_api(str(cached_example), Request("s1"))
    assert cached_example.exists()


def test_ui_handler_keeps_the_session_files_until_the_next_photo_or_unload(web_app, temp_folder, example_photos):
    first = upload_copy(temp_folder, example_photos[0], "a.jpg", tweak=b"\x00a")
    second = upload_copy(temp_folder, example_photos[1], "b.jpg", tweak=b"\x00b")
    outputs = web_app.analyze_ui(str(first), False, Request("s1"), progress=lambda *a, **k: None)
    views = outputs[6]
    assert first.exists() and all(Path(p).exists() for p in views.values())
    other = web_app.analyze_ui(str(second), False, Request("s2"), progress=lambda *a, **k: None)[6]
    web_app.analyze_ui(str(upload_copy(temp_folder, example_photos[1], "c.jpg", tweak=b"\x00c")), False,
                       Request("s1"), progress=lambda *a, **k: None)
    assert not first.exists() and not any(Path(p).exists() for p in views.values())
    assert second.exists() and all(Path(p).exists() for p in other.values()), "another session's files stay"
    web_app.on_unload(Request("s2"))
    assert not second.exists() and not any(Path(p).exists() for p in other.values())


def test_a_result_finishing_after_the_page_closed_is_deleted_at_once(web_app, temp_folder, example_photo):
    web_app.on_unload(Request("gone"))  # the page closed while its analysis was still running
    upload = upload_copy(temp_folder, example_photo, tweak=b"\x00late")
    views = web_app.analyze_ui(str(upload), False, Request("gone"), progress=lambda *a, **k: None)[6]
    assert not upload.exists() and not any(Path(p).exists() for p in views.values())


def test_the_heat_map_is_made_with_the_analysis_and_goes_with_the_session(web_app, temp_folder, example_photo,
                                                                         monkeypatch):
    upload = upload_copy(temp_folder, example_photo, tweak=b"\x00heat")
    views = web_app.analyze_ui(str(upload), False, Request("heat"), progress=lambda *a, **k: None)[6]
    assert Path(views["heatmap"]).parent == Path(views["overlay"]).parent
    # Showing it runs no model and reads no photo again: it was made from the analysed array.
    monkeypatch.setattr(web_app.analyzer, "explain", lambda *a: pytest.fail("the grader explained again"))
    monkeypatch.setattr(web_app.analyzer, "run", lambda *a: pytest.fail("the photo was analysed again"))
    assert web_app.explain_ui(views) == views["heatmap"]
    with Image.open(views["heatmap"]) as heat, Image.open(views["photo"]) as photo:
        assert heat.size == photo.size and not heat.getexif()   # display size, no metadata
    web_app.on_unload(Request("heat"))
    assert not Path(views["heatmap"]).exists()
    with pytest.raises(gr.Error, match="expired"):
        web_app.explain_ui(views)


def test_a_refused_upload_is_deleted_at_once_and_explained(web_app, temp_folder):
    bad = temp_folder / "upload-x" / "notes.jpg"
    bad.parent.mkdir()
    bad.write_text("not a photo")
    with pytest.raises(gr.Error, match="not an image"):
        web_app.analyze_ui(str(bad), False, Request("s1"), progress=lambda *a, **k: None)
    assert not bad.exists()
    with pytest.raises(gr.Error, match="no longer on the server"):
        web_app.analyze_api(str(bad), Request("s1"))


def test_analysis_time_limit_gives_a_clear_message(tiny_analyzer, tiny_settings, temp_folder, example_photo):
    app = WebApp(tiny_analyzer, SlowAssistant(), dataclasses.replace(tiny_settings, time_limit=0.001))
    upload = upload_copy(temp_folder, example_photo, tweak=b"\x00slow")
    with pytest.raises(gr.Error, match="took longer than"):
        app.analyze_api(str(upload), Request("s1"))
    assert not upload.exists()


def test_chat_answers_are_cut_at_the_time_limit(tiny_analyzer, tiny_settings, temp_folder):
    # The whole answer would take 600 x 0.05 = 30 s; the limit is 0.5 s. Cut means: not all pieces came,
    # and it ended long before 30 s (10 s: generous for 2 busy cores).
    app = WebApp(tiny_analyzer, SlowAssistant(pieces=600, delay=0.05), dataclasses.replace(tiny_settings, time_limit=0.5))
    start = time.monotonic()
    texts = list(app.chat("Hello?", [], None, "", "", "", ""))
    assert time.monotonic() - start < 10.0
    assert "cut off after" in texts[-1] and texts[-1].startswith("word0 ") and "word599" not in texts[-1]


def test_a_failing_chat_backend_ends_in_a_readable_message(tiny_analyzer, tiny_settings, temp_folder):
    app = WebApp(tiny_analyzer, BrokenAssistant(), tiny_settings)
    texts = list(app.chat("Hello?", [], None, "", "", "", ""))
    assert texts[0] == "Half an answer"
    assert "could not answer" in texts[-1] and "/srv/secret" not in texts[-1] and "Traceback" not in texts[-1]


def test_sweep_removes_results_past_their_time_to_live(temp_folder):
    # The folder's age is set, not waited for: no timing on a busy machine.
    files = SessionFiles(ttl=600)
    folder = files.new_dir("s1")
    (folder / "overlay.png").write_bytes(b"x")
    files.sweep()
    assert folder.exists()
    old = time.time() - 601
    os.utime(folder, (old, old))
    files.sweep()
    assert not folder.exists() and not files.base.exists()


def test_about_reads_the_figures_shipped_with_the_weights(tmp_path, tiny_analyzer, tiny_settings):
    folder = tmp_path / "segmenter"
    folder.mkdir()
    (folder / "inference.json").write_text(json.dumps({
        "threshold": 0.5, "valid_subset_metrics": {"lesion_f1": 0.4123, "dice": 0.55}, "trained_steps": 1200}))
    (folder / "README.md").write_text("---\nlicense: other\n---\n# Card\nMeasured on ACNE04 valid.")
    figures = model_figures(str(folder))
    assert "lesion_f1 | 0.412" in figures and "dice | 0.550" in figures and "trained_steps | 1200" in figures
    assert "Measured on ACNE04 valid." in figures and "license: other" not in figures
    # The shipped weights: the About tab shows the figures measured for them (read from their files).
    shipped = PROJECT_DIR / "weights" / "segmenter"
    measured = json.loads((shipped / "inference.json").read_text())["metrics"]
    about_shipped = model_figures(str(shipped))
    assert f"lesion_f1 | {measured['lesion_f1']:.3f}" in about_shipped
    assert f"count_mae | {measured['count_mae']:.3f}" in about_shipped
    confusion = next(line for line in (shipped / "README.md").read_text().splitlines() if line.startswith("| Clear |"))
    assert confusion in about_shipped
    # A Hub model: no figure is made up for it (the README: none published, none measured here).
    hub = model_figures("imfarzanansari/skintelligent-acne")
    assert "not published" in hub and "accuracy" in hub and not re.search(r"accuracy (of )?\d", hub)
    assert "see its model card" in model_figures("someone/unknown-model")
    models = tiny_analyzer.describe()
    assert models["segmenter"]["figures_markdown"] == model_figures(tiny_analyzer.segmenter.name)
    about = about_markdown(models, SlowAssistant().name, tiny_settings.cache_ttl)
    assert "slow test assistant" in about and "ACNE04" in about and "not a diagnosis" in about
    assert models["segmenter"]["short_name"] in about and models["grader"]["figures_markdown"] in about
    assert f"`{models['backend']}`" in about


def test_summary_notes_when_the_two_grades_disagree(tiny_analyzer, example_photo):
    report = tiny_analyzer.analyze(example_photo)
    report.count_grade = "Severe" if report.severity != "Severe" else "Clear"
    assert "disagree" in summary_markdown(report)
    report.count_grade = report.severity
    assert "disagree" not in summary_markdown(report)


def test_demo_has_the_named_endpoints_and_limits(tiny_analyzer, tiny_settings, temp_folder):
    settings = dataclasses.replace(tiny_settings, max_upload_mb=7, concurrency=2, cache_ttl=600, chat_max_chars=1234,
                                   profile_max_chars=56)
    web = build_app(tiny_analyzer, SlowAssistant(), settings)
    demo = web.demo
    try:
        names = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
        assert {"analyze", "chat"} <= names
        # The page's text boxes stop where the server's caps are (the server refuses the rest).
        boxes = {block.label or block.elem_id: block.max_length for block in demo.blocks.values()
                 if isinstance(block, gr.Textbox)}
        assert boxes["chat-input"] == 1234
        assert boxes["Current treatments"] == boxes["Sensitivities or allergies"] == 56
        assert demo.delete_cache == (300, 600)
        assert demo._queue.default_concurrency_limit == 2
        kwargs = launch_kwargs(settings)
        assert kwargs["max_file_size"] == "7mb" and kwargs["show_error"] is False
        # The upload guard's middleware goes onto the server Gradio builds (issue 20).
        assert [m.cls for m in kwargs["app_kwargs"]["middleware"]] == [UploadGuardMiddleware]
        assert "data:image/jpeg;base64," in kwargs["css"]
        assert len(list(EXAMPLES_DIR.glob("*.jpg"))) >= 1
    finally:
        web.close()


class RecordingAssistant:
    name = "recording test assistant"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def stream(self, message, history, report=None, profile=None):
        self.calls.append((message, profile))
        yield "An answer."


@pytest.mark.parametrize("field", ["message", "treatments", "sensitivities"])
def test_chat_input_over_the_caps_is_refused_before_the_assistant_sees_it(tiny_analyzer, tiny_settings, temp_folder,
                                                                          field):
    settings = dataclasses.replace(tiny_settings, chat_max_chars=50, profile_max_chars=20)
    assistant = RecordingAssistant()
    app = WebApp(tiny_analyzer, assistant, settings)
    values = {"message": "Hello?", "treatments": "", "sensitivities": ""}
    limit = 50 if field == "message" else 20
    values[field] = "x" * (limit + 1)
    with pytest.raises(gr.Error, match="too long"):
        list(app.chat(values["message"], [], None, "", "", values["treatments"], values["sensitivities"]))
    assert assistant.calls == []
    values[field] = "x" * limit  # at the cap: answered
    assert list(app.chat(values["message"], [], None, "", "", values["treatments"], values["sensitivities"])) \
        == ["An answer."]
    assert len(assistant.calls) == 1
