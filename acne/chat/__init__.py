"""The skincare chat: an OpenAI(-compatible) model when one is configured, else the offline assistant.

    assistant = load_assistant()           # Settings.from_env() unless given
    for text in assistant.stream(message, history, report, profile):
        ...                                # cumulative text, ready for gr.ChatInterface

stream() never raises: failures end in a short readable message.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol, runtime_checkable

if TYPE_CHECKING:
    from acne.config import Settings
    from acne.report import Report


@dataclass
class Profile:
    """Optional facts the user tells us about themselves; they shape the advice.

    `progress` is not typed by the user: it is the trend sentence that acne.history builds from the
    results the user saved in their own browser (checked numbers, dates and grade names only)."""
    age_range: str | None = None
    skin_type: str | None = None
    treatments: str | None = None
    sensitivities: str | None = None
    progress: str | None = None


@runtime_checkable
class Assistant(Protocol):
    """What answers in the chat: a name to show and stream() of the growing answer."""
    name: str  # shown in the UI: which model answers (host only, never a key) or the offline assistant

    def stream(self, message: Any, history: list[dict] | None, report: "Report | None" = None,
               profile: Profile | None = None) -> Iterator[str]:
        """Yield the reply as cumulative text. Never raises."""
        ...


PROFILE_LABELS = {"age_range": "Age range", "skin_type": "Skin type", "treatments": "Current treatments",
                  "sensitivities": "Sensitivities or allergies"}


def _length(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)  # O(1): nothing reads a refused text
    from acne.chat.prompt import content_text

    return len(content_text(value))  # a multimodal message {"text", "files"} or message parts


def input_too_long(message: Any, profile: dict[str, Any], *, max_message_chars: int,
                   max_field_chars: int) -> str | None:
    """A plain message when the chat message or an "About you" field is longer than the server accepts
    (ACNE_CHAT_MAX_CHARS, ACNE_PROFILE_MAX_CHARS), else None. The page's text boxes stop longer input
    in the browser; this check is for everything else (the API, scripts). It runs before anything
    else looks at the text, so a refused message costs no model or retrieval time."""
    length = _length(message)
    if length > max_message_chars:
        return (f"Your message is too long ({length:,} characters). This app accepts questions of up to "
                f"{max_message_chars:,} characters: please shorten it and ask again.")
    for name, value in profile.items():
        length = _length(value)
        if length > max_field_chars:
            label = PROFILE_LABELS.get(name, name)
            return (f"The “{label}” field is too long ({length:,} characters). It accepts up to "
                    f"{max_field_chars:,} characters: please shorten it.")
    return None


def load_assistant(settings: "Settings | None" = None) -> Assistant:
    """The OpenAI-backed assistant if an API key or a base URL is set, else the offline assistant.

    Cheap: no network traffic and no client is created until the first message.
    """
    from acne.config import Settings
    from acne.chat.offline import OfflineAssistant

    settings = settings or Settings.from_env()
    if settings.openai_api_key or settings.openai_base_url:
        from acne.chat.openai_backend import OpenAIAssistant

        return OpenAIAssistant(settings, fallback=OfflineAssistant())
    return OfflineAssistant(reason="no API key set")


__all__ = ["Assistant", "Profile", "input_too_long", "load_assistant"]
