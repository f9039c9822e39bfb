"""The web app in a real browser: Debian's Chromium driven by Playwright, the real app.py in a
subprocess with tiny models, and a real local OpenAI-compatible server for the chat."""
from __future__ import annotations

import hashlib
import io
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from app_process import AppProcess, app_env, files_under, wait_until
from fake_openai_server import FakeOpenAIServer, reply_from_system_prompt

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--no-proxy-server"]  # the app is on 127.0.0.1: never through a proxy from the environment
API_KEY = "sk-test-browser-key"
CHAT_MODEL = "fake-chat-model"
MAX_UPLOAD_MB = 2
SEVERITY_RE = re.compile(r"^(Clear|Mild|Moderate|Severe) acne", re.MULTILINE)
UI_TIMEOUT_MS = 120_000


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


@pytest.fixture(scope="module")
def playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'; .ci/run installs it)")
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser_context(playwright, tmp_path):
    # A fresh profile per test: no cache, no cookies, no session left over.
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    yield context
    context.close()


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


def mirrored_copy(photo: Path, folder: Path, name: str, quality: int = 90) -> Path:
    """A photo no one else has uploaded (the example photos themselves are public and kept)."""
    image = Image.open(photo).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    path = folder / name
    path.write_bytes(buf.getvalue())
    return path


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
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    context.set_default_timeout(UI_TIMEOUT_MS)
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
