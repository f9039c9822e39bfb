"""My progress in a real browser (Debian's Chromium through Playwright) against the real app.py with
the tiny models: two analyses saved with different dates survive a reload; the chart has two points;
the before/after view says what changed; export, delete all and import restore the history; nothing
of it reaches the server's disk or log; the page works at phone width."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from acne import history
from app_process import DEBUG_LOGGING_COMMAND, AppProcess, app_env, files_under, launch_chromium, mirrored_copy

pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

pytestmark = pytest.mark.browser

PROJECT_DIR = Path(__file__).resolve().parent.parent
MARK = uuid.uuid4().hex[:10]
NOTES = (f"week 0 before adapalene {MARK}", f"week 6 of adapalene {MARK}")
DATES = ("2025-01-05", "2025-02-16")
POINTS_JS = "document.querySelectorAll('#progress-chart g.hover_marks path').length"


@pytest.fixture(scope="module")
def server_folders(tmp_path_factory) -> dict[str, Path]:
    return {"temp": tmp_path_factory.mktemp("gradio-temp"), "cache": tmp_path_factory.mktemp("acne-cache")}


@pytest.fixture(scope="module")
def app(tiny_model_env, server_folders, tmp_path_factory):
    env = app_env(tiny_model_env, server_folders["temp"], ACNE_CACHE_DIR=str(server_folders["cache"]),
                  ACNE_CACHE_TTL="900")
    # Every logger at DEBUG, the most anyone could turn on: the history must still not reach the log.
    process = AppProcess(env, tmp_path_factory.mktemp("logs") / "app.log", command=DEBUG_LOGGING_COMMAND).start()
    yield process
    process.stop()


def open_app(page, app) -> None:
    page.goto(app.url)
    page.locator("#photo input[type=file]").wait_for(state="attached")   # never "networkidle"


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => document.querySelector(s)?.innerText.includes(t)", arg=[selector, text])


def analyse_and_save(page, photo: Path, date: str, note: str, picture: bool) -> None:
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    wait_text(page, "#summary", "Lesions found")
    # The page fills in today's date when it loads: wait for that, so it cannot overwrite ours.
    page.wait_for_function("document.querySelector('#save-date textarea')?.value.length === 10")
    page.locator("#save-date textarea").fill(date)
    page.locator("#save-note textarea").fill(note)
    if picture:
        page.locator("#save-picture input").check()
    else:
        page.locator("#save-picture input").uncheck()
    page.locator("#save-history").click()
    wait_text(page, "#save-status", f"Saved for {date}")
    page.locator("#photo button[aria-label='Remove Image']").first.click()
    page.wait_for_function("!document.querySelector('#summary')?.innerText.includes('Lesions found')")


def open_progress(page) -> None:
    page.get_by_role("tab", name="My progress").click()
    page.locator("#progress-intro").wait_for()


def wait_for_history(page, count: int) -> None:
    wait_text(page, "#history-list", f"{count} saved result")
    page.wait_for_function(f"{POINTS_JS} === {count}")


def written_since(start: float, folders: list[Path]) -> list[Path]:
    found = [p for folder in folders for p in files_under(folder)]
    found += [p for p in files_under(PROJECT_DIR) if ".git" not in p.parts and "__pycache__" not in p.parts
              and ".pytest_cache" not in p.parts and p.stat().st_mtime >= start]
    return found


def holds(path: Path, needles: list[bytes]) -> bool:
    try:
        data = path.read_bytes()
    except OSError:   # deleted between listing and reading
        return False
    return any(needle in data for needle in needles)


def test_history_is_kept_in_the_browser_only(app, browser_context, server_folders, tiny_analyzer, example_photos,
                                             tmp_path):
    start = time.time() - 1
    photos = (mirrored_copy(example_photos[-1], tmp_path, "before.jpg", 91),
              mirrored_copy(example_photos[0], tmp_path, "after.jpg", 89))
    expected = [tiny_analyzer.analyze(p) for p in photos]   # the same tiny models and runner as the app
    page = browser_context.new_page()
    open_app(page, app)
    for photo, date, note, picture in zip(photos, DATES, NOTES, (True, False)):
        analyse_and_save(page, photo, date, note, picture)

    # A reload: the history comes back from the browser's storage.
    page.reload()
    open_app(page, app)
    open_progress(page)
    wait_for_history(page, 2)
    listing = text_of(page, "#history-list")
    for date, note, report in zip(DATES, NOTES, expected):
        assert date in listing and note in listing and f"{report.lesion_count} lesion" in listing
    assert page.locator("#history-list img").count() == 1          # only the entry saved with its picture
    labels = page.locator("#progress-chart g.hover_marks path").evaluate_all(
        "els => els.map(e => e.getAttribute('aria-label'))")
    assert [f"Lesions: {r.lesion_count};" in label for r, label in zip(expected, labels)] == [True, True], labels

    # Before / after: the first and the last entry, side by side, the change in words.
    before, after = ({"date": d, "severity": r.severity, "lesion_count": r.lesion_count, "count_grade": r.count_grade}
                     for d, r in zip(DATES, expected))
    words = history.compare(history.validate_entry(before), history.validate_entry(after))["lines"]
    compare = text_of(page, "#compare")
    assert "BEFORE" in compare.upper() and "AFTER" in compare.upper() and NOTES[0] in compare and NOTES[1] in compare
    for line in words:
        assert line in compare, (line, compare)
    assert "over 6 weeks" in words[0]
    trend = text_of(page, "#progress-trend")
    assert "over 6 weeks" in trend and "2 saved results from 2025-01-05 to 2025-02-16" in trend
    page.screenshot(path=str(tmp_path / "progress.png"), full_page=True)

    # The chat knows the trend.
    page.get_by_role("tab", name="Skincare chat").click()
    wait_text(page, "#chat-trend", "over 6 weeks")

    # Export, delete all (it stays deleted after a reload), import: restored.
    open_progress(page)
    with page.expect_download() as download:
        page.locator("#history-export").click()
    exported = tmp_path / "exported.json"
    download.value.save_as(exported)
    data = json.loads(exported.read_text())
    assert data["format"] == history.FORMAT and [e["note"] for e in data["entries"]] == list(NOTES)
    page.locator("#history-delete-all").click()
    page.locator("#history-delete-all-yes").click()
    wait_text(page, "#history-list", "history is empty")
    wait_text(page, "#progress-status", "Deleted 2 saved results")
    page.reload()
    open_app(page, app)
    open_progress(page)
    time.sleep(2)   # give a stored history every chance to come back: it must not
    assert "history is empty" in text_of(page, "#history-list")
    with page.expect_file_chooser() as chooser:
        page.locator("#history-import").click()
    chooser.value.set_files(str(exported))
    wait_for_history(page, 2)
    assert "Imported 2 entries" in text_of(page, "#progress-status")
    assert NOTES[0] in text_of(page, "#history-list") and page.locator("#history-list img").count() == 1
    page.reload()
    open_app(page, app)
    open_progress(page)
    wait_for_history(page, 2)

    # A file that is not a history gets a plain message and changes nothing.
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": "world"}')
    with page.expect_file_chooser() as chooser:
        page.locator("#history-import").click()
    chooser.value.set_files(str(junk))
    wait_text(page, "#progress-status", "not a history file")
    assert "2 saved results" in text_of(page, "#history-list")

    # Nothing of the history reached the server's disk or its log.
    ids = [e["id"].encode() for e in data["entries"]]
    needles = [n.encode() for n in NOTES] + ids + [MARK.encode()]
    leaked = [p for p in written_since(start, list(server_folders.values())) if holds(p, needles)]
    assert not leaked, leaked
    assert not [p for p in files_under(server_folders["temp"]) if p.suffix == ".json"]
    log = app.full_log()
    assert MARK not in log and not any(i.decode() in log for i in ids)


def test_progress_and_whole_face_at_phone_width(app, playwright, example_photos, tmp_path):
    context = launch_chromium(playwright, tmp_path / "phone-profile", viewport={"width": 390, "height": 844},
                              is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        open_app(page, app)
        # The whole-face section of the Analyze tab: two good photos and a broken one.
        broken = tmp_path / "front.jpg"
        broken.write_text("not a photo\n" * 20)
        page.locator("#views-section").get_by_text("Whole face").first.click()
        page.locator("#view-left input[type=file]").set_input_files(str(example_photos[0]))
        page.locator("#view-front input[type=file]").set_input_files(str(broken))
        page.locator("#view-right input[type=file]").set_input_files(str(example_photos[1]))
        page.locator("#view-right img").first.wait_for()
        page.locator("#views-analyse").click()
        wait_text(page, "#views-summary", "Whole face:")
        summary = text_of(page, "#views-summary")
        assert "front photo could not be analysed" in summary and "Left side" in summary and "Right side" in summary
        page.locator("#views-gallery img").nth(1).wait_for()   # an overlay for each analysed view
        page.wait_for_function("document.querySelector('#views-save-date textarea')?.value.length === 10")
        page.locator("#views-save-date textarea").fill("2025-03-01")
        page.locator("#views-save-history").click()
        wait_text(page, "#views-save-status", "Saved for 2025-03-01")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(tmp_path / "phone-views.png"), full_page=True)

        # "See my progress" opens the tab even when the tab bar folds it under "⋯".
        page.locator("#views-open-progress").click()
        wait_text(page, "#history-list", "1 saved result")
        assert "Whole face" in text_of(page, "#history-list")
        assert page.locator("#history-export").is_visible() and page.locator("#history-delete-all").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(tmp_path / "phone-progress.png"), full_page=True)
    finally:
        context.close()
