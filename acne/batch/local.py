"""The local engine of `acne batch`: a pool of threads sharing one copy of the models (run_threads), or
of spawned worker processes with a copy each (run_local). The parent writes each row as it arrives."""
from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from ..imaging import InvalidImageError, read_file
from ..records import OutputOptions, analyze_record, quiet_libraries
from .inputs import Task
from .sinks import JsonlSink

WORKER_MEMORY = 1.5e9             # bytes one local worker may need (models + one photo): caps --workers
IN_FLIGHT_PER_WORKER = 2          # photos handed to a worker at once: one analysed, one read ahead


@dataclass
class RunResult:
    """What an engine's run did."""
    rows: int = 0                 # rows written by this run
    failed: int = 0
    interrupted: bool = False
    fatal: str | None = None      # the models could not be loaded: nothing was analysed
    error: str | None = None      # the run failed part-way (Ray job): finished rows are kept

    def count(self, ok: bool, progress, rows: int = 1) -> None:
        """Count `rows` written rows (failed ones when not `ok`) and move the progress bar on."""
        self.rows += rows
        self.failed += 0 if ok else rows
        progress.update(rows)
        if self.failed:
            progress.set_postfix(failed=self.failed, refresh=False)


@dataclass
class _Worker:
    id: int
    process: object
    tasks: object                                   # multiprocessing queue of Task | None
    in_flight: deque = field(default_factory=deque)  # tasks handed out, oldest first
    ready: bool = False


def run_local(tasks: list[Task], settings, options: OutputOptions, sink: JsonlSink, progress, *, workers: int,
              verbose: bool = False) -> RunResult:
    """`--pool processes`: analyse `tasks` in `workers` spawned processes, each with its own models.

    Parameters: `settings` the acne.Settings each worker loads its models with (`torch_threads` threads);
    `options` the images written beside the rows; `sink` where each row is written as it arrives;
    `progress` a tqdm bar. Returns the RunResult (a worker that dies is replaced; its photo is tried once
    more, then gets an error row)."""
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
        result.count(bool(record.get("ok")), progress)

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


def run_threads(tasks: list[Task], settings, options: OutputOptions, sink: JsonlSink, progress, *, threads: int,
                verbose: bool = False) -> RunResult:
    """`--pool threads`: analyse `tasks` in this process: one copy of the models, `threads` threads each
    taking whole photos (reading, decoding, both models on one thread each, post-processing), so one
    photo's reading and post-processing overlap the others' inference.

    Parameters as run_local; rows are written to `sink` here, as they arrive. Returns the RunResult."""
    import dataclasses

    from .. import runtime

    try:
        from ..analysis import load_analyzer

        analyzer = load_analyzer(dataclasses.replace(settings, torch_threads=1))
    except Exception as exc:  # noqa: BLE001 - WeightsMissingError, bad settings: one message, no traceback
        return RunResult(fatal=str(exc))
    todo: queue.Queue = queue.Queue()
    for task in tasks:
        todo.put(task)
    finished: queue.Queue = queue.Queue()
    stop = threading.Event()

    def work() -> None:
        runtime.pin_torch_threads(1)  # OpenMP counts are per thread: one each, as each model gets in `analyze`
        while not stop.is_set():
            try:
                task = todo.get_nowait()
            except queue.Empty:
                return
            try:
                data = read_file(Path(task.file))
            except InvalidImageError:
                data = None  # analysing the path itself then gives the CLI's own message
            try:
                record = analyze_record(analyzer, Path(task.file), options, {}, source=data, stem=task.stem)
            except BaseException as exc:  # noqa: BLE001 - never lose a photo silently
                record = {"file": task.file, "ok": False,
                          "error": f"Internal error while analysing this image ({type(exc).__name__})."}
            finished.put(record)

    result = RunResult()

    def write(record: dict) -> None:
        sink.write(record)
        result.count(bool(record.get("ok")), progress)

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


def _worker_main(wid: int, settings, options: OutputOptions, tasks, results, parent: int, verbose: bool) -> None:
    """One local worker: load the models once, then analyse the photos it is handed, in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    os.environ["OMP_NUM_THREADS"] = str(max(1, settings.torch_threads))
    # Warnings (e.g. which grader was loaded) once, from the first worker, not once per worker.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING if wid == 0 else logging.ERROR,
                        stream=sys.stderr, format=f"acne[worker {wid}]: %(message)s")
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if not verbose:
        quiet_libraries()
    try:
        from ..analysis import load_analyzer

        analyzer = load_analyzer(settings)
    except Exception as exc:  # noqa: BLE001 - WeightsMissingError, bad settings: one message, no traceback
        results.put(("fatal", wid, str(exc)))
        return
    results.put(("ready", wid))
    ahead: queue.Queue = queue.Queue(maxsize=1)
    threading.Thread(target=_read_ahead, args=(tasks, ahead), daemon=True).start()
    while True:
        item = ahead.get()
        if item is None:
            return
        task, data = item
        record = analyze_record(analyzer, Path(task.file), options, {}, source=data, stem=task.stem)
        results.put(("row", wid, task.index, record))


def _read_ahead(tasks, ahead: queue.Queue) -> None:
    """The worker's reader thread: the next photo's bytes are read while the current one is analysed."""
    while True:
        task = tasks.get()
        if task is None:
            ahead.put(None)
            return
        try:
            data = read_file(Path(task.file))
        except InvalidImageError:
            data = None  # analysing the path itself then gives the CLI's own message (missing, a folder...)
        ahead.put((task, data))


def _watch_parent(parent: int) -> None:
    # A parent killed with SIGKILL cannot stop its workers: they notice and leave on their own.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def default_workers(threads: int) -> int:
    """Worker processes for `--pool processes` with `threads` threads each: the CPUs this process may use
    divided by `threads`, capped by the memory available (WORKER_MEMORY each)."""
    from ..runtime import cpu_count

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
