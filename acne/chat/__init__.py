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
    name: str  # shown in the UI: which model answers (host only, never a key) or the offline assistant

    def stream(self, message: Any, history: list[dict] | None, report: "Report | None" = None,
               profile: Profile | None = None) -> Iterator[str]:
        """Yield the reply as cumulative text. Never raises."""
        ...


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


__all__ = ["Assistant", "Profile", "load_assistant"]
