"""`python -m acne batch`, run as a subprocess on real photos with the tiny models: the local engine
(threads, and worker processes) and the Ray engine (a real local Ray instance on 127.0.0.1) against the one-by-one
CLI, error rows, progress, Parquet and JSON lines, and resume after Ctrl-C and after SIGKILL.

The 40 photos are ACNE04 valid photos when the data set is on this machine (ACNE04_DIR, or
../shared/data/acne04), else 40 photos made from the 6 ACNE04 valid examples in images/examples
(crops, flips, turns and resizes). Rows are compared whole (all fields but the timings): both engines
run each model on one thread, as the CLI does here (OMP_NUM_THREADS=1), so the numbers are identical.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import PROJECT_DIR

PHOTOS = 40


def run_acne(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "acne", *map(str, args)], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)


def as_in_a_terminal() -> None:
    """In the child before exec: Ctrl-C as a terminal's foreground job has it (default action, not blocked).
    A child inherits ignored signals and the signal mask, and Python keeps an inherited SIG_IGN: when
    something in this test process has left SIGINT ignored, the run would never see the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start_acne(env, *args, log: Path):
    # A session of its own: signals can go to the whole group, as a terminal's Ctrl-C does.
    return subprocess.Popen([sys.executable, "-m", "acne", *map(str, args)], cwd=PROJECT_DIR, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True,
                            preexec_fn=as_in_a_terminal)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("timings_ms", "overlay", "mask")}


def wait_for(condition, timeout: float, what: str, process=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def group_gone(pgid: int) -> bool:
    """No live process is left in the process group (zombies waiting for a reaper do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


def acne04_valid() -> Path | None:
    for root in (os.environ.get("ACNE04_DIR"), PROJECT_DIR.parent / "shared" / "data" / "acne04"):
        if root and (Path(root) / "images" / "valid").is_dir():
            photos = sorted((Path(root) / "images" / "valid").glob("*.jpg"))
            if len(photos) >= PHOTOS:
                return Path(root) / "images" / "valid"
    return None


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, example_photos) -> Path:
    """40 photos in two nested folders (the batch searches folders recursively)."""
    folder = tmp_path_factory.mktemp("batch-photos")
    valid = acne04_valid()
    if valid is not None:
        sources = [Image.open(p).convert("RGB") for p in sorted(valid.glob("*.jpg"))[::7][:PHOTOS]]
    else:
        sources = []
        for i in range(PHOTOS):
            image = Image.open(example_photos[i % len(example_photos)]).convert("RGB")
            w, h = image.size
            variant = i // len(example_photos)
            if variant == 1:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            elif variant == 2:
                image = image.crop((0, 0, int(w * 0.8), int(h * 0.7)))
            elif variant == 3:
                image = image.transpose(Image.Transpose.ROTATE_90)
            elif variant == 4:
                image = image.resize((w * 3 // 4, h * 3 // 4))
            elif variant == 5:
                image = image.crop((w // 5, h // 5, w, h))
            elif variant == 6:
                image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM).resize((w // 2, h // 2))
            sources.append(image)
    for i, image in enumerate(sources):
        sub = folder / ("a" if i < PHOTOS // 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        image.save(sub / f"photo_{i:02d}.jpg", quality=92)
    (folder / ".hidden.jpg").write_text("hidden files are not picked up")
    return folder


@pytest.fixture(scope="module")
def photos(photo_dir) -> list[Path]:
    found = sorted(photo_dir.rglob("photo_*.jpg"))
    assert len(found) == PHOTOS
    return found


@pytest.fixture(scope="module")
def bad_photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "notes.jpg"
    path.write_text("This is a text file that someone renamed to .jpg\n")
    return path


@pytest.fixture(scope="module")
def reference(tiny_model_env, photos, bad_photo) -> dict[str, dict]:
    """The one-by-one CLI's rows for the 40 photos and the bad file, by file."""
    done = run_acne(tiny_model_env, "analyze", *photos, bad_photo, "--json")
    assert done.returncode == 1, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == PHOTOS + 1
    counts = {r["lesion_count"] for r in records if r["ok"]}
    assert len(counts) > 5, f"the tiny models should give varied lesion counts, got {counts}"
    return {r["file"]: r for r in records}


def assert_same_as_reference(rows: list[dict], reference: dict[str, dict]) -> None:
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)), "a photo has more than one row"
    assert set(files) == set(reference), set(files) ^ set(reference)
    for row in rows:
        assert comparable(row) == comparable(reference[row["file"]]), row["file"]


