"""Privacy of the running app, with every logger at DEBUG (the most anyone could turn on):
a phone photo's EXIF (GPS) never reaches an output, the log holds no photo bytes, upload file
names, chat text, profile data or API key, and nothing of a user is left on disk after shutdown.

The real app.py runs in a subprocess with the tiny models; the chat goes to a real local
OpenAI-compatible server. (test_api_client.py checks the temp folder over the time to live, and
the CLI's PNGs are checked in test_cli.py / test_bad_inputs.py.)
"""
from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from app_process import DEBUG_LOGGING_COMMAND, AppProcess, app_env, files_under
from fake_openai_server import FakeOpenAIServer
from input_corpus import with_gps

gradio_client = pytest.importorskip("gradio_client", reason="the gradio_client package is not installed")

MARK = uuid.uuid4().hex[:10]
API_KEY = f"sk-privacy-{MARK}-secret"
UPLOAD_NAME = f"jane-doe-{MARK}-face.jpg"        # file names can be personal
PROFILE_TEXT = f"isotretinoin-{MARK}-treatment"  # health data typed into the chat profile
PHOTO_OWNER = f"Jane Doe {MARK}"                 # EXIF Artist, as some phones and cameras write it
CHAT_TEXT = f"my private question {MARK}"


@pytest.fixture(scope="module")
def fake_openai():
    with FakeOpenAIServer(reply="Keep your routine gentle.", api_key=API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def gradio_temp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gradio-temp")


@dataclass
class Session:
    """What one user did with the app, recorded, and what the app left: every test below reads this, so
    each passes alone and in any order (none of them needs the app still running)."""
    report: dict
    overlay_path: Path
    chat_answer: object
    chat_requests: list
    log: str            # the whole log, shutdown included
    exit_status: int | None
    leftovers: list[Path]


@pytest.fixture(scope="module")
def phone_photo(example_photo, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / UPLOAD_NAME
    path.write_bytes(with_gps(Image.open(example_photo).convert("RGB"), owner=PHOTO_OWNER))
    with Image.open(path) as image:  # the input really carries the GPS position
        assert image.getexif().get_ifd(0x8825)
    return path


@pytest.fixture(scope="module")
def session(tiny_model_env, fake_openai, gradio_temp, phone_photo, example_photos, tmp_path_factory) -> Session:
    # A long time to live: what is gone after shutdown was deleted by the app, not by the timer.
    env = app_env(tiny_model_env, gradio_temp, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=fake_openai.base_url,
                  ACNE_CHAT_MODEL="fake-model", ACNE_CACHE_TTL="3600")
    app = AppProcess(env, tmp_path_factory.mktemp("logs") / "app.log", command=DEBUG_LOGGING_COMMAND).start()
    try:
        client = gradio_client.Client(app.url, verbose=False,
                                      download_files=str(tmp_path_factory.mktemp("downloads")))
        report, overlay_path = client.predict(gradio_client.handle_file(str(phone_photo)), api_name="/analyze")
        fake_openai.clear()
        answer = client.predict(CHAT_TEXT, "25-34", "Oily", PROFILE_TEXT, "", api_name="/chat")
        requests = fake_openai.chat_requests
    finally:
        exit_status = app.stop()
    examples = {hashlib.sha256(p.read_bytes()).hexdigest() for p in example_photos}
    left = [p for p in files_under(gradio_temp) if hashlib.sha256(p.read_bytes()).hexdigest() not in examples]
    return Session(report, Path(overlay_path), answer, requests, app.full_log(), exit_status, left)


def test_a_phone_photo_s_exif_does_not_reach_the_overlay_or_the_report(session):
    report, overlay_path = session.report, session.overlay_path
    data = overlay_path.read_bytes()
    with Image.open(overlay_path) as overlay:
        assert overlay.format == "PNG" and list(overlay.size) == report["image_size"]
        assert not overlay.getexif() and "exif" not in overlay.info
        assert not getattr(overlay, "text", {}), overlay.text  # no PNG text chunks either
    for marker in (b"Exif", b"ExamplePhone", b"Model X", b"2026:01:02", PHOTO_OWNER.encode()):
        assert marker not in data
    assert MARK not in json.dumps(report)  # the report never names the upload


def test_the_chat_profile_reaches_the_model(session):
    assert "Keep your routine gentle." in json.dumps(session.chat_answer)
    assert len(session.chat_requests) == 1
    request = session.chat_requests[0]
    # The profile and the question really went through the app (so the log checks below mean something).
    assert PROFILE_TEXT in request.messages[0]["content"] and request.messages[-1]["content"] == CHAT_TEXT
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


def test_nothing_personal_in_the_debug_log(session, phone_photo):
    log = session.log
    assert " DEBUG " in log, "the app should log at DEBUG in this test"
    # The chat request went out while every logger was at DEBUG (the client logs its requests there).
    assert "DEBUG openai._base_client" in log
    # MARK is in the upload's name, its EXIF owner tag (Pillow logs EXIF values at DEBUG), the chat
    # question, the profile and the key.
    for secret in (API_KEY, API_KEY[-12:], UPLOAD_NAME, MARK, PROFILE_TEXT, CHAT_TEXT, "ExamplePhone"):
        assert secret not in log, f"{secret!r} was logged"
    photo = phone_photo.read_bytes()
    for offset in range(3000, len(photo) - 48, len(photo) // 7 // 3 * 3):
        piece = photo[offset:offset + 48]
        for form in (piece.hex(), base64.b64encode(piece).decode(), repr(piece)[2:40], piece.decode("latin-1")):
            assert form not in log, f"photo bytes were logged ({form[:20]}...)"


def test_nothing_left_in_the_temp_folder_after_shutdown(session):
    assert session.exit_status is not None
    assert not session.leftovers, f"files left in the temp folder after shutdown: {session.leftovers}"
