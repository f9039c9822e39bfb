"""Load and soak of the real web app (`python app.py`, tiny models, ACNE_SEG_SIZE=256) through the
public `/analyze` API with gradio_client. Marked `slow`; run them alone with

    OMP_NUM_THREADS=1 python -m pytest tests/test_load.py -s      # -s prints the latency/RSS figures

ACNE_LOAD_CALLS  concurrent calls in the burst (default 30, the issue's figure)
ACNE_SOAK_RUNS   sequential analyses in the soak (default 100: with the test's start-up this keeps
                 the module near 3 minutes on 2 busy cores; the issue's figure is 300)
"""
from __future__ import annotations

import hashlib
import math
import os
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from app_process import AppProcess, app_env, files_under, rss_kib
from acne.web.layout import QUEUE_MAX_SIZE

gradio_client = pytest.importorskip("gradio_client", reason="the gradio_client package is not installed")

pytestmark = pytest.mark.slow

LOAD_CALLS = int(os.environ.get("ACNE_LOAD_CALLS", "30"))
SOAK_RUNS = int(os.environ.get("ACNE_SOAK_RUNS", "100"))
SOAK_BASELINE = 20          # RSS is compared with the RSS after this many analyses
RSS_TOLERANCE = 0.10
# Short, so results are swept during the run as in a long-running Space, but longer than the burst's
# queue wait: Gradio's delete_cache removes uploads older than this even while their call still waits
# in the queue (that call then gets "no longer on the server"; with 10 s here, some burst calls did).
CACHE_TTL = 60


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)  # nearest-rank percentile
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def digest_or_none(path: Path) -> str | None:
    try:  # the app's sweeper may delete a file between listing and reading
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def mtime_or_none(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def gradio_temp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gradio-temp")


@pytest.fixture(scope="module")
def app(tiny_model_env, gradio_temp, tmp_path_factory):
    env = app_env(tiny_model_env, gradio_temp, ACNE_CACHE_TTL=str(CACHE_TTL))  # ACNE_CONCURRENCY: default 1
    process = AppProcess(env, tmp_path_factory.mktemp("logs") / "app.log").start()
    yield process
    process.stop()


def new_client(app, folder: Path):
    # httpx's default 5 s read timeout is shorter than a browser's: on 2 busy cores, with 30 clients in
    # this process, a single upload or download answer once took longer than that.
    return gradio_client.Client(app.url, verbose=False, download_files=str(folder), httpx_kwargs={"timeout": 60})


# --------------------------------------------------------------------------- burst

def test_concurrent_calls_all_complete_correctly(app, tiny_analyzer, example_photos, tmp_path):
    assert 1 <= LOAD_CALLS <= QUEUE_MAX_SIZE, f"ACNE_LOAD_CALLS must be 1..{QUEUE_MAX_SIZE} (the queue's size)"
    # Every call sends its own photo, cropped to its own width: a swapped or mixed-up answer shows.
    uploads, expected = [], []
    for i in range(LOAD_CALLS):
        with Image.open(example_photos[i % len(example_photos)]) as photo:
            photo = photo.convert("RGB").crop((0, 0, photo.width - 2 * i, photo.height))
        path = tmp_path / f"call{i:02d}.jpg"
        photo.save(path, "JPEG", quality=90)
        uploads.append(path)
        expected.append(tiny_analyzer.analyze(path).to_dict())  # same tiny models, in this process

    clients = [new_client(app, tmp_path / f"dl{i}") for i in range(LOAD_CALLS)]  # one per user
    results: list[dict] = [{} for _ in range(LOAD_CALLS)]
    start = threading.Barrier(LOAD_CALLS + 1)

    def user(i: int) -> None:
        start.wait()
        t0 = time.perf_counter()
        try:
            job = clients[i].submit(gradio_client.handle_file(str(uploads[i])), api_name="/analyze")
            ranks = []
            while not job.done():
                status = job.status()
                if status.rank is not None:
                    ranks.append(status.rank)
                time.sleep(0.2)
            report, overlay = job.result()
            results[i] = {"report": report, "overlay": overlay, "ranks": ranks,
                          "latency": time.perf_counter() - t0}
        except Exception as exc:  # noqa: BLE001 - reported below, per call
            results[i] = {"error": repr(exc), "latency": time.perf_counter() - t0}

    # Meanwhile someone else opens the page: the server must keep answering (inference is off the event loop).
    # Every ping is recorded, failed ones too (an exception in this thread would otherwise end it silently).
    pings: list[float] = []           # seconds per answered ping
    answered_at: list[float] = []     # when each answer arrived
    ping_errors: list[str] = []
    stop_pinging = threading.Event()

    def ping() -> None:
        while not stop_pinging.is_set():
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(app.url + "gradio_api/info", timeout=30) as response:
                    status = response.status
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                ping_errors.append(repr(exc))
            else:
                if status == 200:
                    pings.append(time.perf_counter() - t0)
                    answered_at.append(time.perf_counter())
                else:
                    ping_errors.append(f"HTTP {status}")
            time.sleep(0.25)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(LOAD_CALLS)]
    pinger = threading.Thread(target=ping, daemon=True)
    for t in threads:
        t.start()
    pinger.start()
    t_start = time.perf_counter()
    start.wait()
    for t in threads:
        t.join(timeout=600)
    t_end = time.perf_counter()
    wall = t_end - t_start
    stop_pinging.set()
    pinger.join(timeout=60)
    assert not pinger.is_alive(), "the pinger hung"

    errors = {i: r["error"] for i, r in enumerate(results) if "error" in r}
    assert not errors, errors
    for i, (result, want) in enumerate(zip(results, expected)):
        report = result["report"]
        assert report["image_size"] == want["image_size"] == [640 - 2 * i, 640]
        assert report["severity"] == want["severity"] and report["lesion_count"] == want["lesion_count"]
        for name, p in want["severity_scores"].items():
            assert report["severity_scores"][name] == pytest.approx(p, abs=1e-4)
        with Image.open(result["overlay"]) as overlay:
            assert list(overlay.size) == want["image_size"]

    latencies = [r["latency"] for r in results]
    service = [r["report"]["timings_ms"]["total"] / 1000 for r in results]
    max_rank = max((max(r["ranks"]) for r in results if r["ranks"]), default=None)
    print(f"\n[load] {LOAD_CALLS} concurrent /analyze calls, queue concurrency 1 (ACNE_CONCURRENCY), "
          f"queue max size {QUEUE_MAX_SIZE}")
    print(f"[load] wall {wall:.1f} s, throughput {LOAD_CALLS / wall:.2f} calls/s; latency p50 "
          f"{percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} s, max {max(latencies):.2f} s; "
          f"analysis itself (server-side) median {statistics.median(service):.2f} s")
    print(f"[load] deepest queue position seen {max_rank} (0 = next); page info while queued: "
          f"{len(pings)} requests, median {statistics.median(pings or [0]):.2f} s, "
          f"slowest {max(pings, default=0):.2f} s")
    # Queue behaviour: the calls waited their turn (one analysis at a time) instead of failing,
    # and the server kept answering other requests meanwhile.
    if LOAD_CALLS >= 4:
        assert max_rank is not None and max_rank >= 1, "the calls should have queued"
    # One at a time (ACNE_CONCURRENCY=1): the analyses' own durations fit into the burst's wall time one
    # after another. Run side by side on 2 cores, each would take many times longer and their sum would
    # be several times the wall time. (5% and 1 s for clocks and rounding.)
    assert sum(service) <= wall * 1.05 + 1, (sum(service), wall)
    # The page info answered throughout: no failed ping, and no gap without an answer longer than 10 s from
    # the start of the burst to its end. (Generous bounds: on 2 busy cores a single answer took up to 4 s;
    # a blocked server takes the whole burst.)
    assert not ping_errors, ping_errors
    assert pings and statistics.median(pings) < 2.0 and max(pings) < 10.0, pings
    moments = [t_start, *[t for t in answered_at if t_start < t < t_end], t_end]
    longest_silence = max(b - a for a, b in zip(moments, moments[1:]))
    assert longest_silence < 10.0, f"no answer for {longest_silence:.1f} s during the burst"


