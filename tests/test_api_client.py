"""The web API through gradio_client against the real app.py: /analyze returns the report JSON and
the overlay; the bad-input corpus gets clear errors, never tracebacks; the chat backend being down
does not stop the analysis; nothing of anyone's photo stays in the temp folder."""
from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_process import AppProcess, app_env, files_under, free_port, wait_until
from input_corpus import corpus, huge_photo

gradio_client = pytest.importorskip("gradio_client", reason="the gradio_client package is not installed")
from gradio_client.exceptions import AppError  # noqa: E402

from acne.report import DISCLAIMER  # noqa: E402
from acne.severity import CLASSES, count_grade, recommendations  # noqa: E402

API_KEY = "sk-test-api-secret-0123456789"
CACHE_TTL = 5
MAX_UPLOAD_MB = 3
PROFILE_MARKER = f"profile-marker-{uuid.uuid4().hex[:8]}"
CORPUS_NAMES = [
    "empty.jpg", "text_renamed.jpg", "truncated.jpg", "bad_crc.png", "one_pixel.png", "thirty_pixels.png",
    "bomb.png", "heic_renamed.jpg", "svg_renamed.png", "pdf_renamed.jpg", "sixteen_bit.png", "cmyk.jpg",
    "palette_transparent.png", "animated.gif", "photo.webp", "iphone.heic", "exif_orientation_6.jpg", "exif_orientation_8.jpg",
    "grayscale.jpg", "all_black.png", "all_white.png", "landscape.jpg"]
LEAK_MARKERS = ("Traceback", 'File "', "Error:", "/tmp/", "site-packages", "Exception")


@pytest.fixture(scope="module")
def gradio_temp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gradio-temp")


