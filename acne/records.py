"""One photo's record of the command line's JSON contract (`acne analyze --json`, the rows of `acne batch`).

    record = analyze_record(analyzer, Path("face.jpg"), OutputOptions(overlay_dir=Path("out")), {})
    # {"file": "face.jpg", "ok": True, "severity": ..., "overlay": "out/face.png", ...}
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .imaging import InvalidImageError, mask_to_png_array, save_png

log = logging.getLogger("acne")


@dataclass(frozen=True)
class OutputOptions:
    """The images written next to each record: overlays and masks as <stem>.png (None: not written),
    with each lesion's box drawn on the overlay when `boxes`."""
    overlay_dir: Path | None = None
    mask_dir: Path | None = None
    boxes: bool = False


def analyze_record(analyzer, path: Path, options: OutputOptions, used_stems: dict[str, int], *,
                   source: bytes | None = None, stem: str | None = None) -> dict:
    """Analyse one photo into its JSON record; never raises for a bad photo.

    Parameters: `analyzer` a loaded acne.Analyzer; `path` the photo (its name is the record's `file`);
    `options` which images to write; `used_stems` the stems given so far (updated: a second x.jpg gets
    x-2.png); `source` the file's bytes, read ahead by the caller (then `path` is not read); `stem` the
    name for its images, decided ahead by the caller (acne batch: the same in a resumed run).
    Returns {"file", "ok": True, **Report.to_dict(), "overlay"?, "mask"?} or {"file", "ok": False, "error"}.
    """
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
    if options.overlay_dir or options.mask_dir:
        stem = stem or unique_stem(path.stem, used_stems)
        try:
            if options.overlay_dir:
                overlay = analysis.overlay(boxes=options.boxes)
                record["overlay"] = str(save_png(options.overlay_dir / f"{stem}.png", overlay))
            if options.mask_dir:
                record["mask"] = str(save_png(options.mask_dir / f"{stem}.png", mask_to_png_array(analysis.mask)))
        except OSError as exc:
            return {"file": str(path), "ok": False, "error": f"Could not write the output image: {exc}"}
    return record


def command_settings(args) -> "Settings":
    """The settings a command runs with: the environment (and .env), then the model options of `acne
    analyze` / `acne batch` (--segmenter, --grader, --seg-size) where given.

    Raises:
        ValueError: a malformed environment variable (the command reports it as a usage error).
    """
    import dataclasses

    from .config import Settings

    overrides = {k: v for k, v in (("segmenter", args.segmenter), ("grader", args.grader),
                                   ("seg_size", args.seg_size)) if v is not None}
    return dataclasses.replace(Settings.from_env(), **overrides)


def unique_stem(stem: str, used: dict[str, int]) -> str:
    """`stem`, or `stem-2`, `stem-3`... when it was given before (updates `used`): two inputs with the same
    name (a/x.jpg, b/x.jpg) must not overwrite each other's images."""
    count = used.get(stem, 0)
    used[stem] = count + 1
    return stem if count == 0 else f"{stem}-{count + 1}"


def quiet_libraries() -> None:
    """Silence the libraries' model-loading progress bars and chatter: they would bury our own messages on
    stderr (`-v` keeps them)."""
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    except ImportError:
        pass
