"""The web app in a real browser: Debian's Chromium driven by Playwright, the real app.py in a
subprocess with tiny models, and a real local OpenAI-compatible server for the chat. Also: every
message the page shows for the bad-input corpus is plain (no path, errno or exception text), and
the webcam and the example photos still reach the analysis through the upload guard (issue 20)."""
from __future__ import annotations

import hashlib
import io
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from app_process import AppProcess, app_env, files_under, launch_chromium, mirrored_copy, wait_until
from fake_openai_server import FakeOpenAIServer, reply_from_system_prompt
from input_corpus import corpus, message_leaks

pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

pytestmark = pytest.mark.browser

FAKE_CAMERA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]  # a test pattern
API_KEY = "sk-test-browser-key"
CHAT_MODEL = "fake-chat-model"
MAX_UPLOAD_MB = 2
SEVERITY_RE = re.compile(r"^(Clear|Mild|Moderate|Severe) acne", re.MULTILINE)


@pytest.fixture(scope="module")
def fake_openai():
    # Quotes the severity it finds in the system prompt, word by word with a pause: a streamed answer.
    server = FakeOpenAIServer(reply_from_system_prompt(), api_key=API_KEY, chunk_delay=0.2).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gradio_temp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gradio-temp")


@pytest.fixture(scope="module")
def app(tiny_model_env, fake_openai, gradio_temp, tmp_path_factory):
    env = app_env(tiny_model_env, gradio_temp, OPENAI_BASE_URL=fake_openai.base_url, OPENAI_API_KEY=API_KEY,
                  ACNE_CHAT_MODEL=CHAT_MODEL,
                  ACNE_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB), ACNE_CACHE_TTL="900")
    process = AppProcess(env, tmp_path_factory.mktemp("logs") / "app.log").start()
    yield process
    process.stop()
    assert API_KEY not in process.log(), "the API key must never be logged"


def open_app(context, app):
    page = context.new_page()
    page.goto(app.url)
    # Never wait for "network idle": the page keeps connections open. Wait for the elements.
    page.locator("#photo input[type=file]").wait_for(state="attached")
    return page


def upload(page, path: Path) -> None:
    page.locator("#photo input[type=file]").set_input_files(str(path))


def wait_for_result(page) -> str:
    """Wait for the overlay images and the severity; return the severity shown."""
    page.locator("#overlay img").first.wait_for(state="visible")
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('Lesions found')")
    page.locator("#severity").get_by_text(re.compile("%")).first.wait_for()
    match = SEVERITY_RE.search(page.locator("#summary").inner_text())
    assert match, page.locator("#summary").inner_text()
    return match.group(1)


def wait_for_outcome(page) -> str:
    """Wait for a graded result or a "Not assessed" one (no face or skin); return the summary's text."""
    page.locator("#overlay img").first.wait_for(state="visible")
    page.wait_for_function("(() => { const t = document.querySelector('#summary')?.innerText || '';"
                           " return t.includes('Lesions found') || t.includes('Not assessed'); })()")
    return page.locator("#summary").inner_text()


def digest(path: Path) -> str | None:
    try:  # the app may delete a file between listing and reading: that is what the tests wait for
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def files_with_digest(folder: Path, wanted: str) -> list[Path]:
    return [p for p in files_under(folder) if digest(p) == wanted]


# --------------------------------------------------------------------------- tests

