"""Where a model's files come from: a local save_pretrained folder or a Hugging Face Hub id.

The one home of the Hub-id rule: a name that is an existing folder is a folder; a name shaped like
`owner/name` (not absolute, not starting with . or ~) is a Hub id; anything else is a missing folder.
A Hub id is never fetched when the Hub is offline (HF_HUB_OFFLINE) or unreachable: then only the local
Hugging Face cache counts, and nothing waits on the network.
"""
from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..errors import WeightsMissingError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Source:
    """A resolved model name. `source` is what from_pretrained gets, `kwargs` its extra arguments
    (local_files_only when nothing may be downloaded); `folder` is the local folder of the files
    (a save_pretrained folder, or a Hub model's cached snapshot), or None."""
    name: str
    source: str
    folder: Path | None
    kwargs: dict

    @property
    def is_hub(self) -> bool:
        return not Path(self.source).is_dir()


def is_hub_id(name: str) -> bool:
    """Is `name` shaped like a Hub id (and not a path)?"""
    path = Path(name).expanduser()
    return bool(HUB_ID.match(name)) and not path.is_absolute() and not name.startswith((".", "~"))


def resolve(name: str, required: tuple[str, ...] = ("config.json",), *, probe_hub: bool = True) -> Source:
    """Resolve a model name to its files.

    Args:
        name: a save_pretrained folder or a Hub id.
        required: files a folder must hold.
        probe_hub: for a Hub id, check (once, 3 s at most) that the Hub can be reached before trying it.
    Returns:
        a Source.
    Raises:
        WeightsMissingError: a folder lacks a required file, or the name is neither a folder nor a Hub id.
        OSError: a Hub id that is not cached while the Hub is offline or unreachable.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        for filename in required:
            if not (path / filename).is_file():
                raise WeightsMissingError(f"{path / filename} is missing")
        return Source(name, str(path), path, {"local_files_only": True})
    if not is_hub_id(name):
        raise WeightsMissingError(f"the folder {path} does not exist")
    cached, offline = hub_cached(name, "config.json") is not None, hub_offline()
    if offline and not cached:
        # Fails fast, before importing transformers or smp (as it would fail after importing them).
        raise OSError(f"{name} is not in the Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE)")
    if not offline and probe_hub and not hub_reachable():
        # huggingface_hub would retry for ~25 s, logging each try, before giving up.
        if not cached:
            raise OSError(f"{name} is not in the Hugging Face cache and the Hub cannot be reached")
        return Source(name, name, hub_snapshot(name), {"local_files_only": True})
    return Source(name, name, hub_snapshot(name), {"local_files_only": True} if offline else {})


def hub_file(repo_id: str, filename: str) -> Path | None:
    """A file of a Hub model (from the cache, or downloaded), or None when it cannot be had."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, filename))
    except Exception:  # noqa: BLE001 - optional files; the weights download reports real failures
        return None


def hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a Hub model already in the Hugging Face cache (no network)."""
    found = [hub_cached(repo_id, f) for f in ("config.json", "model.safetensors")]
    return None if None in found else found[0].parent


def hub_cached(repo_id: str, filename: str) -> Path | None:
    """The cached copy of one file of a Hub model, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # noqa: BLE001 - no cache, bad id: not cached
        return None
    return Path(found) if isinstance(found, str) else None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the Hub endpoint be opened within `timeout` seconds? A behind-a-proxy
    setup cannot be probed this way: then assume yes and let huggingface_hub decide."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        from huggingface_hub import constants

        endpoint = urlparse(constants.ENDPOINT)
    except (ImportError, ValueError):
        return True
    host = endpoint.hostname
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    if not host:
        return True
    outcome: list[bool] = []

    def probe() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(outcome and outcome[0])


def hub_offline() -> bool:
    """Is huggingface_hub in offline mode (HF_HUB_OFFLINE)?"""
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def weight_files(folder: Path | None) -> list[Path] | None:
    """config.json and the single weights file of a folder (what a fingerprint hashes), or None for
    sharded or unusual layouts (then the loaded weights are hashed instead)."""
    if folder is None:
        return None
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file() and (folder / "config.json").is_file():
            return [folder / "config.json", folder / name]
    return None


def short_error(exc: BaseException) -> str:
    """One line for an exception: its type and the first line of its message (200 characters at most)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_weights(folder: Path | None) -> None:
    """Raise (ValueError / OSError) when a folder's model.safetensors is damaged or truncated: its header
    and sizes are read, not its tensors, so this costs milliseconds and builds no model."""
    weights = folder / "model.safetensors" if folder is not None else None
    if weights is None or not weights.is_file():
        return
    from safetensors import safe_open

    with safe_open(str(weights), framework="np") as f:
        f.keys()
