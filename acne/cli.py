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

from .report import DISCLAIMER

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif", ".heic", ".heif"}

log = logging.getLogger("acne")


def build_parser() -> argparse.ArgumentParser:
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
    from .batch import add_batch_parser

    add_batch_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "batch":
        from .batch import main as batch_main

        return batch_main(args, parser)
    if args.command != "analyze":
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="acne: %(message)s")

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

    from .config import Settings
    from .errors import WeightsMissingError

    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a malformed environment variable
        print(f"acne: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    overrides = {k: v for k, v in (("segmenter", args.segmenter), ("grader", args.grader),
                                   ("seg_size", args.seg_size)) if v is not None}

    from .analysis import load_analyzer

    if not args.verbose:
        _quiet_libraries()
    try:
        analyzer = load_analyzer(settings, **overrides)
    except (WeightsMissingError, ValueError) as exc:
        print(f"acne: cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if args.views:
        return _analyze_views(analyzer, args)

    failed = 0
    used_stems: dict[str, int] = {}
    for path in _expand(args.paths):
        record = _analyze_one(analyzer, path, args, used_stems)
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
    records = [(name, _analyze_one(analyzer, Path(path), args, used_stems))
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


def _quiet_libraries() -> None:
    # Model-loading progress bars and library chatter would bury our own messages on stderr.
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    except ImportError:
        pass


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


def _analyze_one(analyzer, path: Path, args, used_stems: dict[str, int], *, source=None,
                 stem: str | None = None) -> dict:
    """One JSON record of the --json contract. `source` (the file's bytes) replaces reading `path`,
    `stem` the name its overlay and mask get (acne/batch.py decides both ahead)."""
    from .imaging import InvalidImageError, mask_to_png_array, save_png

    if source is None and path.is_dir():
        return {"file": str(path), "ok": False, "error": f"The folder {path.name} holds no image files."}
    try:
        analysis = analyzer.run(path if source is None else source)
    except InvalidImageError as exc:
        return {"file": str(path), "ok": False, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
        log.debug("analysis of %s failed", path, exc_info=True)
        return {"file": str(path), "ok": False,
                "error": f"Internal error while analysing this image ({type(exc).__name__}: {exc})."}
    record = {"file": str(path), "ok": True, **analysis.report.to_dict()}
    if args.overlay_dir or args.mask_dir:
        stem = stem or _unique_stem(path.stem, used_stems)
        try:
            if args.overlay_dir:
                overlay = analysis.overlay(boxes=args.boxes)
                record["overlay"] = str(save_png(args.overlay_dir / f"{stem}.png", overlay))
            if args.mask_dir:
                record["mask"] = str(save_png(args.mask_dir / f"{stem}.png", mask_to_png_array(analysis.mask)))
        except OSError as exc:
            return {"file": str(path), "ok": False, "error": f"Could not write the output image: {exc}"}
    return record


def _unique_stem(stem: str, used: dict[str, int]) -> str:
    # Two inputs with the same name (a/x.jpg, b/x.jpg) must not overwrite each other's outputs.
    count = used.get(stem, 0)
    used[stem] = count + 1
    return stem if count == 0 else f"{stem}-{count + 1}"


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
    t = record["timings_ms"]
    lines.append(f"  time: {t['total']:.0f} ms (decode {t['decode']:.0f}, region {t.get('region', 0):.0f}, "
                 f"segment {t['segment']:.0f}, grade {t['grade']:.0f})")
    return "\n".join(lines)


def _graded_lines(record: dict) -> list[str]:
    scores = " · ".join(f"{name} {p:.0%}" for name, p in record["severity_scores"].items())
    grader = record["grader"]
    combined = record.get("severity_source") == "grader+count"
    region = record.get("region") or {}
    unreliable = record.get("assessment") == "unreliable"
    lines = [
        f"{record['file']}: {record['severity']} ({record['severity_scores'][record['severity']]:.0%})"
        + (" - UNRELIABLE, see the warning" if unreliable else ""),
        f"  severity scores: {scores}",
        f"  grader: {grader['model']} -> level {grader['level']}"
        + (" (the severity weighs it with the lesion count)" if combined else ""),
        f"  lesions found: {record['lesion_count']} (count-based grade: {record['count_grade']}"
        + ("" if record["grades_agree"] else
           f"; differs from the {'combined' if combined else 'grader'} estimate, {record['severity']}") + ")",
        f"  analysed region: {region.get('found_by', 'whole')} {region.get('box', '')}",
        f"  segmenter: {record['segmenter']}",
    ]
    lines += [f"  warning: {w}" for w in record["quality_warnings"]]
    lines.append("  advice:")
    lines += [f"    - {r}" for r in record["recommendations"]]
    return lines


if __name__ == "__main__":
    sys.exit(main())
