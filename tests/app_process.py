"""Run the real web app (`python app.py`) in a subprocess on a free local port, for the browser and
API tests. The caller passes the environment (tiny models, fake OpenAI server, temp folder)."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


class HeldPort:
    """A local TCP port chosen by the system and held until a server takes it.

    The socket is bound with SO_REUSEADDR and never listens. While it is held, nobody else can bind the
    port (a plain bind fails, and the system hands a bound port to no one), yet a server that sets
    SO_REUSEADDR itself binds it and listens: uvicorn, asyncio and Gradio's own port probe all do. So
    there is no window between choosing the port and the app taking it (the race of bind-close-reuse).
    Connections to a held port are refused: it also makes a port "where nothing listens" that stays so.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.port: int = self._sock.getsockname()[1]

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "HeldPort":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def free_port() -> int:
    """A port that was free a moment ago. Racy (another process may take it before you do): prefer
    HeldPort, or a server that picks its own port (port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses on which some socket LISTENs on this TCP port (Linux: /proc/net/tcp, tcp6)."""
    found: set[str] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) != port or fields[3] != "0A":  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


# `python app.py` with every logger at DEBUG (app.py's own logging.basicConfig then changes nothing):
# the most a user could turn on, for the tests that no photo data or secret reaches the log.
DEBUG_LOGGING_COMMAND = [sys.executable, "-c",
                         "import logging, runpy, sys; logging.basicConfig(level=logging.DEBUG, "
                         "format='%(asctime)s %(levelname)s %(name)s: %(message)s'); sys.argv = ['app.py']; "
                         "runpy.run_path('app.py', run_name='__main__')"]


class AppProcess:
    def __init__(self, env: dict[str, str], log_path: Path, *, startup_timeout: float = 180.0,
                 command: list[str] | None = None, server_name: str | None = "127.0.0.1") -> None:
        """server_name: GRADIO_SERVER_NAME; None leaves it unset, so app.py picks the address itself."""
        self.command = command or [sys.executable, str(PROJECT_DIR / "app.py")]
        self._held = HeldPort()  # held until the app has taken it (see HeldPort)
        self.port = self._held.port
        self.env = {**env, "GRADIO_SERVER_PORT": str(self.port), "GRADIO_ANALYTICS_ENABLED": "False",
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("GRADIO_SERVER_NAME", None)
        if server_name is not None:
            self.env["GRADIO_SERVER_NAME"] = server_name
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> "AppProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command, cwd=PROJECT_DIR,
                                     env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode} during start-up:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "gradio_api/info", timeout=2) as response:
                    if response.status == 200:
                        self._held.release()  # the app listens on it now
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"app.py did not answer within {self.startup_timeout:.0f} s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the app has not been started"
        return self.proc.pid

    def full_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM (the app shuts down cleanly and deletes its temp files), then kill if it hangs."""
        self._held.release()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "AppProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def wait_until(predicate, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def app_env(base_env: dict[str, str], temp_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(base_env)
    env.update({"GRADIO_TEMP_DIR": str(temp_dir), "GRADIO_HEARTBEAT_INTERVAL": "1"})
    env.update(extra)
    for key in [k for k, v in env.items() if v is None]:
        env.pop(key)
    return env


def rest_call(app: AppProcess, endpoint: str, data: list, timeout: float = 60) -> tuple[str, str, float]:
    """One call through Gradio's REST API (POST /gradio_api/call/<endpoint>, then read its event stream),
    the leanest client there is: the time measured is mostly the server's. Returns the last event's
    name ("complete" or "error"), its data (JSON text) and the seconds the call took."""
    start = time.perf_counter()
    request = urllib.request.Request(app.url + f"gradio_api/call/{endpoint}", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(app.url + f"gradio_api/call/{endpoint}/{event_id}", timeout=timeout) as response:
        stream = response.read().decode()
    elapsed = time.perf_counter() - start
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, re.MULTILINE)
    if not events:
        raise AssertionError(f"no event in the answer: {stream[:500]}")
    return events[-1][0], events[-1][1], elapsed


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS in /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def tree_snapshot(folder: Path) -> set[str]:
    """Every file and folder under `folder` (relative paths): what a request may have added."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


# --------------------------------------------------------------------------- raw HTTP to the API
# What any HTTP client can send, without gradio_client's help (gradio_client uploads every local
# file it is given, so it cannot name a file on the server).

