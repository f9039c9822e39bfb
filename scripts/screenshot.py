"""Screenshot of the real app for the README: starts app.py with the configured weights (weights/ by
default; ACNE_* variables override), uploads an example photo, waits for the result and saves
images/screenshot.png. Needs the playwright package and Chromium (/usr/bin/chromium).

    python scripts/screenshot.py [--photo images/examples/acne04_valid_grade2_0.jpg] [--out images/screenshot.png]
    python scripts/screenshot.py --progress [--out images/progress.png]   # My progress, example history

--progress imports images/history_example.json (made-up example entries, no photos) in the My progress
tab and saves its trend, charts and before/after view.

What a visitor sees on a phone or a laptop (the screen only, after the page has scrolled to the result),
and the chat tab after a question:

    python scripts/screenshot.py --width 1280 --height 800 --screen --out images/screenshot.png
    python scripts/screenshot.py --width 390 --height 844 --screen --out images/screenshot-phone.png
    python scripts/screenshot.py --width 390 --height 844 --screen --out images/screenshot-phone-chat.png \
        --chat "Can I use benzoyl peroxide and adapalene together?"
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, str(PROJECT_DIR / "app.py")], cwd=PROJECT_DIR, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"The app did not start (exit {proc.returncode}):\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("The app did not answer within 300 s.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", type=Path, default=PROJECT_DIR / "images/examples/acne04_valid_grade2_0.jpg")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--progress", action="store_true", help="the My progress tab with an example history")
    parser.add_argument("--history", type=Path, default=PROJECT_DIR / "images/history_example.json")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--screen", action="store_true", help="only what fits on the screen, not the whole page")
    parser.add_argument("--chat", metavar="QUESTION", help="then ask this in the chat tab and show the answer")
    args = parser.parse_args()
    args.out = args.out or PROJECT_DIR / ("images/progress.png" if args.progress else "images/screenshot.png")
    for name in ("segmenter", "grader"):
        if not (PROJECT_DIR / "weights" / name).is_dir() and not os.environ.get(f"ACNE_{name.upper()}"):
            print(f"Note: weights/{name} does not exist; the app uses ACNE_* settings or the Hub id.", file=sys.stderr)

    from playwright.sync_api import sync_playwright

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_app(port, Path(tmp) / "app.log")
        try:
            with sync_playwright() as pw:
                phone = args.width < 600
                context = pw.chromium.launch_persistent_context(
                    str(Path(tmp) / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                    viewport={"width": args.width, "height": args.height}, device_scale_factor=1,
                    is_mobile=phone, has_touch=phone)
                context.set_default_timeout(180_000)
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                page.locator("#photo input[type=file]").wait_for(state="attached")  # not "networkidle"
                if args.progress:
                    _progress(page, args)
                    context.close()
                    return
                page.locator("#photo input[type=file]").set_input_files(str(args.photo))
                page.locator("#overlay img").first.wait_for(state="visible")
                page.wait_for_function("document.querySelector('#summary')?.innerText.includes('Lesions found')")
                time.sleep(2.0)  # let the slider images finish painting (and the page scroll to the result)
                if args.chat:
                    page.get_by_role("tab", name="Skincare chat").click()
                    page.locator("#chat-input textarea").fill(args.chat)
                    page.locator("#chat-input textarea").press("Enter")
                    page.wait_for_function("document.querySelector('#chatbot')?.innerText.includes('Not a diagnosis')"
                                           " || document.querySelectorAll('#chatbot [data-testid=bot]').length > 0")
                    time.sleep(3.0)  # the rest of the streamed answer
                    page.evaluate("window.scrollTo({top: document.querySelector('#chat-model')"
                                  ".getBoundingClientRect().top + window.scrollY - 8, behavior: 'instant'})")
                    # The question and the start of the answer (the answer comes first), not its sources.
                    page.evaluate("document.querySelector('#chatbot [role=log]')"
                                  ".scrollTo({top: 0, behavior: 'instant'})")
                    time.sleep(0.5)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=not args.screen)
                context.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"saved {args.out}")


def _progress(page, args) -> None:
    page.get_by_role("tab", name="My progress").click()
    page.locator("#progress-intro").wait_for()
    with page.expect_file_chooser() as chooser:
        page.locator("#history-import").click()
    chooser.value.set_files(str(args.history))
    page.wait_for_function("document.querySelector('#history-list')?.innerText.includes('saved results')")
    page.locator("#progress-chart svg").first.wait_for()
    page.get_by_text("My saved results").first.click()   # fold the list: the picture is about the trend
    time.sleep(1.5)  # let the charts finish drawing
    box = page.evaluate("""() => {
        const top = document.querySelector('#progress-trend').getBoundingClientRect().top;
        const bottom = document.querySelector('#compare').getBoundingClientRect().bottom;
        return {top: top + window.scrollY, bottom: bottom + window.scrollY}; }""")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(args.out), full_page=True,
                    clip={"x": 0, "y": box["top"] - 16, "width": args.width, "height": box["bottom"] - box["top"] + 32})
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
