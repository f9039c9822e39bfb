"""Photos in and images out of the web app: the photo input, the session's temp files, display images.

Privacy: uploaded photos and the images made from them live in Gradio's temp folder only as long as
the session needs them (deleted on the next analysis, when the page closes, or after
Settings.cache_ttl at the latest); API uploads are deleted as soon as they are read.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image

from acne.imaging import to_png_bytes
from acne.upload_guard import GUARD, REFUSED_MESSAGE, UploadGuard

log = logging.getLogger(__name__)

RESULTS_SUBDIR = "acne-results"   # our own images, inside Gradio's temp folder
DISPLAY_SIDE = 1600               # long side of the images shown in the page (the API gets full size)


# --------------------------------------------------------------------------- photo input

def photo_input(guard: UploadGuard = GUARD, **kwargs: Any) -> gr.Image:
    """A gr.Image that hands the handler the uploaded file's path without decoding it.

    Gradio's own preprocessing opens the file with PIL first, so a broken or hostile file would fail
    there with a bare exception; our handler decodes it with acne.imaging instead, which explains
    every refusal in plain English. The path must be one this server's upload route created
    (`guard`, see acne/upload_guard.py): Gradio may have copied any other file into its cache.
    (Not a subclass: Gradio writes a .pyi stub next to the module of every Component subclass when
    it is defined.)

    Args:
        guard: the upload guard that knows which paths the upload route created.
        **kwargs: passed on to gr.Image (label, sources, height, elem_id, ...).
    Returns:
        The gr.Image component, created in the current Blocks context.
    """
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    image.preprocess = functools.partial(_photo_path, guard=guard)
    return image


def _photo_path(payload: Any, guard: UploadGuard) -> str | None:
    # (No data: URL branch: Gradio replaces a reference's `url` with its own file URL before this
    # runs, so the bytes always come from `path`. The webcam uploads its capture like a file.)
    if payload is None:
        return None
    if not payload.path:
        raise gr.Error("No photo was received. Please upload it again.", print_exception=False)
    if not guard.was_uploaded(str(payload.path)):
        # The same words as the server's middleware, whatever the file is or whether it exists.
        raise gr.Error(REFUSED_MESSAGE, title="Cannot analyse this photo", print_exception=False)
    return str(payload.path)


# --------------------------------------------------------------------------- temp files

class SessionFiles:
    """Our images for each browser session, in Gradio's temp folder (so Gradio may serve them).

    A session's files go when it analyses the next photo, when its page closes (unload) and, at the
    latest, after `ttl` seconds (also swept by Gradio's delete_cache). Uploads are deleted the same
    way; the example photos (Gradio's cached copies, needed for the next click) never are.

    Args:
        ttl: seconds a result folder may live at most.
        keep_digests: SHA-256 digests of files never to delete (the example photos).
    """

    def __init__(self, ttl: float, keep_digests: set[str] | None = None) -> None:
        self.ttl = ttl
        self.keep_digests = keep_digests or set()
        self._uploads: dict[str, set[Path]] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()  # sessions whose page has gone
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.instance = uuid.uuid4().hex[:12]  # our own subfolder: several app processes may share the temp folder

    @property
    def upload_root(self) -> Path:
        """Gradio's temp folder (GRADIO_TEMP_DIR), where uploads land."""
        return Path(get_upload_folder())

    @property
    def base(self) -> Path:
        """Our results folder inside it, shared by every app process."""
        return self.upload_root / RESULTS_SUBDIR

    @property
    def root(self) -> Path:
        """This process's results folder: <base>/<instance>/<session key>/<result>."""
        return self.base / self.instance

    def new_dir(self, session: str | None) -> Path:
        """A fresh folder for one result: <root>/<session key>/<random>. Returns its path."""
        folder = self.root / _session_key(session) / uuid.uuid4().hex
        for attempt in range(3):  # the sweeper may remove an empty parent at the same moment
            try:
                folder.mkdir(parents=True, exist_ok=True)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        return folder

    def is_example(self, data: bytes) -> bool:
        """Are these bytes one of the example photos?"""
        return hashlib.sha256(data).hexdigest() in self.keep_digests

    def commit(self, session: str | None, upload: str | Path, data: bytes, result: Path) -> bool:
        """A new result is shown: delete the session's older files and keep this upload until the next
        photo or the end of the session. If the page closed during the analysis, delete it all now.

        Returns:
            False when the page had closed (everything was deleted), else True.
        """
        key = _session_key(session)
        with self._lock:
            closed = key in self._closed
            if not closed and not self.is_example(data):
                self._uploads.setdefault(key, set()).add(Path(upload))
        if closed:
            self.delete_upload(upload, data)
            self.clear(session)
            return False
        self.clear(session, keep=result, keep_upload=Path(upload))
        return True

    def close(self, session: str | None) -> None:
        """The page has gone (unload): delete everything of the session, now and if it finishes later."""
        with self._lock:
            self._closed[_session_key(session)] = None
            while len(self._closed) > 100_000:
                self._closed.popitem(last=False)
        self.clear(session)

    def delete_upload(self, path: str | Path, data: bytes | None) -> None:
        """Delete one upload now (unless `data` shows it is an example photo)."""
        if data is not None and self.is_example(data):
            return
        _remove_upload(Path(path), self.upload_root)

    def clear(self, session: str | None, keep: Path | None = None, keep_upload: Path | None = None) -> None:
        """Delete a session's uploads and result folders (except `keep`, the newest result, and its upload)."""
        key = _session_key(session)
        with self._lock:
            uploads = self._uploads.pop(key, set())
            if keep_upload is not None and keep_upload in uploads:
                uploads.discard(keep_upload)
                self._uploads[key] = {keep_upload}
        for path in uploads:
            _remove_upload(path, self.upload_root)
        session_dir = self.root / key
        if session_dir.is_dir():
            for folder in session_dir.iterdir():
                if keep is None or folder.resolve() != keep.resolve():
                    shutil.rmtree(folder, ignore_errors=True)
            if keep is None:
                shutil.rmtree(session_dir, ignore_errors=True)

    def sweep(self) -> None:
        """Delete result folders older than the time to live: sessions that never closed cleanly, API
        results, and leftovers of earlier app processes."""
        cutoff = time.time() - self.ttl
        for folder in self.base.glob("*/*/*"):
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                pass
        for empty in [*self.base.glob("*/*"), *self.base.glob("*"), self.base]:
            try:
                empty.rmdir()  # only when empty
            except OSError:
                pass

    def remove_all(self) -> None:
        """At shutdown: this process's results and the uploads it still tracks."""
        with self._lock:
            uploads = [p for paths in self._uploads.values() for p in paths]
            self._uploads.clear()
        for path in uploads:
            _remove_upload(path, self.upload_root)
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            self.base.rmdir()
        except OSError:
            pass

    def start_sweeper(self, every: float) -> None:
        """Sweep every `every` seconds in a daemon thread, until stop()."""
        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 - housekeeping must never stop
                    log.exception("temp file sweep failed")

        threading.Thread(target=loop, name="temp-file-sweeper", daemon=True).start()

    def stop(self) -> None:
        """Stop the sweeper thread."""
        self._stop.set()


def _session_key(session: str | None) -> str:
    return hashlib.sha256((session or "anonymous").encode()).hexdigest()[:24]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _remove_upload(path: Path, upload_root: Path) -> None:
    if not _inside(path, upload_root):
        return  # only ever delete inside Gradio's temp folder
    try:
        path.unlink(missing_ok=True)
        path.parent.rmdir()  # Gradio keeps each upload in its own folder; drop it when empty
    except OSError:
        pass


def file_digests(folder: Path) -> set[str]:
    """SHA-256 digests of the JPEGs in `folder` (the example photos, which are never deleted)."""
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.jpg"))}


# --------------------------------------------------------------------------- images for the page

def display_size(rgb: np.ndarray) -> np.ndarray:
    """The image at most DISPLAY_SIDE on its long side (as it is when smaller)."""
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if max(image.size) <= DISPLAY_SIDE:
        return rgb
    image.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(image)


def save_display_jpeg(folder: Path, name: str, rgb: np.ndarray) -> str:
    """Save a JPEG for the page: at most DISPLAY_SIDE on the long side, no EXIF or other metadata.

    Args:
        folder: where to write it; name: the file name without ".jpg"; rgb: HxWx3 uint8.
    Returns:
        The file's path.
    """
    path = folder / f"{name}.jpg"
    Image.fromarray(np.ascontiguousarray(display_size(rgb))).save(path, "JPEG", quality=90)  # no EXIF given
    return str(path)


def save_png(folder: Path, name: str, rgb: np.ndarray) -> str:
    """Save a full-size PNG without metadata (the API's overlay). Returns the file's path."""
    path = folder / f"{name}.png"
    path.write_bytes(to_png_bytes(rgb))
    return str(path)


def heat_overlay(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The photo with a heat map blended in (jet colours).

    Args:
        rgb: HxWx3 uint8 photo; heat: a float map in 0..1, of any size (resized onto the photo).
    Returns:
        HxWx3 uint8.
    """
    import cv2

    heat = np.clip(np.nan_to_num(heat.astype(np.float32)), 0, 1)
    if heat.shape[:2] != rgb.shape[:2]:
        heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1 - alpha, colour, alpha, 0)
