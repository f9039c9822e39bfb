"""Lesion post-processing on synthetic maps, and the real ResNet34-UNet loader on tiny saved weights."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from acne.errors import WeightsCorruptError, WeightsMissingError
from acne.imaging import load_image
from acne.lesions import find_lesions, render_overlay
from acne.segmenter import load_segmenter

H, W = 120, 160
YY, XX = np.mgrid[:H, :W]


def _blob(cx: float, cy: float, sigma: float) -> np.ndarray:
    return np.exp(-((XX - cx) ** 2 + (YY - cy) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def _touching_pair():
    """Two round lesions whose thresholded masks touch (one connected region), and their centre map."""
    prob = np.maximum(_blob(60, 60, 8), _blob(84, 60, 8))
    center = np.maximum(_blob(60, 60, 3), _blob(84, 60, 3))
    return prob, center


def _connected_regions(mask: np.ndarray) -> int:
    import cv2

    return cv2.connectedComponents(mask.astype(np.uint8))[0] - 1


# --------------------------------------------------------------------------- post-processing

@pytest.mark.parametrize("use_center", [True, False], ids=["centre-channel", "distance-transform"])
def test_touching_lesions_are_split(use_center):
    prob, center = _touching_pair()
    assert _connected_regions(prob >= 0.3) == 1  # the premise: one blob if nothing splits it
    labels, lesions = find_lesions(prob, center if use_center else None, threshold=0.3,
                                   center_threshold=0.5, min_area_px=4)
    assert len(lesions) == 2
    left, right = sorted(lesions, key=lambda lesion: lesion.center[0])
    assert left.center[0] == pytest.approx(60, abs=2) and right.center[0] == pytest.approx(84, abs=2)
    assert left.center[1] == pytest.approx(60, abs=1) and right.center[1] == pytest.approx(60, abs=1)
    assert left.box[2] <= right.box[0] + 2  # the boxes meet near the neck, they do not overlap much
    assert left.box[0] < 60 < left.box[2] and right.box[0] < 84 < right.box[2]
    assert abs(left.area_px - right.area_px) <= 0.1 * left.area_px  # a fair split of a symmetric pair
    assert left.area_px + right.area_px == int((prob >= 0.3).sum())  # every lesion pixel is assigned
    assert set(np.unique(labels)) == {0, 1, 2}
    assert all(lesion.score == pytest.approx(1.0, abs=1e-3) for lesion in lesions)


def test_separate_lesions_and_empty_maps():
    prob = np.maximum(_blob(30, 30, 5), _blob(120, 90, 6))
    labels, lesions = find_lesions(prob, None, threshold=0.5, min_area_px=4)
    assert len(lesions) == 2
    for lesion in lesions:
        x0, y0, x1, y1 = lesion.box
        assert x0 <= lesion.center[0] < x1 and y0 <= lesion.center[1] < y1
        assert lesion.area_px == int((labels[y0:y1, x0:x1] > 0).sum())
    assert find_lesions(np.zeros((H, W), np.float32), None)[1] == []
    assert find_lesions(np.zeros((H, W), np.float32), np.zeros((H, W), np.float32))[1] == []


def test_lesion_boxes_are_exclusive_pixel_boxes():
    prob = np.zeros((H, W), np.float32)
    prob[10:20, 30:45] = 0.9
    _, (lesion,) = find_lesions(prob, None, threshold=0.5, min_area_px=1)
    assert lesion.box == (30, 10, 45, 20)
    assert lesion.area_px == 150 and lesion.center == pytest.approx((37.0, 14.5))
    assert lesion.score == pytest.approx(0.9)


def test_min_area_drops_specks_without_a_centre_map():
    prob = np.zeros((H, W), np.float32)
    prob[10:20, 10:20] = 0.9   # 100 px
    prob[50:52, 50:52] = 0.9   # 4 px speck
    assert len(find_lesions(prob, None, threshold=0.5, min_area_px=10)[1]) == 1
    assert len(find_lesions(prob, None, threshold=0.5, min_area_px=4)[1]) == 2


def test_with_a_centre_map_the_peaks_are_the_lesions():
    prob = np.maximum(_blob(40, 40, 8), _blob(120, 80, 8))   # two lesion regions
    center = np.maximum(_blob(40, 40, 3), _blob(100, 20, 2))  # a peak in region 1, one outside any region
    _, lesions = find_lesions(prob, center, threshold=0.5, center_threshold=0.5)
    centres = sorted(tuple(round(v) for v in lesion.center) for lesion in lesions)
    assert len(lesions) == 2  # region 2 has no peak: not a lesion; the lone peak is one
    assert centres[0] == pytest.approx((40, 40), abs=1) and centres[1] == pytest.approx((100, 20), abs=1)
    # Peaks lower than center_threshold do not count.
    assert len(find_lesions(prob, center * 0.4, threshold=0.5, center_threshold=0.5)[1]) == 0


def test_many_touching_lesions_in_a_row():
    xs = [20, 34, 48, 62, 76, 90]
    prob = np.max([_blob(x, 60, 6) for x in xs], axis=0)
    center = np.max([_blob(x, 60, 2) for x in xs], axis=0)
    assert _connected_regions(prob >= 0.3) == 1
    _, lesions = find_lesions(prob, center, threshold=0.3, center_threshold=0.5)
    assert sorted(round(lesion.center[0]) for lesion in lesions) == pytest.approx(xs, abs=2)


# --------------------------------------------------------------------------- loading and inference

@pytest.fixture(scope="module")
def segmenter(tiny_segmenter_dir):
    return load_segmenter(tiny_segmenter_dir)


def test_loads_through_smp_with_inference_json(segmenter, tiny_segmenter_dir):
    settings = json.loads((tiny_segmenter_dir / "inference.json").read_text())
    assert segmenter.channels == ["lesion", "center"]
    assert segmenter.input_size == settings["input_size"] == 256
    assert segmenter.threshold == settings["threshold"]
    assert segmenter.center_threshold == settings["center_threshold"]
    assert segmenter.name == str(tiny_segmenter_dir)
    # The fp16 weights on disk are the weights in use (cast to fp32), not a fresh random init.
    stored = load_file(str(tiny_segmenter_dir / "model.safetensors"))
    for key in ("encoder.conv1.weight", "segmentation_head.0.weight"):
        assert stored[key].dtype == torch.float16
        loaded = segmenter.model.state_dict()[key]
        assert loaded.dtype == torch.float32 and torch.equal(loaded, stored[key].float())


def test_overrides_of_size_and_threshold(tiny_segmenter_dir):
    seg = load_segmenter(tiny_segmenter_dir, size=128, threshold=0.7)
    assert seg.input_size == 128 and seg.threshold == 0.7


def test_predict_returns_maps_at_input_resolution(segmenter, example_photo):
    rgb = load_image(example_photo)[:500, :333]   # not square, not a multiple of 32
    rgb = np.ascontiguousarray(rgb)
    lesion_map, center_map = segmenter.predict_maps(rgb)
    assert lesion_map.shape == center_map.shape == (256, 170)   # long side = input_size, aspect kept
    result = segmenter.predict(rgb)
    assert result.probability.shape == (500, 333) and result.probability.dtype == np.float32
    assert result.mask.shape == (500, 333) and result.mask.dtype == np.bool_
    assert 0.0 <= result.probability.min() <= result.probability.max() <= 1.0
    for lesion in result.lesions:
        x0, y0, x1, y1 = lesion.box
        assert 0 <= x0 < x1 <= 333 and 0 <= y0 < y1 <= 500
        assert lesion.area_px >= 1 and 0.0 <= lesion.score <= 1.0
    assert set(result.timings_ms) >= {"infer", "postprocess"}


def test_predict_is_deterministic_and_matches_the_model(segmenter, example_photo):
    rgb = load_image(example_photo)
    first, second = segmenter.predict(rgb), segmenter.predict(rgb)
    assert np.array_equal(first.probability, second.probability)
    assert first.lesions == second.lesions
    # The same maps by hand: resize (640 -> 256), ImageNet normalisation, model, sigmoid.
    import cv2

    x = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = (x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    with torch.inference_mode():
        expected = torch.sigmoid(segmenter.model(torch.from_numpy(x.transpose(2, 0, 1)[None]).float()))[0, 0]
    lesion_map, _ = segmenter.predict_maps(rgb)
    assert np.allclose(lesion_map, expected.numpy(), atol=1e-4)


def test_missing_folder_names_the_folder_and_the_fix(tmp_path):
    missing = tmp_path / "weights" / "segmenter"
    with pytest.raises(WeightsMissingError) as info:
        load_segmenter(missing)
    message = str(info.value)
    assert str(missing) in message and "scripts/train_segmenter.py" in message and "ACNE_SEGMENTER" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_weights_file_is_named(tmp_path, tiny_segmenter_dir):
    folder = tmp_path / "seg"
    folder.mkdir()
    shutil.copy(tiny_segmenter_dir / "config.json", folder)
    with pytest.raises(WeightsMissingError, match="model.safetensors is missing"):
        load_segmenter(folder)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors_gives_a_clear_message(tmp_path, tiny_segmenter_dir, damage):
    folder = tmp_path / "seg"
    shutil.copytree(tiny_segmenter_dir, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"this is not a safetensors file" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(WeightsCorruptError) as info:
        load_segmenter(folder)
    message = str(info.value)
    assert str(folder) in message and "damaged or incomplete" in message and "train_segmenter.py" in message


def test_bad_inference_json_gives_a_clear_message(tmp_path, tiny_segmenter_dir):
    folder = tmp_path / "seg"
    shutil.copytree(tiny_segmenter_dir, folder)
    (folder / "inference.json").write_text("{not json")
    with pytest.raises(WeightsCorruptError, match="inference.json"):
        load_segmenter(folder)
    (folder / "inference.json").write_text(json.dumps({"channels": ["lesion"]}))  # model has 2 channels
    with pytest.raises(WeightsCorruptError, match="channels"):
        load_segmenter(folder)


def test_unreachable_hub_id_is_a_missing_weights_error():
    with pytest.raises(WeightsMissingError, match="Hugging Face Hub"):
        load_segmenter("nobody/no-such-segmenter")


def test_render_overlay_tints_only_the_mask():
    rgb = np.full((80, 100, 3), 120, np.uint8)
    mask = np.zeros((80, 100), bool)
    mask[20:40, 30:60] = True
    out = render_overlay(rgb, mask, color=(255, 0, 80), alpha=0.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8 and out is not rgb
    assert tuple(out[30, 45]) == (187, 60, 100)                   # inside: blended
    assert tuple(out[5, 5]) == (120, 120, 120)                     # far outside: untouched
    assert (out[19:41, 29:61] != 120).any(axis=2).sum() > mask.sum()  # plus an outline
    assert np.array_equal(rgb, np.full((80, 100, 3), 120, np.uint8))  # input not modified
    assert np.array_equal(render_overlay(rgb, np.zeros((80, 100), bool)), rgb)
