"""The web API through gradio_client against the real app.py: /analyze returns the report JSON and
the overlay; the bad-input corpus gets clear errors, never tracebacks, paths or exception text; only
files uploaded to the server can be analysed (issue 20); the chat backend being down does not stop the
analysis; a webcam's data URL is refused like any link; nothing of anyone's photo stays in the temp
folder. Every test here passes alone and in any order: the one that stops an app (the temp folder over
the time to live, and after shutdown) starts its own."""
from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import shutil
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_process import (AppProcess, HeldPort, api_call, api_upload, app_env, endpoint_index, file_reference,
                         files_under, free_port, rest_call, tree_snapshot, wait_until)
from input_corpus import corpus, huge_photo, message_leaks

gradio_client = pytest.importorskip("gradio_client", reason="the gradio_client package is not installed")
from gradio_client.exceptions import AppError, ValidationError  # noqa: E402

from acne.report import DISCLAIMER  # noqa: E402
from acne.severity import CLASSES, count_grade, recommendations  # noqa: E402
from acne.upload_guard import REFUSED_MESSAGE  # noqa: E402

API_KEY = "sk-test-api-secret-0123456789"
# The shared app keeps files long: Gradio's cache cleaning deletes an upload older than the time to live
# even while its call still waits to be read (test_load.py), which on busy cores once took seconds.
# The test of the time to live runs its own app with SHORT_TTL, one request at a time.
CACHE_TTL = 3600
SHORT_TTL = 10
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
def closed_port():
    with HeldPort() as port:  # bound, never listening: connections are refused for as long as it is held
        yield port.port


def down_chat_env(closed_port: int) -> dict[str, str]:
    # The chat backend is down: OPENAI_BASE_URL points at a port where nothing listens.
    return {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": f"http://127.0.0.1:{closed_port}/v1",
            "ACNE_CHAT_TIMEOUT": "3", "ACNE_CHAT_MAX_RETRIES": "0"}


@pytest.fixture(scope="module")
def app(tiny_model_env, gradio_temp, closed_port, tmp_path_factory):
    env = app_env(tiny_model_env, gradio_temp, ACNE_CACHE_TTL=str(CACHE_TTL), ACNE_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB),
                  **down_chat_env(closed_port))
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
    assert not message_leaks(message), f"{message_leaks(message)} in the user-facing message: {message}"


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
        assert name not in message  # nor the file's name, which can be personal
    else:
        report, overlay_path = analyze(client, folder / name)
        assert (report["severity"] in CLASSES) if case.graded else (report["severity"] is None)
        assert report["image_size"] == list(case.size)
        with Image.open(overlay_path) as overlay:
            assert list(overlay.size) == list(case.size)
        for warning in report["quality_warnings"]:  # user-facing text too
            assert_plain_message(warning)
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


# --------------------------------------------------------------------------- only uploads are read (issue 20)

