"""Only files that arrived through this server's upload route may be read (issue 20).

Gradio's API takes a file *reference* as well as file bytes: a request body may name
`{"path": "<server path or URL>", "meta": {"_type": "gradio.FileData"}}`, and Gradio then copies that
file (or downloads that URL) into its cache before any app code runs. Gradio means to allow only its
own upload folder there (`processing_utils._check_allowed(..., check_in_upload_folder=True)`), but
that check returns early whenever the Blocks has not been `launch()`ed, e.g. under
`gr.mount_gradio_app` (see SECURITY.md), and http(s) URLs skip it on purpose and are downloaded
(from public hosts).

So the app defends itself in two places, with one answer for every refused reference:

1. `UploadGuardMiddleware`, an ASGI middleware on the Gradio server, reads each request body before
   Gradio does and refuses the request (HTTP 422, REFUSED_MESSAGE) when any file reference in it, at
   any depth, is not a file this server's upload route handed out (or a cached example photo):
   a path elsewhere, a missing one, one with `..`, or a URL the server would fetch. It also records
   the paths the upload route returns, which is what "uploaded here" means.
2. `UploadGuard.was_uploaded()`, called by the photo input (acne.web.photos.photo_input) on the path Gradio
   hands it, so a file Gradio copied into its cache from elsewhere is still refused.

A reference's `url` is not what the server reads: Gradio reads `path` and overwrites `url` before
any component sees it (so a `data:` URL in a reference is never decoded either). The browser's
webcam sends its capture through the upload route, like any other photo.
"""
from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import PurePosixPath
from typing import Any, Callable, Iterable, Iterator

from gradio.utils import get_upload_folder

# The one answer for every refused file reference: the same whether the file exists, is not an
# image or is missing, and never the path, an errno or an exception's text (no existence oracle).
REFUSED_MESSAGE = ("Only photos uploaded to this app can be analysed. Please upload the photo file itself "
                   "(from Python: handle_file('photo.jpg')).")
REFUSED_STATUS = 422  # what Gradio uses for a failed validation: gradio_client shows the message
UPLOAD_ROUTE = "/gradio_api/upload"
REMEMBERED_UPLOADS = 100_000  # the newest uploads' paths: some tens of MB at most


class UploadGuard:
    """Remembers which files this server's upload route created and judges file references.

    One per process: Gradio has one upload folder per process (GRADIO_TEMP_DIR), read when needed.
    """

    def __init__(self, upload_folder: Callable[[], str] = get_upload_folder,
                 remember: int = REMEMBERED_UPLOADS) -> None:
        self._upload_folder = upload_folder
        self._remember = remember
        self._uploaded: OrderedDict[str, None] = OrderedDict()
        self._trusted: set[str] = set()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- what is allowed
    def record_uploads(self, paths: Iterable[Any]) -> None:
        """Paths the upload route returned: files a client sent to this server."""
        with self._lock:
            for path in paths:
                if isinstance(path, str) and self.inside_upload_folder(path):
                    key = _real(path)
                    self._uploaded[key] = None
                    self._uploaded.move_to_end(key)
            while len(self._uploaded) > self._remember:
                self._uploaded.popitem(last=False)

    def trust(self, paths: Iterable[str]) -> None:
        """Files the app itself put in the upload folder for clients to send back (example photos)."""
        with self._lock:
            self._trusted.update(_real(p) for p in paths if self.inside_upload_folder(p))

    def trust_examples(self, examples: Any) -> None:
        """The cached copies of a gr.Examples' files (what the page sends when an example is clicked)."""
        samples = getattr(getattr(examples, "dataset", None), "samples", None) or []
        self.trust(ref["path"] for row in samples for ref in row if _is_file_reference(ref))

    def inside_upload_folder(self, path: str) -> bool:
        """True for a plain path (no URL, no `..`) that resolves to inside Gradio's upload folder."""
        if not isinstance(path, str) or not path or "\x00" in path or _is_url(path):
            return False
        if ".." in PurePosixPath(path.replace("\\", "/")).parts:
            return False  # never legitimate: the upload route hands out normalised absolute paths
        folder = _real(str(self._upload_folder()))
        real = _real(path)
        return real != folder and os.path.commonpath([real, folder]) == folder

    def was_uploaded(self, path: str) -> bool:
        """True if the upload route created this file (or it is a trusted example photo)."""
        if not self.inside_upload_folder(path):
            return False
        key = _real(path)
        with self._lock:
            return key in self._uploaded or key in self._trusted

    def allows(self, reference: dict) -> bool:
        """May the server act on this FileData-like reference? Only on a file uploaded here."""
        return self.was_uploaded(reference.get("path"))

    def refuses(self, payload: Any) -> bool:
        """True if any file reference anywhere in a decoded JSON body is not allowed."""
        return any(not self.allows(ref) for ref in file_references(payload))

    # ---------------------------------------------------------------- wiring
    def middleware(self) -> Any:
        """A starlette Middleware entry for FastAPI(middleware=[...]), e.g. launch(app_kwargs=...)."""
        from starlette.middleware import Middleware

        return Middleware(UploadGuardMiddleware, guard=self)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _is_url(text: str) -> bool:
    # Gradio downloads http(s) references; no other scheme is a local file either.
    return "://" in text or text.lower().startswith(("data:", "file:"))


