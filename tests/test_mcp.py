"""The web app as an MCP server (ACNE_MCP=1, Gradio's mcp_server): a real MCP client (the `mcp` package,
streamable HTTP) lists the tools of `python app.py` on 127.0.0.1 and calls the analysis with a photo."""
from __future__ import annotations

import asyncio
import base64
import json

import pytest

from acne.severity import CLASSES
from app_process import AppProcess

pytest.importorskip("mcp", reason="the MCP tests need gradio[mcp] (tests/requirements.txt)")


@pytest.fixture(scope="module")
def mcp_app(tiny_model_env, tmp_path_factory):
    env = dict(tiny_model_env, ACNE_MCP="1", GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio-temp")))
    env.pop("GRADIO_MCP_SERVER", None)
    process = AppProcess(env, tmp_path_factory.mktemp("logs") / "app.log").start()
    yield process
    process.stop()


async def _session(url: str, action):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await action(session)


def call(url: str, action):
    return asyncio.run(asyncio.wait_for(_session(url, action), timeout=120))


def test_the_analysis_is_an_mcp_tool_that_takes_a_photo(mcp_app, example_photo):
    url = mcp_app.url + "gradio_api/mcp/"
    tools = call(url, lambda s: s.list_tools()).tools
    by_name = {tool.name: tool for tool in tools}
    analyze = next(tool for name, tool in by_name.items() if name.endswith("analyze_photo"))
    assert "acne" in analyze.description and "not a diagnosis" in analyze.description
    assert list(analyze.inputSchema["properties"]) == ["photo"]
    assert "base64" in analyze.inputSchema["properties"]["photo"].get("description", "")

    photo = "data:image/jpeg;base64," + base64.b64encode(example_photo.read_bytes()).decode()
    result = call(url, lambda s: s.call_tool(analyze.name, {"photo": photo}))
    assert not result.isError, result.content
    texts = [c.text for c in result.content if c.type == "text"]
    images = [c for c in result.content if c.type == "image"]
    report = json.loads(texts[0])
    assert report["severity"] in CLASSES and report["image_size"] == [640, 640]
    assert report["lesion_count"] == len(report["lesions"]) and report["disclaimer"]
    assert images and images[0].mimeType == "image/png"      # the lesion overlay
    assert base64.b64decode(images[0].data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_photo_is_an_mcp_error_with_the_plain_message(mcp_app):
    url = mcp_app.url + "gradio_api/mcp/"
    tools = call(url, lambda s: s.list_tools()).tools
    analyze = next(tool for tool in tools if tool.name.endswith("analyze_photo"))
    text = "data:image/jpeg;base64," + base64.b64encode(b"Dear diary, this is not a photo.\n" * 20).decode()
    result = call(url, lambda s: s.call_tool(analyze.name, {"photo": text}))
    message = " ".join(c.text for c in result.content if c.type == "text")
    assert result.isError and "not an image" in message and "Traceback" not in message


def test_without_acne_mcp_there_is_no_mcp_server(tiny_model_env, tmp_path):
    import urllib.error
    import urllib.request

    env = dict(tiny_model_env, GRADIO_TEMP_DIR=str(tmp_path / "gradio-temp"))
    env.pop("ACNE_MCP", None)
    app = AppProcess(env, tmp_path / "app.log").start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(app.url + "gradio_api/mcp/schema", timeout=10)
        assert info.value.code == 404
    finally:
        app.stop()


def test_a_url_or_path_is_refused_without_fetching_it(mcp_app, example_photo):
    """The server fetches nothing for a caller (no requests to an address of their choice) and reads
    no path on the server: only the photo's own bytes, as a data URL, are analysed."""
    import http.server
    import threading

    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write(example_photo.read_bytes())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = mcp_app.url + "gradio_api/mcp/"
        tools = call(url, lambda s: s.list_tools()).tools
        analyze = next(tool for tool in tools if tool.name.endswith("analyze_photo"))
        for photo in (f"http://127.0.0.1:{server.server_port}/face.jpg", str(example_photo), "/etc/passwd"):
            result = call(url, lambda s: s.call_tool(analyze.name, {"photo": photo}))
            message = " ".join(c.text for c in result.content if c.type == "text")
            assert result.isError and "data URL" in message, (photo, message)
            assert "Traceback" not in message and "passwd" not in message
        assert hits == []
    finally:
        server.shutdown()
