"""The web app (Gradio): `python app.py` builds it with build_app() and launches it.

    photos.py    photo input, the session's temp files, the images shown in the page
    text.py      the words: Markdown and HTML made from Reports, describe() and history records
    style.py     CSS, theme, the JavaScript of browser-side events
    handlers.py  WebApp: analysis within the time limit, heat map, API, chat
    progress.py  My progress and Whole face (history kept in the browser)
    layout.py    build_app() -> App(demo, handlers), launch_kwargs()
"""
from acne.web.layout import App, build_app, launch_kwargs

__all__ = ["App", "build_app", "launch_kwargs"]