# --------------------------------------------------------------------------- the local engine

def test_local_engine_matches_the_cli_with_progress_and_summary(tiny_model_env, photo_dir, bad_photo, reference,
                                                                 tmp_path):
    out = tmp_path / "results.jsonl"
    done = run_acne(tiny_model_env, "batch", photo_dir, bad_photo, "--out", out, "--workers", "2")
    assert done.returncode == 1, done.stderr      # one photo failed: exit status 1, as for analyze
    assert done.stdout == ""
    rows = read_jsonl(out)
    assert_same_as_reference(rows, reference)
    bad = next(r for r in rows if r["file"] == str(bad_photo))
    assert bad == {"file": str(bad_photo), "ok": False, "error": bad["error"]} and "not an image" in bad["error"]
    # the progress bar (tqdm on stderr: done/total, rate) and the summary
    assert f"{PHOTOS + 1}/{PHOTOS + 1}" in done.stderr and "photo/s" in done.stderr
    assert "Traceback" not in done.stderr
    severities = [r["severity"] for r in reference.values() if r["ok"]]
    summary = done.stderr[done.stderr.index("acne batch: 41 photo(s)"):]
    assert f"Clear {severities.count('Clear')}" in summary and "failed 1" in summary
    assert f"this run: {PHOTOS + 1} analysed" in summary


def test_parquet_from_lists_with_overlays_and_quiet(tiny_model_env, photos, reference, tmp_path):
    import pyarrow.parquet as pq

    listed = photos[:6]
    (tmp_path / "lists").mkdir()
    txt = tmp_path / "lists" / "photos.txt"
    txt.write_text("# photos to score\n" + "\n".join(os.path.relpath(p, txt.parent) for p in listed[:3]) + "\n\n")
    csv_file = tmp_path / "lists" / "photos.csv"
    csv_file.write_text("id,file\n" + "\n".join(f"{i},{p}" for i, p in enumerate(listed[2:])) + "\n")
    # A photo a list names that is gone gets an error row (a missing input on the command line is a usage
    # error: test_missing_inputs_are_a_usage_error_before_the_models_load).
    missing = tmp_path / "gone.jpg"
    stale = tmp_path / "lists" / "stale.txt"
    stale.write_text(f"{missing}\n")
    out = tmp_path / "results.parquet"
    done = run_acne(tiny_model_env, "batch", txt, csv_file, stale, "--out", out, "--quiet", "--workers", "2",
                    "--pool", "processes", "--overlay-dir", tmp_path / "overlays", "--mask-dir", tmp_path / "masks")
    assert done.returncode == 1, done.stderr
    assert done.stderr == "" and done.stdout == ""   # --quiet: no progress bar, no summary
    assert not (tmp_path / "results.parquet.parts").exists()
    table = pq.read_table(out)
    rows = table.to_pylist()
    # listed photos once each (photo 2 is in both lists), in input order, then the missing file
    expected = [str(txt.parent / os.path.relpath(p, txt.parent)) for p in listed[:3]] + [str(p) for p in listed[3:]]
    assert [r["file"] for r in rows] == expected + [str(missing)]
    for row in rows[:-1]:
        ref = reference[str(Path(os.path.normpath(row["file"])))]
        assert row["ok"] and row["severity"] == ref["severity"] and row["lesion_count"] == ref["lesion_count"]
        assert row["lesions"] == ref["lesions"] and row["severity_scores"] == ref["severity_scores"]
        assert row["grader"] == ref["grader"]
        stem = Path(row["file"]).stem
        assert row["overlay"] == str(tmp_path / "overlays" / f"{stem}.png")
        with Image.open(row["overlay"]) as overlay, Image.open(row["mask"]) as mask:
            assert overlay.format == "PNG" and not overlay.getexif() and mask.mode == "L"
    assert rows[-1]["ok"] is False and "File not found" in rows[-1]["error"]
    assert table.schema.field("lesion_count").type == "int64"


