"""The analyzer end to end on real photos with the tiny models, and load_analyzer's settings."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import acne
from acne.analysis import Analysis, Analyzer, load_analyzer
from acne.config import Settings
from acne.errors import WeightsMissingError
from acne.imaging import InvalidImageError
from acne.report import DISCLAIMER, Report
from acne.severity import CLASSES, class_scores, count_grade, recommendations


@pytest.fixture(scope="module")
def analysis(tiny_analyzer, example_photo) -> Analysis:
    return tiny_analyzer.run(example_photo)


def test_package_exports_the_public_api():
    assert acne.load_analyzer is load_analyzer and acne.Analyzer is Analyzer
    assert acne.Report is Report and acne.InvalidImageError is InvalidImageError
    assert acne.Settings is Settings and acne.WeightsMissingError is WeightsMissingError
    with pytest.raises(AttributeError):
        acne.no_such_name  # noqa: B018


def test_report_is_consistent(analysis, tiny_analyzer):
    report = analysis.report
    assert report.image_size == (640, 640)
    assert report.segmenter == tiny_analyzer.segmenter.name
    assert report.grader.model == tiny_analyzer.grader.name
    assert report.severity_scores == pytest.approx(class_scores(report.grader.level_scores))
    assert list(report.severity_scores) == list(CLASSES)
    assert sum(report.severity_scores.values()) == pytest.approx(1.0)
    assert report.severity == max(CLASSES, key=report.severity_scores.get)
    assert report.count_grade == count_grade(len(report.lesions))
    assert report.recommendations == recommendations(report.severity)
    assert report.disclaimer == DISCLAIMER
    assert isinstance(report.quality_warnings, list)
    timings = report.timings_ms
    assert set(timings) >= {"decode", "segment", "grade", "models", "total"}
    assert timings["total"] >= timings["decode"] + timings["models"] - 1.0
    # The models run one after the other, or at once (ACNE_PARALLEL): never less than the slower one.
    assert timings["models"] >= max(timings["segment"], timings["grade"]) - 1.0
    assert all(v >= 0 for v in timings.values())


def test_analysis_arrays(analysis):
    assert analysis.image.shape == (640, 640, 3) and analysis.image.dtype == np.uint8
    assert analysis.mask.shape == (640, 640) and analysis.mask.dtype == np.bool_
    assert analysis.probability.shape == (640, 640)
    overlay = analysis.overlay()
    assert overlay.shape == analysis.image.shape and overlay.dtype == np.uint8
    assert np.array_equal(overlay[~analysis.mask & ~_near(analysis.mask)], analysis.image[~analysis.mask & ~_near(analysis.mask)])
    if analysis.mask.any():
        assert not np.array_equal(overlay[analysis.mask], analysis.image[analysis.mask])


def _near(mask: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)


def test_report_serialises_to_json(analysis):
    data = json.loads(analysis.report.to_json())
    assert data["lesion_count"] == len(analysis.report.lesions)
    assert data["image_size"] == [640, 640]
    for lesion in data["lesions"]:
        assert len(lesion["box"]) == 4 and len(lesion["center"]) == 2


def test_every_input_kind_gives_the_same_report(tiny_analyzer, example_photo, analysis):
    data = example_photo.read_bytes()
    with Image.open(io.BytesIO(data)) as pil:
        from_pil = tiny_analyzer.analyze(pil)
    for report in (tiny_analyzer.analyze(data), from_pil, tiny_analyzer.analyze(analysis.image)):
        assert report.lesions == analysis.report.lesions
        assert report.severity_scores == pytest.approx(analysis.report.severity_scores)


def test_exif_rotated_photo_is_analysed_upright(tiny_analyzer, example_photo):
    with Image.open(example_photo) as im:
        wide = im.crop((0, 100, 640, 500))           # 640 x 400
    # Store it sideways with orientation 6 (display = rotate 90 clockwise): the upright photo is 400 x 640.
    stored = wide.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    analysis = tiny_analyzer.run(buf.getvalue())
    assert analysis.report.image_size == (640, 400)
    assert analysis.mask.shape == (400, 640)


def test_bad_input_raises_invalid_image_error(tiny_analyzer):
    with pytest.raises(InvalidImageError, match="not an image"):
        tiny_analyzer.analyze(b"hello, this is text")
    with pytest.raises(InvalidImageError, match="too small"):
        tiny_analyzer.analyze(np.zeros((30, 30, 3), np.uint8))


def test_explain_covers_the_photo(tiny_analyzer, example_photo):
    heat = tiny_analyzer.explain(example_photo)
    assert heat.shape == (640, 640) and 0.0 <= heat.min() and heat.max() <= 1.0


def test_load_analyzer_overrides(tiny_settings, tiny_grader4_dir):
    analyzer = load_analyzer(tiny_settings, seg_size=128, grader=str(tiny_grader4_dir))
    assert analyzer.segmenter.input_size == 128
    assert analyzer.grader.name == str(tiny_grader4_dir) and analyzer.grader.levels == [0, 1, 2, 3]


def test_load_analyzer_reads_the_environment(monkeypatch, tiny_segmenter_dir, tiny_grader4_dir, tiny_skin_check_dir):
    monkeypatch.setenv("ACNE_SEGMENTER", str(tiny_segmenter_dir))
    monkeypatch.setenv("ACNE_GRADER", str(tiny_grader4_dir))
    monkeypatch.setenv("ACNE_SKIN_CHECK", str(tiny_skin_check_dir))
    monkeypatch.setenv("ACNE_SEG_SIZE", "96")
    monkeypatch.setenv("ACNE_SEG_THRESHOLD", "0.65")
    analyzer = load_analyzer()
    assert analyzer.segmenter.name == str(tiny_segmenter_dir) and analyzer.segmenter.input_size == 96
    assert analyzer.segmenter.threshold == 0.65
    assert analyzer.grader.name == str(tiny_grader4_dir) and analyzer.skin_check.name == str(tiny_skin_check_dir)


def test_missing_weights_name_every_missing_model(tmp_path):
    settings = Settings(segmenter=str(tmp_path / "segmenter"), grader="nobody/no-such-grader",
                        grader_fallback=str(tmp_path / "grader"), skin_check=str(tmp_path / "skin_check"))
    with pytest.raises(WeightsMissingError) as info:
        load_analyzer(settings)
    message = str(info.value)
    assert "Skin check" in message and str(tmp_path / "skin_check") in message and "train_skin_check.py" in message
    assert "Lesion segmenter" in message and str(tmp_path / "segmenter") in message
    assert "Severity grader" in message and str(tmp_path / "grader") in message
    assert "train_segmenter.py" in message and "train_grader.py" in message


# -- where the severity comes from --------------------------------------------------------------------


def test_severity_comes_from_the_grader(tiny_analyzer, example_photo):
    report = tiny_analyzer.analyze(example_photo)
    assert report.severity_source == "grader"
    assert report.severity_scores == class_scores(report.grader.level_scores)


def test_the_heat_map_comes_from_the_analysis_itself(tiny_settings, tiny_count_grader_dir, example_photo):
    analyzer = load_analyzer(tiny_settings, grader=str(tiny_count_grader_dir), backend="torch", parallel="off")
    analysis = analyzer.run(example_photo)
    assert analysis.density is not None                 # the counting grader's map, from the same forward pass
    heat = analysis.heatmap()
    assert heat.shape == analysis.image.shape[:2] and heat.dtype == np.float32
    assert 0.0 <= heat.min() and 0.5 < heat.max() <= 1.0
    assert np.array_equal(heat, analysis.heatmap())


def test_describe_gives_the_ui_what_it_shows(tiny_analyzer, tiny_settings):
    about = tiny_analyzer.describe()
    assert set(about) == {"segmenter", "grader", "backend", "parallel"}
    for part in ("segmenter", "grader"):
        assert set(about[part]) == {"name", "short_name", "input_size", "figures_markdown"}
    assert about["segmenter"]["name"] == tiny_settings.segmenter and about["segmenter"]["input_size"] == 256
    assert about["grader"]["input_size"] == 64 and "Figures from `inference.json`" in about["segmenter"]["figures_markdown"]
    assert about["backend"] in ("torch", "bf16", "onnx") and isinstance(about["parallel"], bool)