def test_analyze_then_chat_mentions_the_severity(app, fake_openai, browser_context, tiny_analyzer, example_photo,
                                                 tmp_path):
    expected = tiny_analyzer.analyze(example_photo)  # the same tiny models the app loaded
    page = open_app(browser_context, app)

    upload(page, example_photo)
    severity = wait_for_result(page)
    summary = page.locator("#summary").inner_text()
    assert severity == expected.severity
    assert f"Lesions found: {expected.lesion_count}" in summary
    assert f"count-based grade {expected.count_grade}" in summary
    assert f"level {expected.grader.level}" in summary
    assert ("disagree" in summary) == (not expected.grades_agree)
    label = page.locator("#severity").inner_text()
    for name in ("Clear", "Mild", "Moderate", "Severe"):  # a confidence bar for each of the four classes
        assert name in label
    assert expected.recommendations[0][:40] in page.locator("#recommendations").inner_text()
    assert "not a medical diagnosis" in page.locator("#disclaimer").inner_text().lower()
    assert page.locator("#overlay img").count() == 2  # photo and overlay, side by side in the slider
    page.screenshot(path=str(tmp_path / "analyze.png"), full_page=True)

    # The raw-photo toggle shows the photo on both sides of the slider.
    sources = lambda: page.locator("#overlay img").evaluate_all("els => els.map(e => e.src)")  # noqa: E731
    assert len(set(sources())) == 2
    page.locator("#show-raw input").check()
    page.wait_for_function("(() => { const s = [...document.querySelectorAll('#overlay img')].map(e => e.src);"
                           " return s.length === 2 && s[0] === s[1]; })()")
    page.locator("#show-raw input").uncheck()
    page.wait_for_function("(() => { const s = [...document.querySelectorAll('#overlay img')].map(e => e.src);"
                           " return s.length === 2 && s[0] !== s[1]; })()")

    # Where the grader looked: a heat map on request.
    page.get_by_text("Where did the grader look?").click()
    page.get_by_role("button", name=re.compile("heat map")).click()
    page.locator("#heatmap img").first.wait_for(state="visible")

    # The chat starts from this analysis and says which model answers.
    page.get_by_role("tab", name="Skincare chat").click()
    assert severity in page.locator("#chat-context").inner_text()
    assert f"{CHAT_MODEL} at 127.0.0.1" in page.locator("#chat-model").inner_text()
    fake_openai.clear()
    question = "What routine do you suggest for my skin?"
    page.locator("#chat-input textarea").fill(question)
    page.locator("#chat-input textarea").press("Enter")

    bot = page.locator("#chatbot [data-testid='bot']").last
    seen: list[str] = []
    final = f"Your photo was graded {severity}. Keep your routine gentle."
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = bot.inner_text().strip() if bot.count() else ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if final in text:
            break
        time.sleep(0.05)
    assert seen and final in seen[-1], seen
    assert any(final not in text and text for text in seen), f"the answer did not stream: {seen}"

    request = fake_openai.chat_requests[-1]
    assert request.body["stream"] is True
    assert request.messages[0]["role"] == "system"
    assert f"Severity: {severity}" in request.messages[0]["content"]
    assert request.messages[-1] == {"role": "user", "content": question}
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

    page.get_by_role("tab", name="About").click()
    # The tab's content is rendered on first show: wait for it rather than read at once (flaky under load).
    page.wait_for_function("document.querySelector('#about')?.innerText.includes('ACNE04')")
    about = page.locator("#about").inner_text()
    assert f"{CHAT_MODEL} at 127.0.0.1" in about and "ACNE04" in about
    assert Path(str(app.env["ACNE_SEGMENTER"])).name in about


def test_a_phone_photo_shows_the_analysed_region_outlined(app, browser_context, example_photo, tmp_path):
    """A close-up re-framed as a phone photo: the page says the face was analysed and the overlay it shows
    outlines that region (light blue) on the whole photo; a close-up gets no outline."""
    import numpy as np

    from acne.reframe import reframe

    closeup = np.asarray(Image.open(example_photo).convert("RGB"))
    photo, _ = reframe(closeup, rng=np.random.default_rng(1), frame=(1512, 2016), background="plain",
                       border="hard")
    path = tmp_path / "phone_photo.jpg"
    Image.fromarray(photo).save(path, "JPEG", quality=85)
    page = open_app(browser_context, app)

    def outline_pixels() -> int:
        # The slider swaps its images in as they arrive: read the overlay once it is a whole image.
        deadline = time.monotonic() + 30
        while True:
            sources = page.locator("#overlay img").evaluate_all("els => els.map(e => e.src)")
            response = page.request.get(sources[-1])
            try:
                overlay = np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"), int)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError((sources[-1][:120], response.status, response.body()[:200])) from None
                time.sleep(0.5)
        return int((np.abs(overlay - (40, 200, 255)).sum(axis=2) < 60).sum())

    upload(page, path)
    wait_for_result(page)
    assert "outlined in blue" in page.locator("#summary").inner_text()
    shown = outline_pixels()
    assert shown > 1000, shown   # the region's four sides, a few pixels thick, on the 1600 px display copy
    page.screenshot(path=str(tmp_path / "region.png"), full_page=True)

    upload(page, mirrored_copy(example_photo, tmp_path, "closeup.jpg"))
    page.wait_for_function("!document.querySelector('#summary')?.innerText.includes('outlined')")
    wait_for_result(page)
    assert "whole photo" in page.locator("#summary").inner_text()
    assert outline_pixels() < shown / 10


