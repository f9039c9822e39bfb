"""What the UI shows about a model: a short name and the measured figures shipped with its weights."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .. import runtime
from ..config import PROJECT_DIR

HUB_MODEL_NOTES = {
    "imfarzanansari/skintelligent-acne": (
        "ViT-B/16 fine-tuned on acne photos, labels `level -1` (clear) ... `level 3` (severe). Its trainer "
        "state reports one epoch of a planned three and an eval precision of 0.756 on about 490 images; "
        "the training data set and an accuracy figure are not published."),
}


def short_name(name: str) -> str:
    """A model's name for people: a folder relative to the project when inside it, else its last part;
    a Hub id as is."""
    path = Path(name)
    if path.is_absolute() or name.startswith((".", "~")):
        try:
            return str(path.resolve().relative_to(PROJECT_DIR))
        except ValueError:
            return path.name or name
    return name


def figures_markdown(name: str) -> str:
    """The measured figures that ship with a model (inference.json / metrics.json, and its model card)
    as Markdown; for a Hub id, a note on it."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return HUB_MODEL_NOTES.get(name, "Loaded from the Hugging Face Hub; see its model card there.")
    parts: list[str] = []
    for filename in ("inference.json", "metrics.json"):
        data = runtime.read_json_dict(folder / filename)
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


def card(name: str, input_size: int | None) -> dict:
    """{"name", "short_name", "input_size", "figures_markdown"} for one model."""
    return {"name": name, "short_name": short_name(name), "input_size": input_size,
            "figures_markdown": figures_markdown(name)}



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