def test_resume_after_sigkill_loses_no_row_and_repeats_none(tiny_model_env, photo_dir, photos, reference, tmp_path):
    out = tmp_path / "results.jsonl"
    run = start_acne(tiny_model_env, "batch", photo_dir, "--out", out, "--workers", "2", "--pool", "processes",
                     log=tmp_path / "1.log")

    def rows_written():
        return out.is_file() and out.read_text().count("\n") >= 5

    wait_for(rows_written, 240, "5 rows were written", run)
    os.kill(run.pid, signal.SIGKILL)   # the parent only: its workers must notice and leave by themselves
    run.wait(timeout=30)
    wait_for(lambda: group_gone(run.pid), 30, "the worker processes exited")
    first = [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]
    assert 5 <= len(first) < PHOTOS, "the first run was not interrupted part-way"

    done = run_acne(tiny_model_env, "batch", photo_dir, "--out", out, "--resume", "--workers", "2")
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(out)
    assert len(rows) == PHOTOS
    assert_same_as_reference(rows, {str(p): reference[str(p)] for p in photos})
    assert rows[:len(first)] == first    # the finished rows were kept as they were
    assert f"{PHOTOS - len(first)} analysed" in done.stderr and f"{len(first)} already done" in done.stderr

    again = run_acne(tiny_model_env, "batch", photo_dir, "--out", out, "--resume")
    assert again.returncode == 0 and len(read_jsonl(out)) == PHOTOS   # nothing left to do, nothing added
    assert "this run: 0 analysed" in again.stderr