def _is_file_reference(value: Any) -> bool:
    # Gradio's own test (gradio_client.utils.is_file_obj): any dict with a string "path", meta or not.
    return isinstance(value, dict) and isinstance(value.get("path"), str)


def file_references(payload: Any) -> Iterator[dict]:
    """Every FileData-like dict in a decoded JSON body, at any depth (no recursion: no depth limit)."""
    stack = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if "path" in value and not _is_file_reference(value):
                yield {"path": None}  # a "path" that is not a string: never a valid reference
            elif "path" in value:
                yield value
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


# --------------------------------------------------------------------------- the ASGI middleware

class UploadGuardMiddleware:
    """Refuses requests that name a file the upload route did not create; records uploads.

    Runs before Gradio's routes, so a refused reference is never opened, copied or fetched.
    Bodies that are not JSON are passed on untouched (Gradio cannot parse them either), except
    multipart bodies, which only the upload route accepts.
    """

    def __init__(self, app: Any, guard: UploadGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/").endswith(UPLOAD_ROUTE):
            await self._upload(scope, receive, send)
            return
        content_type = _header(scope, b"content-type").lower()
        if content_type.startswith("multipart/"):
            await _refuse(send)  # files enter through the upload route only
            return
        body, messages = await _read_body(receive)
        try:
            payload = json.loads(body) if body.strip() else None
        except (ValueError, RecursionError):
            payload = None  # not JSON: Gradio's own parser refuses it the same way
        if payload is not None and self.guard.refuses(payload):
            await _refuse(send)
            return
        await self.app(scope, _replay(messages, receive), send)

    async def _upload(self, scope: dict, receive: Callable, send: Callable) -> None:
        # Ask for an uncompressed answer (a short JSON list) so its paths can be read, and hold it
        # back until they are recorded: the client may name them in its very next request.
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
        held: list[dict] = []

        async def send_after_recording(message: dict) -> None:
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                start = next((m for m in held if m["type"] == "http.response.start"), None)
                if start is not None and start["status"] == 200:
                    body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
                    try:
                        paths = json.loads(body)
                    except ValueError:
                        paths = []
                    if isinstance(paths, list):
                        self.guard.record_uploads(paths)
                for held_message in held:
                    await send(held_message)
                held.clear()

        await self.app({**scope, "headers": headers}, receive, send_after_recording)


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


async def _read_body(receive: Callable) -> tuple[bytes, list[dict]]:
    messages, chunks = [], []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # the client went away
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def _replay(messages: list[dict], receive: Callable) -> Callable:
    pending = list(messages)

    async def replayed() -> dict:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _refuse(send: Callable) -> None:
    # Gradio's own shape for a failed validation: gradio_client raises ValidationError with the
    # message, the page shows it, and plain HTTP callers find it under "error".
    body = json.dumps({
        "detail": [{"__type__": "validate", "is_valid": False, "parameter_name": "photo",
                    "message": REFUSED_MESSAGE}],
        "error": REFUSED_MESSAGE,
    }).encode()
    await send({"type": "http.response.start", "status": REFUSED_STATUS,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# The process's guard: Gradio keeps one upload folder per process.
GUARD = UploadGuard()

__all__ = ["GUARD", "REFUSED_MESSAGE", "UploadGuard", "UploadGuardMiddleware", "file_references"]
