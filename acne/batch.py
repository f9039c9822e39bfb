"""`python -m acne batch INPUT... --out results.jsonl|results.parquet`: many photos, one row each.

Inputs are photo files, folders (searched recursively for image files; hidden files are skipped) and
lists of paths (`.txt`: one path a line, `#` comments; `.csv`: the `file`, `path` or `image` column,
else the first one). Relative paths in a list are taken from the list's folder. Every photo gives one
row with the contract of `python -m acne analyze --json` (`file`, `ok`, `error` when not ok, ...); a
photo that cannot be analysed gives an error row and never stops the run.

Engines:
- `local` (default): `--workers` photos at a time (default: one per CPU), each model call on one thread,
  as `analyze` runs them, so the rows are the same. `--pool threads` (default): threads in this
  process sharing one copy of the models; one photo's reading, decoding and post-processing overlap
  the others' inference, and no core waits for the other model as in `analyze`. `--pool processes`:
  spawned worker processes, each with its own copy of the models on `--threads` threads; each reads
  the next photo while it analyses the current one, is handed at most two photos at a time (a bounded
  pipeline), and a worker that dies is replaced (its photo is tried once more, then gets an error row).
  Either way the parent writes each row as it arrives and draws the progress bar.
- `ray`: Ray Data over a local instance or a cluster (acne/batch_ray.py).

Output and resume: rows are written as they finish (JSON lines, flushed row by row, so a crash, Ctrl-C
or a killed process loses no finished row). A `.parquet` output, and every Ray run, first collects
rows in `<out>.parts/` (JSON lines or Parquet parts), then consolidates them into `<out>` at the end.
`--resume` skips every photo that already has a row in `<out>` or `<out>.parts/`, whatever engine
wrote it, and consolidates what an interrupted run left.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

log = logging.getLogger("acne")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
LIST_SUFFIXES = {".txt", ".csv"}
CSV_COLUMNS = ("file", "path", "image", "filename", "photo")
NOT_ASSESSED = "not assessed"     # a row whose severity is None (e.g. a photo without skin)
WORKER_MEMORY = 1.5e9             # bytes one local worker may need (models + one photo): caps --workers
IN_FLIGHT_PER_WORKER = 2          # photos handed to a worker at once: one analysed, one read ahead


# --------------------------------------------------------------------------- command line

def add_batch_parser(commands) -> argparse.ArgumentParser:
    batch = commands.add_parser(
        "batch", help="analyse many photos into a JSON-lines or Parquet file, with progress and resume",
        description="Analyse many photos: files, folders (recursive) or .txt/.csv lists of paths. One row per "
                    "photo with the `analyze --json` contract, error rows for photos that cannot be analysed.",
        epilog="Exit status: 0 all analysed, 1 some photos failed (error rows), 2 usage error or missing model "
               "weights, 130 interrupted (finished rows are kept: rerun with --resume).")
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="photo, folder of photos, or .txt/.csv list of paths")
    batch.add_argument("--out", required=True, type=Path, metavar="FILE",
                       help="results file: .jsonl (JSON lines) or .parquet")
    batch.add_argument("--resume", action="store_true",
                       help="skip photos that already have a row in --out (or in its .parts folder)")
    batch.add_argument("--overwrite", action="store_true", help="delete an existing --out and start again")
    batch.add_argument("--overlay-dir", type=Path, metavar="D", help="write <stem>.png lesion overlays here")
    batch.add_argument("--mask-dir", type=Path, metavar="D", help="write <stem>.png lesion masks (0/255) here")
    batch.add_argument("--boxes", action="store_true", help="draw each lesion's box on the overlays")
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    batch.add_argument("-v", "--verbose", action="store_true", help="log model loading and engine details")
    batch.add_argument("--segmenter", metavar="DIR_OR_HUB_ID", help="segmenter weights (overrides ACNE_SEGMENTER)")
    batch.add_argument("--grader", metavar="DIR_OR_HUB_ID", help="grader model (overrides ACNE_GRADER)")
    batch.add_argument("--seg-size", type=int, metavar="N", help="long side fed to the segmenter (ACNE_SEG_SIZE)")
    batch.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: worker processes on this machine (default); ray: Ray Data (pip install .[scale])")
    local = batch.add_argument_group("local engine")
    local.add_argument("--workers", type=int, metavar="N",
                       help="photos analysed at once (default: the CPUs this process may use; with --pool processes "
                            "divided by --threads and capped by free memory)")
    local.add_argument("--pool", choices=("threads", "processes"), default="threads",
                       help="threads: workers share one copy of the models in this process (default); processes: "
                            "each worker is a process with its own copy (more memory, a crash costs one photo)")
    local.add_argument("--threads", type=int, default=1, metavar="T",
                       help="with --pool processes: inference threads per worker process (default 1); "
                            "ACNE_TORCH_THREADS is not used")
    ray = batch.add_argument_group("ray engine")
    ray.add_argument("--address", metavar="ADDR",
                     help="join this Ray cluster (e.g. 10.0.0.5:6379 or auto); default: a local instance on 127.0.0.1")
    ray.add_argument("--concurrency", type=int, metavar="N",
                     help="model actors (default: the cluster's CPUs / --num-cpus)")
    ray.add_argument("--num-cpus", type=float, default=1, metavar="C",
                     help="CPUs reserved per actor (default 1; its models run on that many threads)")
    ray.add_argument("--batch-size", type=int, default=4, metavar="B",
                     help="photos per map_batches call, and per written part (default 4)")
    return batch


def main(args, parser: argparse.ArgumentParser) -> int:
    """`python -m acne batch`: see the module docstring."""
    try:
        return _main(args, parser)
    except KeyboardInterrupt:  # before or after the analysis (during it, the engines stop cleanly)
        print("acne: interrupted; finished rows are kept. Run the same command with --resume to finish.",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(args, parser: argparse.ArgumentParser) -> int:
    started = time.perf_counter()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="acne: %(message)s")
    fmt = OUTPUT_FORMATS.get(args.out.suffix.lower())
    if fmt is None:
        parser.error(f"--out must end in .jsonl or .parquet, got {args.out.name}")
    for name in ("workers", "threads", "concurrency", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.num_cpus <= 0:
        parser.error("--num-cpus must be more than 0")
    if args.seg_size is not None and args.seg_size < 64:
        parser.error("--seg-size must be at least 64")
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    output = Output(args.out)
    if output.exists() and not (args.resume or args.overwrite):
        parser.error(f"{args.out} already exists (or an interrupted run left {output.parts.name}): add --resume to "
                     "continue it, or --overwrite to start again")
    for folder in (args.out.parent, args.overlay_dir, args.mask_dir):
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                parser.error(f"cannot create output folder {folder}: {exc.strerror or exc}")
    if args.overwrite:
        output.clear()

    from .config import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a malformed environment variable
        print(f"acne: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    overrides = {k: v for k, v in (("segmenter", args.segmenter), ("grader", args.grader),
                                   ("seg_size", args.seg_size)) if v is not None}
    import dataclasses

    # Workers and actors get the model settings, never the chat's API key.
    settings = dataclasses.replace(settings, torch_threads=args.threads, openai_api_key=None, **overrides)
    if not args.verbose:
        from .cli import _quiet_libraries

        _quiet_libraries()

    files = expand_inputs(args.inputs)
    before = output.read_rows()
    done = set(before)
    stems = assign_stems(files) if (args.overlay_dir or args.mask_dir) else {}
    tasks = [Task(i, f, stems.get(f)) for i, f in enumerate(files) if row_key(f) not in done]
    already = len(files) - len(tasks)
    options = {"overlay_dir": args.overlay_dir, "mask_dir": args.mask_dir, "boxes": args.boxes}
    progress = _progress_bar(len(files), already, args.quiet)
    result = RunResult()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None  # `kill` = Ctrl-C
    try:
        if tasks:
            if args.engine == "ray":
                from .batch_ray import run_ray

                result = run_ray(tasks, settings, options, output, progress, address=args.address,
                                 concurrency=args.concurrency, num_cpus=args.num_cpus, batch_size=args.batch_size,
                                 verbose=args.verbose)
            else:
                from .runtime import cpu_count

                threaded = args.pool == "threads"
                workers = args.workers or (cpu_count() if threaded else default_workers(args.threads))
                with output.sink(fmt == "jsonl") as sink:
                    if threaded:
                        result = run_threads(tasks, settings, options, sink, progress, threads=workers,
                                             verbose=args.verbose)
                    else:
                        result = run_local(tasks, settings, options, sink, progress, workers=workers,
                                           verbose=args.verbose)
    finally:
        progress.close()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if result.fatal:
        print(f"acne: cannot start: {result.fatal}", file=sys.stderr)
        return EXIT_USAGE
    if result.error:
        print(f"acne: {result.error}", file=sys.stderr)
        return EXIT_FAILED
    if result.interrupted:
        if not args.quiet:
            print(f"acne: interrupted; {result.rows} row(s) written this run are kept. Run the same command "
                  "with --resume to finish.", file=sys.stderr)
        return EXIT_INTERRUPTED
    output.consolidate(order={row_key(f): i for i, f in enumerate(files)})
    after = output.read_rows()
    if not args.quiet:
        print(summary(after, new=len(set(after) - done), already=already, seconds=time.perf_counter() - started,
                      out=args.out), file=sys.stderr)
    return EXIT_FAILED if any(not ok for ok, _ in after.values()) else EXIT_OK


# --------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Task:
    index: int            # position in the expanded input list
    file: str             # the photo's path as given (the row's `file`)
    stem: str | None      # name of its overlay / mask (None: not written)


def row_key(file: str) -> str:
    """What identifies a photo across runs (for --resume): its absolute, normalised path."""
    return os.path.normcase(os.path.abspath(file))


def expand_inputs(inputs: list[str]) -> list[str]:
    """Photos in order: files as given, folders searched recursively (sorted), lists read; duplicates once.

    An empty folder stays in the list, as the CLI does: it becomes an error row."""
    from .cli import IMAGE_SUFFIXES

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
    """Paths listed in a .txt (one a line) or .csv file, relative ones taken from the list's folder."""
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
    that a resumed run names every photo's images exactly as the first run would have."""
    from .cli import _unique_stem

    used: dict[str, int] = {}
    return {f: _unique_stem(Path(f).stem, used) for f in files}


