"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, for tests.

    server = FakeOpenAIServer(reply="Hello!").start()
    settings = Settings(openai_api_key="sk-test", openai_base_url=server.base_url, ...)
    ...
    server.requests[-1].body["messages"]      # what the client sent (headers too)
    server.stop()

`reply` is a string or a function receiving the request's JSON body and returning the reply text
(see `reply_from_system_prompt`). `mode` picks the behaviour of every chat request; `queue(...)`
sets modes for the next requests only:
    normal  SSE stream of several chunks (or one JSON body when "stream" is false)
    401     invalid key (the error body echoes the key, as OpenAI's does)
    429     rate limit            500  server error
    hang    say nothing for `hang_seconds` (longer than a short client timeout), then answer
    stall   send a few chunks, then say nothing for `hang_seconds`
    cut     send a few chunks, then close the socket without finishing the stream or sending [DONE]
With `api_key` set, requests carrying another Bearer key get a 401 whatever the mode.

Run standalone (e.g. for a browser test of the app):  python tests/fake_openai_server.py --port 0
prints the base URL on the first line and serves until stopped.
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

MODES = ("normal", "401", "429", "500", "hang", "stall", "cut")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any                # parsed JSON, or the raw text if it was not JSON, or None

    @property
    def messages(self) -> list[dict]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []


def system_prompt_of(body: dict) -> str:
    """The content of the first system message of a chat request ('' if none)."""
    for message in body.get("messages", []):
        if message.get("role") == "system":
            return message.get("content") or ""
    return ""


def reply_from_system_prompt(pattern: str = r"Severity: (\w+)",
                             template: str = "Your photo was graded {0}. Keep your routine gentle.") -> Callable[[dict], str]:
    """A reply function that quotes what the system prompt says, proving the model saw the analysis."""
    regex = re.compile(pattern)

    def reply(body: dict) -> str:
        match = regex.search(system_prompt_of(body))
        return template.format(*(match.groups() if match else ("unknown",)))
    return reply


def split_into_chunks(text: str) -> list[str]:
    """Word by word (each piece keeps its trailing space), so a reply arrives in many pieces."""
    return re.findall(r"\S+\s*|\s+", text) or [text]


class FakeOpenAIServer:
    def __init__(self, reply: "str | Callable[[dict], str]" = "Hello from the fake model. Keep your skin care routine gentle.",
                 *, mode: str = "normal", api_key: str | None = None, model: str = "fake-model",
                 hang_seconds: float = 5.0, cut_after: int = 2, chunk_delay: float = 0.0,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.reply = reply
        self.mode = mode
        self.api_key = api_key
        self.model = model
        self.hang_seconds = hang_seconds
        self.cut_after = cut_after
        self.chunk_delay = chunk_delay
        self._host, self._port = host, port
        self._requests: list[RecordedRequest] = []
        self._queued: deque[str] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------
    def start(self) -> "FakeOpenAIServer":
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def queue(self, *modes: str) -> None:
        """Use these modes for the next chat requests, one each, then fall back to `mode`."""
        for m in modes:
            if m not in MODES:
                raise ValueError(f"mode must be one of {MODES}")
        with self._lock:
            self._queued.extend(modes)

    def next_mode(self) -> str:
        with self._lock:
            return self._queued.popleft() if self._queued else self.mode

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the server first"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def reply_text(self, body: dict) -> str:
        return self.reply(body) if callable(self.reply) else str(self.reply)

    def wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAIServer
    protocol_version = "HTTP/1.1"  # chunked streaming needs 1.1

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing ------------------------------------------------------------------------------
    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _record(self, body: Any) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake.record(RecordedRequest(self.command, self.path, headers, body))

    def _send_json(self, status: int, payload: dict, extra_headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _sse(self, payload: dict | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self._write_chunk(f"data: {data}\n\n".encode())

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self.fake.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}

    # -- routes --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._record(None)
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [
                {"id": self.fake.model, "object": "model", "created": 0, "owned_by": "fake"}]})
        else:
            self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        body = self._read_body()
        self._record(body)
        try:
            if not self.path.rstrip("/").endswith("/chat/completions") or not isinstance(body, dict):
                self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                return
            self._chat(body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the client gave up (e.g. its timeout): nothing to answer

    def _chat(self, body: dict) -> None:
        fake = self.fake
        key = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        mode = fake.next_mode()
        if mode == "401" or (fake.api_key is not None and key != fake.api_key):
            self._send_json(401, {"error": {"message": f"Incorrect API key provided: {key}.",
                                            "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        if mode == "429":
            self._send_json(429, {"error": {"message": "Rate limit reached for requests.", "type": "requests",
                                            "code": "rate_limit_exceeded"}}, {"retry-after-ms": "10"})
            return
        if mode == "500":
            self._send_json(500, {"error": {"message": "The server had an error while processing your request.",
                                            "type": "server_error"}})
            return
        if mode == "hang":
            fake.wait(fake.hang_seconds)
            if fake._stopping.is_set():
                return
        text = fake.reply_text(body)
        if not body.get("stream"):
            self._send_json(200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": fake.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._sse(self._chunk({"role": "assistant"}))  # role only: delta.content is None
        for i, piece in enumerate(split_into_chunks(text)):
            if mode in ("cut", "stall") and i == fake.cut_after:
                if mode == "stall":
                    fake.wait(fake.hang_seconds)
                    if fake._stopping.is_set():
                        return
                else:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)  # no final chunk, no [DONE]
                    return
            self._sse(self._chunk({"content": piece}))
            if fake.chunk_delay:
                time.sleep(fake.chunk_delay)
        self._sse(self._chunk({}, finish_reason="stop"))
        # A usage-only chunk has no choices (as with stream_options.include_usage).
        self._sse({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                   "model": fake.model, "choices": [],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        self._sse("[DONE]")
        self._write_chunk(b"")  # end of the chunked body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="normal", choices=MODES)
    parser.add_argument("--reply", default=None, help="fixed reply text (default: quote the severity)")
    parser.add_argument("--api-key", default=None, help="accept only this Bearer key")
    args = parser.parse_args(argv)
    reply = args.reply if args.reply is not None else reply_from_system_prompt()
    server = FakeOpenAIServer(reply, mode=args.mode, api_key=args.api_key, port=args.port).start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
