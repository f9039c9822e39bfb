"""The Ray engine of `acne batch --engine ray` (the optional `scale` extra: `ray[data]`).

    ray.data.read_binary_files(photos)            # read tasks: the photos' bytes, batch_size files a block
      .map_batches(RayAnalyzer, compute=ActorPoolStrategy(size=concurrency), num_cpus=..., batch_size=...)
      .write_parquet(<out>.parts/)                # one part a block, as soon as it is done

Each actor loads the models once (on `num_cpus` threads) and analyses its batches photo by photo: on
a CPU, batching model calls does not pay (measured: a batch of 2-8 photos costs more per photo than one
at a time, on 1 and on 2 threads). Throughput grows with the number of actors, i.e. the cluster's
cores, as long as the storage delivers the photos. Without `--address` a local Ray instance is
started, bound to 127.0.0.1 with no dashboard, and stopped at the end; with one, the run joins that
cluster (then the photos, the weights and the output folder must be at the same paths on every node,
e.g. a shared file system; the acne package is shipped to the workers with the job).

Parts carry a few flat columns and the whole row as JSON (`record`), so every part has the same
schema; `acne.batch.sinks.Output.consolidate` turns them into the final .jsonl or .parquet file. A part cut
off by a crash cannot be read and is ignored: its photos are analysed again by `--resume`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
from pathlib import Path

from ..imaging import InvalidImageError, read_file
from ..records import OutputOptions, analyze_record, quiet_libraries
from .inputs import Task, row_key
from .local import RunResult
from .sinks import Output

log = logging.getLogger("acne")
PACKAGE_DIR = Path(__file__).resolve().parent.parent   # acne/: shipped to a cluster's workers with the job


def run_ray(tasks: list[Task], settings, options: OutputOptions, output: Output, progress, *, address: str | None,
            concurrency: int | None, num_cpus: float, batch_size: int, verbose: bool = False) -> RunResult:
    """Analyse `tasks` with Ray Data: on a local instance (`address` None) or the cluster at `address`.

    Parameters: `settings` / `options` as for the local engine; `output` receives the parts; `progress` a
    tqdm bar; `concurrency` model actors (default: the cluster's CPUs / `num_cpus`); `num_cpus` CPUs (and
    threads) per actor; `batch_size` photos per map_batches call and per part. Returns the RunResult."""
    local = not address
    # A head on this machine's loopback (`ray start --head --node-ip-address=127.0.0.1`) must be joined
    # as 127.0.0.1: by default Ray would swap that for the machine's network address.
    loopback = local or address.rpartition(":")[0].strip("[]") in ("127.0.0.1", "localhost", "::1")
    if not verbose:
        # Ray's C++ core prints a warning about Ray Data's own actor arguments on every run; -v keeps it.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if loopback:
        # Ray advertises (and binds) the machine's network address unless told this is a one-machine
        # "cluster": then every Ray process listens on 127.0.0.1 only. Read when ray is imported.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
        import ray.data
    except ImportError:
        return RunResult(fatal="the Ray engine needs Ray Data: pip install 'ray[data]' (or pip install '.[scale]')")
    if loopback:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the variable was set
    from ..runtime import cpu_count

    result = RunResult()
    sink = _LazySink(output)
    # Photos that cannot be read here would stop Ray's read tasks: they get their error row now, with the
    # CLI's message. The others are read by Ray, by their absolute paths.
    readable: dict[str, Task] = {}
    for task in tasks:
        path = Path(task.file)
        if path.is_dir():
            _write(sink, progress, result, {"file": task.file, "ok": False,
                                            "error": f"The folder {path.name} holds no image files."})
            continue
        if not os.access(path, os.R_OK):
            try:
                read_file(path)
                message = f"Could not read {path.name}."
            except InvalidImageError as exc:
                message = str(exc)
            _write(sink, progress, result, {"file": task.file, "ok": False, "error": message})
            continue
        readable[row_key(task.file)] = task
    sink.close()
    if not readable:
        return result

    init = {"include_dashboard": False, "log_to_driver": verbose,
            "logging_level": logging.INFO if verbose else logging.ERROR}
    if local:
        init.update(address="local", num_cpus=cpu_count(), _node_ip_address="127.0.0.1",
                    runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                        filter(None, [str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")]))}})
    else:
        init.update(address=address, runtime_env={"py_modules": [str(PACKAGE_DIR)]})
    logging.getLogger("ray").setLevel(logging.INFO if verbose else logging.ERROR)
    try:
        problem = None if local else _unreachable(address)
        if problem:
            result.fatal = f"could not join the Ray cluster at {address}: {problem}"
            return result
        try:
            with _silent_stderr(local and not verbose):  # Ray's C++ core announces its log level on stderr
                ray.init(**init)
        except Exception as exc:  # noqa: BLE001 - ports taken, a cluster of another Ray version...
            where = "start a local Ray instance" if local else f"join the Ray cluster at {address}"
            result.fatal = f"could not {where} ({type(exc).__name__}: {str(exc).strip()[:300]})"
            return result
        logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False   # ours is on stderr already
        if hasattr(context, "print_on_execution_start"):
            context.print_on_execution_start = verbose
        cpus = float(ray.cluster_resources().get("CPU", 1))
        actors = concurrency or max(1, int(cpus // num_cpus))
        threads = max(1, int(num_cpus))
        settings = _with_threads(settings, threads)
        paths = [row_key(task.file) for task in readable.values()]
        files = ray.put({key: (task.file, task.stem) for key, task in readable.items()})
        # Reading and writing are I/O: they reserve no CPU (the model actors may take every one), and a
        # few tasks at a time keep up with the actors (unbounded, Ray would start a worker process per
        # block at once).
        io_tasks = max(1, min(actors, 4))
        dataset = ray.data.read_binary_files(
            paths, include_paths=True, num_cpus=0, concurrency=io_tasks,
            override_num_blocks=max(1, math.ceil(len(paths) / batch_size)))
        analysed = dataset.map_batches(
            RayAnalyzer, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=num_cpus,
            fn_constructor_kwargs={"settings": settings, "options": options, "files": [files]})
        log.info("Ray: %d actor(s), %s CPU(s) and %d thread(s) each, batches of %d, %d photo(s)",
                 actors, num_cpus, threads, batch_size, len(paths))
        watcher = _PartWatcher(output.parts, progress, result)
        watcher.start()
        try:
            analysed.write_parquet(str(output.parts), ray_remote_args={"num_cpus": 0}, concurrency=io_tasks)
        finally:
            watcher.stop()
    except KeyboardInterrupt:
        result.interrupted = True
    except Exception as exc:  # noqa: BLE001 - a failed job keeps its finished parts for --resume
        cause = _root_cause(exc)
        from ..errors import WeightsMissingError

        if isinstance(cause, (WeightsMissingError, ValueError)) and not result.rows:
            result.fatal = str(cause)
        else:
            result.error = (f"the Ray job failed ({type(cause).__name__}: {str(cause).strip()[:300]}); "
                            "finished rows are kept: rerun with --resume")
    finally:
        ray.shutdown()
    return result


class RayAnalyzer:
    """map_batches callable: the models load once per actor; each call analyses a batch of photos."""

    def __init__(self, settings, options: OutputOptions, files: list):
        """`settings` for load_analyzer, `options` the images to write, `files` [an object ref of
        row key -> (file as given, stem)]."""
        import ray

        from ..analysis import load_analyzer

        quiet_libraries()
        self.files = ray.get(files[0]) if files else {}
        self.analyzer = load_analyzer(settings)
        self.options = options

    def __call__(self, batch: dict):
        """Analyse one batch ({"bytes": [...], "path": [...]}); returns its part (part_table)."""
        rows = []
        for data, path in zip(batch["bytes"], batch["path"]):
            file, stem = self.files.get(row_key(str(path)), (str(path), None))
            rows.append(analyze_record(self.analyzer, Path(file), self.options, {}, source=bytes(data), stem=stem))
        return part_table(rows)


def part_table(rows: list[dict]):
    """A Ray part: the same flat schema for every batch, the full row in `record`."""
    import pyarrow as pa

    schema = pa.schema([("file", pa.string()), ("ok", pa.bool_()), ("severity", pa.string()),
                        ("assessment", pa.string()), ("lesion_count", pa.int64()), ("error", pa.string()),
                        ("record", pa.string())])
    return pa.Table.from_pylist([{
        "file": r["file"], "ok": bool(r.get("ok")), "severity": r.get("severity"), "assessment": r.get("assessment"),
        "lesion_count": r.get("lesion_count"), "error": r.get("error"), "record": json.dumps(r),
    } for r in rows], schema=schema)


class _LazySink:
    """The driver's own error rows (photos Ray cannot read), in a JSON-lines part opened on first use."""

    def __init__(self, output: Output):
        self.output, self._sink = output, None

    def write(self, record: dict) -> None:
        if self._sink is None:
            self._sink = self.output.driver_sink()
        self._sink.write(record)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


