"""iPhone photos: HEIC/HEIF is decoded through pillow-heif (the files are written here, with
pillow-heif), upright, with the same size and pixel limits as every other format, checked on the file's
header before anything is decoded. The CLI and the web API get a HEIC photo through the corpus
(tests/input_corpus.py: iphone.heic, in test_bad_inputs.py and test_api_client.py)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from acne import imaging
from acne.imaging import InvalidImageError, load_image
from input_corpus import heic

pytest.importorskip("pillow_heif", reason="pillow-heif is in requirements.txt")


@pytest.fixture(scope="module")
def source(example_photo) -> Image.Image:
    image = Image.open(example_photo).convert("RGB")
    return image.crop((0, 0, image.width, image.height * 3 // 4))   # not square: orientation shows


def test_a_heic_photo_decodes_to_the_same_rgb_pixels(source, tmp_path):
    data = heic(source, quality=90)
    assert data[4:12] == b"ftypheic"
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(data)
    for input_ in (path, str(path), data):
        rgb = load_image(input_)
        assert rgb.dtype == np.uint8 and rgb.shape == (source.height, source.width, 3)
        error = np.abs(rgb.astype(int) - np.asarray(source, dtype=int)).mean()
        assert error < 6, f"mean pixel error {error:.1f}: not the same photo"


def test_the_exif_orientation_of_a_heic_photo_is_applied(source):
    rgb = load_image(heic(source, orientation=6))          # 90 degrees clockwise, as phones write it
    assert rgb.shape[:2] == (source.width, source.height)
    upright = np.asarray(source.transpose(Image.Transpose.ROTATE_270), dtype=int)
    assert np.abs(rgb.astype(int) - upright).mean() < 8


def test_the_pixel_limit_applies_before_decoding(source):
    data = heic(source)
    truncated = data[: len(data) // 2]     # the header is whole, the picture is not
    with pytest.raises(InvalidImageError, match="damaged"):
        load_image(truncated)             # decoding it would fail...
    with pytest.raises(InvalidImageError, match="too large") as info:
        load_image(truncated, max_pixels=source.width * source.height - 1)
    assert f"{source.width} x {source.height}" in str(info.value)   # ...so the limit answered from the header
    with pytest.raises(InvalidImageError, match="too small"):
        load_image(heic(source.resize((48, 36))))


def test_without_pillow_heif_the_message_says_what_to_do(monkeypatch, source):
    monkeypatch.setattr(imaging, "HEIF_SUPPORTED", False)
    message = imaging._unsupported_message(heic(source))
    assert "HEIC" in message and "pillow-heif" in message and "JPEG" in message
