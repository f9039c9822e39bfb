"""The analysis as an MCP tool for LLM agents (ACNE_MCP=1): `python app.py` then also serves the Model
Context Protocol at /gradio_api/mcp/ (streamable HTTP; /gradio_api/mcp/sse for older clients), through
Gradio's `mcp_server=True` (needs `pip install "gradio[mcp]"`).

The tool is `analyze_photo`: a photo (an http(s) URL, or a `data:image/...;base64,` URL) in; the report
(the JSON of `python -m acne analyze --json`) as text and the lesion overlay as a PNG image out. It is
its own endpoint because Gradio hands an MCP client the outputs of a queued endpoint with several
outputs (such as /analyze: report, overlay) as one Python repr string; this one runs unqueued and
returns the report as real JSON. Photos go through the same checks, limits and deletion as /analyze
(WebApp.analyze_api), and the app's other endpoints (/analyze, /chat) are listed as tools too.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from .ui import WebApp

TOOL_NAME = "analyze_photo"


def add_mcp_tool(app: "WebApp") -> None:
    """Call inside build_demo's `gr.Blocks` context: adds the hidden `analyze_photo` endpoint."""
    from .ui import photo_input

    def analyze_photo(photo: str, request: gr.Request) -> tuple[str, str]:
        """Analyse a face photo for acne (an educational tool, not a diagnosis): lesions, their count and a severity grade.

        Args:
            photo: The face photo: an http(s) URL or a data:image/jpeg;base64,... URL (JPEG, PNG, WebP, HEIC, ...).

        Returns:
            The report as JSON (severity Clear/Mild/Moderate/Severe with a score for each, lesion_count, lesions with boxes in photo pixels, count_grade, quality_warnings, recommendations, disclaimer) and the photo with the lesions drawn in (PNG).
        """
        report, overlay = app.analyze_api(photo, request)
        return json.dumps(report), overlay

    with gr.Group(visible=False):
        photo = photo_input(label="photo")
        report = gr.Textbox(label="report")
        overlay = gr.Image(label="overlay", type="filepath", format="png")
        button = gr.Button(TOOL_NAME)
    # Unqueued: Gradio's MCP server then returns each output as its own content item. The analysis
    # still runs in WebApp's pool, ACNE_CONCURRENCY at a time, within ACNE_TIME_LIMIT.
    button.click(analyze_photo, inputs=[photo], outputs=[report, overlay], api_name=TOOL_NAME, queue=False)
