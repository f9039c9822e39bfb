"""`/analyze_views` through gradio_client against the real app.py (tiny models): three photos give
three per-view reports and the whole-face summary; a broken file gives two views and a clear
message; no upload outlives its request."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app_process import AppProcess, app_env, files_under

gradio_client = pytest.importorskip("gradio_client", reason="the gradio_client package is not installed")
from gradio_client.exceptions import AppError  # noqa: E402

from acne.report import DISCLAIMER  # noqa: E402
from acne.severity import CLASSES, class_index  # noqa: E402


@pytest.fixture(scope="module")
def gradio_temp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gradio-temp")


@pytest.fixture(scope="module")
def app(tiny_model_env, gradio_temp, tmp_path_factory):
    process = AppProcess(app_env(tiny_model_env, gradio_temp), tmp_path_factory.mktemp("logs") / "app.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    return gradio_client.Client(app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def analyze_views(client, *paths):
    files = [gradio_client.handle_file(str(p)) if p else None for p in paths]
    return client.predict(*files, api_name="/analyze_views")


def test_three_views_give_three_reports_and_the_summary(client, tiny_analyzer, example_photos):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/analyze_views"]
    assert [p["parameter_name"] for p in api["parameters"]] == ["left", "front", "right"]
    photos = [example_photos[0], example_photos[2], example_photos[4]]
    summary = analyze_views(client, *photos)
    json.dumps(summary)
    expected = {name: tiny_analyzer.analyze(p) for name, p in zip(("left", "front", "right"), photos)}
    assert [v["view"] for v in summary["views"]] == ["left", "front", "right"]
    for item in summary["views"]:
        report, reference = item["report"], expected[item["view"]]
        assert report["severity"] == reference.severity and report["lesion_count"] == reference.lesion_count
        assert report["count_grade"] == reference.count_grade and report["disclaimer"] == DISCLAIMER
        assert len(report["lesions"]) == reference.lesion_count
    worst = max(expected, key=lambda n: (class_index(expected[n].severity), expected[n].lesion_count))
    assert summary["severity"] == expected[worst].severity in CLASSES and summary["decided_by"] == worst
    assert summary["lesion_counts"] == {n: r.lesion_count for n, r in expected.items()}
    assert summary["total_lesions"] == sum(r.lesion_count for r in expected.values())
    levels = [class_index(r.severity) for r in expected.values()]
    assert summary["views_disagree"] == (max(levels) - min(levels) > 1)
    assert summary["failed"] == [] and summary["disclaimer"] == DISCLAIMER


def test_a_broken_file_gives_two_views_and_a_clear_message(client, example_photos, tmp_path):
    broken = tmp_path / "front.jpg"
    broken.write_text("This is a text file that someone renamed to .jpg\n" * 10)
    summary = analyze_views(client, example_photos[0], broken, example_photos[1])
    assert [v["view"] for v in summary["views"]] == ["left", "right"] and summary["analysed"] == 2
    assert summary["failed"][0]["view"] == "front"
    assert summary["failed"][0]["error"].startswith("This file is not an image that can be read")
    message = summary["message"]
    assert message.startswith("The front photo could not be analysed: This file is not an image")
    assert "uses the left side and right side views" in message
    for marker in ("Traceback", 'File "', "/tmp/", "site-packages"):
        assert marker not in message
    assert summary["severity"] in CLASSES


def test_views_may_be_left_out_but_not_all(client, example_photos, tmp_path):
    summary = analyze_views(client, None, example_photos[1], None)
    assert [v["view"] for v in summary["views"]] == ["front"] and summary["decided_by"] == "front"
    with pytest.raises(AppError, match="No photo was sent"):
        analyze_views(client, None, None, None)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(AppError, match="could not be analysed"):
        analyze_views(client, broken, None, None)


def test_no_upload_outlives_its_request(app, client, gradio_temp, example_photos, tmp_path):
    unique = tmp_path / "unique.jpg"
    unique.write_bytes(example_photos[3].read_bytes() + b"\x00unique-views-upload")
    analyze_views(client, unique, None, None)

    def same(path: Path) -> bool:
        try:
            return path.read_bytes() == unique.read_bytes()
        except FileNotFoundError:   # deleted between listing and reading
            return False

    assert not [p for p in files_under(gradio_temp) if same(p)], "a view's upload is deleted as soon as it is read"
