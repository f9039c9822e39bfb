"""The bad-input corpus of issue 8, generated here (nothing downloaded), for the Python, CLI and web
API tests (test_bad_inputs.py, test_api_client.py).

    for name, case in corpus(example_photo).items():
        case.data          # the file's bytes, to be written under `name`
        case.refusal       # None: a report is expected; else a phrase the user-facing error must contain
"""
from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image


@dataclass
class Case:
    data: bytes
    refusal: str | None = None          # phrase expected in the error message; None = analysable
    size: tuple[int, int] | None = None  # expected report image_size (w, h), after EXIF orientation
    graded: bool = True                  # analysable and graded; False: no face or skin, "not assessed"


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_declared_size(width: int, height: int) -> bytes:
    """A decompression bomb: the header declares width x height, the file holds almost nothing."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def landscape(width: int = 480, height: int = 320) -> Image.Image:
    """A synthetic landscape (sky, hills, grass): no face, no skin."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = np.array([90, 150, 235], np.float32) * (1 - y) + np.array([190, 220, 250], np.float32) * y
    image = np.broadcast_to(sky, (height, width, 3)).copy()
    xs = np.arange(width)
    hill = (height * 0.55 + 25 * np.sin(xs / 40.0)).astype(int)
    rng = np.random.default_rng(1)
    for x, top in zip(xs, hill):
        image[top:, x] = np.array([60, 130, 50]) + rng.normal(0, 10, (height - top, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=92)


GPS_LATITUDE = (52.0, 22.0, 7.25)  # what a phone writes: where the photo was taken


def with_gps(image: Image.Image, owner: str = "Jane Example") -> bytes:
    """A JPEG with the EXIF a phone writes: maker, model, capture time, owner and a GPS position."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "ExamplePhone", "Model X", "2026:01:02 03:04:05"
    exif[0x013B] = owner  # Artist
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps.update({1: "N", 2: GPS_LATITUDE, 3: "E", 4: (4.0, 53.0, 30.0)})
    return encode(image, "JPEG", exif=exif.tobytes(), quality=90)


def heic(image: Image.Image, orientation: int | None = None, quality: int = 80) -> bytes:
    """An iPhone-style HEIC photo, written with pillow-heif (optionally with an EXIF orientation)."""
    import pillow_heif

    exif = None
    if orientation is not None:
        tags = Image.Exif()
        tags[0x0112] = orientation
        exif = tags.tobytes()
    buf = io.BytesIO()
    pillow_heif.from_pillow(image).save(buf, quality=quality, exif=exif)
    return buf.getvalue()


def corpus(example_photo: Path) -> dict[str, Case]:
    photo = Image.open(example_photo).convert("RGB")
    photo.load()
    w, h = photo.size
    small = photo.resize((w // 2, h // 2))
    sw, sh = small.size
    jpeg = encode(small, "JPEG", quality=90)
    png = bytearray(encode(small, "PNG"))
    png[29] ^= 0xFF  # the IHDR chunk's CRC
    sixteen = Image.fromarray((np.asarray(small.convert("L"), dtype=np.uint16) * 257))
    palette = small.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    frames = [small, small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return {
        # refused, each with its own plain message
        "empty.jpg": Case(b"", "empty"),
        "text_renamed.jpg": Case(b"Dear diary, today I renamed a text file.\n" * 20, "not an image"),
        "truncated.jpg": Case(jpeg[: len(jpeg) // 3], "damaged"),
        "bad_crc.png": Case(bytes(png), "damaged"),
        "one_pixel.png": Case(encode(Image.new("RGB", (1, 1)), "PNG"), "too small"),
        "thirty_pixels.png": Case(encode(small.resize((30, 30)), "PNG"), "too small"),
        "bomb.png": Case(png_with_declared_size(60_000, 60_000), "too large"),
        # a HEIC header with nothing behind it (real HEIC photos are decoded: iphone.heic below)
        "heic_renamed.jpg": Case(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200,
                                 "HEIC/HEIF photo is damaged"),
        "svg_renamed.png": Case(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="200" '
                                b'height="200"><circle r="50"/></svg>', "SVG"),
        "pdf_renamed.jpg": Case(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n", "PDF"),
        # analysable (odd formats still give a report; grey, black, white and skinless ones no grade)
        "sixteen_bit.png": Case(encode(sixteen, "PNG"), size=(sw, sh), graded=False),
        "cmyk.jpg": Case(encode(small.convert("CMYK"), "JPEG"), size=(sw, sh)),
        "palette_transparent.png": Case(encode(palette, "PNG"), size=(sw, sh)),
        "animated.gif": Case(animated.getvalue(), size=(sw, sh)),
        "photo.webp": Case(encode(small, "WEBP", quality=85), size=(sw, sh)),
        "iphone.heic": Case(heic(small, orientation=6), size=(sh, sw)),   # turned upright like a phone's
        "exif_orientation_6.jpg": Case(with_orientation(small, 6), size=(sh, sw)),
        "exif_orientation_8.jpg": Case(with_orientation(small, 8), size=(sh, sw)),
        "grayscale.jpg": Case(encode(small.convert("L"), "JPEG"), size=(sw, sh), graded=False),
        "all_black.png": Case(encode(Image.new("RGB", (320, 240)), "PNG"), size=(320, 240), graded=False),
        "all_white.png": Case(encode(Image.new("RGB", (320, 240), (255, 255, 255)), "PNG"), size=(320, 240), graded=False),
        "landscape.jpg": Case(encode(landscape(), "JPEG", quality=90), size=(480, 320), graded=False),
    }


def huge_photo() -> bytes:
    """A real 12000 x 9000 JPEG (108 megapixels; smooth, so the file stays a few MB)."""
    x = np.linspace(0, 255, 12000, dtype=np.float32)
    row = np.stack([x, x[::-1], np.full_like(x, 180)], axis=-1).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(np.broadcast_to(row, (9000, 12000, 3))))
    return encode(image, "JPEG", quality=60)


# What no user-facing message may contain (issue 20): a filesystem path, an errno, a traceback, an
# exception's class name or the raw text Python and Pillow put in their exceptions.
LEAK_PATTERNS = {
    "a filesystem path": re.compile(r"(?<![\w.:/])/[\w.@~+-]+"),
    "a Windows path": re.compile(r"\b[A-Za-z]:\\"),
    "an errno": re.compile(r"errno", re.IGNORECASE),
    "a traceback": re.compile(r"Traceback|File \"|line \d+, in |site-packages"),
    "an exception class name": re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception|Warning)\b|<class '"),
    "an exception's raw text": re.compile(
        r"No such file or directory|Permission denied|Is a directory|cannot identify image file|"
        r"embedded null byte|not in the cache folder|gradio cache dir|Hostname .* validation", re.IGNORECASE),
}


def message_leaks(message: str) -> list[str]:
    """What a user-facing message gives away, by name (empty when it is clean)."""
    return [what for what, pattern in LEAK_PATTERNS.items() if pattern.search(message)]
