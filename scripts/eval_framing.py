"""Phone-style framing against close-ups, on ACNE04 photos, through the real analysis.

    python scripts/eval_framing.py --split valid --out runs/framing        # all 283 valid photos
    python scripts/eval_framing.py --split valid --limit 2                  # a smoke run

Each photo is analysed as the close-up it is and re-framed as a phone photo (acne.reframe: the face at
40-50% of a 1080 x 1920 ... 3024 x 4032 frame, off centre, on plain, textured and room-like
backgrounds, hard and soft borders). Prints and writes severity accuracy, same-severity rate and lesion
F1 (centres mapped back) for both.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import acne  # noqa: E402
from acne.reframe import FramingCase, framing_figures  # noqa: E402
from acne.acne04 import load_split, read_rgb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="valid")
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos (0: all)")
    parser.add_argument("--step", type=int, default=1, help="every STEP-th photo (1: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for framing.json")
    args = parser.parse_args()
    records = sorted(load_split(args.split), key=lambda r: r.path.name)[::args.step]
    if args.limit:
        records = records[:args.limit]
    analyzer = acne.load_analyzer()   # as the app and the CLI load it (environment, .env)
    start = time.perf_counter()
    cases = [FramingCase(read_rgb(r.path), r.grade, r.boxes) for r in records]
    figures = framing_figures(analyzer, cases, seed=args.seed)
    figures.update(split=args.split, seconds=round(time.perf_counter() - start, 1), analyzer=repr(analyzer))
    print(json.dumps({k: v for k, v in figures.items() if k != "photos"}, indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "framing.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
