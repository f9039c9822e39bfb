"""The chat through the `openai` client: OpenAI itself or any OpenAI-compatible server (Ollama, vLLM,
llama.cpp's server) via OPENAI_BASE_URL. Replies stream; failures become short chat messages."""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlsplit

from acne.chat.prompt import build_messages, content_text

if TYPE_CHECKING:
    from acne.chat import Assistant, Profile
    from acne.config import Settings
    from acne.report import Report

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the client refuses to start without one.
PLACEHOLDER_KEY = "not-needed"


def host_of(base_url: str) -> str:
    """'https://user:pw@api.example.com:8443/v1' -> 'api.example.com:8443' (never credentials or paths)."""
    parts = urlsplit(base_url)
    host = parts.hostname or "unknown host"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


class ChatError(Exception):
    """A failure already turned into a message for the chat window."""


def describe_error(err: BaseException, *, host: str, model: str, timeout: float, midway: bool = False) -> str:
    """A short, readable sentence for one failure. Never includes the server's own text (it can
    echo the key, as OpenAI's 401 does) and never the key."""
    import openai

    if isinstance(err, openai.APITimeoutError):
        if midway:
            return f"The chat service at {host} stopped sending for more than {timeout:g} s."
        return f"The chat service at {host} did not answer within {timeout:g} s."
    if isinstance(err, openai.APIConnectionError):
        if midway:
            return f"The connection to the chat service at {host} broke off."
        return f"Could not reach the chat service at {host}: the connection failed."
    if isinstance(err, openai.AuthenticationError):
        return ("The chat service did not accept the app's API key (error 401). "
                "Whoever runs this app needs to check OPENAI_API_KEY.")
    if isinstance(err, openai.PermissionDeniedError):
        return "The app's API key is not allowed to use this chat model (error 403)."
    if isinstance(err, openai.NotFoundError):
        return f"The chat model {model!r} was not found at {host} (error 404); check ACNE_CHAT_MODEL."
    if isinstance(err, openai.RateLimitError):
        return ("The chat service is busy or its usage quota is used up (error 429). "
                "Please wait a moment and try again.")
    if isinstance(err, openai.APIStatusError):
        if err.status_code >= 500:
            return f"The chat service had a server error ({err.status_code}). Please try again in a moment."
        return f"The chat service refused the request (error {err.status_code})."
    if isinstance(err, openai.OpenAIError):
        return "The chat service is not configured correctly (no API key?). Set OPENAI_API_KEY or OPENAI_BASE_URL."
    # Not the exception's class or text: the log has its type (see _log_failure), the user a sentence.
    return "Something went wrong while talking to the chat service."


def _log_failure(err: BaseException, *, midway: bool) -> None:
    # Type and status only: exception messages and bodies can carry the key or the user's words.
    status = getattr(err, "status_code", None)
    log.warning("chat request failed%s: %s%s", " mid-stream" if midway else "", type(err).__name__,
                f" (HTTP {status})" if status else "")


class OpenAIAssistant:
    """A chat model behind an OpenAI-compatible API (ACNE_OPENAI_*), with `fallback` answering
    when the model cannot be reached."""
    def __init__(self, settings: "Settings", *, fallback: "Assistant | None" = None) -> None:
        self._api_key = settings.openai_api_key
        self.base_url = settings.openai_base_url or OPENAI_BASE_URL
        if not self._api_key and settings.openai_base_url:
            self._api_key = PLACEHOLDER_KEY
        self.model = settings.chat_model
        self.timeout = float(settings.chat_timeout)
        self.max_retries = int(settings.chat_max_retries)
        self.history_chars = int(settings.chat_history_chars)
        self.host = host_of(self.base_url)
        self.name = f"{self.model} at {self.host}"
        self.fallback = fallback
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # the key stays out of reprs, tracebacks and logs
        return f"OpenAIAssistant(model={self.model!r}, host={self.host!r})"

    def _get_client(self) -> Any:
        # Created on first use: OpenAI() raises without a key, and start-up should not depend on it.
        with self._lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(api_key=self._api_key, base_url=self.base_url,
                                             timeout=self.timeout, max_retries=self.max_retries)
                log.info("chat client ready: %s", self.name)
            return self._client

    def build_messages(self, message: Any, history: list[dict] | None, report: "Report | None" = None,
                       profile: "Profile | None" = None) -> list[dict[str, str]]:
        """The messages sent to the model: the system prompt, the trimmed history, the question."""
        return build_messages(message, history, report, profile, max_history_chars=self.history_chars)

    def stream(self, message: Any, history: list[dict] | None, report: "Report | None" = None,
               profile: "Profile | None" = None) -> Iterator[str]:
        """The growing answer from the model; the fallback's answer (with a note) when it fails."""
        if not content_text(message).strip():
            yield "Please type a question about your skin."
            return
        try:
            for text in self._stream_model(message, history, report, profile):
                yield text
        except ChatError as failure:
            # Nothing arrived: say what went wrong, then let the offline assistant answer anyway.
            notice = f"⚠️ {failure}"
            yield notice
            if self.fallback is None:
                return
            prefix = notice + " Meanwhile, here is the offline assistant's answer:\n\n"
            for offline_text in self.fallback.stream(message, history, report, profile):
                yield prefix + offline_text

    def _stream_model(self, message: Any, history: list[dict] | None, report: "Report | None",
                      profile: "Profile | None") -> Iterator[str]:
        """Cumulative model text. Raises ChatError when nothing arrived; a break after some text
        ends the reply with a note instead."""
        messages = self.build_messages(message, history, report, profile)
        text = ""
        finished = False
        try:
            client = self._get_client()
            with client.chat.completions.create(model=self.model, messages=messages, stream=True) as stream:
                for chunk in stream:
                    if not chunk.choices:  # e.g. usage-only or keep-alive chunks
                        continue
                    choice = chunk.choices[0]
                    piece = getattr(choice.delta, "content", None) if choice.delta is not None else None
                    if piece:
                        text += piece
                        yield text
                    if choice.finish_reason:
                        finished = True
        except GeneratorExit:  # the user stopped the reply; `with` closed the response
            raise
        except Exception as err:  # noqa: BLE001 - every failure becomes a chat message
            _log_failure(err, midway=bool(text))
            reason = describe_error(err, host=self.host, model=self.model, timeout=self.timeout, midway=bool(text))
            if not text:
                raise ChatError(reason) from None
            yield text + f"\n\n_(The reply was cut off. {reason} Please ask again.)_"
            return
        if not text:
            log.warning("chat model returned an empty reply")
            raise ChatError("The chat model sent an empty reply. Please try again.")
        if not finished:
            log.warning("chat stream ended without a finish reason")
            yield text + "\n\n_(The reply was cut off: the stream ended early. Please ask again.)_"