class PhotoServer:
    """A local HTTP server with a photo on it, which counts the requests it gets: the app must never
    fetch a URL it is given (gradio_client sends URLs as references instead of uploading them)."""

    def __init__(self, data: bytes) -> None:
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/face.jpg"

    def __enter__(self) -> "PhotoServer":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def unique_photo(example_photo: Path, path: Path, angle: int) -> Path:
    """A photo no other test uploads, so its bytes can be looked for in the temp folder."""
    buf = io.BytesIO()
    Image.open(example_photo).convert("RGB").rotate(angle, expand=True).save(buf, "JPEG", quality=89)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def sha256_or_none(path: Path) -> str | None:
    try:  # the app's sweeper may delete a file between listing and reading
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def test_only_files_uploaded_to_the_server_can_be_analysed(app, client, gradio_temp, example_photo, tmp_path):
    photo = unique_photo(example_photo, tmp_path / "elsewhere" / "face.jpg", 90)  # outside the upload folder
    beside = unique_photo(example_photo, gradio_temp.parent / f"beside-{uuid.uuid4().hex[:6]}.jpg", 90)
    planted = unique_photo(example_photo, gradio_temp / "d41d8cd98f00" / "face.jpg", 90)  # as another user's upload
    secrets = {hashlib.sha256(photo.read_bytes()).hexdigest(), hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()}
    fn = endpoint_index(app.url, "analyze")
    try:
        answers, client_error, added = refuse_each(app, client, gradio_temp, fn, photo, beside, planted, tmp_path)
        assert not [p for p in files_under(gradio_temp) if p != planted and sha256_or_none(p) in secrets]
    finally:  # the planted files are ours, not the app's: the temp-folder test that follows checks for leftovers
        shutil.rmtree(planted.parent, ignore_errors=True)
        beside.unlink(missing_ok=True)
    assert not added, f"a refused reference left something in Gradio's cache: {added}"

    # One answer for all: the same status and body whether the file exists, is no image or is missing.
    expected = {"detail": [{"__type__": "validate", "is_valid": False, "parameter_name": "photo",
                            "message": REFUSED_MESSAGE}], "error": REFUSED_MESSAGE}
    for (what, route), (status, body) in answers.items():
        assert (status, body) == (422, expected), (what, route, status, body)
    assert REFUSED_MESSAGE in client_error
    assert_plain_message(REFUSED_MESSAGE)

    # Right after, the same photo uploaded for real is analysed: by gradio_client and by plain HTTP.
    report, overlay = analyze(client, photo)
    with Image.open(photo) as image:
        assert report["image_size"] == list(image.size) and Path(overlay).is_file()
    for route in ("queue/join", "call/analyze"):
        uploaded = api_upload(app.url, photo)
        status, outcome = api_call(app.url, route, [file_reference(uploaded)], fn_index=fn)
        data = outcome["output"]["data"] if route == "queue/join" else outcome["data"]
        assert status == 200 and data[0]["image_size"] == report["image_size"], outcome


def refuse_each(app, client, gradio_temp, fn, photo, beside, planted, tmp_path):
    """Name the photo (and /etc/passwd, a missing file...) every way there is; returns the answers by
    (what, route), gradio_client's error text, and what appeared in the temp folder meanwhile."""
    with PhotoServer(photo.read_bytes()) as web:
        references = {
            "an image outside the upload folder": str(photo),
            "/etc/passwd": "/etc/passwd",
            "a missing file": str(tmp_path / "missing.jpg"),
            "a path with .. into the upload folder's parent": f"{gradio_temp}/../{beside.name}",
            "a file in the upload folder that was not uploaded": str(planted),
            "an http URL to 127.0.0.1": web.url,
        }
        before = tree_snapshot(gradio_temp)
        answers = {}
        for what, path in references.items():
            for route in ("queue/join", "call/analyze", "run/analyze"):
                answers[what, route] = api_call(app.url, route, [file_reference(path)], fn_index=fn)
        # gradio_client uploads any local file it is given, but sends a URL as a reference.
        with pytest.raises(ValidationError) as info:
            client.predict(gradio_client.handle_file(web.url), api_name="/analyze")
        assert web.requests == [], "the server fetched the URL"
    return answers, str(info.value), tree_snapshot(gradio_temp) - before


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


# --------------------------------------------------------------------------- a webcam photo

def upload_raw(app, name: str, data: bytes, content_type: str = "image/png") -> str:
    """POST /gradio_api/upload, as the page does with a webcam capture: -> the path on the server."""
    boundary = f"acne-{uuid.uuid4().hex}"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(app.url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())[0]