# --------------------------------------------------------------------------- soak

def test_soak_memory_stays_flat_and_uploads_do_not_pile_up(app, tiny_analyzer, example_photos, gradio_temp,
                                                           tmp_path):
    assert SOAK_RUNS > SOAK_BASELINE, f"ACNE_SOAK_RUNS must be more than {SOAK_BASELINE}"
    client = new_client(app, tmp_path / "downloads")
    expected = {p: tiny_analyzer.analyze(p).to_dict() for p in example_photos}
    originals = {p: p.read_bytes() for p in example_photos}
    upload = tmp_path / "soak.jpg"
    sent_digests: set[str] = set()
    rss: dict[int, int] = {}
    latencies: list[float] = []
    for i in range(1, SOAK_RUNS + 1):
        photo = example_photos[i % len(example_photos)]
        # Bytes after the JPEG's end: the same pixels, a new file (as a stream of different users).
        data = originals[photo] + f"\x00soak-{i}".encode()
        upload.write_bytes(data)
        sent_digests.add(hashlib.sha256(data).hexdigest())
        t0 = time.perf_counter()
        report, overlay = client.predict(gradio_client.handle_file(str(upload)), api_name="/analyze")
        latencies.append(time.perf_counter() - t0)
        want = expected[photo]
        assert report["severity"] == want["severity"] and report["lesion_count"] == want["lesion_count"], i
        Path(overlay).unlink()  # the client's download, not the server's copy
        if i == SOAK_BASELINE or i % 25 == 0 or i == SOAK_RUNS:
            rss[i] = rss_kib(app.pid)

    base, end = rss[SOAK_BASELINE], rss[SOAK_RUNS]
    print(f"\n[soak] {SOAK_RUNS} sequential /analyze calls: latency p50 {percentile(latencies, 50):.2f} s, "
          f"p95 {percentile(latencies, 95):.2f} s")
    print("[soak] app RSS (MiB) after n analyses: " + ", ".join(f"{n}: {kib / 1024:.1f}" for n, kib in rss.items()))
    print(f"[soak] RSS after {SOAK_RUNS} vs after {SOAK_BASELINE}: {100 * (end - base) / base:+.1f}% "
          f"(limit +{RSS_TOLERANCE:.0%})")
    assert end <= base * (1 + RSS_TOLERANCE), f"RSS grew from {base} KiB to {end} KiB"

    # Under load too, every upload is deleted as soon as it has been read.
    left = [p for p in files_under(gradio_temp) if digest_or_none(p) in sent_digests]
    assert not left, left
    # And results do not pile up: none is older than the time to live (the burst's are gone by now).
    now = time.time()
    results = files_under(gradio_temp / "acne-results")
    oldest = max((now - mtime for mtime in map(mtime_or_none, results) if mtime is not None), default=0.0)
    print(f"[soak] files in the temp folder at the end: {len(files_under(gradio_temp))}, of them our results: "
          f"{len(results)}, the oldest {oldest:.0f} s old (time to live {CACHE_TTL} s)")
    assert oldest <= CACHE_TTL + 5, oldest
