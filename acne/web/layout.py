"""The page: Analyze, Skincare chat, My progress and About tabs, and the API endpoints.

    web = build_app(analyzer, assistant, settings)   # models are loaded by the caller, once
    web.demo.launch(**launch_kwargs(settings))
    web.close()                                      # at shutdown: the temp files go
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from acne.config import Settings
from acne.report import DISCLAIMER
from acne.severity import CLASSES
from acne.upload_guard import GUARD
from acne.web.handlers import EXAMPLES_DIR, WebApp
from acne.web.photos import photo_input
from acne.web.progress import ProgressUI
from acne.web.style import KEEP_PLACEHOLDER_JS, SCROLL_TO_CHAT_JS, SCROLL_TO_RESULT_JS, page_css, theme
from acne.web.text import CHAT_PLACEHOLDER, HEADER_HTML, about_markdown, chat_context_markdown

if TYPE_CHECKING:
    from acne.analysis import Analyzer
    from acne.chat import Assistant

CHAT_CONCURRENCY = 8              # chat answers wait on the network, not the CPU
QUEUE_MAX_SIZE = 64
AGE_RANGES = ["under 18", "18-24", "25-34", "35-44", "45-54", "55+"]
SKIN_TYPES = ["Oily", "Dry", "Combination", "Normal", "Sensitive"]
NOT_GIVEN = ("Not given", "")


@dataclass
class App:
    """The built web app.

    Attributes:
        demo: the queued gr.Blocks, to launch or mount.
        handlers: the WebApp behind it (its files, its handlers).
    """
    demo: gr.Blocks
    handlers: WebApp

    def close(self) -> None:
        """At shutdown: stop the temp-file sweeper and delete this process's temp files."""
        self.handlers.close()


def launch_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for demo.launch() (in Gradio 6 the theme and CSS go here).

    Args:
        settings: upload size limit and ACNE_MCP.
    Returns:
        theme, css, max_file_size, show_error, footer_links, app_kwargs (the upload guard), mcp_server.
    """
    return {
        "theme": theme(),
        "css": page_css(),
        "max_file_size": f"{int(settings.max_upload_mb)}mb",
        "show_error": False,       # unexpected errors show a generic message, never a traceback
        "footer_links": ["api"],
        # Refuses file references the upload route did not create, before Gradio reads them.
        "app_kwargs": {"middleware": [GUARD.middleware()]},
        # ACNE_MCP=1: an MCP server at /gradio_api/mcp/, tool analyze_photo (acne/mcp_tool.py; gradio[mcp])
        "mcp_server": bool(settings.mcp),
    }


def _examples_open(photo: str | None) -> gr.Accordion:
    """The example photos stay open until a photo is in, then fold away below it."""
    return gr.Accordion(open=photo is None)


def build_app(analyzer: "Analyzer", assistant: "Assistant | None" = None, settings: Settings | None = None) -> App:
    """The whole web app, queued, its temp-file sweeper running.

    Args:
        analyzer: the loaded Analyzer (models are loaded by the caller, once).
        assistant: the chat Assistant; None: load_assistant(settings).
        settings: None: Settings.from_env().
    Returns:
        An App: `demo` to launch, `close()` at shutdown.
    """
    settings = settings or Settings.from_env()
    if assistant is None:
        from acne.chat import load_assistant

        assistant = load_assistant(settings)
    app = WebApp(analyzer, assistant, settings)
    ttl = max(1, int(settings.cache_ttl))
    examples = [str(p) for p in sorted(EXAMPLES_DIR.glob("*.jpg"))]

    with gr.Blocks(title="Acne Detection AI", delete_cache=(max(1, min(ttl, 300)), ttl)) as demo:
        gr.HTML(HEADER_HTML)
        report_state = gr.State(None)   # latest Report of this session, for the chat
        views_state = gr.State(None)    # paths of the images shown, for the raw-photo toggle and the heat map
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
                gr.Markdown(about_markdown(app.models, assistant.name, settings.cache_ttl), elem_id="about")

        # The page's analysis (not an API endpoint: /analyze below is the API).
        photo.change(
            app.analyze_ui, inputs=[photo, show_raw],
            outputs=[overlay, severity, summary, quality, advice, report_json, views_state, report_state,
                     chat_context, heatmap],
            api_visibility="private", show_progress_on=[overlay],
        )
        show_raw.change(app.toggle_view, inputs=[show_raw, views_state], outputs=[overlay],
                        api_visibility="private", queue=False)
        # The heat map was made with the analysis: showing it waits for nothing.
        explain_button.click(app.explain_ui, inputs=[views_state], outputs=[heatmap], api_visibility="private",
                             queue=False)
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
    return App(demo=demo, handlers=app)
