"""Acne Detection AI web app: `python app.py` (locally) or the Hugging Face Space entry point.

Host and port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT. Locally the app binds 127.0.0.1 (only this
computer can reach it); on a Space (SPACE_ID is set) it binds 0.0.0.0. Everything else: acne/config.py.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys


def server_address() -> tuple[str, int]:
    """The (host, port) to listen on, from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (see the docstring above)."""
    host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    raw_port = os.environ.get("GRADIO_SERVER_PORT") or "7860"
    try:
        port = int(raw_port)
    except ValueError:
        raise SystemExit(f"GRADIO_SERVER_PORT must be a port number, got {raw_port!r}") from None
    return host, port


def main() -> None:
    """Load the models, build the web app and serve it until Ctrl+C or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines add nothing useful
    from acne.config import Settings
    from acne.errors import WeightsMissingError

    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a malformed environment variable: say which, no traceback
        _cannot_start(f"configuration error: {exc}")
    if settings.mcp and importlib.util.find_spec("mcp") is None:
        _cannot_start('ACNE_MCP=1 serves the analysis as an MCP tool, which needs Gradio\'s MCP extra: '
                      'pip install "gradio[mcp]"')
    host, port = server_address()
    print("Acne Detection AI: loading models…", flush=True)
    try:
        from acne.analysis import load_analyzer

        analyzer = load_analyzer(settings)
    # ValueError: a bad ACNE_BACKEND / ACNE_SEG_SIZE, or grader labels not of the form 'level N'.
    except (WeightsMissingError, ValueError) as exc:
        _cannot_start(str(exc))
    from acne.chat import load_assistant
    from acne.web import build_app, launch_kwargs

    assistant = load_assistant(settings)
    web = build_app(analyzer, assistant, settings)
    print(f"Acne Detection AI: segmenter {analyzer.segmenter.name}, grader {analyzer.grader.name}, "
          f"chat: {assistant.name}", flush=True)
    # SIGTERM (docker stop, Space restart, tests) shuts down like Ctrl+C, so temp files get deleted.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        web.demo.launch(server_name=host, server_port=port, **launch_kwargs(settings))
    finally:
        web.close()


def _cannot_start(message: str) -> None:
    print(f"\nAcne Detection AI cannot start: {message}\n", file=sys.stderr, flush=True)
    sys.exit(2)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