@pytest.fixture(scope="module")
def app(tiny_model_env, gradio_temp, tmp_path_factory):
    # The chat backend is down: OPENAI_BASE_URL points at a port where nothing listens.
    env = app_env(tiny_model_env, gradio_temp, ACNE_CACHE_TTL=str(CACHE_TTL), ACNE_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB),
                  OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
                  ACNE_CHAT_TIMEOUT="3", ACNE_CHAT_MAX_RETRIES="0")
    process = AppProcess(env, tmp_path_factory.mktemp("logs") / "app.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    return gradio_client.Client(app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def bad_inputs(example_photo, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("corpus")
    cases = corpus(example_photo)
    for name, case in cases.items():
        (folder / name).write_bytes(case.data)
    return folder, cases


def analyze(client, path: Path):
    return client.predict(gradio_client.handle_file(str(path)), api_name="/analyze")


def assert_plain_message(message: str) -> None:
    assert message and message[0].isupper() and len(message) < 400, message
    for marker in LEAK_MARKERS:
        assert marker not in message, f"{marker!r} leaked into the user-facing message: {message}"


# --------------------------------------------------------------------------- /analyze

def test_analyze_returns_the_report_json_and_overlay(client, tiny_analyzer, example_photos):
    assert "/analyze" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for photo in example_photos[:2]:
        report, overlay_path = analyze(client, photo)
        expected = tiny_analyzer.analyze(photo).to_dict()  # same tiny models, loaded in this process
        json.dumps(report)  # plain JSON all the way down
        assert report["severity"] in CLASSES and report["severity"] == expected["severity"]
        assert set(report["severity_scores"]) == set(CLASSES)
        assert sum(report["severity_scores"].values()) == pytest.approx(1.0, abs=1e-4)
        for name in CLASSES:
            assert report["severity_scores"][name] == pytest.approx(expected["severity_scores"][name], abs=1e-4)
        assert report["grader"]["level"] == expected["grader"]["level"]
        assert report["lesion_count"] == len(report["lesions"]) == expected["lesion_count"]
        assert report["count_grade"] == count_grade(report["lesion_count"])
        assert report["grades_agree"] == (report["severity"] == report["count_grade"])
        assert report["recommendations"] == recommendations(report["severity"])
        assert report["disclaimer"] == DISCLAIMER
        assert report["segmenter"] == expected["segmenter"] and report["grader"]["model"] == expected["grader"]["model"]
        with Image.open(photo) as original:
            assert report["image_size"] == list(original.size)
        for lesion in report["lesions"][:20]:
            x0, y0, x1, y1 = lesion["box"]
            assert 0 <= x0 < x1 <= report["image_size"][0] and 0 <= y0 < y1 <= report["image_size"][1]

        with Image.open(overlay_path) as overlay:
            assert overlay.format == "PNG" and list(overlay.size) == report["image_size"]
            assert not overlay.getexif() and "exif" not in overlay.info  # no EXIF, so no GPS either
            pixels = np.asarray(overlay.convert("RGB"))
        with Image.open(photo) as original:
            changed = np.any(pixels != np.asarray(original.convert("RGB")), axis=2).mean()
        assert (changed > 0) == (report["lesion_count"] > 0)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_bad_input_corpus_through_the_api(client, bad_inputs, name):
    folder, cases = bad_inputs
    case = cases[name]
    if case.refusal:
        with pytest.raises(AppError) as info:
            analyze(client, folder / name)
        message = str(info.value.message if hasattr(info.value, "message") else info.value)
        assert case.refusal.lower() in message.lower(), message
        assert_plain_message(message)
    else:
        report, overlay_path = analyze(client, folder / name)
        assert report["severity"] in CLASSES
        assert report["image_size"] == list(case.size)
        with Image.open(overlay_path) as overlay:
            assert list(overlay.size) == list(case.size)
        warnings = " ".join(report["quality_warnings"]).lower()
        if name == "all_black.png":
            assert "dark" in warnings
        if name == "all_white.png":
            assert "bright" in warnings
        if name == "landscape.jpg":
            assert "skin" in warnings


def test_corpus_names_match_the_module(bad_inputs):
    # The parametrised list above must cover every case the corpus generates.
    _, cases = bad_inputs
    assert sorted(cases) == sorted(CORPUS_NAMES)


def test_a_12000_by_9000_photo_is_refused_by_its_pixel_count(client, tmp_path):
    path = tmp_path / "huge.jpg"
    path.write_bytes(huge_photo())
    assert path.stat().st_size < MAX_UPLOAD_MB * 1024 * 1024  # so the pixel limit, not the size limit, answers
    with pytest.raises(AppError) as info:
        analyze(client, path)
    message = str(info.value)
    assert "too large" in message and "12000 x 9000" in message and "50 megapixels" in message
    assert_plain_message(message)


def test_files_over_the_size_limit_are_refused_by_the_server(app, client, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff" + bytes(MAX_UPLOAD_MB * 1024 * 1024 + 10))
    # gradio_client reads the limit from the app and refuses before sending...
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        analyze(client, big)
    # ...and the server refuses a raw upload too, with a plain message.
    boundary = "acne-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + big.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(app.url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 413
    assert "maximum allowed size" in info.value.read().decode()


# --------------------------------------------------------------------------- chat down, analysis up

def test_analysis_keeps_working_while_the_chat_backend_is_down(client, example_photo):
    answer = client.predict("What helps against mild acne?", "25-34", "Oily", "", PROFILE_MARKER, api_name="/chat")
    text = answer if isinstance(answer, str) else json.dumps(answer)
    assert "⚠️" in text and "offline assistant" in text.lower(), text  # says so, then answers offline
    assert API_KEY not in text
    notice = text.split("\n")[0].removeprefix("⚠️").strip()
    assert_plain_message(notice)
    report, overlay = analyze(client, example_photo)
    assert report["severity"] in CLASSES and Path(overlay).is_file()


# --------------------------------------------------------------------------- privacy (runs last)

def test_no_photo_outlives_its_request_in_the_temp_folder(app, client, gradio_temp, example_photos, bad_inputs):
    example_digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in example_photos}

    def read(path: Path) -> bytes | None:
        try:  # the app may delete a file between listing and reading: that is the point
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def leftovers() -> list[Path]:
        return [p for p in files_under(gradio_temp)
                if (data := read(p)) is not None and hashlib.sha256(data).hexdigest() not in example_digests]

    # One more upload of a photo no one else has, then wait for the time to live to pass.
    unique = io.BytesIO()
    Image.open(example_photos[0]).convert("RGB").rotate(180).save(unique, "JPEG", quality=87)
    path = gradio_temp.parent / "unique.jpg"
    path.write_bytes(unique.getvalue())
    analyze(client, path)
    assert not [p for p in files_under(gradio_temp) if read(p) == unique.getvalue()], \
        "an API upload must be deleted as soon as it is read"
    assert wait_until(lambda: not leftovers(), timeout=CACHE_TTL * 4 + 10), leftovers()

    log = app.log()
    assert API_KEY not in log and PROFILE_MARKER not in log
    folder, cases = bad_inputs
    for name in cases:  # uploaded file names can be personal: never logged
        assert name not in log
    app.stop()
    assert not leftovers()