def test_bad_uploads_get_a_clear_message_and_the_app_keeps_serving(app, browser_context, tiny_analyzer, example_photo,
                                                                   tmp_path):
    page = open_app(browser_context, app)
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("These are my notes, not a photo.\n" * 50)
    upload(page, text_file)
    page.get_by_text("This file is not an image that can be read").first.wait_for()

    too_big = tmp_path / "too_big.jpg"
    too_big.write_bytes(b"\xff\xd8\xff" + bytes(MAX_UPLOAD_MB * 1024 * 1024 + 1000))
    page.reload()
    page.locator("#photo input[type=file]").wait_for(state="attached")
    upload(page, too_big)
    page.get_by_text(re.compile(r"exceed the maximum allowed size of 2(\.0)? ?Mb", re.IGNORECASE)).first.wait_for()

    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "File \"" not in body

    # The same page still analyses a good photo afterwards, and shows that photo's own result.
    page.reload()
    page.locator("#photo input[type=file]").wait_for(state="attached")
    upload(page, example_photo)
    expected = tiny_analyzer.analyze(example_photo)  # the same tiny models the app loaded
    assert wait_for_result(page) == expected.severity
    assert f"Lesions found: {expected.lesion_count}" in page.locator("#summary").inner_text()


def test_photos_and_results_leave_the_disk_with_the_session(app, playwright, gradio_temp, example_photo, tmp_path):
    first = mirrored_copy(example_photo, tmp_path, "first.jpg", quality=91)
    second = mirrored_copy(example_photo, tmp_path, "second.jpg", quality=88)
    results = gradio_temp / "acne-results"
    context = launch_chromium(playwright, tmp_path / "profile")
    try:
        page = open_app(context, app)
        upload(page, first)
        wait_for_result(page)
        assert files_with_digest(gradio_temp, digest(first)), "the upload should be on disk during the session"
        session_results = files_under(results)
        assert session_results, "the overlay shown should be on disk during the session"
        for result in session_results:  # images we write carry no EXIF
            with Image.open(result) as image:
                assert not image.getexif() and "exif" not in image.info

        # The next photo replaces the first: its upload and its images are deleted at once.
        page.locator("#photo button[aria-label='Remove Image']").first.click()
        page.wait_for_function("!document.querySelector('#summary')?.innerText.includes('Lesions found')")
        upload(page, second)
        wait_for_result(page)
        assert wait_until(lambda: not files_with_digest(gradio_temp, digest(first)), timeout=20)
        assert wait_until(lambda: not any(p in files_under(results) for p in session_results), timeout=20)
        assert files_with_digest(gradio_temp, digest(second))
    finally:
        context.close()

    # Closing the page ends the session: nothing of it stays on disk.
    assert wait_until(lambda: not files_with_digest(gradio_temp, digest(second)), timeout=30), \
        files_under(gradio_temp)
    assert wait_until(lambda: not files_under(results), timeout=30), files_under(results)


def toasts(page) -> list[str]:
    return page.locator("[data-testid='toast-body']").all_inner_texts()


