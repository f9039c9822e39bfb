"""Our grader's architecture (acne.count_model): DINOv2 + a lesion-density head, grade from the count.

Tiny models are built, saved with save_pretrained and loaded back through the app's loader.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from acne.count_model import Dinov2ForLesionCountGrading, grade_logits
from acne.grader import load_grader
from acne.imaging import load_image

HAYASHI_EDGES = [5.5, 20.5, 50.5]


@pytest.fixture(scope="module")
def photo(example_photo):
    return load_image(example_photo)


def test_the_grade_is_the_hayashi_band_of_the_count():
    counts = torch.tensor([0.0, 5.0, 6.0, 14.0, 20.0, 21.0, 40.0, 50.0, 51.0, 300.0])
    bands = [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]          # <=5, 6-20, 21-50, >50 lesions
    for slope in (1.0, 3.0, 10.0):
        logits = grade_logits(counts, HAYASHI_EDGES, slope=slope)
        assert torch.allclose(logits.exp().sum(-1), torch.ones(len(counts)), atol=1e-5)
        assert logits.argmax(-1).tolist() == bands
    # Deep inside a band the grade is surer than next to an edge, and more so with a steeper slope.
    probs = grade_logits(torch.tensor([12.0, 20.0]), HAYASHI_EDGES, slope=3.0).exp()
    assert probs[0, 1] > probs[1, 1] and probs[1, 2] > probs[0, 2]
    steep = grade_logits(torch.tensor([12.0]), HAYASHI_EDGES, slope=10.0).exp()
    assert steep[0, 1] > probs[0, 1]
    # More lesions never make a higher grade less likely.
    many = grade_logits(torch.linspace(0, 120, 241), HAYASHI_EDGES, slope=3.0).exp()[:, 2:].sum(-1)
    assert (many[1:] >= many[:-1] - 1e-6).all()


def test_the_app_loads_it_and_its_grade_is_its_count(tiny_count_grader_dir, photo):
    grader = load_grader(tiny_count_grader_dir, backend="torch")
    assert isinstance(grader.model, Dinov2ForLesionCountGrading)
    assert grader.levels == [0, 1, 2, 3]
    result = grader.predict(photo)
    with torch.inference_mode():
        out = grader.model(pixel_values=grader.inputs(photo))
    assert out.density.shape == (1, 4, 4) and float(out.density.min()) >= 0.0
    config = grader.model.config
    assert (config.band_edges, config.count_slope) == ([4.5, 18.0, 44.0], 4.0)    # saved and loaded
    # The head reads the final tokens and the layer-normed input of the last block, side by side.
    assert config.density_layers == [-1, -2] and grader.model.density_head.reduce.in_channels == 2 * 32
    assert float(out.count[0]) == pytest.approx(float(out.density.sum()), rel=1e-5)
    expected = torch.softmax(grade_logits(out.count, config.band_edges, config.count_slope)[0], -1)
    assert list(result.level_scores.values()) == pytest.approx(expected.tolist(), abs=1e-5)
    assert result.level == int(expected.argmax())


def test_explain_shows_the_density_map_the_count_sums(tiny_count_grader_dir, photo):
    grader = load_grader(tiny_count_grader_dir, backend="torch")
    wide = np.ascontiguousarray(photo[100:400])               # 640 x 300: square-resized, no crop
    heat = grader.explain(wide)
    assert heat.shape == (300, 640) and heat.dtype == np.float32
    with torch.inference_mode():
        density = grader.model(pixel_values=grader.inputs(wide)).density[0].numpy()
    expected = cv2.resize((density - density.min()) / (density.max() - density.min()), (640, 300),
                          interpolation=cv2.INTER_LINEAR)
    assert np.abs(heat - expected).max() < 1e-4


def test_bf16_keeps_the_density_head_in_fp32(tiny_count_grader_dir, photo):
    grader = load_grader(tiny_count_grader_dir, backend="bf16")
    model = grader.runner.module   # the bf16 runner's copy (grader.model stays the fp32 reference)
    assert model.dinov2.encoder.layer[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.density_head.parameters())
    plain = load_grader(tiny_count_grader_dir, backend="torch").predict(photo)
    fast = grader.predict(photo)
    assert list(fast.level_scores.values()) == pytest.approx(list(plain.level_scores.values()), abs=0.05)


def test_onnx_export_gives_the_torch_scores(tiny_count_grader_dir, photo, tmp_path):
    pytest.importorskip("onnxruntime")
    fast = load_grader(tiny_count_grader_dir, backend="onnx", cache_dir=tmp_path)
    assert fast.backend == "onnx"
    plain = load_grader(tiny_count_grader_dir, backend="torch").predict(photo)
    got = fast.predict(photo)
    assert got.level == plain.level
    assert list(got.level_scores.values()) == pytest.approx(list(plain.level_scores.values()), abs=1e-4)