class _PartWatcher:
    """Counts the rows of each part as Ray finishes writing it, for the progress bar."""

    def __init__(self, folder: Path, progress, result: RunResult):
        self.folder, self.progress, self.result = Path(folder), progress, result
        self.seen = set(p.name for p in self.folder.glob("*.parquet")) if self.folder.is_dir() else set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="acne-ray-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.poll()

    def poll(self) -> None:
        import pyarrow.parquet as pq

        if not self.folder.is_dir():
            return
        for part in sorted(self.folder.glob("*.parquet")):
            if part.name in self.seen:
                continue
            try:
                ok = pq.read_table(part, columns=["ok"]).column("ok").to_pylist()
            except Exception:  # noqa: BLE001 - still being written
                continue
            self.seen.add(part.name)
            self.result.count(True, self.progress, rows=ok.count(True))
            self.result.count(False, self.progress, rows=ok.count(False))


def _unreachable(address: str) -> str | None:
    """Why nothing answers at a host:port address (ray.init would wait for minutes), or None."""
    import socket

    host, _, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not host or not port.isdigit():
        return None  # Ray resolves these itself
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return None
    except OSError as exc:
        return f"nothing answers there ({exc.strerror or exc}); is `ray start --head` running?"


@contextlib.contextmanager
def _silent_stderr(enabled: bool):
    """File descriptor 2 to /dev/null (C++ writes there directly); Python exceptions still propagate."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _write(sink, progress, result: RunResult, record: dict) -> None:
    sink.write(record)
    result.count(False, progress)


def _with_threads(settings, threads: int):
    import dataclasses

    return dataclasses.replace(settings, torch_threads=threads)


def _root_cause(exc: BaseException) -> BaseException:
    """The user's exception inside Ray's wrappers (RayTaskError(...).cause, __cause__ chains)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc
