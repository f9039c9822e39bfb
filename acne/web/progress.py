"""The page's "My progress" tab and "Whole face" section, wired into build_app() (acne/web/layout.py).

    progress = ProgressUI(app)               # inside gr.Blocks(): creates the browser-side history
    progress.save_panel(report_state, views_state)   # in the Analyze tab
    progress.views_section()                 # in the Analyze tab: several views -> a whole-face summary
    with gr.Tab(...): progress.progress_tab()
    progress.chat_note()                     # in the chat tab: what the chat knows of the trend
    progress.api()                           # the /analyze_views endpoint
    progress.wire(demo, tabs)                # last: the events that need every component

Privacy: the history lives only in the visitor's browser (gr.BrowserState = localStorage). The server
sees it only while a handler runs (to validate it and draw the page), never writes it to disk and
never logs it; the thumbnail is a data URL inside the record, shown through HTML, not as a file.
Export builds the JSON file in the browser; import reads the file in the browser and sends its text.
The logic (records, validation, trend words) is in acne.history and acne.views; the words in
acne.web.text.
"""
from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr

from acne import history, views
from acne.history import HistoryError
from acne.report import DISCLAIMER
from acne.web.handlers import UserFacingError
from acne.web.photos import photo_input, save_display_jpeg
from acne.web.style import EXPORT_JS, IMPORT_JS, TODAY_JS
from acne.web.text import (PROGRESS_INTRO, VIEWS_INTRO, chat_note_markdown, compare_html, history_list_html, ok,
                           trend_markdown, views_markdown, warn)

if TYPE_CHECKING:
    from acne.web.handlers import WebApp

log = logging.getLogger(__name__)

# gr.BrowserState encrypts the stored value with a key that is sent to the page anyway, so it hides the
# history from casual reading of localStorage, nothing more. Gradio's default is a random key per
# server start, which would make the history unreadable after every restart: ours are fixed.
STORAGE_KEY = "acne-detection-ai.history.v1"
STORAGE_SECRET = "acne-detection-ai.history.v1.key"


