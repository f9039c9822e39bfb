"""The handlers behind the page and the API: analyse a photo within the time limit, keep or delete its
files, answer in the chat. build_app() (acne/web/layout.py) wires them to components.

The handlers never touch tensors: they call Analyzer.run() and show the Report and numpy images.
"""
from __future__ import annotations

import concurrent.futures
import html
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import gradio as gr
import numpy as np

from acne.config import PROJECT_DIR, Settings
from acne.imaging import InvalidImageError
from acne.report import Report
from acne.web.photos import SessionFiles, display_size, file_digests, heat_overlay, save_display_jpeg, save_png
from acne.web.text import chat_context_markdown, quality_markdown, recommendations_markdown, summary_markdown

if TYPE_CHECKING:
    from acne.analysis import Analysis, Analyzer
    from acne.chat import Assistant

log = logging.getLogger(__name__)

EXAMPLES_DIR = PROJECT_DIR / "images" / "examples"


class UserFacingError(Exception):
    """A plain-English message for the person using the app."""


class WebApp:
    """The handlers of one web app.

    Args:
        analyzer: the loaded Analyzer (None only for a chat-only app in tests).
        assistant: the chat Assistant.
        settings: time limit, concurrency, caps and time to live of the temp files.
    """

    def __init__(self, analyzer: "Analyzer | None", assistant: "Assistant", settings: Settings) -> None:
        self.analyzer = analyzer
        self.assistant = assistant
        self.settings = settings
        self.time_limit = float(settings.time_limit)
        # Names, sizes and figures of the loaded models, for the About tab and the summary.
        self.models = analyzer.describe() if analyzer is not None else None
        self.files = SessionFiles(ttl=settings.cache_ttl, keep_digests=file_digests(EXAMPLES_DIR))
        # The analysis runs in this pool so that a per-request time limit can be enforced.
        self._pool = self._new_pool()
        self._pool_lock = threading.Lock()

    # ---------------------------------------------------------------- analysis
    def read_upload(self, path: str) -> bytes:
        """The bytes of an uploaded file. Raises UserFacingError when it is gone or unreadable."""
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            raise UserFacingError("The photo is no longer on the server (photos are deleted after each "
                                  "analysis for privacy). Please add it again.") from None
        except OSError:
            raise UserFacingError("The photo could not be read. Please upload it again.") from None

    def analyse(self, data: bytes) -> "Analysis":
        """Analyse a photo's bytes within the time limit. Raises UserFacingError with a plain message."""
        return self._within_limit(self.analyzer.run, data)

    def _analyse_with_heatmap(self, data: bytes) -> tuple["Analysis", np.ndarray | None]:
        # The heat map is made from the very array that was analysed, in the same request: the photo
        # is not kept (or decoded again) for a later click.
        def run() -> tuple["Analysis", np.ndarray | None]:
            analysis = self.analyzer.run(data)
            if not analysis.report.assessed:
                return analysis, None
            try:
                return analysis, analysis.heatmap()
            except Exception:  # noqa: BLE001 - the result stands without its heat map
                log.exception("heat map failed")
                return analysis, None

        return self._within_limit(run)

    def _within_limit(self, fn: Callable, *args: Any) -> Any:
        future = self._pool.submit(fn, *args)
        try:
            return future.result(timeout=self.time_limit)
        except concurrent.futures.TimeoutError:
            self._give_up(future)
            raise UserFacingError(f"The analysis took longer than {self.time_limit:.0f} seconds, so it was "
                                  "stopped. The server may be busy: please try again in a minute.") from None
        except InvalidImageError as exc:
            raise UserFacingError(str(exc)) from None
        except MemoryError:
            raise UserFacingError("The photo is too large to analyse on this server. "
                                  "Please resize it (for example to 2000 pixels wide) and try again.") from None

    def _give_up(self, future: concurrent.futures.Future) -> None:
        """After the time limit: a call still waiting is cancelled. One already running cannot be stopped
        (Python cannot kill a thread), so it finishes in the background on its own thread, and later
        requests get fresh threads instead of waiting behind it."""
        if future.cancel():
            return
        log.warning("an analysis passed the time limit and still runs; new requests use new threads")
        with self._pool_lock:
            old, self._pool = self._pool, self._new_pool()
        old.shutdown(wait=False)

    def _new_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.settings.concurrency),
                                                     thread_name_prefix="analysis")

    def analyze_ui(self, photo: str | None, show_raw: bool, request: gr.Request,
                   progress: gr.Progress = gr.Progress()) -> tuple:
        """Photo added in the page -> every output of the Analyze tab (and the chat's context).

        Returns:
            overlay slider, severity scores, summary, quality, advice, report JSON, the shown images
            ({"photo", "overlay"[, "heatmap"]} paths), the Report, the chat's context, the heat map (None).
        """
        session = getattr(request, "session_hash", None)
        if photo is None:  # photo cleared
            self.files.clear(session)
            return self._empty_outputs()
        data: bytes | None = None
        try:
            progress(0.05, desc="Reading the photo")
            data = self.read_upload(photo)
            progress(0.2, desc="Finding lesions and grading severity")
            analysis, heat = self._analyse_with_heatmap(data)
            progress(0.85, desc="Drawing the overlay")
            folder = self.files.new_dir(session)
            shown = display_size(analysis.image)
            views = {"photo": save_display_jpeg(folder, "photo", shown),
                     "overlay": save_display_jpeg(folder, "overlay", analysis.overlay())}
            if heat is not None:
                views["heatmap"] = save_display_jpeg(folder, "heatmap", heat_overlay(shown, heat))
        except UserFacingError as exc:
            if data is not None:
                self.files.delete_upload(photo, data)  # a refused upload is not kept at all
            raise gr.Error(html.escape(str(exc)), title="Cannot analyse this photo", print_exception=False) from None
        except Exception:  # noqa: BLE001 - never a traceback in the page; the log gets it (no photo data)
            log.exception("analysis failed")
            self.files.delete_upload(photo, data)
            raise gr.Error("Something went wrong while analysing this photo. Please try another photo.",
                           print_exception=False) from None
        # The previous result of this session is no longer shown: delete it now.
        self.files.commit(session, photo, data, result=folder)
        self.files.sweep()
        report = analysis.report
        grader_name = self.models["grader"]["short_name"] if self.models else None
        return (
            self._slider(views, show_raw),
            report.severity_scores or None,
            summary_markdown(report, grader_name),
            gr.update(value=quality_markdown(report), visible=bool(report.quality_warnings)),
            recommendations_markdown(report),
            report.to_dict(),
            views,
            report,
            chat_context_markdown(report),
            None,  # the old "where the grader looked" image no longer applies
        )

    @staticmethod
    def _slider(views: dict | None, show_raw: bool):
        if not views:
            return None
        if show_raw:
            return (views["photo"], views["photo"])
        return (views["photo"], views["overlay"])

    def toggle_view(self, show_raw: bool, views: dict | None):
        """The "show the photo without the overlay" box: the slider's pair of images."""
        if views and not all(Path(p).exists() for p in views.values()):
            raise gr.Error("This result has expired. Please add the photo again.", print_exception=False)
        return self._slider(views, show_raw)

    @staticmethod
    def _empty_outputs() -> tuple:
        return (None, None, "", gr.update(value="", visible=False), "", None, None, None,
                chat_context_markdown(None), None)

    def explain_ui(self, views: dict | None) -> str:
        """Where the grader looked: the heat map made with the analysis. Returns its path."""
        if not views:
            raise gr.Error("Analyse a photo first.", print_exception=False)
        path = views.get("heatmap")
        if path is None:
            raise gr.Error("There is no heat map for this photo (it was not graded, or the map could not be "
                           "made).", print_exception=False)
        if not Path(path).exists():
            raise gr.Error("This result has expired. Please add the photo again.", print_exception=False)
        return path

    def analyze_api(self, photo: str | None, request: gr.Request) -> tuple[dict, str]:
        """The `/analyze` endpoint: report JSON + the full-size overlay PNG. The upload is deleted at once."""
        if photo is None:
            raise gr.Error("No photo was sent. Pass an image file, e.g. handle_file('photo.jpg').",
                           print_exception=False)
        data: bytes | None = None
        try:
            data = self.read_upload(photo)
            return self.analyze_bytes(data)
        except UserFacingError as exc:
            raise gr.Error(html.escape(str(exc)), title="Cannot analyse this photo", print_exception=False) from None
        finally:
            self.files.delete_upload(photo, data)

    def analyze_bytes(self, data: bytes) -> tuple[dict, str]:
        """Analyse a photo's bytes (API, MCP).

        Returns:
            The report JSON and the path of the full-size overlay PNG.
        Raises:
            gr.Error with a plain message when the photo cannot be analysed.
        """
        try:
            analysis = self.analyse(data)
            overlay = save_png(self.files.new_dir("api"), "overlay", analysis.overlay())
        except UserFacingError as exc:
            raise gr.Error(html.escape(str(exc)), title="Cannot analyse this photo", print_exception=False) from None
        except Exception:  # noqa: BLE001
            log.exception("API analysis failed")
            raise gr.Error("Something went wrong while analysing this photo. Please try another photo.",
                           print_exception=False) from None
        finally:
            self.files.sweep()
        return analysis.report.to_dict(), overlay

    # ---------------------------------------------------------------- chat
    def chat(self, message: Any, history: list[dict], report: Report | None, age_range: str | None,
             skin_type: str | None, treatments: str | None, sensitivities: str | None,
             progress: str | None = None) -> Iterator[str]:
        """The chat (page and /chat): the answer so far, streamed, cut at the time limit.

        Args:
            message: the visitor's message; history: the conversation so far (messages format);
            report: the latest Report of this session or None; age_range ... sensitivities: the
            optional profile; progress: the trend sentence of the visitor's saved history.
        """
        from acne.chat import Profile, input_too_long

        fields = {"age_range": age_range, "skin_type": skin_type, "treatments": treatments,
                  "sensitivities": sensitivities}
        refusal = input_too_long(message, fields, max_message_chars=self.settings.chat_max_chars,
                                 max_field_chars=self.settings.profile_max_chars)
        if refusal:  # before anything reads the text: a huge message costs nothing
            raise gr.Error(html.escape(refusal), title="Message too long", print_exception=False)
        profile = Profile(age_range=age_range or None, skin_type=skin_type or None,
                          treatments=(treatments or "").strip() or None,
                          sensitivities=(sensitivities or "").strip() or None,
                          progress=progress or None)  # the trend of the visitor's saved history
        if not any(vars(profile).values()):
            profile = None
        deadline = time.monotonic() + self.time_limit
        text = ""
        try:
            for text in self.assistant.stream(message, history or [], report, profile):
                yield text
                if time.monotonic() > deadline:
                    yield text + f"\n\n_(The answer was cut off after {self.time_limit:.0f} seconds.)_"
                    return
        except Exception:  # noqa: BLE001 - stream() should not raise; if it does, say so plainly
            log.exception("chat failed")
            yield (text + "\n\n" if text else "") + ("⚠️ The assistant could not answer just now. "
                                                      "Please try again in a moment.")

    # ---------------------------------------------------------------- session end
    def on_unload(self, request: gr.Request) -> None:
        """The page has closed: delete the session's files."""
        self.files.close(getattr(request, "session_hash", None))

    def close(self) -> None:
        """At shutdown: stop the sweeper and delete this process's temp files."""
        self.files.stop()
        self.files.remove_all()