def test_a_webcam_capture_is_analysed_and_not_kept_and_a_bare_data_url_is_refused(app, gradio_temp, tiny_analyzer,
                                                                                  example_photos):
    """Gradio 6's webcam draws the frame on a canvas and uploads it as a PNG file named webcam.png (no
    EXIF); the analysis request then names the uploaded file. A data URL is not a way in: Gradio keeps
    only uploaded files (it replaces FileData.url with the file's own URL), and refuses a data URL
    that comes without one before the app sees it."""
    def kept(data: bytes) -> list[Path]:
        digest = hashlib.sha256(data).hexdigest()
        return [p for p in files_under(gradio_temp) if hashlib.sha256(p.read_bytes()).hexdigest() == digest]

    buffer = io.BytesIO()
    Image.open(example_photos[1]).convert("RGB").rotate(90).save(buffer, "PNG")  # a capture no one else sent
    capture = buffer.getvalue()
    path = upload_raw(app, "webcam.png", capture)
    assert kept(capture), "the capture should be on the server until it is analysed"
    event, payload, _ = rest_call(app, "analyze", [{"path": path, "orig_name": "webcam.png",
                                                    "meta": {"_type": "gradio.FileData"}}])
    assert event == "complete", payload
    report, expected = json.loads(payload)[0], tiny_analyzer.analyze(capture)
    assert (report["severity"], report["lesion_count"], report["image_size"]) == \
        (expected.severity, expected.lesion_count, list(expected.image_size))
    assert report["quality_warnings"] == expected.quality_warnings
    assert not kept(capture), "the webcam capture must be deleted as soon as it is read"

    before = set(files_under(gradio_temp))
    url = "data:image/png;base64," + base64.b64encode(capture).decode()
    try:
        event, payload, _ = rest_call(app, "analyze", [{"path": "", "url": url, "meta": {"_type": "gradio.FileData"}}])
        refused = event == "error"
    except urllib.error.HTTPError as exc:  # refused at the door (a request validator answers 4xx)
        refused, payload = 400 <= exc.code < 500, exc.read().decode(errors="replace")
    assert refused and "Traceback" not in payload and "/tmp/" not in payload, payload
    assert set(files_under(gradio_temp)) <= before, "a refused data URL must leave nothing behind"


# --------------------------------------------------------------------------- privacy over time

def test_no_photo_outlives_its_request_in_the_temp_folder(tiny_model_env, closed_port, example_photos,
                                                          tmp_path):
    """Its own app (it waits for the time to live and stops the app): uploads are deleted as soon as they
    are read, results after SHORT_TTL, everything at shutdown; names, profile and key never logged."""
    temp = tmp_path / "gradio-temp"
    env = app_env(tiny_model_env, temp, ACNE_CACHE_TTL=str(SHORT_TTL), **down_chat_env(closed_port))
    example_digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in example_photos}

    def read(path: Path) -> bytes | None:
        try:  # the app may delete a file between listing and reading: that is the point
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def leftovers() -> list[Path]:
        return [p for p in files_under(temp)
                if (data := read(p)) is not None and hashlib.sha256(data).hexdigest() not in example_digests]

    marker = uuid.uuid4().hex[:10]
    photo_name, notes_name = f"jane-{marker}-face.jpg", f"notes-{marker}.jpg"  # file names can be personal
    unique = io.BytesIO()  # a photo no one else has
    Image.open(example_photos[0]).convert("RGB").rotate(180).save(unique, "JPEG", quality=87)
    (tmp_path / photo_name).write_bytes(unique.getvalue())
    (tmp_path / notes_name).write_text("not a photo")
    with AppProcess(env, tmp_path / "app.log") as app:
        client = gradio_client.Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))
        answer = client.predict("What helps against mild acne?", "", "", "", PROFILE_MARKER, api_name="/chat")
        assert "offline assistant" in json.dumps(answer).lower()  # the chat really ran (with the profile)
        report, overlay = analyze(client, tmp_path / photo_name)
        assert report["severity"] in CLASSES
        assert not [p for p in files_under(temp) if read(p) == unique.getvalue()], \
            "an API upload must be deleted as soon as it is read"
        assert files_under(temp / "acne-results"), "the overlay sent back is on the server until the time to live"
        with pytest.raises(AppError):
            analyze(client, tmp_path / notes_name)
        assert wait_until(lambda: not leftovers(), timeout=SHORT_TTL * 4 + 10), leftovers()

        log = app.full_log()
        assert API_KEY not in log and PROFILE_MARKER not in log and marker not in log, log[-2000:]
        assert app.stop() is not None
    assert not leftovers()
