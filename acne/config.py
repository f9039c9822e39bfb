"""All configuration in one place: environment variables, optionally from a `.env` file.

Every variable is listed in the README's configuration table; keep the two in step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
WEIGHTS_DIR = PROJECT_DIR / "weights"

DEFAULT_GRADER = "imfarzanansari/skintelligent-acne"
DEFAULT_CHAT_MODEL = "gpt-4o-mini"


def _load_dotenv() -> None:
    # A .env next to the project (or in the working directory) fills in unset variables only.
    try:
        from dotenv import load_dotenv
    except ImportError:  # optional dependency
        return
    for candidate in (Path.cwd() / ".env", PROJECT_DIR / ".env"):
        if candidate.is_file():
            load_dotenv(candidate, override=False)


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _int(name: str, default: int) -> int:
    raw = _env(name)
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def _float(name: str, default: float) -> float:
    raw = _env(name)
    try:
        return float(raw) if raw is not None else default
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    # Models
    segmenter: str = str(WEIGHTS_DIR / "segmenter")
    grader: str = DEFAULT_GRADER
    grader_fallback: str = str(WEIGHTS_DIR / "grader")
    face_detector: str = str(WEIGHTS_DIR / "face_detector")   # finds the face to analyse (acne/region.py)
    skin_check: str = str(WEIGHTS_DIR / "skin_check")   # is the region skin at all? (acne/skin.py)
    seg_size: int | None = None    # long side fed to the UNet; None: inference.json's input_size, else 640
    seg_threshold: float | None = None  # None: use the threshold stored with the weights
    torch_threads: int = 0         # inference threads (PyTorch and ONNX Runtime); 0: OMP_NUM_THREADS if set,
                                   # else the CPUs this process may use (cgroup-aware, see acne/runtime.py)
    # Speed (acne/fastpath.py)
    backend: str = "auto"          # auto | bf16 | onnx | torch; auto: the fastest that passes the accuracy
                                   # guard, measured on first use and remembered per CPU, threads and weights
    parallel: str = "auto"         # auto | on | off: run the segmenter and the grader side by side, each on
                                   # half the threads; auto: measured with the backend
    cache_dir: str | None = None   # exported ONNX models and the measured choice; None: $XDG_CACHE_HOME or
                                   # ~/.cache, /acne-detection-ai
    # Chat
    openai_api_key: str | None = field(default=None, repr=False)  # never print the key
    openai_base_url: str | None = None
    chat_model: str = DEFAULT_CHAT_MODEL
    chat_timeout: float = 30.0
    chat_max_retries: int = 1
    chat_history_chars: int = 12000
    chat_embeddings: str = "auto"  # offline assistant's sentence embeddings: auto | off | a folder (acne/chat/embeddings.py)
    chat_max_chars: int = 2000     # longest chat message the server accepts (the page's text box allows as many)
    profile_max_chars: int = 200   # longest "About you" field the server accepts
    # Web app
    max_upload_mb: int = 15
    max_pixels: int = 50_000_000
    concurrency: int = 1
    time_limit: float = 120.0      # seconds per analysis or chat answer in the web app
    cache_ttl: int = 1800          # seconds before the web app deletes leftover temp files
    mcp: bool = False              # also serve the analysis as an MCP tool (Gradio's mcp_server; gradio[mcp])

    @classmethod
    def from_env(cls) -> "Settings":
        _load_dotenv()
        return cls(
            segmenter=_env("ACNE_SEGMENTER", cls.segmenter),
            grader=_env("ACNE_GRADER", cls.grader),
            grader_fallback=_env("ACNE_GRADER_FALLBACK", cls.grader_fallback),
            face_detector=_env("ACNE_FACE_DETECTOR", cls.face_detector),
            skin_check=_env("ACNE_SKIN_CHECK", cls.skin_check),
            seg_size=_int("ACNE_SEG_SIZE", cls.seg_size),
            seg_threshold=_float("ACNE_SEG_THRESHOLD", -1.0) if _env("ACNE_SEG_THRESHOLD") else None,
            torch_threads=_int("ACNE_TORCH_THREADS", cls.torch_threads),
            backend=_env("ACNE_BACKEND", cls.backend),
            parallel=_env("ACNE_PARALLEL", cls.parallel),
            cache_dir=_env("ACNE_CACHE_DIR", cls.cache_dir),
            openai_api_key=_env("OPENAI_API_KEY"),
            openai_base_url=_env("OPENAI_BASE_URL"),
            chat_model=_env("ACNE_CHAT_MODEL", cls.chat_model),
            chat_timeout=_float("ACNE_CHAT_TIMEOUT", cls.chat_timeout),
            chat_max_retries=_int("ACNE_CHAT_MAX_RETRIES", cls.chat_max_retries),
            chat_history_chars=_int("ACNE_CHAT_HISTORY_CHARS", cls.chat_history_chars),
            chat_embeddings=_env("ACNE_CHAT_EMBEDDINGS", cls.chat_embeddings),
            chat_max_chars=_int("ACNE_CHAT_MAX_CHARS", cls.chat_max_chars),
            profile_max_chars=_int("ACNE_PROFILE_MAX_CHARS", cls.profile_max_chars),
            max_upload_mb=_int("ACNE_MAX_UPLOAD_MB", cls.max_upload_mb),
            max_pixels=_int("ACNE_MAX_PIXELS", cls.max_pixels),
            concurrency=_int("ACNE_CONCURRENCY", cls.concurrency),
            time_limit=_float("ACNE_TIME_LIMIT", cls.time_limit),
            cache_ttl=_int("ACNE_CACHE_TTL", cls.cache_ttl),
            mcp=_bool("ACNE_MCP", cls.mcp),
        )
