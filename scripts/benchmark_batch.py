"""Throughput of `python -m acne batch` against the one-by-one CLI (`python -m acne analyze --json`), on
the same photos, alternating the variants round by round so that a busy machine hurts them alike.

    python scripts/benchmark_batch.py                                  # all ACNE04 valid photos, 2 rounds
    python scripts/benchmark_batch.py --engines cli local ray --rounds 1 --interrupt-after 100

Each variant is a whole command, timed from start to exit (model loading included, as a user sees it).
Every batch output is checked against the CLI's rows: same photos, each once, same severity and lesion
count (and the whole row but its timings). --interrupt-after N also kills a local run (SIGKILL) after
N rows, resumes it with --resume and checks that every photo is there exactly once.
Prints a table and writes results.json into --out-dir.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = PROJECT_DIR.parent / "shared" / "data" / "acne04" / "images" / "valid"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path,
                        default=Path(os.environ["ACNE04_DIR"]) / "images" / "valid" if os.environ.get("ACNE04_DIR")
                        else DEFAULT_PHOTOS, help="folder of photos (default: ACNE04 valid)")
    parser.add_argument("-n", type=int, default=0, help="use the first N photos (default: all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ray-rounds", type=int, help="rounds the ray engine runs in (default: all)")
    parser.add_argument("--engines", nargs="+", default=["cli", "local"], choices=("cli", "local", "processes", "ray"),
                        help="cli: analyze --json; local: batch (its default, --pool threads); processes: batch "
                             "--pool processes; ray: batch --engine ray")
    parser.add_argument("--workers", type=int, help="local engine --workers (default: its own default)")
    parser.add_argument("--interrupt-after", type=int, default=0, metavar="N",
                        help="also kill a local run after N rows and resume it")
    parser.add_argument("--out-dir", type=Path, default=PROJECT_DIR / "runs" / "benchmark_batch")
    args = parser.parse_args()

    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.n:
        photos = photos[:args.n]
    if not photos:
        parser.error(f"no photos in {args.photos}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    listing = args.out_dir / "photos.txt"
    listing.write_text("".join(f"{p}\n" for p in photos))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    print(f"{len(photos)} photos from {args.photos}; engines {args.engines}; {args.rounds} round(s); "
          f"load average before: {os.getloadavg()[0]:.1f}", flush=True)

    times: dict[str, list[float]] = {name: [] for name in args.engines}
    cpu: dict[str, list[float]] = {name: [] for name in args.engines}
    loads: dict[str, list[float]] = {name: [] for name in args.engines}
    rows: dict[str, dict[str, dict]] = {}
    for round_ in range(args.rounds):
        order = args.engines if round_ % 2 == 0 else list(reversed(args.engines))
        for name in order:
            if name == "ray" and args.ray_rounds is not None and round_ >= args.ray_rounds:
                continue
            out = args.out_dir / f"{name}-{round_}.{'parquet' if name == 'ray' else 'jsonl'}"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds = run_variant(name, photos, listing, out, env, args.workers)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            times[name].append(seconds)
            cpu[name].append(used)
            loads[name].append(os.getloadavg()[0])
            rows[name] = read_rows(out)
            print(f"round {round_ + 1}: {name:5s} {seconds:7.1f} s  {len(photos) / seconds:5.2f} photos/s  "
                  f"CPU {used:6.1f} s ({used / seconds:.2f} cores)  load average {loads[name][-1]:.1f}", flush=True)

    reference = rows.get("cli")
    report = {"photos": len(photos), "source": str(args.photos), "rounds": args.rounds, "variants": {}}
    print("\n| variant | wall time per run (s) | photos/s (median) | vs CLI | CPU s per photo | same rows as the CLI |")
    print("|---|---|---|---|---|---|")
    cli_rate = len(photos) / statistics.median(times["cli"]) if "cli" in times else None
    for name in args.engines:
        rate = len(photos) / statistics.median(times[name])
        same = compare(rows[name], reference) if reference and name != "cli" else None
        per_photo = statistics.median(cpu[name]) / len(photos)
        report["variants"][name] = {"seconds": times[name], "photos_per_s": rate, "cpu_seconds": cpu[name],
                                    "load_average_after": loads[name], "same_as_cli": same}
        versus = f"{rate / cli_rate:.2f}x" if cli_rate else "-"
        print(f"| {name} | {', '.join(f'{t:.1f}' for t in times[name])} | {rate:.2f} | {versus} | {per_photo:.3f} | "
              f"{same if same is not None else '-'} |")

    if args.interrupt_after:
        report["interrupted_run"] = interrupted_run(photos, listing, args.out_dir, env, args.interrupt_after,
                                                    reference, args.workers)
        print("\ninterrupted and resumed:", json.dumps(report["interrupted_run"]))
    (args.out_dir / "results.json").write_text(json.dumps(report, indent=2))
    return 0


def command(name: str, listing: Path, out: Path, workers: int | None, photos: list[Path]) -> list[str]:
    if name == "cli":
        return [sys.executable, "-m", "acne", "analyze", *map(str, photos), "--json"]
    extra = ["--workers", str(workers)] if workers and name in ("local", "processes") else []
    engine = ["--engine", "local", "--pool", "processes"] if name == "processes" else ["--engine", name]
    return [sys.executable, "-m", "acne", "batch", str(listing), "--out", str(out), "--overwrite", "--quiet",
            *engine, *extra]


def run_variant(name: str, photos: list[Path], listing: Path, out: Path, env: dict, workers: int | None) -> float:
    start = time.perf_counter()
    if name == "cli":
        with open(out, "w") as f:
            done = subprocess.run(command(name, listing, out, workers, photos), cwd=PROJECT_DIR, env=env,
                                  stdout=f, stderr=subprocess.PIPE, text=True)
    else:
        done = subprocess.run(command(name, listing, out, workers, photos), cwd=PROJECT_DIR, env=env,
                              stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{name} failed with status {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds


def read_rows(path: Path) -> dict[str, dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        records = pq.read_table(path).to_pylist()
    else:
        records = [json.loads(line) for line in path.read_text().splitlines()]
    out: dict[str, dict] = {}
    for record in records:
        if record["file"] in out:
            raise SystemExit(f"{path}: {record['file']} has two rows")
        out[record["file"]] = record
    return out


def compare(rows: dict[str, dict], reference: dict[str, dict]) -> dict:
    """Same photos; same severity and lesion count; whole rows (but timings) identical."""
    def strip(record: dict) -> dict:
        return {k: v for k, v in record.items() if k != "timings_ms" and v is not None}

    common = set(rows) & set(reference)
    return {
        "same_photos": set(rows) == set(reference),
        "same_severity_and_count": sum((rows[f].get("severity"), rows[f].get("lesion_count"))
                                       == (reference[f].get("severity"), reference[f].get("lesion_count"))
                                       for f in common),
        "identical_rows": sum(strip(rows[f]) == strip(reference[f]) for f in common),
        "of": len(reference),
    }


def interrupted_run(photos, listing: Path, out_dir: Path, env: dict, after: int, reference, workers) -> dict:
    out = out_dir / "interrupted.jsonl"
    if out.exists():
        out.unlink()
    cmd = [c for c in command("local", listing, out, workers, photos) if c != "--quiet"]  # show the progress bar
    log1, log2 = out_dir / "interrupted-run.stderr.txt", out_dir / "resumed-run.stderr.txt"
    process = subprocess.Popen(cmd, cwd=PROJECT_DIR, env=env, stderr=open(log1, "w"), start_new_session=True)
    while not (out.is_file() and out.read_text().count("\n") >= after):
        if process.poll() is not None:
            raise SystemExit("the run ended before it could be interrupted")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    kept = out.read_text().count("\n")
    resume = [c for c in cmd if c != "--overwrite"] + ["--resume"]
    with open(log2, "w") as stderr:
        done = subprocess.run(resume, cwd=PROJECT_DIR, env=env, stderr=stderr, text=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    files = [r["file"] for r in rows]
    result = {"killed_after_rows": kept, "resume_status": done.returncode, "rows": len(rows),
              "stderr": [str(log1), str(log2)],
              "unique_photos": len(set(files)), "photos": len(photos),
              "every_photo_exactly_once": sorted(files) == sorted(map(str, photos))}
    if reference:
        result["vs_cli"] = compare({r["file"]: r for r in rows}, reference)
    return result


if __name__ == "__main__":
    sys.exit(main())
