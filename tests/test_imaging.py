"""Decoding, EXIF orientation, every bad-input kind, and the quality warnings — on real files made here."""
from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from acne.imaging import InvalidImageError, load_image, quality_warnings, save_png, to_png_bytes
from input_corpus import encode as _encode, png_with_declared_size as _png_with_declared_size
from input_corpus import with_orientation as _with_orientation

# --------------------------------------------------------------------------- file builders
# (The shared ones come from input_corpus.py, which also makes the bad-input corpus itself.)


def _photo(width: int = 160, height: int = 120) -> Image.Image:
    """A skin-toned photo-like image with texture (not flat, so JPEG and blur checks behave)."""
    rng = np.random.default_rng(0)
    base = np.array([200, 150, 120], np.float32)
    noise = rng.normal(0, 12, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _jpeg_with_declared_size(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to declare width x height."""
    data = bytearray(_encode(_photo(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _marked(width: int = 120, height: int = 80) -> Image.Image:
    """Blue image with a red square in the stored top-left corner, to see where it ends up."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 30, 30))
    return image


def _is_red(pixel) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r > 200 and g < 60 and b < 60


# --------------------------------------------------------------------------- good inputs


def test_real_photo_from_path_bytes_pil_and_array(example_photo):
    from_path = load_image(example_photo)
    assert from_path.dtype == np.uint8 and from_path.ndim == 3 and from_path.shape[2] == 3
    assert from_path.flags["C_CONTIGUOUS"]
    assert np.array_equal(load_image(str(example_photo)), from_path)
    assert np.array_equal(load_image(example_photo.read_bytes()), from_path)
    with Image.open(example_photo) as im:
        assert np.array_equal(load_image(im), from_path)
    assert np.array_equal(load_image(from_path), from_path)


@pytest.mark.parametrize("orientation, shape, red_at", [
    (1, (80, 120), (5, 5)),      # as stored
    (6, (120, 80), (5, 74)),     # rotate 90 clockwise: stored top-left goes to the top-right
    (8, (120, 80), (114, 5)),    # rotate 90 counter-clockwise: stored top-left goes to the bottom-left
    (3, (80, 120), (74, 114)),   # rotate 180
])
def test_exif_orientation_is_applied(orientation, shape, red_at):
    rgb = load_image(_with_orientation(_marked(), orientation))
    assert rgb.shape[:2] == shape
    assert _is_red(rgb[red_at])


def test_malformed_exif_does_not_cost_the_photo():
    data = bytearray(_with_orientation(_marked(), 6))
    start = data.index(b"Exif\x00\x00")
    data[start + 6:start + 14] = b"XXXXXXXX"  # break the TIFF header inside the EXIF block
    rgb = load_image(bytes(data))
    assert rgb.shape[2] == 3


def test_rgba_composites_on_white():
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[:, :40] = (255, 0, 0, 255)  # left half opaque red, right half fully transparent
    rgb = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(rgb[10, 10]) == (255, 0, 0)
    assert tuple(rgb[10, 70]) == (255, 255, 255)


def test_la_and_palette_with_transparency_composite_on_white():
    la = Image.new("LA", (80, 80), (0, 0))          # black, fully transparent
    assert tuple(load_image(_encode(la, "PNG"))[5, 5]) == (255, 255, 255)
    palette = Image.new("P", (80, 80), 0)
    palette.putpalette([10, 20, 30] + [200, 100, 50] * 255)
    palette.paste(1, (0, 0, 40, 80))
    data = _encode(palette, "PNG", transparency=0)   # index 0 (the right half) is transparent
    rgb = load_image(data)
    assert tuple(rgb[5, 5]) == (200, 100, 50)
    assert tuple(rgb[5, 70]) == (255, 255, 255)


def test_sixteen_bit_png_is_scaled_to_eight_bit():
    grey16 = np.full((80, 80), 65535, np.uint16)
    grey16[:, 40:] = 32896  # 128 * 257
    image = Image.fromarray(grey16)
    assert image.mode.startswith("I;16")
    rgb = load_image(_encode(image, "PNG"))
    assert tuple(rgb[5, 5]) == (255, 255, 255)
    assert tuple(rgb[5, 70]) == (128, 128, 128)


def test_cmyk_jpeg_grayscale_and_bilevel_become_rgb():
    cmyk = Image.new("CMYK", (80, 80), (0, 255, 255, 0))  # pure red in CMYK
    rgb = load_image(_encode(cmyk, "JPEG", quality=95))
    assert rgb.shape == (80, 80, 3) and _is_red(rgb[40, 40])
    grey = load_image(_encode(Image.new("L", (80, 80), 90), "PNG"))
    assert grey.shape == (80, 80, 3) and tuple(grey[0, 0]) == (90, 90, 90)
    bilevel = load_image(_encode(Image.new("1", (80, 80), 1), "PNG"))
    assert tuple(bilevel[0, 0]) == (255, 255, 255)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (80, 80), (255, 0, 0)), Image.new("RGB", (80, 80), (0, 255, 0))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).is_animated
    assert _is_red(load_image(data)[40, 40])


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF", "BMP", "TIFF"])
def test_other_common_formats(fmt):
    rgb = load_image(_encode(_photo(), fmt))
    assert rgb.shape == (120, 160, 3)


