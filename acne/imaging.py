"""Photos in, RGB arrays out: decoding, EXIF orientation, validation and cheap quality checks.

Every refusal is an `InvalidImageError` whose message can be shown to a user as it is.
Animated files (GIF, APNG, animated WebP) are accepted: the first frame is analysed. HEIC/HEIF (the
iPhone default) is decoded through pillow-heif when it is installed (it is in requirements.txt).
"""
from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Union[str, Path, bytes, bytearray, memoryview, Image.Image, np.ndarray]

try:  # HEIC/HEIF: Pillow reads them once pillow-heif registers its opener (header first, like any format)
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
    HEIF_SUPPORTED = False

SUPPORTED = "JPEG, PNG, WebP, HEIC, BMP, TIFF, GIF or AVIF" if HEIF_SUPPORTED else "JPEG, PNG, WebP, BMP, TIFF, GIF or AVIF"
# ImageNet normalisation (RGB, 0-1 scale): both embedded models and their training scripts use it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The same on the 0-255 scale, for normalising uint8 pixels without rescaling them first.
IMAGENET_MEAN_255 = np.array(IMAGENET_MEAN, dtype=np.float32) * 255
IMAGENET_STD_255 = np.array(IMAGENET_STD, dtype=np.float32) * 255
# File names taken as photos when a folder is searched (`acne analyze`, `acne batch`).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif", ".heic",
                            ".heif"})
MAX_PIXELS = 50_000_000
MIN_SIDE = 64


# Pillow logs EXIF tag values (camera owner, capture time, serial numbers) at DEBUG while it reads a
# photo: keep uploads' metadata out of the logs even when DEBUG logging is turned on.
_pil_log = logging.getLogger("PIL")
_pil_log.setLevel(max(_pil_log.level, logging.INFO))


class InvalidImageError(ValueError):
    """The input cannot be analysed; str(error) is a plain-English message for the user."""


# --------------------------------------------------------------------------- decoding

def load_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode `source` into an HxWx3 uint8 RGB array, upright according to its EXIF orientation.

    Parameters: `source` a file path, the file's bytes, a PIL image or an array (HxW, HxWx3, HxWx4);
    `max_pixels` / `min_side` the size limits (a decompression bomb or a thumbnail is refused).
    Returns the RGB array. Raises InvalidImageError, whose message is meant for people."""
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source)
        _check_size(rgb.shape[1], rgb.shape[0], max_pixels, min_side)
        return rgb
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, max_pixels, min_side)
        return _pil_to_rgb(source, max_pixels, min_side)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        data = read_file(Path(source))
    else:
        raise InvalidImageError(f"Cannot read an image from a {type(source).__name__}; "
                                "give a file path, the file's bytes, a PIL image or a numpy array.")
    if not data:
        raise InvalidImageError(f"The file is empty (0 bytes). Please upload a photo ({SUPPORTED}).")
    return _decode_bytes(data, max_pixels, min_side)


def read_file(path: Path) -> bytes:
    """The bytes of the photo file at `path`.

    Raises InvalidImageError with a plain message when the file is missing, a folder or unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidImageError(f"File not found: {path.name}") from None
    except IsADirectoryError:
        raise InvalidImageError(f"{path.name} is a folder, not an image file.") from None
    except OSError as exc:
        raise InvalidImageError(f"Could not read {path.name}: {exc.strerror or exc}.") from None


def _decode_bytes(data: bytes, max_pixels: int, min_side: int) -> np.ndarray:
    with warnings.catch_warnings():
        # Our own pixel cap (checked on the header, before decoding) replaces Pillow's warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:  # beyond Pillow's own hard limit (~179 MP)
            declared = re.search(r"\((\d+) pixels\)", str(exc))
            raise InvalidImageError(_too_many_pixels_message(
                None, None, max_pixels, int(declared.group(1)) if declared else None)) from None
        except UnidentifiedImageError:
            raise InvalidImageError(_unsupported_message(data)) from None
        except Exception:  # noqa: BLE001 - any parser failure on the header means a broken file
            raise InvalidImageError(_damaged_message()) from None
        with image:
            _check_size(image.width, image.height, max_pixels, min_side)
            return _pil_to_rgb(image, max_pixels, min_side)