class ProgressUI:
    """Components and handlers of My progress and Whole face; see the module docstring."""

    def __init__(self, app: "WebApp") -> None:
        self.app = app
        self.state = gr.BrowserState(history.empty(), storage_key=STORAGE_KEY, secret=STORAGE_SECRET)
        self.trend_state = gr.State(None)   # the trend sentence, for the chat (built from checked numbers only)
        self._date_boxes: list[gr.Textbox] = []
        self._chat_note: gr.Markdown | None = None
        self._open_buttons: list[gr.Button] = []   # buttons that switch to the My progress tab

    # ---------------------------------------------------------------- shared bits
    def _date_box(self, elem_id: str) -> gr.Textbox:
        box = gr.Textbox(label="Date of the photo", info="Year-month-day; change it for an older photo.",
                         placeholder="YYYY-MM-DD", max_length=10, elem_id=elem_id, min_width=150, scale=1)
        self._date_boxes.append(box)
        return box

    @staticmethod
    def _note_box(elem_id: str) -> gr.Textbox:
        return gr.Textbox(label="Note (optional)", placeholder="e.g. week 4 of adapalene",
                          max_length=history.MAX_NOTE_CHARS, elem_id=elem_id, min_width=200, scale=2)

    def _save_group(self, prefix: str, intro: str, picture_label: str, variant: str) -> tuple:
        """A "Save to my history" group (elem_ids `<prefix>save-...`): its date and note boxes, picture
        checkbox, save button and status line; its "See my progress" button opens that tab."""
        with gr.Group(elem_id=f"{prefix}save-panel"):
            gr.Markdown(intro, elem_id=f"{prefix}save-intro", padding=True)
            with gr.Row(equal_height=False):
                date = self._date_box(f"{prefix}save-date")
                note = self._note_box(f"{prefix}save-note")
            picture = gr.Checkbox(label=picture_label, value=False, elem_id=f"{prefix}save-picture")
            with gr.Row():
                button = gr.Button("Save to my history", variant=variant, elem_id=f"{prefix}save-history",
                                   min_width=160)
                self._open_buttons.append(gr.Button("See my progress", elem_id=f"{prefix}open-progress",
                                                    min_width=160))
            status = gr.Markdown(elem_id=f"{prefix}save-status", padding=True)
        return date, note, picture, button, status

    # ---------------------------------------------------------------- Analyze tab: save
    def save_panel(self, report_state: gr.State, views_state: gr.State) -> None:
        """The Analyze tab's "Save to my history" panel, saving the Report in `report_state`."""
        date, note, picture, button, status = self._save_group(
            "", "### Save to my history\nKeep this result to see over the weeks whether your acne is getting "
            "better (**My progress** tab). It is stored only in this browser, never on our server.",
            "Also keep a small picture of the lesion overlay (in this browser only)", "primary")
        button.click(self.save_photo, inputs=[report_state, views_state, self.state, date, note, picture],
                     outputs=[self.state, status], api_visibility="private", concurrency_limit=None,
                     show_progress="minimal")

    def save_photo(self, report: Any, shown: dict | None, state: Any, date: str, note: str, picture: bool):
        """"Save to my history" of the Analyze tab. Returns the new history and a status line."""
        if report is None:
            return gr.skip(), warn("Analyse a photo first (add one above), then save the result.")
        return self._save(state, lambda thumbnail: history.build_record(report, date=date, note=note,
                                                                         thumbnail=thumbnail),
                          (shown or {}).get("overlay"), picture)

    def _save(self, state: Any, build: Callable[[str | None], dict], picture_of: str | None, picture: bool):
        """Add the record that `build(thumbnail)` makes; the thumbnail is drawn from `picture_of` when asked."""
        thumbnail, extra = self._thumbnail(picture_of) if picture else (None, "")
        try:
            state, message = history.add_entry(state, build(thumbnail))
        except HistoryError as exc:
            return gr.skip(), warn(str(exc))
        return state, ok(f"{message}{extra} See **My progress**.")

    @staticmethod
    def _thumbnail(path: str | None) -> tuple[str | None, str]:
        if path and Path(path).is_file():
            try:
                return history.make_thumbnail(path), ""
            except Exception:  # noqa: BLE001 - the record is saved without a picture
                log.warning("thumbnail failed")
        return None, " The picture could not be kept (the result has expired), so it was saved without it."

    # ---------------------------------------------------------------- Whole face (several views)
    def views_section(self) -> None:
        """An accordion of the Analyze tab: up to three photos of one face -> a whole-face summary."""
        with gr.Accordion("Whole face: grade up to three photos (left side, front, right side) together",
                          open=False, elem_id="views-section"):
            self._views_body()

    def _views_body(self) -> None:
        gr.Markdown(VIEWS_INTRO, elem_id="views-intro")
        with gr.Row(equal_height=False):
            inputs = [photo_input(label=f"{views.view_title(name).capitalize()}", sources=["upload", "webcam"],
                                  height=240, elem_id=f"view-{name}", min_width=200)
                      for name in views.VIEW_NAMES]
        button = gr.Button("Analyse the whole face", variant="primary", elem_id="views-analyse")
        summary_md = gr.Markdown(elem_id="views-summary")
        gallery = gr.Gallery(label="Lesion overlay of each view", elem_id="views-gallery", columns=3,
                             height="auto", object_fit="contain", interactive=False, visible=False)
        with gr.Accordion("Whole-face summary (JSON)", open=False):
            summary_json = gr.JSON(label="Summary", elem_id="views-json")
        summary_state = gr.State(None)   # {"summary": …, "overlays": {view: path}} of this session
        date, note, picture, save, status = self._save_group(
            "views-", "### Save the whole-face result to my history\nStored only in this browser. The trend "
            "compares whole-face results with the same views.",
            "Also keep a small picture of the most affected view's overlay", "secondary")

        button.click(self.analyse_views_ui, inputs=inputs,
                     outputs=[summary_md, gallery, summary_json, summary_state, *inputs, status],
                     api_visibility="private", show_progress_on=[summary_md])
        save.click(self.save_views, inputs=[summary_state, self.state, date, note, picture],
                   outputs=[self.state, status], api_visibility="private", concurrency_limit=None,
                   show_progress="minimal")

    def _analyse_views(self, photos: list[tuple[str, str]]) -> tuple[list[tuple[str, dict]], dict]:
        """Read, analyse and delete each upload; a view that fails becomes a record with its message."""
        records: list[tuple[str, dict]] = []
        analyses: dict[str, Any] = {}
        for name, path in photos:
            data = None
            try:
                data = self.app.read_upload(path)
                analysis = self.app.analyse(data)
            except UserFacingError as exc:
                records.append((name, {"ok": False, "error": str(exc)}))
                continue
            except Exception:  # noqa: BLE001 - one bad view must not stop the others; no photo data logged
                log.exception("analysis of one view failed")
                records.append((name, {"ok": False, "error": "Something went wrong while analysing this photo. "
                                                             "Please try another photo."}))
                continue
            finally:
                self.app.files.delete_upload(path, data)   # a view's upload is never kept
            analyses[name] = analysis
            records.append((name, {"ok": True, **analysis.report.to_dict()}))
        return records, analyses

    def analyse_views_ui(self, left: str | None, front: str | None, right: str | None, request: gr.Request,
                         progress: gr.Progress = gr.Progress()):
        """"Analyse the whole face": each view analysed (its upload deleted at once), then the summary,
        the overlays and the cleared inputs."""
        photos = [(name, path) for name, path in zip(views.VIEW_NAMES, (left, front, right)) if path]
        if not photos:
            raise gr.Error("Add at least one photo (left side, front or right side) first.", print_exception=False)
        progress(0.1, desc=f"Analysing {len(photos)} photo{'s' if len(photos) > 1 else ''}")
        records, analyses = self._analyse_views(photos)
        summary = views.summarize(records)
        if not summary["views"]:
            self.app.files.sweep()
            raise gr.Error(html.escape(summary["message"]), title="Cannot analyse these photos", print_exception=False)
        progress(0.9, desc="Drawing the overlays")
        folder = self.app.files.new_dir(getattr(request, "session_hash", None))
        overlays: dict[str, str] = {}
        gallery = []
        for item in summary["views"]:
            name = item["view"]
            overlays[name] = save_display_jpeg(folder, f"overlay-{name}", analyses[name].overlay())
            report = item["report"]
            gallery.append((overlays[name], f"{views.view_title(name).capitalize()}: "
                                            f"{report.get('severity') or 'not assessed'}, "
                                            f"{report.get('lesion_count', 0)} lesions"))
        self.app.files.sweep()
        cleared = [None] * len(views.VIEW_NAMES)   # the uploads are gone from the server: clear the inputs
        return (views_markdown(summary), gr.update(value=gallery, visible=True), summary,
                {"summary": summary, "overlays": overlays}, *cleared, "")

    def save_views(self, result: dict | None, state: Any, date: str, note: str, picture: bool):
        """Save the whole-face result. Returns the new history and a status line."""
        if not result:
            return gr.skip(), warn("Analyse the photos first, then save the whole-face result.")
        summary = result["summary"]
        return self._save(state, lambda thumbnail: history.build_face_record(summary, date=date, note=note,
                                                                              thumbnail=thumbnail),
                          result["overlays"].get(summary.get("decided_by")), picture)

    # ---------------------------------------------------------------- API: /analyze_views
    def api(self) -> None:
        """The hidden /analyze_views endpoint (call inside the Blocks)."""
        with gr.Group(visible=False):
            photos = [photo_input(label=name) for name in views.VIEW_NAMES]
            summary = gr.JSON(label="summary")
            button = gr.Button("analyze_views")
        button.click(self.analyze_views_api, inputs=photos, outputs=[summary], api_name="analyze_views",
                     api_description="Analyse up to three photos of one face (left, front, right; any may be "
                                     "left out): returns the whole-face summary (JSON) with a `views` list of "
                                     "per-view reports.")

    def analyze_views_api(self, left: str | None, front: str | None, right: str | None) -> dict:
        """/analyze_views: up to three uploads -> the whole-face summary (JSON). Uploads are deleted at once."""
        photos = [(name, path) for name, path in zip(views.VIEW_NAMES, (left, front, right)) if path]
        if not photos:
            raise gr.Error("No photo was sent. Pass up to three image files (left, front, right), e.g. "
                           "handle_file('left.jpg'), handle_file('front.jpg'), handle_file('right.jpg').",
                           print_exception=False)
        records, _ = self._analyse_views(photos)
        self.app.files.sweep()
        summary = views.summarize(records)
        if not summary["views"]:
            raise gr.Error(html.escape(summary["message"]), title="Cannot analyse these photos", print_exception=False)
        return summary

    # ---------------------------------------------------------------- My progress tab
    def progress_tab(self) -> None:
        """The My progress tab's components (call inside its gr.Tab)."""
        gr.Markdown(PROGRESS_INTRO, elem_id="progress-intro")
        self.trend_md = gr.Markdown(elem_id="progress-trend")
        with gr.Row(equal_height=False):
            self.count_plot = gr.LinePlot(x="Date", y="Lesions", color="Series", y_aggregate="mean",
                                          title="Lesions found", x_title="Date", y_title="Lesions",
                                          tooltip="all", elem_id="progress-chart", min_width=280, visible=False,
                                          height=260)
            self.grade_plot = gr.LinePlot(x="Date", y="Severity level", color="Series", y_aggregate="mean",
                                          title="Severity: 0 Clear · 1 Mild · 2 Moderate · 3 Severe",
                                          x_title="Date", y_title="Severity", y_lim=[0, 3], tooltip="all",
                                          elem_id="severity-chart", min_width=280, visible=False, height=260)
        with gr.Accordion("My saved results", open=True):
            self.list_html = gr.HTML(history_list_html([]), elem_id="history-list",
                                     js_on_load=None)
        with gr.Accordion("Before / after: compare two dates", open=True):
            with gr.Row(equal_height=False):
                self.before = gr.Dropdown([], label="Before", elem_id="compare-before", min_width=200)
                self.after = gr.Dropdown([], label="After", elem_id="compare-after", min_width=200)
            self.compare = gr.HTML(compare_html(None, None), elem_id="compare", js_on_load=None)
        with gr.Accordion("Change or delete an entry", open=False):
            self.entry = gr.Dropdown([], label="Entry", elem_id="manage-entry")
            with gr.Row(equal_height=False):
                self.edit_date = gr.Textbox(label="Date", placeholder="YYYY-MM-DD", max_length=10,
                                            elem_id="manage-date", min_width=150)
                self.edit_note = self._note_box("manage-note")
            with gr.Row():
                self.update_button = gr.Button("Save changes", elem_id="manage-save", min_width=140)
                self.delete_button = gr.Button("Delete this entry", variant="stop", elem_id="manage-delete",
                                               min_width=140)
        with gr.Accordion("Download, import or delete my history", open=True):
            gr.Markdown("Your history stays in this browser only: download it to keep a copy or to move it to "
                        "another device, and import it there. **Delete all** removes it from this browser.")
            with gr.Row():
                self.export_button = gr.Button("⬇️ Download my history (JSON)", elem_id="history-export",
                                               min_width=160)
                self.import_button = gr.Button("⬆️ Import a history file", elem_id="history-import", min_width=160)
                self.delete_all_button = gr.Button("Delete all my history", variant="stop",
                                                   elem_id="history-delete-all", min_width=160)
            with gr.Group(visible=False, elem_id="delete-all-confirm") as self.confirm_group:
                gr.Markdown("**Delete every saved result from this browser?** This cannot be undone (download a "
                            "copy first if you may want it back).", padding=True)
                with gr.Row():
                    self.confirm_button = gr.Button("Yes, delete everything", variant="stop",
                                                    elem_id="history-delete-all-yes", min_width=140)
                    self.cancel_button = gr.Button("Keep my history", elem_id="history-delete-all-no",
                                                   min_width=140)
            self.import_text = gr.Textbox(visible=False)
        self.status = gr.Markdown(elem_id="progress-status", padding=True)
        gr.Markdown(f"ℹ️ {DISCLAIMER} Changes over time are estimates from photos, too.")

    def chat_note(self) -> None:
        """The chat tab's line about the trend of the saved history."""
        self._chat_note = gr.Markdown(elem_id="chat-trend")

    # ---------------------------------------------------------------- handlers of My progress
    def render(self, state: Any, before: str | None = None, after: str | None = None):
        """Everything drawn from the history; keeps the chosen before/after entries when they still exist."""
        entries = history.entries_by_date(state)
        ids = [e["id"] for e in entries]
        choices = history.labels(reversed(entries))   # newest first
        found = history.trend(state)
        if not (before in ids and after in ids and before != after):
            before = after = None
            if len(entries) > 1:   # default: the first and the last result of the latest kind
                latest = entries[-1]
                series = [e for e in entries if history.series_name(e) == history.series_name(latest)]
                before, after = (series[0] if len(series) > 1 else entries[-2])["id"], latest["id"]
        rows = history.chart_rows(state)
        frame = _frame(rows)
        visible = len({row["Date"] for row in rows}) > 1   # a line needs two dates (one point is not drawn)
        series = sorted({row["Series"] for row in rows})
        legend = series if len(series) > 1 else []   # a legend only when there are two kinds of result
        sentence = found["sentence"] if found else None
        return (
            trend_markdown(state),
            gr.update(value=frame, visible=visible, colors_in_legend=legend),
            gr.update(value=frame, visible=visible, colors_in_legend=legend),
            history_list_html(entries),
            gr.update(choices=choices, value=before),
            gr.update(choices=choices, value=after),
            compare_html(history.find(state, before), history.find(state, after)),
            gr.update(choices=choices, value=None),
            "", "",
            sentence,
            chat_note_markdown(sentence),
        )

    def compare_entries(self, state: Any, before: str | None, after: str | None) -> str:
        """The before/after view of two entries (by id). Returns HTML."""
        return compare_html(history.find(state, before), history.find(state, after))

    def pick_entry(self, state: Any, entry_id: str | None):
        """An entry chosen for editing: its date and note."""
        entry = history.find(state, entry_id)
        if entry is None:
            return "", ""
        return entry["date"], entry.get("note", "")

    def update_entry(self, state: Any, entry_id: str | None, date: str, note: str):
        """Change an entry's date and note. Returns the new history and a status line."""
        try:
            state = history.update_entry(state, entry_id, date=date, note=note)
        except HistoryError as exc:
            return gr.skip(), warn(str(exc))
        return state, ok("Entry changed.")

    def delete_entry(self, state: Any, entry_id: str | None):
        """Delete one entry. Returns the new history and a status line."""
        try:
            state = history.delete_entry(state, entry_id)
        except HistoryError as exc:
            return gr.skip(), warn(str(exc))
        return state, ok("Entry deleted.")

    def delete_all(self, state: Any):
        """Delete the whole history (after the confirmation)."""
        n = len(history.normalise(state)["entries"])
        return history.empty(), gr.update(visible=False), ok(
            f"Deleted {n} saved result{'s' if n != 1 else ''}: your history in this browser is now empty.")

    def import_history(self, text: str | None, state: Any):
        """Merge an imported history file's text (read in the browser). Returns the new history and a status."""
        if text is None:
            return gr.skip(), "No file was chosen."
        try:
            state, message = history.parse_import(text, state)
        except HistoryError as exc:
            return gr.skip(), warn(str(exc))
        return state, ok(message)

    # ---------------------------------------------------------------- events
    def wire(self, demo: gr.Blocks, tabs: gr.Tabs | None = None, tab_id: str = "progress") -> None:
        """The events that need every component: loading and drawing the history, editing, export, import."""
        quick = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "hidden"}
        if tabs is not None:
            for button in self._open_buttons:
                button.click(lambda: gr.Tabs(selected=tab_id), None, [tabs], **quick)
        drawn = [self.trend_md, self.count_plot, self.grade_plot, self.list_html, self.before, self.after,
                 self.compare, self.entry, self.edit_date, self.edit_note, self.trend_state]
        drawn.append(self._chat_note if self._chat_note is not None else gr.State(None))
        # On load: today's date in the visitor's time zone, then the history as stored in the browser.
        if self._date_boxes:
            demo.load(None, None, self._date_boxes, js=f"() => {{ const d = ({TODAY_JS})(); "
                      f"return Array({len(self._date_boxes)}).fill(d); }}", **quick)
        demo.load(self.render, inputs=[self.state, self.before, self.after], outputs=drawn, **quick)
        self.state.change(self.render, inputs=[self.state, self.before, self.after], outputs=drawn, **quick)

        self.before.input(self.compare_entries, inputs=[self.state, self.before, self.after], outputs=[self.compare],
                          **quick)
        self.after.input(self.compare_entries, inputs=[self.state, self.before, self.after], outputs=[self.compare],
                         **quick)
        self.entry.input(self.pick_entry, inputs=[self.state, self.entry], outputs=[self.edit_date, self.edit_note],
                         **quick)
        self.update_button.click(self.update_entry, inputs=[self.state, self.entry, self.edit_date, self.edit_note],
                                 outputs=[self.state, self.status], **quick)
        self.delete_button.click(self.delete_entry, inputs=[self.state, self.entry], outputs=[self.state, self.status],
                                 **quick)
        self.delete_all_button.click(lambda: gr.update(visible=True), None, [self.confirm_group], **quick)
        self.cancel_button.click(lambda: gr.update(visible=False), None, [self.confirm_group], **quick)
        self.confirm_button.click(self.delete_all, inputs=[self.state],
                                  outputs=[self.state, self.confirm_group, self.status], **quick)
        self.export_button.click(None, inputs=[self.state], outputs=None, js=EXPORT_JS, **quick)
        self.import_button.click(self.import_history, inputs=[self.import_text, self.state],
                                 outputs=[self.state, self.status], js=IMPORT_JS, **quick)


def _frame(rows: list[dict]):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["Date", "Lesions", "Severity", "Severity level", "Count grade", "Series"])
    frame["Date"] = pd.to_datetime(frame["Date"])
    return frame