def test_arrays_of_other_types():
    assert load_image(np.full((80, 80), 0.5, np.float32))[0, 0].tolist() == [128, 128, 128]
    assert load_image(np.full((80, 80, 3), 65535, np.uint16))[0, 0].tolist() == [255, 255, 255]
    rgba = np.zeros((80, 80, 4), np.uint8)
    assert load_image(rgba)[0, 0].tolist() == [255, 255, 255]  # transparent -> white
    with pytest.raises(InvalidImageError, match="shape"):
        load_image(np.zeros((80, 80, 2), np.uint8))
    with pytest.raises(InvalidImageError, match="NaN"):
        load_image(np.full((80, 80), np.nan, np.float32))


# --------------------------------------------------------------------------- bad inputs


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# Refusals beyond the bad-input corpus of issue 8 (input_corpus.py; test_bad_inputs.py runs every
# corpus kind through load_image, the Analyzer and the CLI, test_api_client.py through the web API).
BAD_INPUTS = {
    "thin.png": (lambda: _encode(Image.new("RGB", (2000, 40)), "PNG"), "too small"),
    "bomb_over_pillow_limit.png": (lambda: _png_with_declared_size(20_000, 10_000), "too large"),
    "just_over_limit.png": (lambda: _png_with_declared_size(8_000, 6_500), "too large"),
    "huge_photo.jpg": (lambda: _jpeg_with_declared_size(12_000, 9_000), "too large"),
    "truncated_early.jpg": (lambda: _encode(_photo(400, 300), "JPEG")[:3000], "damaged or incomplete"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_give_a_plain_message(tmp_path, name):
    make, expected = BAD_INPUTS[name]
    path = _write(tmp_path, name, make())
    for source in (path, path.read_bytes()):
        with pytest.raises(InvalidImageError) as info:
            load_image(source)
        message = str(info.value)
        assert expected.lower() in message.lower()
        assert "Traceback" not in message and len(message) < 400
        assert message[0].isupper() and message.rstrip().endswith((".", ")"))


def test_png_with_a_bad_crc_is_damaged(tmp_path):
    data = bytearray(_encode(_photo(), "PNG"))
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    with pytest.raises(InvalidImageError, match="damaged"):
        load_image(bytes(data))
    data = bytearray(_encode(_photo(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 40:idat + 60] = b"\x00" * 20  # corrupt the compressed pixels
    with pytest.raises(InvalidImageError, match="damaged"):
        load_image(bytes(data))


def test_pixel_cap_is_checked_on_the_header_before_decoding():
    # The PNG holds far less data than it declares: decoding it says "damaged" (second check).
    # Getting "too large" under the default cap proves the size was refused from the header alone.
    bomb = _png_with_declared_size(8_000, 6_500)
    with pytest.raises(InvalidImageError, match="too large.*8000 x 6500.*limit is 50 megapixels"):
        load_image(bomb)
    with pytest.raises(InvalidImageError, match="damaged"):
        load_image(bomb, max_pixels=60_000_000)
    with pytest.raises(InvalidImageError, match="too large.*12000 x 9000"):
        load_image(_jpeg_with_declared_size(12_000, 9_000))
    with pytest.raises(InvalidImageError, match="too large"):
        load_image(_encode(_photo(200, 200), "PNG"), max_pixels=30_000)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InvalidImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(InvalidImageError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(InvalidImageError):
        load_image(12345)


# --------------------------------------------------------------------------- quality and outputs


def test_quality_warnings_are_quiet_on_a_good_photo(example_photo):
    assert quality_warnings(load_image(example_photo)) == []


def test_quality_warnings_find_each_problem(example_photo):
    rgb = load_image(example_photo)
    assert any("blurry" in w for w in quality_warnings(cv2.GaussianBlur(rgb, (0, 0), 3)))
    assert any("dark" in w for w in quality_warnings((rgb * 0.25).astype(np.uint8)))
    assert any("small" in w for w in quality_warnings(np.ascontiguousarray(rgb[:200, :180])))
    black = np.zeros((300, 300, 3), np.uint8)
    white = np.full((300, 300, 3), 255, np.uint8)
    assert any("dark" in w for w in quality_warnings(black))
    assert any("overexposed" in w for w in quality_warnings(white))
    # A synthetic landscape: blue sky over green grass, textured, well lit. Whether it shows skin is the
    # region step's and the skin check's question (tests/test_framing.py), not a photo-quality warning.
    rng = np.random.default_rng(1)
    landscape = np.zeros((300, 400, 3), np.uint8)
    landscape[:150] = (90, 150, 230)
    landscape[150:] = (60, 140, 50)
    landscape = np.clip(landscape + rng.normal(0, 20, landscape.shape), 0, 255).astype(np.uint8)
    assert quality_warnings(landscape) == []


def test_grayscale_photo_gets_loaded_as_rgb(example_photo):
    """A one-channel JPEG loads as three equal channels (what it then gets: tests/test_framing.py's grey
    close-up test)."""
    grey = load_image(example_photo).mean(axis=2).astype(np.uint8)
    rgb = load_image(_encode(Image.fromarray(grey), "JPEG"))
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and np.all(rgb[..., 0] == rgb[..., 1])


def test_png_outputs_carry_no_exif(tmp_path):
    rgb = load_image(_with_orientation(_marked(), 6))
    data = to_png_bytes(rgb)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.size == (80, 120)
        assert not im.getexif() and "exif" not in im.info
    path = save_png(tmp_path / "mask.png", np.zeros((70, 90), np.uint8))
    with Image.open(path) as im:
        assert im.mode == "L" and not im.getexif()
