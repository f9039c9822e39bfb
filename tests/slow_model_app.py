"""`python app.py` with a model that is slow on one photo, for the time-limit tests through the web API.

An analysis of a photo whose bytes contain SLOW_MARKER first waits ACNE_TEST_SLOW_SECONDS (default
120; far longer than the test's ACNE_TIME_LIMIT), like a model stuck on one input; every other photo
is analysed at once. The wait sleeps rather than computes, so it costs no CPU. It cannot be cut
short by the app (Python cannot stop a running thread), exactly like a slow forward pass: the test
checks what the app does meanwhile. On SIGTERM the wait ends, so shutdown need not wait for it.

    python tests/slow_model_app.py       # from the project root, with the app's usual environment
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
SLOW_MARKER = b"acne-test-slow-photo"


def main() -> None:
    sys.path.insert(0, str(PROJECT_DIR))
    from acne.analysis import Analyzer

    release = threading.Event()
    seconds = float(os.environ.get("ACNE_TEST_SLOW_SECONDS", "120"))
    real_run = Analyzer.run

    def slow_run(self, image, *args, **kwargs):
        if isinstance(image, (bytes, bytearray)) and SLOW_MARKER in image:
            release.wait(seconds)
        return real_run(self, image, *args, **kwargs)

    Analyzer.run = slow_run

    # app.py turns SIGTERM into KeyboardInterrupt: end the wait first, then shut down as usual.
    real_signal = signal.signal

    def install(signum, handler):
        if signum == signal.SIGTERM and callable(handler):
            def on_term(sig, frame, _handler=handler):
                release.set()
                _handler(sig, frame)
            return real_signal(signum, on_term)
        return real_signal(signum, handler)

    signal.signal = install
    os.chdir(PROJECT_DIR)
    sys.argv = ["app.py"]
    runpy.run_path(str(PROJECT_DIR / "app.py"), run_name="__main__")


if __name__ == "__main__":
    main()
