"""The web app: Analyze, Skincare chat and About tabs, and the `/analyze` API endpoint.

    demo = build_demo(analyzer, assistant, settings)   # models are loaded by the caller, once
    demo.launch(**launch_kwargs(settings))

The UI never touches tensors: it calls Analyzer.run() and shows the Report and numpy images.
Privacy: uploaded photos and the images made from them live in Gradio's temp folder only as long as
the session needs them (deleted on the next analysis, when the page closes, or after
Settings.cache_ttl at the latest); API uploads are deleted as soon as they are read.
"""
from __future__ import annotations

import base64
import concurrent.futures
import functools
import hashlib
import html
import json
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image

from acne.config import PROJECT_DIR, Settings
from acne.imaging import InvalidImageError, to_png_bytes
from acne.report import DISCLAIMER, Report
from acne.severity import CLASSES, HAYASHI_BANDS
from acne.upload_guard import GUARD, REFUSED_MESSAGE, UploadGuard

if TYPE_CHECKING:
    from acne.analysis import Analysis, Analyzer
    from acne.chat import Assistant

log = logging.getLogger(__name__)

IMAGES_DIR = PROJECT_DIR / "images"
EXAMPLES_DIR = IMAGES_DIR / "examples"
BACKGROUND = IMAGES_DIR / "background.jpg"
RESULTS_SUBDIR = "acne-results"   # our own images, inside Gradio's temp folder
DISPLAY_SIDE = 1600               # long side of the images shown in the page (the API gets full size)
CHAT_CONCURRENCY = 8              # chat answers wait on the network, not the CPU
QUEUE_MAX_SIZE = 64
AGE_RANGES = ["under 18", "18-24", "25-34", "35-44", "45-54", "55+"]
SKIN_TYPES = ["Oily", "Dry", "Combination", "Normal", "Sensitive"]
NOT_GIVEN = ("Not given", "")
HUB_MODEL_NOTES = {
    "imfarzanansari/skintelligent-acne": (
        "ViT-B/16 fine-tuned on acne photos, labels `level -1` (clear) ... `level 3` (severe). Its trainer "
        "state reports one epoch of a planned three and an eval precision of 0.756 on about 490 images; "
        "the training data set and an accuracy figure are not published."),
}


class UserFacingError(Exception):
    """A plain-English message for the person using the app."""


# --------------------------------------------------------------------------- photo input

