"""Only files that arrived through the upload route may be read (issue 20): acne/upload_guard.py.

The rules of UploadGuard on their own, then the real app mounted the other way Gradio offers,
`gr.mount_gradio_app` under uvicorn (in this process, with the tiny models): there Gradio's own
check is skipped, so the photo input's check is what refuses, and the middleware, added to the
parent app as SECURITY.md says, refuses before Gradio copies anything. The app as `python app.py`
starts it is tested in test_api_client.py (API) and test_ui_browser.py (page).
"""
from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from acne.upload_guard import GUARD, REFUSED_MESSAGE, UploadGuard, file_references
from app_process import api_call, api_upload, endpoint_index, file_reference, free_port, tree_snapshot


@pytest.fixture
def upload_folder(tmp_path) -> Path:
    folder = tmp_path / "gradio"
    folder.mkdir()
    return folder


@pytest.fixture
def guard(upload_folder) -> UploadGuard:
    return UploadGuard(upload_folder=lambda: str(upload_folder))


def uploaded_file(folder: Path, name: str = "face.jpg") -> Path:
    """A file where Gradio's upload route puts one: its own sub-folder of the upload folder."""
    path = folder / "4f2a9c" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff photo bytes")
    return path


# --------------------------------------------------------------------------- the rules

def test_only_paths_the_upload_route_returned_are_allowed(guard, upload_folder, tmp_path):
    upload = uploaded_file(upload_folder)
    not_uploaded = uploaded_file(upload_folder, "someone-else.jpg")  # same folder, never returned by /upload
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"photo")
    guard.record_uploads([str(upload)])
    assert guard.was_uploaded(str(upload))
    for refused in (str(not_uploaded), str(outside), "/etc/passwd", str(upload_folder / "missing.jpg"),
                    str(upload_folder), ""):
        assert not guard.was_uploaded(refused), refused


def test_dot_dot_urls_and_odd_values_are_never_an_upload(guard, upload_folder, tmp_path):
    upload = uploaded_file(upload_folder)
    guard.record_uploads([str(upload)])
    link = upload_folder / "link.jpg"
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    os.symlink(tmp_path / "secret.jpg", link)
    guard.record_uploads([str(link)])  # even if it were returned: it resolves outside the folder
    refused = [
        f"{upload_folder}/4f2a9c/../4f2a9c/face.jpg",      # resolves to the upload itself, but names ".."
        f"{upload_folder}/../secret.jpg",                  # the upload folder's parent
        str(link),
        f"file://{upload}", f"http://127.0.0.1:9/{upload}", f"https://example.org{upload}",
        "data:image/png;base64,iVBORw0KGgo=",
        f"{upload}\x00.jpg", None, 42, ["list"],
    ]
    for value in refused:
        assert not guard.was_uploaded(value), value
        assert not guard.allows({"path": value})


def test_a_data_url_reference_is_judged_by_its_path(guard, upload_folder):
    # Gradio reads `path` and overwrites `url` before any component sees it: `url` buys nothing.
    data_url = "data:image/jpeg;base64,/9j/4AAQ"
    assert not guard.allows({"path": "/etc/passwd", "url": data_url})
    assert not guard.allows({"path": str(upload_folder / "placeholder.jpg"), "url": data_url})
    upload = uploaded_file(upload_folder)
    guard.record_uploads([str(upload)])
    assert guard.allows({"path": str(upload), "url": data_url})


def test_references_are_found_at_any_depth(guard, upload_folder):
    upload = str(uploaded_file(upload_folder))
    guard.record_uploads([upload])
    good = file_reference(upload)
    assert not guard.refuses({"data": [good, "text", None, 3], "fn_index": 2, "session_hash": "x"})
    assert not guard.refuses({"data": ["no files here"], "event_data": None})
    bad = file_reference("/etc/passwd")
    for payload in ({"data": [bad]}, {"data": [[{"value": [good, bad]}]]}, {"event_data": {"x": bad}},
                    [good, {"deep": {"deeper": [bad]}}], {"data": [{"path": ["/etc/passwd"]}]},
                    {"data": [{"path": "/etc/passwd"}]}):  # without "meta": Gradio's older form
        assert guard.refuses(payload), payload
    nested: object = bad
    for _ in range(5000):  # deeper than Python's recursion limit
        nested = {"a": [nested]}
    assert len(list(file_references(nested))) == 1 and guard.refuses(nested)


