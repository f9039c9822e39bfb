"""What a model says about itself for the About tab: a short name and the figures that ship with it.

A local weights folder may hold inference.json / metrics.json (measured figures) and a model card
(README.md); a Hub model we know gets a short note, any other a pointer to its card on the Hub.
"""
# stand-in until the core branch lands: the models engineer gives this its home in acne/models/.
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .config import PROJECT_DIR

HUB_MODEL_NOTES = {
    "imfarzanansari/skintelligent-acne": (
        "ViT-B/16 fine-tuned on acne photos, labels `level -1` (clear) ... `level 3` (severe). Its trainer "
        "state reports one epoch of a planned three and an eval precision of 0.756 on about 490 images; "
        "the training data set and an accuracy figure are not published."),
}


def describe_model(model: Any) -> dict:
    """One loaded model (segmenter or grader) as plain data.

    Args:
        model: an object with `name` (weights folder or Hub id) and, optionally, `input_size`.
    Returns:
        {"name", "short_name", "input_size" (int or None), "figures_markdown"}.
    """
    name = str(getattr(model, "name", "?"))
    return {"name": name, "short_name": short_name(name), "input_size": getattr(model, "input_size", None),
            "figures_markdown": model_figures(name)}


def short_name(name: str) -> str:
    """A weights folder relative to the project (or its last part); a Hub id as it is."""
    path = Path(name)
    if path.is_absolute() or name.startswith((".", "~")):
        try:
            return str(path.resolve().relative_to(PROJECT_DIR))
        except ValueError:
            return path.name or name
    return name


def model_figures(name: str) -> str:
    """Markdown of the measured figures shipped with a model (inference.json, metrics.json) and its card.

    Args:
        name: a weights folder or a Hub id.
    Returns:
        Markdown tables and the model card folded in a <details>; for a Hub id, a note.
    """
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return HUB_MODEL_NOTES.get(name, "Loaded from the Hugging Face Hub; see its model card there.")
    parts: list[str] = []
    for filename in ("inference.json", "metrics.json"):
        data = _read_json(folder / filename)
        rows: list[tuple[str, str]] = []
        for key, value in data.items():
            if "metric" in key.lower() and isinstance(value, dict):
                rows += _metric_rows(value)
            elif key.lower() in ("trained_steps", "epochs", "data", "dataset", "split"):
                rows += _metric_rows({key: value})
        if rows:
            table = "\n".join(f"| {html.escape(k)} | {html.escape(v)} |" for k, v in rows[:40])
            parts.append(f"Figures from `{filename}`:\n\n| measure | value |\n|---|---|\n{table}")
    card = folder / "README.md"
    if card.is_file():
        text = card.read_text(errors="replace")
        if text.startswith("---"):  # YAML front matter of a Hub model card
            text = text.split("---", 2)[-1]
        parts.append(f"<details><summary>Model card (README.md)</summary>\n\n{text.strip()}\n\n</details>")
    return "\n\n".join(parts) or "No measured figures were shipped with these weights."


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _metric_rows(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            rows += _metric_rows(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}")
    elif isinstance(data, float):
        rows.append((prefix, f"{data:.3f}"))
    elif isinstance(data, (int, str, bool)):
        rows.append((prefix, str(data)))
    return rows