def test_every_message_the_page_shows_for_the_bad_input_corpus_is_plain(app, browser_context, example_photo,
                                                                         tmp_path):
    page = open_app(browser_context, app)
    shown: dict[str, list[str]] = {}
    for name, case in corpus(example_photo).items():
        path = tmp_path / name
        path.write_bytes(case.data)
        page.reload()  # a fresh page per file: each message belongs to its file
        page.locator("#photo input[type=file]").wait_for(state="attached")
        upload(page, path)
        if case.refusal:
            page.locator("[data-testid='toast-body']").filter(
                has_text=re.compile(re.escape(case.refusal), re.IGNORECASE)).first.wait_for()
            shown[name] = toasts(page)
        else:
            summary = wait_for_outcome(page)
            assert ("Lesions found" in summary) == case.graded, (name, summary)
            quality = page.locator("#quality")
            shown[name] = [page.locator("#summary").inner_text(), *toasts(page),
                           quality.inner_text() if quality.is_visible() else ""]
        assert "Traceback" not in page.locator("body").inner_text()
    assert len(shown) == 22   # the whole input corpus (tests/input_corpus.py), HEIC cases included
    for name, messages in shown.items():
        for message in filter(None, messages):
            assert not message_leaks(message), f"{name}: {message_leaks(message)} in {message!r}"
            assert name not in message, f"{name}: the file's name is shown in {message!r}"


def test_webcam_and_example_photos_are_analysed_through_the_upload_route(app, playwright, tmp_path):
    # Chromium's fake camera (a test pattern). The page uploads the capture like a file, and clicking
    # an example sends Gradio's cached copy of it: the upload guard must let both through.
    context = launch_chromium(playwright, tmp_path / "profile", FAKE_CAMERA_ARGS, permissions=["camera"])
    try:
        page = open_app(context, app)
        posts: list[tuple[str, str]] = []
        page.on("request", lambda r: posts.append((r.url, r.post_data or "")) if r.method == "POST" else None)
        page.get_by_role("button", name="Capture from camera").click()
        page.get_by_text("Click to Access Webcam").click()
        # A capture taken before the camera streams holds no frame and sends nothing: wait for frames
        # (slow to come on a busy machine).
        page.wait_for_function("(() => { const v = document.querySelector('#photo video');"
                               " return v && v.readyState >= 2 && v.videoWidth > 0; })()")
        page.get_by_role("button", name="capture photo").click()
        wait_for_outcome(page)   # Chromium's test pattern holds no skin: "Not assessed" is the right outcome
        uploads = [url for url, _ in posts if "/gradio_api/upload" in url]
        assert uploads, "the webcam capture should go through the upload route"
        assert not toasts(page)

        page.locator("#photo button[aria-label='Remove Image']").first.click()
        page.wait_for_function("!document.querySelector('#summary')?.innerText.includes('Not assessed')")
        page.get_by_role("button", name="Upload file").click()
        if not page.locator(".gallery-item").first.is_visible():   # the examples fold away once a photo is in
            page.locator("#examples").get_by_text("Example photos").first.click()
        page.locator(".gallery-item").first.click()
        wait_for_result(page)
        assert not toasts(page)
    finally:
        context.close()


# --------------------------------------------------------------------------- phone and desktop layout

IN_VIEW_JS = """(sel) => { const e = document.querySelector(sel); if (!e) return false;
  const r = e.getBoundingClientRect();
  return r.height > 0 && r.top >= -1 && r.bottom <= window.innerHeight + 1; }"""
TOP_IN_VIEW_JS = """(sel) => { const e = document.querySelector(sel); if (!e) return false;
  const r = e.getBoundingClientRect(); return r.height > 0 && r.top >= -1 && r.top < window.innerHeight - 100; }"""
BOX_JS = """(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
  return [r.left, r.top, r.right, r.bottom]; }"""
