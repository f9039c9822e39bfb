"""Draw the app's light background (images/background.jpg): a soft diagonal gradient with a few
blurred circles. Deterministic; re-run to regenerate.  python scripts/make_background.py"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "images" / "background.jpg"
WIDTH, HEIGHT = 1600, 1000
TOP_LEFT = np.array([236, 246, 244], dtype=np.float32)      # pale mint
BOTTOM_RIGHT = np.array([250, 240, 234], dtype=np.float32)  # pale peach
# (x, y, radius, rgb, strength): soft light spots, kept faint so text stays readable on top.
SPOTS = [
    (0.15, 0.20, 0.30, (205, 234, 228), 0.55),
    (0.85, 0.15, 0.22, (248, 222, 214), 0.45),
    (0.70, 0.85, 0.35, (226, 236, 248), 0.50),
    (0.30, 0.90, 0.18, (246, 230, 238), 0.40),
]


def draw(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xs / width * 0.6 + ys / height * 0.4)[..., None]
    rgb = TOP_LEFT * (1 - t) + BOTTOM_RIGHT * t
    scale = max(width, height)
    for cx, cy, r, color, strength in SPOTS:
        d2 = ((xs - cx * width) ** 2 + (ys - cy * height) ** 2) / (r * scale) ** 2
        w = (strength * np.exp(-d2 * 2.5))[..., None]
        rgb = rgb * (1 - w) + np.array(color, dtype=np.float32) * w
    # A little noise stops JPEG banding in the smooth gradient.
    rgb += np.random.default_rng(0).normal(0, 0.8, rgb.shape).astype(np.float32)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw().save(args.out, "JPEG", quality=82, optimize=True, progressive=True)
    print(f"{args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
