"""The `acne batch` sub-command: its flags, the checks made before any model loads, the engine, the summary."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from ..records import OutputOptions, quiet_libraries
from .inputs import Task, assign_stems, expand_inputs, row_key
from .local import RunResult, default_workers, run_local, run_threads
from .sinks import OUTPUT_FORMATS, Output, RowState

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
NOT_ASSESSED = "not assessed"     # a row whose severity is None (e.g. a photo without skin)

def add_batch_parser(commands) -> argparse.ArgumentParser:
    """Add the `batch` sub-command to `commands` (argparse sub-parsers); returns its parser."""
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
    """Run `acne batch` (see acne/batch/__init__.py). Parameters: `args` the parsed flags, `parser` the
    parser (for usage errors). Returns the exit status: 0 all analysed, 1 some photos failed, 2 usage error
    or missing weights, 130 interrupted."""
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
    # Before any model loads: a mistyped input is a usage error at once. (A missing photo named in a
    # .txt/.csv list gets an error row instead: one stale line must not stop a long list.)
    missing = [p for p in args.inputs if not (Path(p).is_file() or Path(p).is_dir())]
    if missing:
        parser.error("no such photo file, folder or list: " + ", ".join(missing))
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

    from ..records import command_settings

    try:
        settings = command_settings(args)
    except ValueError as exc:  # a malformed environment variable
        print(f"acne: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Workers and actors get the model settings, never the chat's API key.
    settings = dataclasses.replace(settings, torch_threads=args.threads, openai_api_key=None)
    if not args.verbose:
        quiet_libraries()

    files = expand_inputs(args.inputs)
    before = output.read_rows()
    done = set(before)
    stems = assign_stems(files) if (args.overlay_dir or args.mask_dir) else {}
    tasks = [Task(i, f, stems.get(f)) for i, f in enumerate(files) if row_key(f) not in done]
    already = len(files) - len(tasks)
    options = OutputOptions(args.overlay_dir, args.mask_dir, args.boxes)
    progress = _progress_bar(len(files), already, args.quiet)
    result = RunResult()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None  # `kill` = Ctrl-C
    try:
        if tasks:
            if args.engine == "ray":
                from .ray import run_ray

                result = run_ray(tasks, settings, options, output, progress, address=args.address,
                                 concurrency=args.concurrency, num_cpus=args.num_cpus, batch_size=args.batch_size,
                                 verbose=args.verbose)
            else:
                from ..runtime import cpu_count

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
    return EXIT_FAILED if any(not row.ok for row in after.values()) else EXIT_OK


def summary(rows: dict[str, RowState], *, new: int, already: int, seconds: float, out: Path) -> str:
    """Photos per severity (None counts as "not assessed"), failures and time in two lines, with a line between
    them on how many of the graded photos are marked unreliable when any are.

    Parameters: `rows` row key -> RowState of every row in the output (Output.read_rows); `new` rows
    written by this run; `already` photos skipped as done; `seconds` this run's time; `out` the output file."""
    from ..report import UNRELIABLE
    from ..severity import CLASSES

    states = list(rows.values())
    counts = Counter((r.severity if r.severity is not None else NOT_ASSESSED) if r.ok else "failed" for r in states)
    order = list(CLASSES) + sorted(k for k in counts if k not in CLASSES and k not in (NOT_ASSESSED, "failed"))
    parts = [f"{name} {counts.get(name, 0)}" for name in order]
    parts += [f"{NOT_ASSESSED} {counts.get(NOT_ASSESSED, 0)}", f"failed {counts.get('failed', 0)}"]
    unreliable = sum(r.ok and r.severity is not None and r.assessment == UNRELIABLE for r in states)
    caveat = (f"\n  {unreliable} of the graded photo(s) marked unreliable (face too small, or a close-up without "
              "colour): see their warnings" if unreliable else "")
    rate = f", {new / seconds:.2f} photos/s" if new and seconds > 0 else ""
    return (f"acne batch: {len(rows)} photo(s) in {out}: " + " · ".join(parts) + caveat + "\n"
            f"  this run: {new} analysed in {seconds:.1f} s{rate} (start-up included); {already} already done")


def _progress_bar(total: int, initial: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="photo", desc="acne batch", file=sys.stderr, disable=quiet,
                dynamic_ncols=True, smoothing=0.05, mininterval=0.5)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