PAGE_WIDTH_JS = "document.documentElement.scrollWidth"


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("viewport", [(390, 844), (1280, 800)], ids=["phone-390x844", "desktop-1280x800"])
def test_the_result_and_the_chat_fit_the_screen(app, fake_openai, playwright, example_photo, tmp_path, viewport):
    width, height = viewport
    context = launch_chromium(playwright, tmp_path / "profile", viewport={"width": width, "height": height},
                              is_mobile=width < 600, has_touch=width < 600)
    try:
        page = open_app(context, app)
        examples = page.locator("#examples [data-testid='accordion-content']")
        examples.wait_for(state="visible")  # before a photo is in, the examples are right there
        assert page.evaluate(PAGE_WIDTH_JS) <= width

        upload(page, example_photo)
        wait_for_result(page)
        # The result is in view without hunting: the severity whole, the overlay's top (scrolled to on a phone).
        page.wait_for_function(IN_VIEW_JS, arg="#severity")
        page.wait_for_function(TOP_IN_VIEW_JS, arg="#overlay")
        page.screenshot(path=str(tmp_path / f"result-{width}.png"))
        if width >= 1024:  # desktop: above the fold, next to the overlay, no scrolling
            assert page.evaluate("window.scrollY") == 0
            severity, overlay = page.evaluate(BOX_JS, "#severity"), page.evaluate(BOX_JS, "#overlay")
            assert severity[0] >= overlay[2] and severity[1] < overlay[3], (severity, overlay)
        examples.wait_for(state="hidden")  # folded away once a photo is in
        assert page.evaluate(PAGE_WIDTH_JS) <= width

        # The chat tab opens with the message box on the screen.
        page.get_by_role("tab", name="Skincare chat").click()
        page.wait_for_function(IN_VIEW_JS, arg="#chat-input")
        textarea = page.locator("#chat-input textarea")
        placeholder = textarea.get_attribute("placeholder")
        assert placeholder
        # Who answers is said once on the page.
        assert page.locator("body").inner_text().count(f"{CHAT_MODEL} at 127.0.0.1") == 1

        # A long cited answer (the chat service fails, so the offline assistant answers with its sources).
        fake_openai.mode = "500"
        try:
            textarea.fill("Can I use benzoyl peroxide and adapalene together?")
            textarea.press("Enter")
            page.wait_for_function("document.querySelector('#chatbot')?.innerText.includes('Not a diagnosis')")
        finally:
            fake_openai.mode = "normal"
        assert "https://www.nice.org.uk/guidance/ng198" in page.locator("#chatbot").inner_text()
        assert page.evaluate(PAGE_WIDTH_JS) <= width, "the page became wider than the screen"
        assert page.evaluate("document.querySelector('#chatbot').scrollWidth <= "
                             "document.querySelector('#chatbot').clientWidth + 1")
        page.wait_for_function(f"document.querySelector('#chat-input textarea').placeholder === {placeholder!r}")

        # No label covers the conversation, wherever it is scrolled: no label inside the chatbot overlaps the
        # first message (scrolled to the top) or the scrolling conversation area, and the line saying who
        # answers is above it. Measured in one go, so that no late autoscroll moves things in between.
        boxes = page.evaluate("""() => {
            const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
            const log = document.querySelector('#chatbot [role=log]');
            log.scrollTo({top: 0, behavior: 'instant'});
            const labels = [...document.querySelectorAll('#chatbot label, #chatbot [data-testid=block-label]')]
                .filter(e => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden');
            return {log: box(log), first: box(document.querySelector('#chatbot [data-testid=user]')),
                    model: box(document.querySelector('#chat-model')), labels: labels.map(box)};
        }""")
        for label in boxes["labels"]:
            assert not overlaps(label, boxes["first"]), "a label covers the first message"
            assert not overlaps(label, boxes["log"]), "a label floats over the conversation"
        assert boxes["model"][3] <= boxes["log"][1] and not overlaps(boxes["model"], boxes["first"])
        page.screenshot(path=str(tmp_path / f"chat-{width}.png"))
    finally:
        context.close()


def test_a_small_phone_sees_the_main_tabs_and_nothing_wider(app, playwright, tmp_path):
    context = launch_chromium(playwright, tmp_path / "profile", viewport={"width": 360, "height": 740},
                              is_mobile=True, has_touch=True)
    try:
        page = open_app(context, app)
        for name in ("Analyze", "Skincare chat"):  # not hidden behind Gradio's "more tabs" menu
            page.get_by_role("tab", name=name).wait_for(state="visible")
        assert page.evaluate(PAGE_WIDTH_JS) <= 360
    finally:
        context.close()
