"""The analysis as an MCP tool for LLM agents (ACNE_MCP=1): `python app.py` then also serves the Model
Context Protocol at /gradio_api/mcp/ (streamable HTTP; /gradio_api/mcp/sse for older clients), through
Gradio's `mcp_server=True` (needs `pip install "gradio[mcp]"`).

The tool is `analyze_photo`: a photo as a `data:image/...;base64,` URL in; the report (the JSON of
`python -m acne analyze --json`) as text and the lesion overlay as a PNG image out. The photo travels
inside the call: the server fetches no URL (an http(s) URL would make a public app fetch addresses for
strangers) and reads no path (acne/upload_guard.py). The bytes go through the same checks, limits and
time limit as /analyze (WebApp.analyze_bytes) and are never written to disk. The tool is its own
endpoint because Gradio hands an MCP client the outputs of a queued endpoint with several outputs as
one Python repr string; this one runs unqueued and returns the report as real JSON. The app's other
endpoints (/analyze, /chat) are listed as tools too.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from .web.handlers import WebApp

TOOL_NAME = "analyze_photo"


def photo_bytes(photo: str, max_bytes: int) -> bytes:
    """The bytes of a `data:[type][;base64],...` URL; a plain message for anything else.

    Args:
        photo: the data URL.
        max_bytes: the largest photo accepted (the upload limit), checked before decoding.
    Returns:
        The photo file's bytes (not yet decoded as an image).
    """
    text = (photo or "").strip()
    if not text.lower().startswith("data:"):
        raise gr.Error("Send the photo itself as a data URL (data:image/jpeg;base64,...): this server does "
                       "not fetch URLs or read paths.", print_exception=False)
    header, sep, body = text.partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise gr.Error("The photo must be base64-encoded: data:image/jpeg;base64,...", print_exception=False)
    if len(body) > (max_bytes * 4) // 3 + 4:
        raise gr.Error(f"The photo is larger than {max_bytes // (1024 * 1024)} MB, this server's limit. "
                       "Please send a smaller photo.", print_exception=False)
    try:
        return base64.b64decode(body, validate=False)
    except (binascii.Error, ValueError):
        raise gr.Error("The photo's base64 data is damaged.", print_exception=False) from None


def add_mcp_tool(app: "WebApp") -> None:
    """Add the hidden `analyze_photo` endpoint; call inside build_app's `gr.Blocks` context.

    Args:
        app: the WebApp whose analyze_bytes() runs the analysis (its limits and time limit).
    """
    max_bytes = int(app.settings.max_upload_mb * 1024 * 1024)

    def analyze_photo(photo: str) -> tuple[str, str]:
        """Analyse a face photo for acne (an educational tool, not a diagnosis): lesions, their count and a severity grade.

        Args:
            photo: The face photo as a base64 data URL: data:image/jpeg;base64,... (JPEG, PNG, WebP, HEIC, ...).

        Returns:
            The report as JSON (severity Clear/Mild/Moderate/Severe with a score for each, lesion_count, lesions with boxes in photo pixels, count_grade, quality_warnings, recommendations, disclaimer) and the photo with the lesions drawn in (PNG).
        """
        report, overlay = app.analyze_bytes(photo_bytes(photo, max_bytes))
        return json.dumps(report), overlay

    with gr.Group(visible=False):
        photo = gr.Textbox(label="photo")
        report = gr.Textbox(label="report")
        overlay = gr.Image(label="overlay", type="filepath", format="png")
        button = gr.Button(TOOL_NAME)
    # Unqueued: Gradio's MCP server then returns each output as its own content item. The analysis
    # still runs in WebApp's pool, ACNE_CONCURRENCY at a time, within ACNE_TIME_LIMIT.
    button.click(analyze_photo, inputs=[photo], outputs=[report, overlay], api_name=TOOL_NAME, queue=False)
