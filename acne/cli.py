"""Command line: `python -m acne analyze PATH... [--json] [--overlay-dir D] [--mask-dir D]`, and
`python -m acne analyze --views LEFT FRONT RIGHT [--json]` (one whole-face summary of up to three views), and
`python -m acne batch INPUT... --out results.jsonl|results.parquet` for many photos (acne/batch.py).

Exit status: 0 every input analysed, 1 at least one input failed (the others are still reported),
2 usage error or missing model weights (nothing analysed).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .batch.command import add_batch_parser
from .batch.command import main as batch_main
from .imaging import IMAGE_SUFFIXES
from .records import OutputOptions, analyze_record, command_settings, quiet_libraries
from .report import DISCLAIMER

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The `acne` command's parser: sub-commands `analyze` and `batch`."""
    parser = argparse.ArgumentParser(
        prog="python -m acne", description="Acne Detection AI: lesion map and severity grade of face photos. "
        + DISCLAIMER)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    analyze = commands.add_parser(
        "analyze", help="analyse photos", description="Analyse photos (files or folders of photos).",
        epilog="Models come from ACNE_SEGMENTER, ACNE_GRADER, ACNE_GRADER_FALLBACK (see the README); "
               "the flags below override them. Exit status: 0 all analysed, 1 some failed, 2 usage "
               "error or missing model weights.")
    analyze.add_argument("paths", nargs="+", metavar="PATH", help="photo file, or a folder of photos")
    analyze.add_argument("--json", action="store_true", help="one JSON object per input per line")
    analyze.add_argument("--overlay-dir", type=Path, metavar="D", help="write <stem>.png lesion overlays here")
    analyze.add_argument("--mask-dir", type=Path, metavar="D", help="write <stem>.png lesion masks (0/255) here")
    analyze.add_argument("--boxes", action="store_true", help="draw each lesion's box on the overlays")
    analyze.add_argument("--views", action="store_true",
                         help="the paths are up to three photos of one face, in the order left, front, right: "
                              "print one whole-face summary (the most affected view decides the grade)")
    analyze.add_argument("--segmenter", metavar="DIR_OR_HUB_ID", help="segmenter weights (overrides ACNE_SEGMENTER)")
    analyze.add_argument("--grader", metavar="DIR_OR_HUB_ID", help="grader model (overrides ACNE_GRADER)")
    analyze.add_argument("--seg-size", type=int, metavar="N", help="long side fed to the segmenter (ACNE_SEG_SIZE)")
    analyze.add_argument("-v", "--verbose", action="store_true", help="log model loading and timings")
    add_batch_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `acne` command. Parameters: `argv` the arguments (default: sys.argv[1:]).
    Returns the exit status (EXIT_OK, EXIT_FAILED, EXIT_USAGE; `batch` also 130 when interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "batch":
        return batch_main(args, parser)
    if args.command != "analyze":
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="acne: %(message)s")

    # Before any model loads (seconds): a mistyped path is a usage error at once.
    missing = [p for p in args.paths if not (Path(p).is_file() or Path(p).is_dir())]
    if missing:
        parser.error("no such photo file or folder: " + ", ".join(missing))
    for folder in (args.overlay_dir, args.mask_dir):
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                parser.error(f"cannot create output folder {folder}: {exc.strerror or exc}")
    if args.seg_size is not None and args.seg_size < 64:
        parser.error("--seg-size must be at least 64")
    if args.views:
        from .views import MAX_VIEWS

        if len(args.paths) > MAX_VIEWS:
            parser.error(f"--views takes at most {MAX_VIEWS} photos (left, front, right), got {len(args.paths)}")
        if any(Path(p).is_dir() for p in args.paths):
            parser.error("--views takes photo files, not folders")

    from .errors import WeightsMissingError

    try:
        settings = command_settings(args)
    except ValueError as exc:  # a malformed environment variable
        print(f"acne: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from .analysis import load_analyzer

    if not args.verbose:
        quiet_libraries()
    try:
        analyzer = load_analyzer(settings)
    except (WeightsMissingError, ValueError) as exc:
        print(f"acne: cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if args.views:
        return _analyze_views(analyzer, args)

    failed = 0
    used_stems: dict[str, int] = {}
    options = OutputOptions(args.overlay_dir, args.mask_dir, args.boxes)
    for path in _expand(args.paths):
        record = analyze_record(analyzer, path, options, used_stems)
        failed += not record["ok"]
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            print(_human(record), flush=True)
    if not args.json:
        print(f"\n{DISCLAIMER}")
    return EXIT_FAILED if failed else EXIT_OK


def _analyze_views(analyzer, args) -> int:
    """`--views`: each photo analysed as usual, then one whole-face summary (JSON: one object)."""
    from .views import VIEW_NAMES, summarize

    used_stems: dict[str, int] = {}
    options = OutputOptions(args.overlay_dir, args.mask_dir, args.boxes)
    records = [(name, analyze_record(analyzer, Path(path), options, used_stems))
               for name, path in zip(VIEW_NAMES, args.paths)]
    summary = summarize(records)
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print(_human_views(summary), flush=True)
        print(f"\n{DISCLAIMER}")
    return EXIT_FAILED if summary["failed"] or not summary["views"] else EXIT_OK


def _human_views(summary: dict) -> str:
    from .severity import recommendations
    from .views import summary_sentence, view_title

    lines = [summary_sentence(summary)]
    for item in summary["views"]:
        report = item["report"]
        lines.append(f"  {view_title(item['view'])} ({item.get('file', '')}): {report.get('severity') or 'not assessed'}, "
                     f"{report.get('lesion_count', 0)} lesions (count-based grade: {report.get('count_grade') or '-'})")
        for key in ("overlay", "mask"):
            if key in item:
                lines.append(f"    {key}: {item[key]}")
    for item in summary["failed"]:
        lines.append(f"  {view_title(item['view'])} ({item.get('file', '')}): could not analyse: {item['error']}")
    if summary["count_grade"]:
        lines.append(f"  count-based grade (worst view; Hayashi bands are per half-face view): {summary['count_grade']}")
    if summary["message"]:
        lines.append(f"  note: {summary['message']}")
    if summary["severity"]:
        lines.append("  advice:")
        lines += [f"    - {r}" for r in recommendations(summary["severity"])]
    return "\n".join(lines)


def _expand(paths: list[str]) -> list[Path]:
    """Files as given; folders replaced by the image files inside them (sorted, not recursive)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            out.extend(files or [path])  # an empty folder is reported as a failed input
        else:
            out.append(path)
    return out


def _human(record: dict) -> str:
    if not record["ok"]:
        return f"{record['file']}: could not analyse: {record['error']}"
    if record["severity"] is None:
        lines = [f"{record['file']}: not assessed (no face or skin found; no grade is given)"]
        lines += [f"  warning: {w}" for w in record["quality_warnings"]]
    else:
        lines = _graded_lines(record)
    for key in ("overlay", "mask"):
        if key in record:
            lines.append(f"  {key}: {record[key]}")
    lines.append("  time: " + timing_words(record["timings_ms"]))
    return "\n".join(lines)


def timing_words(t: dict) -> str:
    """The record's `timings_ms` in words whose parts add up to the total. The models' part is wall time;
    when the two models ran side by side their own times overlap and are said to (they do not add up), and
    so does the skin check when it ran beside them."""
    models = t.get("models", t["segment"] + t["grade"])
    check, region = t.get("skin_check", 0.0), t.get("region", 0.0)
    beside = check > 0 and t["decode"] + region + check + models > t["total"] + 1.0   # it overlapped the models
    rest = max(0.0, t["total"] - t["decode"] - region - (0.0 if beside else check) - models)
    if t["segment"] + t["grade"] <= models + 1.0:   # one after the other (1 ms: rounding)
        split = f"segment {t['segment']:.0f} + grade {t['grade']:.0f}"
    else:
        split = f"segment {t['segment']:.0f} and grade {t['grade']:.0f} side by side"
    if beside:
        return (f"{t['total']:.0f} ms = decode {t['decode']:.0f} + region {region:.0f} + models {models:.0f} wall "
                f"(skin check {check:.0f}, then segment {t['segment']:.0f}; grade {t['grade']:.0f} beside them) "
                f"+ report {rest:.0f}")
    return (f"{t['total']:.0f} ms = decode {t['decode']:.0f} + region {region:.0f} + skin check "
            f"{check:.0f} + models {models:.0f} wall ({split}) + report {rest:.0f}")


def _graded_lines(record: dict) -> list[str]:
    scores = " · ".join(f"{name} {p:.0%}" for name, p in record["severity_scores"].items())
    grader = record["grader"]
    region = record.get("region") or {}
    unreliable = record.get("assessment") == "unreliable"
    lines = [
        f"{record['file']}: {record['severity']} ({record['severity_scores'][record['severity']]:.0%})"
        + (" - UNRELIABLE, see the warning" if unreliable else ""),
        f"  severity scores: {scores}",
        f"  grader: {grader['model']} -> level {grader['level']}",
        f"  lesions found: {record['lesion_count']} (count-based grade: {record['count_grade']}"
        + ("" if record["grades_agree"] else f"; differs from the grader's estimate, {record['severity']}") + ")",
        f"  analysed region: {region.get('found_by', 'whole')} {region.get('box', '')}",
        f"  segmenter: {record['segmenter']}",
    ]
    lines += [f"  warning: {w}" for w in record["quality_warnings"]]
    lines.append("  advice:")
    lines += [f"    - {r}" for r in record["recommendations"]]
    return lines


if __name__ == "__main__":
    sys.exit(main())