def photo_input(guard: UploadGuard = GUARD, **kwargs: Any) -> gr.Image:
    """A gr.Image that hands the handler the uploaded file's path without decoding it.

    Gradio's own preprocessing opens the file with PIL first, so a broken or hostile file would fail
    there with a bare exception; our handler decodes it with acne.imaging instead, which explains
    every refusal in plain English. The path must be one this server's upload route created
    (`guard`, see acne/upload_guard.py): Gradio may have copied any other file into its cache.
    (Not a subclass: Gradio writes a .pyi stub next to the module of every Component subclass when
    it is defined.)
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

def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


class SessionFiles:
    """Our images for each browser session, in Gradio's temp folder (so Gradio may serve them).

    A session's files go when it analyses the next photo, when its page closes (unload) and, at the
    latest, after `ttl` seconds (also swept by Gradio's delete_cache). Uploads are deleted the same
    way; the example photos (Gradio's cached copies, needed for the next click) never are.
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
        return Path(get_upload_folder())

    @property
    def base(self) -> Path:
        return self.upload_root / RESULTS_SUBDIR

    @property
    def root(self) -> Path:
        return self.base / self.instance

    def new_dir(self, session: str | None) -> Path:
        """A fresh folder for one result: <root>/<session key>/<random>."""
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
        return hashlib.sha256(data).hexdigest() in self.keep_digests

    def commit(self, session: str | None, upload: str | Path, data: bytes, result: Path) -> bool:
        """A new result is shown: delete the session's older files and keep this upload until the next
        photo or the end of the session. If the page closed during the analysis, delete it all now."""
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
        """Delete one upload now (unless it is an example photo)."""
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
        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 - housekeeping must never stop
                    log.exception("temp file sweep failed")

        threading.Thread(target=loop, name="temp-file-sweeper", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def _session_key(session: str | None) -> str:
    return hashlib.sha256((session or "anonymous").encode()).hexdigest()[:24]


def _remove_upload(path: Path, upload_root: Path) -> None:
    if not _inside(path, upload_root):
        return  # only ever delete inside Gradio's temp folder
    try:
        path.unlink(missing_ok=True)
        path.parent.rmdir()  # Gradio keeps each upload in its own folder; drop it when empty
    except OSError:
        pass


def _file_digests(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.jpg"))}


def _save_display_jpeg(folder: Path, name: str, rgb: np.ndarray) -> str:
    """A JPEG for the page: at most DISPLAY_SIDE on the long side, no EXIF or other metadata."""
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if max(image.size) > DISPLAY_SIDE:
        image.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.LANCZOS)
    path = folder / f"{name}.jpg"
    image.save(path, "JPEG", quality=90)  # PIL writes EXIF only when given one
    return str(path)


def _save_png(folder: Path, name: str, rgb: np.ndarray) -> str:
    path = folder / f"{name}.png"
    path.write_bytes(to_png_bytes(rgb))  # no metadata
    return str(path)


# --------------------------------------------------------------------------- text for the page

def _pct(p: float) -> str:
    return f"{p:.0%}"


REGION_WORDS = {"face": "the face found in the photo", "skin": "the patch of skin found in the photo",
                "whole": "the whole photo (a close-up)"}


def summary_markdown(report: Report) -> str:
    if not report.assessed:
        return ("### Not assessed\nNo face or skin was found in this photo, so **no acne grade is given**. "
                "Please add a well-lit colour photo of the face, or of the affected skin.")
    band = _band_text(report.count_grade)
    combined = report.severity_source == "grader+count"
    region = (report.region or {}).get("found_by", "whole")
    lines = [
        f"### {report.severity} acne (confidence {_pct(report.confidence)})",
        f"- **Grader's own level:** `level {report.grader.level}` (model: `{_short_name(report.grader.model)}`)",
        f"- **Lesions found:** {report.lesion_count} → count-based grade **{report.count_grade}** ({band})",
        f"- **Analysed:** {REGION_WORDS.get(region, region)}"
        + (" (outlined in blue)" if region in ("face", "skin") else ""),
    ]
    if report.assessment == "unreliable":
        lines.insert(0, "**⚠️ Unreliable:** the face is too small in this photo for spots to be seen "
                        "(see the warning below). Retake it closer before trusting this grade.\n")
    if combined:
        lines.append("- **Severity** weighs the grader's scores and the lesion count together "
                     "(a combination fitted on ACNE04 training photos).")
    if not report.grades_agree:
        lines.append(
            f"\n**Note:** the estimates disagree. The {'combined estimate' if combined else 'grader'} says "
            f"**{report.severity}**, the lesion count alone suggests **{report.count_grade}**. Treat the result "
            "as uncertain: lighting, angle and how much of the face is in the photo affect both.")
    return "\n".join(lines)


def _band_text(grade: str) -> str:
    lower = 0
    for upper, name in HAYASHI_BANDS:
        if name == grade:
            return f"{lower}–{upper} lesions; Hayashi bands are for a half-face photo"
        lower = upper + 1
    return f"more than {HAYASHI_BANDS[-1][0]} lesions; Hayashi bands are for a half-face photo"


def quality_markdown(report: Report) -> str:
    if not report.quality_warnings:
        return ""
    items = "\n".join(f"- {html.escape(w)}" for w in report.quality_warnings)
    if not report.assessed:
        return f"**⚠️ No grade for this photo.**\n{items}"
    return f"**⚠️ Photo quality:** the result may be less reliable.\n{items}"


def recommendations_markdown(report: Report) -> str:
    if not report.recommendations:
        return ""
    items = "\n".join(f"- {r}" for r in report.recommendations)
    return f"### What you can do ({report.severity})\n{items}"


def chat_context_markdown(report: Report | None) -> str:
    if report is None:
        return ("No photo analysed yet: the assistant answers general skincare questions. Analyse a photo in "
                "the **Analyze** tab and it will know your result.")
    if not report.assessed:
        return ("Your latest photo could not be assessed (no face or skin found), so the assistant answers "
                "general skincare questions. Try a closer, well-lit photo of the skin in the **Analyze** tab.")
    return (f"The assistant knows your latest analysis: **{report.severity}** "
            f"(confidence {_pct(report.confidence)}), {report.lesion_count} lesions found "
            f"(count-based grade {report.count_grade}).")


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes >= 2:
        return f"{minutes} minutes"
    return f"{int(seconds)} seconds"


def _short_name(name: str) -> str:
    path = Path(name)
    if path.is_absolute() or name.startswith((".", "~")):
        try:
            return str(path.resolve().relative_to(PROJECT_DIR))
        except ValueError:
            return path.name or name
    return name


def _model_folder(name: str) -> Path | None:
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _metric_rows(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            rows += _metric_rows(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}")
    elif isinstance(data, float):
        rows.append((prefix, f"{data:.3f}"))
    elif isinstance(data, (int, str, bool)):
        rows.append((prefix, str(data)))
    return rows


def model_figures(name: str) -> str:
    """The measured figures that ship with a model: inference.json / metrics.json, and its model card."""
    folder = _model_folder(name)
    if folder is None:
        return HUB_MODEL_NOTES.get(name, "Loaded from the Hugging Face Hub; see its model card there.")
    parts: list[str] = []
    for filename in ("inference.json", "metrics.json"):
        data = _read_json(folder / filename)
        rows: list[tuple[str, str]] = []
        for key, value in data.items():
            if "metric" in key.lower() and isinstance(value, dict):
                rows += _metric_rows(value)
            elif key.lower() in ("trained_steps", "epochs", "data", "dataset", "split"):
                rows += _metric_rows({key: value})
        if rows:
            table = "\n".join(f"| {html.escape(k)} | {html.escape(v)} |" for k, v in rows[:40])
            parts.append(f"Figures from `{filename}`:\n\n| measure | value |\n|---|---|\n{table}")
    card = folder / "README.md"
    if card.is_file():
        text = card.read_text(errors="replace")
        if text.startswith("---"):  # YAML front matter of a Hub model card
            text = text.split("---", 2)[-1]
        parts.append(f"<details><summary>Model card (README.md)</summary>\n\n{text.strip()}\n\n</details>")
    return "\n\n".join(parts) or "No measured figures were shipped with these weights."


def _combination_note(analyzer: "Analyzer") -> str:
    if getattr(analyzer, "combiner", None) is None:
        return ""
    return ("\n**Severity** weighs the grader's class scores and the segmenter's lesion count together: a "
            "small logistic regression fitted on ACNE04 training photos (`scripts/fit_combination.py`), "
            "shipped because it beat both the grader alone and the count alone on the valid photos.\n")


def about_markdown(analyzer: "Analyzer", assistant: "Assistant", settings: Settings) -> str:
    segmenter = getattr(analyzer.segmenter, "name", "?")
    grader = getattr(analyzer.grader, "name", "?")
    seg_size = getattr(analyzer.segmenter, "input_size", None)
    return f"""
## Models in use

**Lesion segmenter:** `{_short_name(segmenter)}` — a U-Net with a ResNet34 encoder
(segmentation-models-pytorch) that marks lesion pixels; connected regions are counted as lesions.
{f"It sees the photo at {seg_size} px on the long side." if seg_size else ""}

{model_figures(segmenter)}

**Severity grader:** `{_short_name(grader)}` — an image classifier whose levels map onto
Clear / Mild / Moderate / Severe.

{model_figures(grader)}
{_combination_note(analyzer)}
**Skincare chat:** {html.escape(assistant.name)}.

## Data

Example photos and our own weights come from **ACNE04** (Wu et al., *Joint Acne Image Grading and
Counting via Label Distribution Learning*, ICCV 2019; free for academic use) with lesion boxes from
the Roboflow export *Acne04 Detection v5* (CC BY 4.0). Weights trained on it inherit these terms:
research and educational use, with attribution. Lesion masks were derived from boxes (ellipses),
so mask figures measure agreement with ellipses, not with traced lesion outlines.

## Limits

- Not a medical device and not a diagnosis. It cannot tell acne from rosacea, eczema, infections or
  other conditions that look similar.
- Trained and checked on one data set of close clinical photos (ACNE04: mostly half-face views of
  East Asian patients). Other angles, lighting, make-up, filters, skin tones and full-face selfies
  are less reliable.
- The lesion count is only as good as the segmenter; touching lesions may be counted as one.
- The chat assistant can be wrong; it does not see your photo, only the numbers above.

## Privacy

Photos are analysed in memory. Uploaded files and the images made from them are deleted when you
analyse the next photo or close the page, and after {_duration(settings.cache_ttl)} at the latest.
Nothing is logged about your photo, and the optional profile in the chat is used for that answer only.
"""


# --------------------------------------------------------------------------- look

CSS = """
body { background: #f4f6f5 url("__BACKGROUND__") center top / cover no-repeat !important; min-height: 100vh; }
gradio-app { background: transparent !important; }
.gradio-container { background: transparent !important; max-width: 1180px !important; margin: 0 auto; }
#app-header { padding: 22px 26px; margin-bottom: 6px; border-radius: 18px;
  background: linear-gradient(120deg, rgba(15,118,110,0.92), rgba(45,140,150,0.88));
  color: #fff; box-shadow: 0 6px 24px rgba(15,80,80,0.15); }
#app-header h1 { margin: 0; font-size: 1.7rem; font-weight: 700; letter-spacing: 0.01em; color: #fff; }
#app-header p { margin: 6px 0 0; opacity: 0.92; font-size: 0.98rem; color: #fff; }
#app-header .badge { display: inline-block; margin-top: 10px; padding: 3px 10px; border-radius: 999px;
  background: rgba(255,255,255,0.2); color: #fff; font-size: 0.82rem; }
.panel { background: rgba(255,255,255,0.78) !important; border-radius: 16px !important; }
#disclaimer { font-size: 0.9rem; opacity: 0.85; }
#quality:not(:empty) { border-left: 4px solid #d97706; padding-left: 10px; }
/* Nothing wider than the screen: long words and URLs (cited sources) wrap, in answers and everywhere. */
.gradio-container .prose, .gradio-container .message, .gradio-container .md, #chatbot .message-content {
  overflow-wrap: anywhere; word-break: break-word; }
.gradio-container pre, .gradio-container code { white-space: pre-wrap; overflow-wrap: anywhere; }
.gradio-container img { max-width: 100%; }
/* The chat says once, above the conversation, who answers. */
#chat-model, #chat-context { font-size: 0.92rem; }
#chat-model p, #chat-context p { margin: 0; }
#chatbot .placeholder-content { padding: 0 18px; opacity: 0.85; }
/* Narrow side margins on a phone: 6 px at 360 px wide, Gradio's 32 px from 640 px. (Not in the @media
   block below: Gradio scopes the rules there to .contain, and the page's padding is outside it.) */
.gradio-container .main.app { padding-left: clamp(6px, calc(100vw - 608px), 32px) !important;
  padding-right: clamp(6px, calc(100vw - 608px), 32px) !important; }
@media (max-width: 640px) {
  #app-header { padding: 12px 14px; margin-bottom: 2px; border-radius: 14px; }
  #app-header h1 { font-size: 1.3rem; }
  #app-header p { font-size: 0.88rem; margin-top: 4px; }
  #app-header .badge { margin-top: 6px; font-size: 0.75rem; }
  /* All three tabs fit on a 360 px screen (Gradio hides the ones that do not behind a "..." menu). */
  .tab-wrapper button[role="tab"], .tab-wrapper .tab-container button { padding: 6px 9px !important; font-size: 0.95rem; }
  #photo { height: 260px !important; }
  #chatbot { height: min(460px, 52vh) !important; }
}
"""

# After an analysis, bring the result (overlay and severity) into view when it is not: on a phone it
# is below the photo and the examples. Waits for the overlay images, whose size moves the severity.
SCROLL_TO_RESULT_JS = """
async () => {
  const summary = document.querySelector('#summary');
  if (!summary || !summary.innerText.trim()) return;
  for (let i = 0; i < 40; i++) {
    const imgs = [...document.querySelectorAll('#overlay img')];
    if (imgs.length && imgs.every(img => img.complete)) break;
    await new Promise(r => setTimeout(r, 75));
  }
  const top = document.querySelector('#result-col') || document.querySelector('#overlay');
  const severity = document.querySelector('#severity');
  if (!top || !severity) return;
  const s = severity.getBoundingClientRect(), o = top.getBoundingClientRect();
  if (s.top >= 0 && s.bottom <= window.innerHeight && o.top >= 0) return;
  let y = window.scrollY + o.top - 8;
  const severityBottom = window.scrollY + s.bottom + 8;
  if (severityBottom - y > window.innerHeight) y = severityBottom - window.innerHeight;
  window.scrollTo({top: Math.max(0, y), behavior: 'smooth'});
}
"""

# On opening the chat tab, the message box is on the screen (with the conversation above it if it fits).
SCROLL_TO_CHAT_JS = """
async () => {
  let box = null;
  for (let i = 0; i < 40 && !box; i++) {
    box = document.querySelector('#chat-input');
    if (!box || !box.getBoundingClientRect().height) { box = null; await new Promise(r => setTimeout(r, 50)); }
  }
  if (!box) return;
  const b = box.getBoundingClientRect();
  if (b.top >= 0 && b.bottom <= window.innerHeight) return;
  const first = document.querySelector('#chat-model') || box;
  const top = window.scrollY + first.getBoundingClientRect().top - 8, bottom = window.scrollY + b.bottom + 8;
  window.scrollTo({top: bottom - top <= window.innerHeight ? top : bottom - window.innerHeight, behavior: 'instant'});
}
"""

# Gradio clears the chat box's placeholder while it answers and never puts it back: keep it.
KEEP_PLACEHOLDER_JS = """
() => {
  const keep = () => document.querySelectorAll('#chat-input textarea').forEach(t => {
    if (!t.dataset.placeholder && t.placeholder) t.dataset.placeholder = t.placeholder;
    if (t.dataset.placeholder && !t.placeholder) t.placeholder = t.dataset.placeholder;
  });
  new MutationObserver(keep).observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['placeholder']});
  keep();
}
"""

CHAT_PLACEHOLDER = ("**Ask about your result, a product or your routine.** For example: *What does my result "
                    "mean?* · *Can I use benzoyl peroxide and adapalene together?* · *How long until I see "
                    "results?*")

HEADER_HTML = """
<div id="app-header">
  <h1>Acne Detection AI</h1>
  <p>Upload a close, well-lit photo of the skin: the app marks acne lesions, estimates the severity
  and suggests what to do next. Then ask the skincare assistant.</p>
  <span class="badge">Educational tool · not a medical diagnosis</span>
</div>
"""


def _background_css() -> str:
    # Inlined as a data URL: no file route to configure, and it works behind a Space's proxy path.
    if BACKGROUND.is_file() and BACKGROUND.stat().st_size < 200_000:
        data = base64.b64encode(BACKGROUND.read_bytes()).decode()
        return CSS.replace("__BACKGROUND__", f"data:image/jpeg;base64,{data}")
    return CSS.replace('url("__BACKGROUND__")', "")


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="teal", secondary_hue="rose", neutral_hue="slate")


def launch_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for demo.launch() (in Gradio 6 the theme and CSS go here)."""
    return {
        "theme": theme(),
        "css": _background_css(),
        "max_file_size": f"{int(settings.max_upload_mb)}mb",
        "show_error": False,       # unexpected errors show a generic message, never a traceback
        "footer_links": ["api"],
        # Refuses file references the upload route did not create, before Gradio reads them.
        "app_kwargs": {"middleware": [GUARD.middleware()]},
        # ACNE_MCP=1: an MCP server at /gradio_api/mcp/, tool analyze_photo (acne/mcp_tool.py; gradio[mcp])
        "mcp_server": bool(settings.mcp),
    }


# --------------------------------------------------------------------------- the app

class WebApp:
    """The handlers behind the page; build_demo() wires them to components."""

    def __init__(self, analyzer: "Analyzer", assistant: "Assistant", settings: Settings) -> None:
        self.analyzer = analyzer
        self.assistant = assistant
        self.settings = settings
        self.time_limit = float(settings.time_limit)
        self.files = SessionFiles(ttl=settings.cache_ttl, keep_digests=_file_digests(EXAMPLES_DIR))
        # The analysis runs in this pool so that a per-request time limit can be enforced.
        self._pool = self._new_pool()
        self._pool_lock = threading.Lock()

    # ---------------------------------------------------------------- analysis
    def _read_upload(self, path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            raise UserFacingError("The photo is no longer on the server (photos are deleted after each "
                                  "analysis for privacy). Please add it again.") from None
        except OSError:
            raise UserFacingError("The photo could not be read. Please upload it again.") from None

    def _analyse(self, data: bytes) -> "Analysis":
        future = self._pool.submit(self.analyzer.run, data)
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
        """Photo added in the page -> every output of the Analyze tab (and the chat's context)."""
        session = getattr(request, "session_hash", None)
        if photo is None:  # photo cleared
            self.files.clear(session)
            return self._empty_outputs()
        data: bytes | None = None
        try:
            progress(0.05, desc="Reading the photo")
            data = self._read_upload(photo)
            progress(0.2, desc="Finding lesions and grading severity")
            analysis = self._analyse(data)
            progress(0.85, desc="Drawing the overlay")
            folder = self.files.new_dir(session)
            raw = _save_display_jpeg(folder, "photo", analysis.image)
            overlay = _save_display_jpeg(folder, "overlay", analysis.overlay())
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
        views = {"photo": raw, "overlay": overlay}
        return (
            self._slider(views, show_raw),
            report.severity_scores or None,
            summary_markdown(report),
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
        if views and not all(Path(p).exists() for p in views.values()):
            raise gr.Error("This result has expired. Please add the photo again.", print_exception=False)
        return self._slider(views, show_raw)

    @staticmethod
    def _empty_outputs() -> tuple:
        return (None, None, "", gr.update(value="", visible=False), "", None, None, None,
                chat_context_markdown(None), None)

    def explain_ui(self, views: dict | None, request: gr.Request) -> str:
        """Heat map of where the grader looked, drawn on the photo shown in the page."""
        if not views:
            raise gr.Error("Analyse a photo first.", print_exception=False)
        photo = Path(views["photo"])
        if not photo.exists():
            raise gr.Error("This result has expired. Please add the photo again.", print_exception=False)
        try:
            rgb = np.asarray(Image.open(photo).convert("RGB"))
            future = self._pool.submit(self.analyzer.explain, rgb)
            heat = future.result(timeout=self.time_limit)
            image = _heat_overlay(rgb, heat)
        except concurrent.futures.TimeoutError:
            self._give_up(future)
            raise gr.Error("This took too long; the server may be busy. Please try again.",
                           print_exception=False) from None
        except Exception:  # noqa: BLE001
            log.exception("explain failed")
            raise gr.Error("The heat map could not be made for this photo.", print_exception=False) from None
        return _save_display_jpeg(photo.parent, "heatmap", image)

    def analyze_api(self, photo: str | None, request: gr.Request) -> tuple[dict, str]:
        """The `/analyze` endpoint: report JSON + the full-size overlay PNG. The upload is deleted at once."""
        if photo is None:
            raise gr.Error("No photo was sent. Pass an image file, e.g. handle_file('photo.jpg').",
                           print_exception=False)
        data: bytes | None = None
        try:
            data = self._read_upload(photo)
            return self.analyze_bytes(data)
        except UserFacingError as exc:
            raise gr.Error(html.escape(str(exc)), title="Cannot analyse this photo", print_exception=False) from None
        finally:
            self.files.delete_upload(photo, data)

    def analyze_bytes(self, data: bytes) -> tuple[dict, str]:
        """Analyse a photo's bytes: the report JSON and the path of the full-size overlay PNG (API, MCP).
        Raises gr.Error with a plain message when the photo cannot be analysed."""
        try:
            analysis = self._analyse(data)
            overlay = _save_png(self.files.new_dir("api"), "overlay", analysis.overlay())
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
        self.files.close(getattr(request, "session_hash", None))


def _examples_open(photo: str | None) -> gr.Accordion:
    """The example photos stay open until a photo is in, then fold away below it."""
    return gr.Accordion(open=photo is None)


def _heat_overlay(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    import cv2

    heat = np.clip(np.nan_to_num(heat.astype(np.float32)), 0, 1)
    if heat.shape[:2] != rgb.shape[:2]:
        heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1 - alpha, colour, alpha, 0)


def build_demo(analyzer: "Analyzer", assistant: "Assistant | None" = None,
               settings: Settings | None = None) -> gr.Blocks:
    """The whole web app, queued. Models are loaded by the caller (once) and passed in."""
    settings = settings or Settings.from_env()
    if assistant is None:
        from acne.chat import load_assistant

        assistant = load_assistant(settings)
    from acne.ui_progress import ProgressUI

    app = WebApp(analyzer, assistant, settings)
    ttl = max(1, int(settings.cache_ttl))
    examples = [str(p) for p in sorted(EXAMPLES_DIR.glob("*.jpg"))]

    with gr.Blocks(title="Acne Detection AI", delete_cache=(max(1, min(ttl, 300)), ttl)) as demo:
        gr.HTML(HEADER_HTML)
        report_state = gr.State(None)   # latest Report of this session, for the chat
        views_state = gr.State(None)    # paths of the images shown, for the raw-photo toggle
        progress = ProgressUI(app)      # My progress (history kept in the browser) and Whole face

        with gr.Tabs() as tabs:
            with gr.Tab("Analyze", id="analyze"):
                # Photo | overlay | severity side by side on a desktop; stacked on a phone, where the page
                # scrolls to the result once it is in (SCROLL_TO_RESULT_JS) and the examples fold away.
                with gr.Row(equal_height=False, elem_id="analyze-row"):
                    with gr.Column(scale=1, min_width=280, elem_classes="panel", elem_id="input-col"):
                        photo = photo_input(label="Your photo", sources=["upload", "webcam"], height=320,
                                            elem_id="photo")
                        gr.Markdown("The analysis starts as soon as a photo is added. Photos are deleted "
                                    "from the server when you add the next one or close the page.",
                                    elem_id="photo-hint")
                        examples_box = gr.Accordion("Example photos", open=True, elem_id="examples",
                                                    visible=bool(examples))
                        with examples_box:
                            if examples:
                                example_block = gr.Examples(examples, inputs=[photo], label="ACNE04 validation photos",
                                                            examples_per_page=8)
                                GUARD.trust_examples(example_block)  # the page may send their cached copies
                    with gr.Column(scale=2, min_width=300, elem_classes="panel", elem_id="result-col"):
                        overlay = gr.ImageSlider(label="Photo ◀ ▶ lesion overlay", elem_id="overlay",
                                                 max_height=520, interactive=False)
                        show_raw = gr.Checkbox(label="Show the photo without the overlay", value=False,
                                               elem_id="show-raw")
                        gr.Markdown("<span style='color:#ff0050'>■</span> tinted and outlined: the lesion "
                                    "areas the segmenter found. Drag the slider to compare with the photo.",
                                    elem_id="legend")
                    with gr.Column(scale=1, min_width=280, elem_classes="panel", elem_id="severity-col"):
                        severity = gr.Label(label="Severity (all four classes)", num_top_classes=len(CLASSES),
                                            elem_id="severity")
                        summary = gr.Markdown(elem_id="summary")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=300, elem_classes="panel"):
                        quality = gr.Markdown(visible=False, elem_id="quality")
                        advice = gr.Markdown(elem_id="recommendations")
                with gr.Accordion("Where did the grader look?", open=False):
                    explain_button = gr.Button("Show a heat map of what the severity grader used",
                                               size="sm")
                    heatmap = gr.Image(label="Grader heat map", interactive=False, elem_id="heatmap",
                                       buttons=["fullscreen"])
                with gr.Accordion("Full report (JSON)", open=False):
                    report_json = gr.JSON(label="Report", elem_id="report-json")
                progress.save_panel(report_state, views_state)
                progress.views_section()   # the "several views" mode: a whole-face summary
                gr.Markdown(f"ℹ️ {DISCLAIMER}", elem_id="disclaimer")

            with gr.Tab("Skincare chat", id="chat") as chat_tab:
                # Who answers is said here, once (the chatbot has no floating label to cover messages).
                gr.Markdown(f"Answers come from: **{html.escape(assistant.name)}**", elem_id="chat-model")
                chat_context = gr.Markdown(chat_context_markdown(None), elem_id="chat-context")
                progress.chat_note()
                age = gr.Dropdown([NOT_GIVEN, *AGE_RANGES], label="Age range", value="", render=False)
                skin = gr.Dropdown([NOT_GIVEN, *SKIN_TYPES], label="Skin type", value="", render=False)
                treatments = gr.Textbox("", label="Current treatments", placeholder="e.g. adapalene 0.1% at night",
                                        max_length=settings.profile_max_chars, render=False)
                sensitivities = gr.Textbox("", label="Sensitivities or allergies", placeholder="e.g. fragrance",
                                           max_length=settings.profile_max_chars, render=False)
                gr.ChatInterface(
                    app.chat,
                    chatbot=gr.Chatbot(label="Skincare assistant", show_label=False, elem_id="chatbot",
                                       height=460, feedback_options=None, placeholder=CHAT_PLACEHOLDER),
                    textbox=gr.Textbox(placeholder="Ask about your result or your skincare routine…",
                                       elem_id="chat-input", submit_btn=True,
                                       max_length=settings.chat_max_chars),
                    additional_inputs=[report_state, age, skin, treatments, sensitivities, progress.trend_state],
                    additional_inputs_accordion=gr.Accordion(
                        "About you (optional; used for this chat only, never stored)", open=False, render=False),
                    api_name="chat",
                    concurrency_limit=CHAT_CONCURRENCY,
                    save_history=False,
                    flagging_mode="never",
                    fill_height=False,
                )
                gr.Markdown(f"ℹ️ {DISCLAIMER}")

            # After the chat: on a phone-width screen the tabs that do not fit go under "⋯".
            with gr.Tab("My progress", id="progress"):
                progress.progress_tab()

            with gr.Tab("About", id="about"):
                gr.Markdown(about_markdown(analyzer, assistant, settings), elem_id="about")

        # The page's analysis (not an API endpoint: /analyze below is the API).
        photo.change(
            app.analyze_ui, inputs=[photo, show_raw],
            outputs=[overlay, severity, summary, quality, advice, report_json, views_state, report_state,
                     chat_context, heatmap],
            api_visibility="private", show_progress_on=[overlay],
        )
        show_raw.change(app.toggle_view, inputs=[show_raw, views_state], outputs=[overlay],
                        api_visibility="private", queue=False)
        explain_button.click(app.explain_ui, inputs=[views_state], outputs=[heatmap], api_visibility="private")
        # Layout: the result comes into view (in the browser), the examples fold away once a photo is in.
        summary.change(None, js=SCROLL_TO_RESULT_JS, api_visibility="private", queue=False)
        photo.change(_examples_open, inputs=[photo], outputs=[examples_box], api_visibility="private", queue=False)
        chat_tab.select(None, js=SCROLL_TO_CHAT_JS, api_visibility="private", queue=False)
        demo.load(None, js=KEEP_PLACEHOLDER_JS, api_visibility="private", queue=False)

        # The public API: gradio_client.Client(url).predict(handle_file(path), api_name="/analyze").
        with gr.Group(visible=False):
            api_photo = photo_input(label="photo")
            api_report = gr.JSON(label="report")
            api_overlay = gr.Image(label="overlay", type="filepath", format="png")
            api_button = gr.Button("analyze")
        api_button.click(app.analyze_api, inputs=[api_photo], outputs=[api_report, api_overlay],
                         api_name="analyze",
                         api_description="Analyse one photo: returns the report (JSON) and the lesion overlay (PNG).")
        progress.api()   # /analyze_views: several views of one face -> the whole-face summary
        progress.wire(demo, tabs)
        if settings.mcp:  # ACNE_MCP=1: the analysis as an MCP tool (acne/mcp_tool.py)
            from acne.mcp_tool import add_mcp_tool

            add_mcp_tool(app)

        demo.unload(app.on_unload)

    demo.queue(default_concurrency_limit=max(1, settings.concurrency), max_size=QUEUE_MAX_SIZE)
    app.files.start_sweeper(every=max(1, min(ttl, 300)))
    demo.acne_app = app  # for tests and tools
    return demo