def endpoint_index(base_url: str, api_name: str) -> int:
    """The fn_index of a named endpoint, from the app's /config."""
    import httpx

    config = httpx.get(base_url.rstrip("/") + "/config", timeout=30).json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def api_call(base_url: str, route: str, data: list, *, fn_index: int | None = None,
             timeout: float = 120) -> tuple[int, dict]:
    """One call by plain HTTP: route "queue/join", "call/<api>" or "run/<api>".

    Returns (HTTP status of the request that carried `data`, the outcome as JSON): for queue/join
    the final queue message, for call/* the final server-sent event's data as {"event", "data"},
    for run/* the response body. When the request itself is refused, the outcome is its body.
    """
    import httpx

    base = base_url.rstrip("/") + "/gradio_api/"
    session = uuid.uuid4().hex[:12]
    if route == "queue/join":
        body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    else:
        body = {"data": data}
    response = httpx.post(base + route, json=body, timeout=timeout)
    if response.status_code != 200 or route.startswith("run/"):
        return response.status_code, response.json()
    if route == "queue/join":
        event_id = response.json()["event_id"]
        with httpx.stream("GET", base + "queue/data", params={"session_hash": session}, timeout=timeout) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                        return 200, message
        raise RuntimeError("the queue stream ended without a result")
    event_id = response.json()["event_id"]
    event = None
    with httpx.stream("GET", f"{base}{route}/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                return 200, {"event": event, "data": json.loads(line[5:])}
    raise RuntimeError("the event stream ended without a result")


def api_upload(base_url: str, path: Path) -> str:
    """Upload a file the way every client does (POST /gradio_api/upload); returns its server path."""
    import httpx

    with open(path, "rb") as handle:
        response = httpx.post(base_url.rstrip("/") + "/gradio_api/upload",
                              files={"files": (path.name, handle, "application/octet-stream")}, timeout=60)
    response.raise_for_status()
    return response.json()[0]


def file_reference(path: str, **extra: str) -> dict:
    """A gradio.FileData reference, as a client writes it."""
    return {"path": path, "meta": {"_type": "gradio.FileData"}, **extra}


# --------------------------------------------------------------------------- the browser (Playwright + Chromium)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--no-proxy-server"]  # the app is on 127.0.0.1: never through a proxy from the environment
UI_TIMEOUT_MS = 120_000


def launch_chromium(playwright, profile: Path, extra_args: list[str] | tuple = (), **options):
    """A fresh Chromium profile (no cache, no cookies, no session left over), headless, with a generous
    default timeout for a busy machine. `options` go to launch_persistent_context (viewport, ...).
    The caller closes it."""
    options.setdefault("viewport", {"width": 1280, "height": 900})
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS + list(extra_args), **options)
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context


# --------------------------------------------------------------------------- the handlers in-process

class Request:
    """The one attribute of gr.Request the handlers read."""

    def __init__(self, session_hash: str) -> None:
        self.session_hash = session_hash


def upload_copy(folder: Path, source: Path | bytes, name: str = "photo.jpg", tweak: bytes = b"") -> Path:
    """What Gradio's upload route does: the file in its own folder under the temp folder. `tweak`: bytes
    after the photo's end (same photo, a new file that no other test has uploaded)."""
    target = folder / f"upload-{name}" / name
    target.parent.mkdir(parents=True)
    target.write_bytes((source if isinstance(source, bytes) else source.read_bytes()) + tweak)
    return target


def mirrored_copy(photo: Path, folder: Path, name: str, quality: int = 90) -> Path:
    """A photo no one else has uploaded (the example photos themselves are public and kept): the photo
    mirrored, saved as a JPEG of that quality."""
    import io

    from PIL import Image

    image = Image.open(photo).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    path = folder / name
    path.write_bytes(buffer.getvalue())
    return path


__all__ = ["AppProcess", "CHROMIUM", "CHROMIUM_ARGS", "DEBUG_LOGGING_COMMAND", "HeldPort", "Request", "UI_TIMEOUT_MS",
           "api_call", "api_upload", "app_env", "endpoint_index", "file_reference", "files_under", "free_port",
           "launch_chromium", "listening_addresses", "mirrored_copy", "rest_call", "rss_kib", "tree_snapshot",
           "upload_copy", "wait_until"]