def test_the_oldest_uploads_are_forgotten_beyond_the_limit(upload_folder):
    guard = UploadGuard(upload_folder=lambda: str(upload_folder), remember=2)
    paths = [str(uploaded_file(upload_folder, f"{i}.jpg")) for i in range(3)]
    guard.record_uploads(paths)
    assert [guard.was_uploaded(p) for p in paths] == [False, True, True]


# --------------------------------------------------------------------------- mounted with uvicorn

class MountedApp:
    """build_app().demo mounted on a FastAPI app with gr.mount_gradio_app, served by uvicorn in a thread."""

    def __init__(self, demo: gr.Blocks, *, middleware: bool, prefix: str) -> None:
        import uvicorn
        from fastapi import FastAPI

        parent = FastAPI(middleware=[GUARD.middleware()] if middleware else [])
        self.app = gr.mount_gradio_app(parent, demo, path=prefix, show_error=False)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{prefix.rstrip('/')}/"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "MountedApp":
        import httpx

        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "config", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the mounted app did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def mounted_demo(tiny_analyzer, tiny_settings, upload_folder, monkeypatch):
    from acne.chat import load_assistant
    from acne.web import build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload_folder))
    web = build_app(tiny_analyzer, load_assistant(tiny_settings), tiny_settings)
    yield web.demo
    web.close()


@pytest.fixture
def outside_photo(example_photo, tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "face.jpg"
    path.parent.mkdir()
    buf = io.BytesIO()
    Image.open(example_photo).convert("RGB").rotate(90, expand=True).save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue())
    return path


def refusal(outcome: dict) -> str | None:
    """The error message of a finished queue call (None if it succeeded)."""
    return None if outcome.get("success") else outcome["output"].get("error")


def test_mounted_without_the_middleware_the_photo_input_still_refuses(mounted_demo, upload_folder, outside_photo,
                                                                      tmp_path):
    # Here Gradio skips its own check (the Blocks never "launched"): it copies whatever path it is
    # given into its cache and hands the copy to the photo input, which must refuse it.
    with MountedApp(mounted_demo, middleware=False, prefix="/") as app:
        fn = endpoint_index(app.url, "analyze")
        results = upload_folder / "acne-results"
        for path in (str(outside_photo), "/etc/passwd", str(tmp_path / "missing.jpg")):
            status, outcome = api_call(app.url, "queue/join", [file_reference(path)], fn_index=fn)
            assert status == 200 and refusal(outcome) == REFUSED_MESSAGE, (path, outcome)
        assert not results.exists() or not any(results.rglob("*.png")), "no analysis may have run"
        # Without the middleware nothing records what the upload route created: a real upload is
        # refused too (fails closed). SECURITY.md says to add the middleware when mounting.
        uploaded = api_upload(app.url, outside_photo)
        status, outcome = api_call(app.url, "queue/join", [file_reference(uploaded)], fn_index=fn)
        assert refusal(outcome) == REFUSED_MESSAGE


def test_mounted_with_the_middleware_nothing_is_copied_and_uploads_work(mounted_demo, upload_folder, outside_photo,
                                                                        tmp_path):
    with MountedApp(mounted_demo, middleware=True, prefix="/acne") as app:
        fn = endpoint_index(app.url, "analyze")
        before = tree_snapshot(upload_folder)
        for path in (str(outside_photo), "/etc/passwd", str(tmp_path / "missing.jpg"),
                     f"{upload_folder}/../elsewhere/face.jpg"):
            status, body = api_call(app.url, "queue/join", [file_reference(path)], fn_index=fn)
            assert status == 422 and body["error"] == REFUSED_MESSAGE, (path, body)
        assert tree_snapshot(upload_folder) - before == set(), "a refused reference left something in the cache"

        uploaded = api_upload(app.url, outside_photo)  # /acne/gradio_api/upload: recorded under the prefix too
        status, outcome = api_call(app.url, "queue/join", [file_reference(uploaded)], fn_index=fn)
        assert status == 200 and outcome["success"], outcome
        report = outcome["output"]["data"][0]
        assert report["image_size"] == list(Image.open(outside_photo).size)
        json.dumps(report)