def worker_processes(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_a_worker_process_that_dies_is_replaced_and_its_photo_tried_again(tiny_model_env, photo_dir, photos,
                                                                          reference, tmp_path):
    out = tmp_path / "results.jsonl"
    run = start_acne(tiny_model_env, "batch", photo_dir, "--out", out, "--workers", "2", "--pool", "processes",
                     log=tmp_path / "run.log")
    wait_for(lambda: out.is_file() and out.read_text().count("\n") >= 3, 240, "3 rows were written", run)
    workers = worker_processes(run.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)   # as the kernel's OOM killer would
    assert run.wait(timeout=240) == 0, (tmp_path / "run.log").read_text()
    rows = read_jsonl(out)
    assert len(rows) == PHOTOS and all(r["ok"] for r in rows)   # its photos were analysed by the others
    assert_same_as_reference(rows, {str(p): reference[str(p)] for p in photos})


def test_ctrl_c_keeps_the_finished_rows_and_says_how_to_resume(tiny_model_env, photo_dir, tmp_path):
    # One "photo" is a named pipe that nobody writes: the worker reading it waits, so the run is surely
    # still going when Ctrl-C comes, however fast the other photos go (no race with the run's end).
    photos = tmp_path / "photos"
    photos.mkdir()
    originals = sorted(photo_dir.rglob("photo_*.jpg"))
    for path in originals:
        os.link(path, photos / f"{path.parent.name}_{path.name}")
    stuck = photos / "zz_stuck.jpg"
    os.mkfifo(stuck)
    out = tmp_path / "results.parquet"
    log = tmp_path / "run.log"
    run = start_acne(tiny_model_env, "batch", photos, "--out", out, "--workers", "2", log=log)
    parts = tmp_path / "results.parquet.parts"

    def rows_written():
        return sum(p.read_text().count("\n") for p in parts.glob("*.jsonl")) >= 3 if parts.is_dir() else False

    wait_for(rows_written, 240, "3 rows were written", run)
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the parent and its workers
    try:
        status = run.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        pytest.fail("the run went on after Ctrl-C: " + log.read_text()[-3000:])
    assert status == 130, (status, log.read_text()[-3000:])
    wait_for(lambda: group_gone(run.pid), 30, "the worker processes exited")
    message = log.read_text()
    assert "interrupted" in message and "--resume" in message and "Traceback" not in message
    assert not out.exists()              # parquet is written whole at the end; the rows wait in the parts
    kept = [json.loads(line) for p in parts.glob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(kept) >= 3 and all(r["ok"] for r in kept)
    assert str(stuck) not in {r["file"] for r in kept}

    stuck.unlink()
    os.link(originals[0], stuck)         # the photo can be read now: the resumed run finishes it
    done = run_acne(tiny_model_env, "batch", photos, "--out", out, "--resume")
    assert done.returncode == 0, done.stderr
    import pyarrow.parquet as pq

    files = pq.read_table(out, columns=["file"]).column("file").to_pylist()
    assert sorted(files) == sorted(str(p) for p in photos.glob("*.jpg")) and not parts.exists()
    assert len(files) == len(originals) + 1


def test_usage_errors_exit_2_before_loading_models(tiny_model_env, example_photo, tmp_path):
    out = tmp_path / "results.jsonl"
    out.write_text("")
    cases = [(["--out", out], "--resume"), (["--out", tmp_path / "r.csv"], ".jsonl or .parquet"),
             (["--out", tmp_path / "r.jsonl", "--workers", "0"], "at least 1"),
             (["--out", out, "--resume", "--overwrite"], "exclude")]
    for args, phrase in cases:
        done = run_acne(tiny_model_env, "batch", example_photo, *args, timeout=60)
        assert done.returncode == 2 and phrase in done.stderr, (args, done.stderr)


def test_missing_inputs_are_a_usage_error_before_the_models_load(tiny_model_env, example_photo, tmp_path):
    # The weights are missing too: the input check answers first, so no model was being loaded.
    env = dict(tiny_model_env, ACNE_SEGMENTER=str(tmp_path / "nowhere"), ACNE_GRADER_FALLBACK=str(tmp_path / "no"),
               ACNE_GRADER="nobody/no-such-grader")
    missing, listed = tmp_path / "gone.jpg", tmp_path / "gone.txt"
    done = run_acne(env, "batch", example_photo, missing, listed, "--out", tmp_path / "r.jsonl", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "usage:" in done.stderr and f"no such photo file, folder or list: {missing}, {listed}" in done.stderr
    assert "cannot start" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_missing_weights_stop_the_run_with_one_message(tiny_model_env, example_photo, tmp_path):
    env = dict(tiny_model_env, ACNE_SEGMENTER=str(tmp_path / "nowhere"), ACNE_GRADER_FALLBACK=str(tmp_path / "no"),
               ACNE_GRADER="nobody/no-such-grader")
    done = run_acne(env, "batch", example_photo, "--out", tmp_path / "r.jsonl", "--workers", "2")
    assert done.returncode == 2, done.stderr
    assert "cannot start" in done.stderr and str(tmp_path / "nowhere") in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- pieces, in this process

def test_inputs_expand_recursively_from_lists_and_once_each(tmp_path):
    from acne.batch.inputs import expand_inputs

    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / ".git").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("d/b.jpg", "d/a.PNG", "d/sub/c.heic", "d/.hidden.jpg", "d/.git/x.jpg", "d/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("d/a.PNG\n# a comment\n\n  d/sub/c.heic  \n/abs/photo.jpg\n")
    (tmp_path / "plain.csv").write_text("d/b.jpg,5\nd/new.jpg,3\n")
    files = expand_inputs([str(tmp_path / "d"), str(tmp_path / "list.txt"), str(tmp_path / "plain.csv"),
                           str(tmp_path / "empty"), str(tmp_path / "d" / "b.jpg")])
    assert files == [str(tmp_path / "d" / "a.PNG"), str(tmp_path / "d" / "b.jpg"),
                     str(tmp_path / "d" / "sub" / "c.heic"), "/abs/photo.jpg", str(tmp_path / "d" / "new.jpg"),
                     str(tmp_path / "empty")]


def test_summary_counts_not_assessed_failures_and_unreliable_grades():
    from acne.batch.command import summary
    from acne.batch.sinks import RowState

    rows = {"a": RowState(True, "Mild", "graded"), "b": RowState(True, None, "not_assessed"),
            "c": RowState(False, None, None), "d": RowState(True, "Mild", "unreliable"),
            "e": RowState(True, "Severe", "graded")}
    text = summary(rows, new=3, already=2, seconds=2.0, out=Path("r.jsonl"))
    assert "5 photo(s)" in text
    assert "Clear 0 · Mild 2 · Moderate 0 · Severe 1 · not assessed 1 · failed 1" in text
    assert "1 of the graded photo(s) marked unreliable" in text and "see their warnings" in text
    assert "3 analysed in 2.0 s, 1.50 photos/s" in text and "2 already done" in text
    # Nothing unreliable: no such line.
    rows["d"] = RowState(True, "Mild", "graded")
    assert "unreliable" not in summary(rows, new=3, already=2, seconds=2.0, out=Path("r.jsonl"))


def test_a_line_cut_off_by_a_crash_is_dropped_before_appending(tmp_path):
    from acne.batch.inputs import row_key
    from acne.batch.sinks import JsonlSink, Output

    out = tmp_path / "r.jsonl"
    out.write_text('{"file": "a.jpg", "ok": true}\n{"file": "b.jpg", "o')
    assert set(Output(out).read_rows()) == {row_key("a.jpg")}   # b.jpg is not done: it is analysed again
    with JsonlSink(out) as sink:
        sink.write({"file": "c.jpg", "ok": False, "error": "x"})
    assert [r["file"] for r in read_jsonl(out)] == ["a.jpg", "c.jpg"]


def test_parts_are_consolidated_once_into_jsonl_or_parquet(tmp_path):
    """What a run leaves in <out>.parts (JSON-lines rows, Ray's Parquet parts, a part cut off by a kill)
    is folded into the output; rows the output already holds are not added twice."""
    import pyarrow.parquet as pq
    from acne.batch.inputs import row_key
    from acne.batch.ray import part_table
    from acne.batch.sinks import Output

    rows = [{"file": f"p{i}.jpg", "ok": True, "severity": "Mild", "lesion_count": i,
             "assessment": "unreliable" if i == 3 else "graded", "lesions": [{"box": [0, 0, 2, 2], "center": [1.0, 1.0], "area_px": 4, "score": 0.9}] * i}
            for i in range(4)] + [{"file": "bad.jpg", "ok": False, "error": "This file is not an image."}]
    order = {row_key(r["file"]): i for i, r in enumerate(rows)}
    for name in ("out.jsonl", "out.parquet"):
        output = Output(tmp_path / name)
        output.parts.mkdir()
        pq.write_table(part_table(rows[3:]), output.parts / "ray-a.parquet")
        (output.parts / "ray-b.parquet").write_bytes(b"PAR1 cut off")        # unreadable: done again later
        (output.parts / "rows-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[1:4]))
        if name.endswith(".jsonl"):
            output.path.write_text(json.dumps(rows[0]) + "\n")
        assert len(output.read_rows()) == (5 if name.endswith(".jsonl") else 4)
        assert output.read_rows()[row_key("p3.jpg")].assessment == "unreliable"    # from Ray's part
        output.consolidate(order)
        assert not output.parts.exists()
        assert {k: r.assessment for k, r in output.read_rows().items()} == {
            row_key(r["file"]): r.get("assessment") for r in rows[0 if name.endswith(".jsonl") else 1:]}
        if name.endswith(".jsonl"):
            assert sorted(read_jsonl(output.path), key=lambda r: order[row_key(r["file"])]) == rows
        else:
            back = [{k: v for k, v in r.items() if v is not None} for r in pq.read_table(output.path).to_pylist()]
            assert back == rows[1:]   # in input order


# --------------------------------------------------------------------------- the Ray engine

@pytest.fixture(scope="module")
def ray_available():
    pytest.importorskip("ray.data", reason="the Ray engine needs ray[data] (tests/requirements.txt)")


def processes_marked(mark: str) -> list[int]:
    """Processes whose environment holds ACNE_TEST_RUN=mark: a run's driver and everything it started (Ray's
    own processes start in sessions of their own, out of reach of a process-group signal)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if f"ACNE_TEST_RUN={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture
def marked_env(tiny_model_env, tmp_path):
    """The tiny models' environment with a mark; every marked process left at the end is killed (a killed
    Ray driver can leave actor processes behind that would hold memory for the rest of the test run)."""
    mark = tmp_path.name
    yield dict(tiny_model_env, ACNE_TEST_RUN=mark)
    for pid in processes_marked(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_ray_engine_matches_the_cli_and_resumes_after_a_kill(ray_available, marked_env, photo_dir, bad_photo,
                                                             reference, tmp_path):
    """Two runs on a real local Ray instance (127.0.0.1): one killed part-way (SIGKILL to the driver and
    its Ray processes), then --resume. Together they must give every photo exactly once, each row equal
    to the one-by-one CLI's, and the bad photo an error row."""
    import pyarrow.parquet as pq

    out = tmp_path / "ray.parquet"
    parts = tmp_path / "ray.parquet.parts"
    run = start_acne(marked_env, "batch", photo_dir, bad_photo, "--out", out, "--engine", "ray",
                     "--concurrency", "1", "--batch-size", "2", log=tmp_path / "1.log")

    def finished_parts():
        found = 0
        for part in parts.glob("*.parquet") if parts.is_dir() else ():
            try:
                found += pq.read_metadata(part).num_rows
            except Exception:  # noqa: BLE001 - being written
                pass
        return found

    wait_for(lambda: finished_parts() >= 4, 240, "4 rows were written by Ray", run)
    os.killpg(run.pid, signal.SIGKILL)  # the driver, and the local Ray instance with it
    run.wait(timeout=30)
    kept = finished_parts()
    assert 4 <= kept < PHOTOS and not out.exists(), "the first run was not interrupted part-way"
    bad_rows = sum(1 for p in parts.glob("*.jsonl") for _ in p.read_text().splitlines())  # the bad photo's row

    done = run_acne(marked_env, "batch", photo_dir, bad_photo, "--out", out, "--engine", "ray", "--resume",
                    "--concurrency", "2", "--batch-size", "4")
    assert done.returncode == 1, done.stderr      # the bad photo: exit status 1
    assert f"{kept + bad_rows} already done" in done.stderr and not parts.exists()
    rows = pq.read_table(out).to_pylist()
    # Parquet gives every row every column (None where a row has no such field): compare the CLI's fields
    rows = [{k: v for k, v in r.items() if k in reference[r["file"]]} for r in rows]
    assert_same_as_reference(rows, reference)       # every photo once, each row equal to the CLI's
    assert [r["file"] for r in rows] == [str(p) for p in sorted(photo_dir.rglob("photo_*.jpg"))] + [str(bad_photo)]
    assert rows[-1]["ok"] is False and "not an image" in rows[-1]["error"]
    assert f"{PHOTOS + 1}/{PHOTOS + 1}" in done.stderr and "failed 1" in done.stderr
    assert "Traceback" not in done.stderr and "core_worker" not in done.stderr
