"""Where the rows of `acne batch` go: a JSON-lines or Parquet file, its `.parts` folder, and --resume.

Rows are written as they finish (JSON lines, flushed row by row: a crash loses no finished row). A
.parquet output, and every Ray run, first collects rows in `<out>.parts/`, folded into `<out>` at the end.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from .inputs import row_key

log = logging.getLogger("acne")

OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
LIGHT_COLUMNS = ("file", "ok", "severity", "assessment")   # what resuming and the summary read of each row


class RowState(NamedTuple):
    """What the summary needs of one output row: whether it succeeded, its severity (None: not assessed)
    and its report's assessment (graded, unreliable or not_assessed; None in a failed row)."""
    ok: bool
    severity: str | None
    assessment: str | None


class JsonlSink:
    """Appends JSON lines, flushed row by row. A line cut off by a crash is removed first."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        self.rows = 0

    def write(self, record: dict) -> None:
        """Append `record` as one line, flushed to the OS at once."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # in the OS's hands: a killed process loses nothing
        self.rows += 1

    def close(self) -> None:
        """Close the file (every row written is already flushed)."""
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _drop_partial_line(path: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)  # 0 when there is no whole line at all


class Output:
    """The results file and its `.parts` folder: reading what is done, writing, consolidating."""

    def __init__(self, path: Path):
        """`path`: the results file, ending in .jsonl, .ndjson or .parquet."""
        self.path = Path(path)
        self.format = OUTPUT_FORMATS[self.path.suffix.lower()]
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"

    def exists(self) -> bool:
        """Is there a results file or a `.parts` folder (an earlier run's rows)?"""
        return self.path.exists() or self.parts.exists()

    def clear(self) -> None:
        """Delete the results file and the `.parts` folder (--overwrite)."""
        if self.path.exists():
            self.path.unlink()
        shutil.rmtree(self.parts, ignore_errors=True)

    def sink(self, direct: bool) -> JsonlSink:
        """Where this run's rows go: the .jsonl output itself, or a JSON-lines part."""
        return JsonlSink(self.path if direct else self.parts / f"rows-{self.run_id}.jsonl")

    def driver_sink(self) -> JsonlSink:
        """A JSON-lines part for rows the Ray driver writes itself (photos Ray cannot read)."""
        return JsonlSink(self.parts / f"rows-{self.run_id}.jsonl")

    # ---------------------------------------------------------------- reading
    def read_rows(self) -> dict[str, RowState]:
        """key -> RowState of every row in the output and its parts (the first row of a photo wins)."""
        rows: dict[str, RowState] = {}
        for record in self._records(light=True):
            rows.setdefault(row_key(record["file"]),
                            RowState(bool(record.get("ok")), record.get("severity"), record.get("assessment")))
        return rows

    def _records(self, light: bool = False):
        if self.path.is_file():
            yield from (_read_jsonl(self.path) if self.format == "jsonl" else _read_parquet(self.path, light))
        yield from self._part_records(light)

    def _part_records(self, light: bool = False):
        if not self.parts.is_dir():
            return
        for part in sorted(self.parts.iterdir()):
            if part.suffix == ".jsonl":
                yield from _read_jsonl(part)
            elif part.suffix == ".parquet":
                yield from _read_parquet_part(part, light)

    # ---------------------------------------------------------------- consolidating
    def consolidate(self, order: dict[str, int]) -> None:
        """Fold the .parts folder into the output (rows of photos it already has are dropped), then delete it.

        `order`: row key -> position in the input list (a Parquet output is written in input order)."""
        if not self.parts.is_dir():
            return
        if self.format == "jsonl":
            have = {row_key(r["file"]) for r in _read_jsonl(self.path)} if self.path.is_file() else set()
            with JsonlSink(self.path) as sink:
                for record in self._part_records():
                    key = row_key(record["file"])
                    if key not in have:
                        have.add(key)
                        sink.write(record)
        else:
            import pyarrow.parquet as pq

            records, have = [], set()
            for record in self._records():
                key = row_key(record["file"])
                if key not in have:
                    have.add(key)
                    records.append(record)
            records.sort(key=lambda r: order.get(row_key(r["file"]), len(order)))
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            pq.write_table(records_to_table(records), tmp)
            os.replace(tmp, self.path)  # atomic: the old output stays whole until the new one is
        shutil.rmtree(self.parts, ignore_errors=True)


def _read_jsonl(path: Path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:  # a line cut off by a crash: that photo is simply done again
                continue
            if isinstance(record, dict) and isinstance(record.get("file"), str):
                yield record


def _read_parquet(path: Path, light: bool):
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    columns = [c for c in LIGHT_COLUMNS if c in names] if light else None
    yield from pq.read_table(path, columns=columns).to_pylist()


def _read_parquet_part(path: Path, light: bool):
    """A Ray part: a few flat columns and the full row as JSON. An unreadable part (a write cut off) is skipped."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names      # parts written before `assessment` was a column lack it
        table = pq.read_table(path, columns=[c for c in LIGHT_COLUMNS if c in names] if light else ["record"])
    except Exception:  # noqa: BLE001 - a part cut off mid-write: its photos are done again
        log.info("Skipping the unreadable part %s", path.name)
        return
    if light:
        yield from table.to_pylist()
    else:
        yield from (json.loads(value) for value in table.column("record").to_pylist())


def records_to_table(records: list[dict]):
    """A pyarrow Table with one column per key of the rows (nested values as structs and lists); a column
    whose values Arrow cannot type consistently is stored as JSON text."""
    import pyarrow as pa

    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    columns = {}
    for name in names:
        values = [record.get(name) for record in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            columns[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    return pa.table(columns) if columns else pa.table({"file": pa.array([], pa.string())})
