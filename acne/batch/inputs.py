"""The photos of an `acne batch` run: files, folders (recursive) and .txt/.csv lists of paths, in order."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ..imaging import IMAGE_SUFFIXES
from ..records import unique_stem

LIST_SUFFIXES = {".txt", ".csv"}
CSV_COLUMNS = ("file", "path", "image", "filename", "photo")


@dataclass(frozen=True)
class Task:
    """One photo to analyse."""
    index: int            # position in the expanded input list
    file: str             # the photo's path as given (the row's `file`)
    stem: str | None      # name of its overlay / mask (None: not written)


def row_key(file: str) -> str:
    """What identifies a photo across runs (for --resume): its absolute, normalised path."""
    return os.path.normcase(os.path.abspath(file))


def expand_inputs(inputs: list[str]) -> list[str]:
    """Photos in order: files as given, folders searched recursively (sorted), lists read; duplicates once.

    Parameters: `inputs` photo files, folders (searched recursively; hidden files and folders skipped) and
    .txt/.csv lists of paths (read_list). Returns the photos' paths as given (or joined to their folder or
    list's folder). An empty folder stays in the list, as `acne analyze` does: it becomes an error row."""

    out: list[str] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = row_key(path)
        if key not in seen:
            seen.add(key)
            out.append(path)

    def visit(raw: str, from_list: bool) -> None:
        path = Path(raw)
        if path.is_dir():
            found = []
            for root, dirs, names in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(os.path.join(root, n) for n in sorted(names)
                             if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_SUFFIXES)
            for item in found or [str(path)]:
                add(item)
        elif not from_list and path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            for item in read_list(path):
                visit(item, True)
        else:
            add(str(path))

    for raw in inputs:
        visit(raw, False)
    return out


def read_list(path: Path) -> list[str]:
    """Paths listed in a .txt (one a line, `#` comments) or .csv file (the `file`, `path`, `image`,
    `filename` or `photo` column, else the first one); relative ones are taken from the list's folder.
    Returns the paths in the list's order."""
    base = path.parent
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if path.suffix.lower() == ".csv":
        rows = [row for row in csv.reader(text.splitlines()) if row and any(cell.strip() for cell in row)]
        column = 0
        if rows:
            header = [cell.strip().lower() for cell in rows[0]]
            named = [header.index(name) for name in CSV_COLUMNS if name in header]
            if named:
                column, rows = named[0], rows[1:]
        items = [row[column].strip() for row in rows if len(row) > column and row[column].strip()]
    else:
        items = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [item if os.path.isabs(os.path.expanduser(item)) else str(base / item) for item in
            (os.path.expanduser(i) for i in items)]


def assign_stems(files: list[str]) -> dict[str, str]:
    """Overlay / mask names, as the CLI gives them (x, x-2, ...), decided once over the whole input list so
    that a resumed run names every photo's images exactly as the first run would have. Returns file -> stem."""
    used: dict[str, int] = {}
    return {f: unique_stem(Path(f).stem, used) for f in files}