def _pil_to_rgb(image: Image.Image, max_pixels: int, min_side: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            if getattr(image, "is_animated", False):
                image.seek(0)  # animated: analyse the first frame
            image.load()  # force the full decode now so truncated / corrupt data fails here
        except Image.DecompressionBombError:
            raise InvalidImageError(_too_many_pixels_message(image.width, image.height, max_pixels)) from None
        except Exception:  # noqa: BLE001 - OSError, SyntaxError (bad PNG CRC), EOFError, zlib errors...
            raise InvalidImageError(_damaged_message()) from None
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a malformed EXIF block should not cost the user the photo
        upright = image
    rgb = _to_rgb_mode(upright)
    _check_size(rgb.shape[1], rgb.shape[0], max_pixels, min_side)
    return rgb


def _to_rgb_mode(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(image))
    if mode == "P" and "transparency" in image.info or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)  # transparent areas become white, not black
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise InvalidImageError(f"Expected an image array of shape HxW, HxWx3 or HxWx4, got {a.shape}.")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise InvalidImageError("The image array contains NaN or infinite values.")
        peak = a.max()
        if np.issubdtype(array.dtype, np.floating) and peak <= 1.0:
            a = a * 255.0             # float images in 0..1
        elif peak > 255:
            a = a / 257.0             # 16-bit images (0..65535)
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 4:             # RGBA: composite on white
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        a = np.rint(a[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(a)


def _check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise InvalidImageError(_too_many_pixels_message(width, height, max_pixels))
    if min(width, height) < min_side:
        raise InvalidImageError(
            f"The image is too small ({width} x {height} pixels). Please use a photo at least "
            f"{min_side} pixels on each side; a close, sharp photo of the face works best.")


def _megapixels(pixels: int) -> str:
    """108 for 108,000,000; 0.5 for 500,000 (ACNE_MAX_PIXELS may be set below a megapixel)."""
    return f"{pixels / 1e6:.0f}" if pixels >= 10_000_000 else f"{pixels / 1e6:.2g}"


def _too_many_pixels_message(width: int | None, height: int | None, max_pixels: int,
                             pixels: int | None = None) -> str:
    if width and height:
        size = f" ({width} x {height} pixels, {_megapixels(width * height)} megapixels)"
    else:
        size = f" ({_megapixels(pixels)} megapixels)" if pixels else ""
    return (f"The image is too large{size}; the limit is {_megapixels(max_pixels)} megapixels. "
            "Please resize it and try again.")


def _damaged_message() -> str:
    return ("The image file is damaged or incomplete and could not be decoded. "
            "Please try the original photo again or save it anew as JPEG or PNG.")


_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _unsupported_message(data: bytes) -> str:
    # Pillow says "cannot identify" both for foreign formats and for images with a broken header.
    if data.startswith(_IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return _damaged_message()
    head = data[:512].lstrip()
    lower = head.lower()
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace").strip()
        if brand in ("heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1"):
            if HEIF_SUPPORTED:  # pillow-heif could not even read its header
                return ("This HEIC/HEIF photo is damaged or incomplete and could not be decoded. Please "
                        "try the original photo again or save it anew as JPEG.")
            return ("This is a HEIC/HEIF photo (the iPhone default), which this installation cannot read "
                    "(the pillow-heif package is missing). Please convert it to JPEG first (on an iPhone: "
                    "Settings > Camera > Formats > Most Compatible).")
        return f"This is a video or an unsupported image format ({brand!r}). Please upload a photo ({SUPPORTED})."
    if head.startswith(b"%PDF"):
        return f"This is a PDF document, not a photo. Please upload a photo ({SUPPORTED})."
    if b"<svg" in lower or (lower.startswith(b"<?xml") and b"svg" in lower):
        return f"This is an SVG drawing, not a photo. Please upload a photo ({SUPPORTED})."
    return f"This file is not an image that can be read. Please upload a photo ({SUPPORTED})."


# --------------------------------------------------------------------------- output

def to_png_bytes(array: np.ndarray) -> bytes:
    """PNG bytes of an RGB (HxWx3) or grey (HxW) uint8 array. No EXIF or other metadata is written."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def save_png(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` (RGB HxWx3 or grey HxW, uint8) as a metadata-free PNG at `path`; returns the path."""
    path = Path(path)
    path.write_bytes(to_png_bytes(array))
    return path


def mask_to_png_array(mask: np.ndarray) -> np.ndarray:
    """A boolean lesion mask as a 0/255 uint8 image."""
    return np.where(mask, 255, 0).astype(np.uint8)


# --------------------------------------------------------------------------- quality

# Thresholds were checked on the ACNE04 examples (sharp, even light) and blurred / darkened copies.
DARK_MEAN = 60
BRIGHT_MEAN = 215
BRIGHT_CLIPPED = 0.35     # fraction of pixels at >= 250
BLUR_VARIANCE = 20.0      # variance of the Laplacian, grey, long side <= 512: sharp examples 100-370, sigma-1.5 blur < 10
SMALL_SIDE = 256


def quality_warnings(rgb: np.ndarray) -> list[str]:
    """Cheap checks of what makes a photo hard to analyse (light, blur, size); plain-English warnings, empty
    when fine. Whether there is skin to analyse is the region step's and the skin check's question."""
    h, w = rgb.shape[:2]
    scale = 512 / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    warnings_: list[str] = []
    mean = float(grey.mean())
    dark = mean < DARK_MEAN
    bright = mean > BRIGHT_MEAN or float((grey >= 250).mean()) > BRIGHT_CLIPPED
    if dark:
        warnings_.append("The photo is very dark; take it in bright, even light for a more reliable result.")
    if bright:
        warnings_.append("The photo is overexposed (too bright); avoid direct flash or strong light on the skin.")
    if not dark and not bright and float(cv2.Laplacian(grey, cv2.CV_64F).var()) < BLUR_VARIANCE:
        warnings_.append("The photo looks blurry; hold the camera steady and focus on the skin.")
    if min(h, w) < SMALL_SIDE:
        warnings_.append(f"The photo is small ({w} x {h} pixels); small spots may be missed. "
                         "A closer or larger photo works better.")
    return warnings_