def default_workers(threads: int) -> int:
    from .runtime import cpu_count

    workers = max(1, cpu_count() // max(1, threads))
    available = _available_memory()
    return min(workers, max(1, int(available // WORKER_MEMORY))) if available else workers


def _available_memory() -> int | None:
    """Bytes of memory available to new processes (Linux MemAvailable: free memory plus reclaimable cache)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# --------------------------------------------------------------------------- output

class JsonlSink:
    """Appends JSON lines, flushed row by row. A line cut off by a crash is removed first."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        self.rows = 0

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # in the OS's hands: a killed process loses nothing
        self.rows += 1

    def close(self) -> None:
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
        self.path = Path(path)
        self.format = OUTPUT_FORMATS[self.path.suffix.lower()]
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"

    def exists(self) -> bool:
        return self.path.exists() or self.parts.exists()

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()
        shutil.rmtree(self.parts, ignore_errors=True)

    def sink(self, direct: bool) -> JsonlSink:
        """Where this run's rows go: the .jsonl output itself, or a JSON-lines part."""
        return JsonlSink(self.path if direct else self.parts / f"rows-{self.run_id}.jsonl")

    def driver_sink(self) -> JsonlSink:
        return JsonlSink(self.parts / f"rows-{self.run_id}.jsonl")

    # ---------------------------------------------------------------- reading
    def read_rows(self) -> dict[str, tuple[bool, str | None]]:
        """key -> (ok, severity) of every row in the output and its parts (the first row of a photo wins)."""
        rows: dict[str, tuple[bool, str | None]] = {}
        for record in self._records(light=True):
            rows.setdefault(row_key(record["file"]), (bool(record.get("ok")), record.get("severity")))
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
        """Fold the .parts folder into the output (rows of photos it already has are dropped), then delete it."""
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
    columns = [c for c in ("file", "ok", "severity") if c in names] if light else None
    yield from pq.read_table(path, columns=columns).to_pylist()


def _read_parquet_part(path: Path, light: bool):
    """A Ray part: a few flat columns and the full row as JSON. An unreadable part (a write cut off) is skipped."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["file", "ok", "severity"] if light else ["record"])
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


# --------------------------------------------------------------------------- summary and progress

def summary(rows: dict[str, tuple[bool, str | None]], *, new: int, already: int, seconds: float, out: Path) -> str:
    """Photos per severity (None counts as "not assessed"), failures and time, in two lines."""
    from .severity import CLASSES

    counts = Counter((sev if sev is not None else NOT_ASSESSED) if ok else "failed" for ok, sev in rows.values())
    order = list(CLASSES) + sorted(k for k in counts if k not in CLASSES and k not in (NOT_ASSESSED, "failed"))
    parts = [f"{name} {counts.get(name, 0)}" for name in order]
    parts += [f"{NOT_ASSESSED} {counts.get(NOT_ASSESSED, 0)}", f"failed {counts.get('failed', 0)}"]
    rate = f", {new / seconds:.2f} photos/s" if new and seconds > 0 else ""
    return (f"acne batch: {len(rows)} photo(s) in {out}: " + " · ".join(parts) + "\n"
            f"  this run: {new} analysed in {seconds:.1f} s{rate} (start-up included); {already} already done")


def _progress_bar(total: int, initial: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="photo", desc="acne batch", file=sys.stderr, disable=quiet,
                dynamic_ncols=True, smoothing=0.05, mininterval=0.5)


# --------------------------------------------------------------------------- the local engine

@dataclass
class RunResult:
    rows: int = 0                 # rows written by this run
    failed: int = 0
    interrupted: bool = False
    fatal: str | None = None      # the models could not be loaded: nothing was analysed
    error: str | None = None      # the run failed part-way (Ray job): finished rows are kept


@dataclass
class _Worker:
    id: int
    process: object
    tasks: object                                   # multiprocessing queue of Task | None
    in_flight: deque = field(default_factory=deque)  # tasks handed out, oldest first
    ready: bool = False


def run_local(tasks: list[Task], settings, options: dict, sink: JsonlSink, progress, *, workers: int,
              verbose: bool = False) -> RunResult:
    """Analyse `tasks` in `workers` processes; write each row to `sink` as it arrives."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads is unsafe
    results = ctx.Queue()
    pending = deque(tasks)
    result = RunResult()
    pool: dict[int, _Worker] = {}
    next_id = 0
    respawns = max(2, 2 * workers)
    crashes: Counter = Counter()      # task index -> worker deaths while it was being analysed

    def start_worker() -> None:
        nonlocal next_id
        task_queue = ctx.Queue()
        process = ctx.Process(target=_worker_main, name=f"acne-batch-{next_id}", daemon=True,
                              args=(next_id, settings, options, task_queue, results, os.getpid(), verbose))
        # Started with Ctrl-C ignored (kept across exec, and Python then leaves it so): the parent alone
        # handles it, even while a worker is still starting up.
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
        try:
            process.start()
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, previous)
        pool[next_id] = _Worker(next_id, process, task_queue)
        next_id += 1

    def handle(message) -> None:
        kind, wid = message[0], message[1]
        worker = pool.get(wid)
        if kind == "ready" and worker:
            worker.ready = True
        elif kind == "fatal":
            result.fatal = result.fatal or message[2]
        elif kind == "row":
            index, record = message[2], message[3]
            if worker and worker.in_flight and worker.in_flight[0].index == index:
                worker.in_flight.popleft()
            elif worker:  # should not happen (FIFO), but never lose track of a task
                worker.in_flight = deque(t for t in worker.in_flight if t.index != index)
            write(record)

    def write(record: dict) -> None:
        sink.write(record)
        result.rows += 1
        result.failed += not record.get("ok")
        progress.update(1)
        if result.failed:
            progress.set_postfix(failed=result.failed, refresh=False)

    def drain() -> None:
        while True:
            try:
                handle(results.get_nowait())
            except queue.Empty:
                return

    def bury(worker: _Worker) -> None:
        """A worker died: the photo it was analysing is tried once more (a second death gives it an error
        row), the others it held go back to the queue, and a new worker takes its place."""
        nonlocal respawns
        drain()
        pool.pop(worker.id, None)
        if not worker.ready:
            if not any(w.ready for w in pool.values()):
                result.fatal = result.fatal or (f"a worker process exited while loading the models (exit code "
                                                f"{worker.process.exitcode}); run with -v for details")
                return
            pending.extendleft(reversed(worker.in_flight))  # it had not begun: no photo is to blame
        elif worker.in_flight:
            culprit = worker.in_flight.popleft()
            pending.extendleft(reversed(worker.in_flight))
            crashes[culprit.index] += 1
            if crashes[culprit.index] < 2:   # once may be bad luck (a killed process): try it again
                pending.appendleft(culprit)
            else:
                write({"file": culprit.file, "ok": False,
                       "error": f"The analysis of this photo stopped its worker process twice (exit code "
                                f"{worker.process.exitcode}); it was skipped."})
        respawns -= 1
        if respawns < 0:
            result.error = "worker processes keep exiting; stopped (finished rows are kept: rerun with --resume)"
            return
        start_worker()

    try:
        for _ in range(min(workers, len(tasks))):
            start_worker()
        while (pending or any(w.in_flight for w in pool.values())) and not (result.fatal or result.error):
            for worker in list(pool.values()):
                while pending and len(worker.in_flight) < IN_FLIGHT_PER_WORKER:
                    task = pending.popleft()
                    worker.in_flight.append(task)
                    worker.tasks.put(task)
            try:
                handle(results.get(timeout=0.5))
            except queue.Empty:
                pass
            for worker in list(pool.values()):
                if worker.process.exitcode is not None:
                    bury(worker)
            if not pool and not (result.fatal or result.error):
                result.error = "no worker process is left; stopped (finished rows are kept: rerun with --resume)"
    except KeyboardInterrupt:
        result.interrupted = True
        drain()  # rows that arrived keep their place
    finally:
        for worker in pool.values():
            try:
                worker.tasks.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + (0 if result.interrupted or result.fatal or result.error else 30)
        for worker in pool.values():
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.terminate()
                worker.process.join(timeout=5)
        if not result.interrupted:
            drain()
        results.close()
    return result


def run_threads(tasks: list[Task], settings, options: dict, sink: JsonlSink, progress, *, threads: int,
                verbose: bool = False) -> RunResult:
    """Analyse `tasks` in this process: one copy of the models, `threads` threads each taking whole photos
    (reading, decoding, both models on one thread each, post-processing), so one photo's reading and
    post-processing overlap the others' inference. Rows are written here, as they arrive."""
    import dataclasses

    from . import runtime
    from .cli import _analyze_one
    from .imaging import InvalidImageError, _read_file

    try:
        from .analysis import load_analyzer

        analyzer = load_analyzer(dataclasses.replace(settings, torch_threads=1))
    except Exception as exc:  # noqa: BLE001 - WeightsMissingError, bad settings: one message, no traceback
        return RunResult(fatal=str(exc))
    todo: queue.Queue = queue.Queue()
    for task in tasks:
        todo.put(task)
    finished: queue.Queue = queue.Queue()
    stop = threading.Event()
    args = SimpleNamespace(**options)

    def work() -> None:
        runtime.pin_torch_threads(1)  # OpenMP counts are per thread: one each, as each model gets in `analyze`
        while not stop.is_set():
            try:
                task = todo.get_nowait()
            except queue.Empty:
                return
            try:
                data = _read_file(Path(task.file))
            except InvalidImageError:
                data = None  # analysing the path itself then gives the CLI's own message
            try:
                record = _analyze_one(analyzer, Path(task.file), args, {}, source=data, stem=task.stem)
            except BaseException as exc:  # noqa: BLE001 - never lose a photo silently
                record = {"file": task.file, "ok": False,
                          "error": f"Internal error while analysing this image ({type(exc).__name__})."}
            finished.put(record)

    result = RunResult()

    def write(record: dict) -> None:
        sink.write(record)
        result.rows += 1
        result.failed += not record.get("ok")
        progress.update(1)
        if result.failed:
            progress.set_postfix(failed=result.failed, refresh=False)

    pool = [threading.Thread(target=work, name=f"acne-batch-{i}", daemon=True) for i in range(max(1, threads))]
    try:
        for thread in pool:
            thread.start()
        while result.rows < len(tasks):
            try:
                write(finished.get(timeout=0.5))
            except queue.Empty:
                if not any(thread.is_alive() for thread in pool) and finished.empty():
                    break
    except KeyboardInterrupt:
        # The photos being analysed are finished and kept (a second or so); the others are not started.
        # Leaving threads inside torch while the interpreter exits can abort the process.
        result.interrupted = True
        stop.set()
        for thread in pool:
            thread.join()
        while True:
            try:
                write(finished.get_nowait())
            except queue.Empty:
                break
    return result


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker_main(wid: int, settings, options: dict, tasks, results, parent: int, verbose: bool) -> None:
    """One local worker: load the models once, then analyse the photos it is handed, in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    os.environ["OMP_NUM_THREADS"] = str(max(1, settings.torch_threads))
    # Warnings (e.g. which grader was loaded) once, from the first worker, not once per worker.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING if wid == 0 else logging.ERROR,
                        stream=sys.stderr, format=f"acne[worker {wid}]: %(message)s")
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    from .cli import _analyze_one, _quiet_libraries

    if not verbose:
        _quiet_libraries()
    try:
        from .analysis import load_analyzer

        analyzer = load_analyzer(settings)
    except Exception as exc:  # noqa: BLE001 - WeightsMissingError, bad settings: one message, no traceback
        results.put(("fatal", wid, str(exc)))
        return
    results.put(("ready", wid))
    ahead: queue.Queue = queue.Queue(maxsize=1)
    threading.Thread(target=_read_ahead, args=(tasks, ahead), daemon=True).start()
    args = SimpleNamespace(**options)
    while True:
        item = ahead.get()
        if item is None:
            return
        task, data = item
        record = _analyze_one(analyzer, Path(task.file), args, {}, source=data, stem=task.stem)
        results.put(("row", wid, task.index, record))


def _read_ahead(tasks, ahead: queue.Queue) -> None:
    """The worker's reader thread: the next photo's bytes are read while the current one is analysed."""
    from .imaging import InvalidImageError, _read_file

    while True:
        task = tasks.get()
        if task is None:
            ahead.put(None)
            return
        try:
            data = _read_file(Path(task.file))
        except InvalidImageError:
            data = None  # analysing the path itself then gives the CLI's own message (missing, a folder...)
        ahead.put((task, data))


def _watch_parent(parent: int) -> None:
    # A parent killed with SIGKILL cannot stop its workers: they notice and leave on their own.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)

