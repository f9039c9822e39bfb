"""acne.views: the whole-face summary of several views, and `python -m acne analyze --views`."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from acne import views
from acne.report import DISCLAIMER
from conftest import PROJECT_DIR


def ok(severity, count, count_grade=None, **extra) -> dict:
    return {"ok": True, "severity": severity, "lesion_count": count, "count_grade": count_grade or severity,
            "severity_scores": {}, "lesions": [], **extra}


def test_the_most_affected_view_decides():
    summary = views.summarize([("left", ok("Mild", 12)), ("front", ok("Moderate", 30)), ("right", ok("Mild", 15))])
    assert summary["severity"] == "Moderate" and summary["decided_by"] == "front"
    assert summary["lesion_counts"] == {"left": 12, "front": 30, "right": 15} and summary["total_lesions"] == 57
    assert summary["count_grade"] == "Moderate" and summary["views_disagree"] is False
    assert summary["message"] == "" and summary["failed"] == [] and summary["disclaimer"] == DISCLAIMER
    assert [v["view"] for v in summary["views"]] == ["left", "front", "right"]
    assert summary["views"][0]["report"]["lesion_count"] == 12 and "ok" not in summary["views"][0]["report"]
    json.dumps(summary)
    assert views.summary_sentence(summary) == "Whole face: Moderate (decided by the front); 12 + 30 + 15 = 57 lesions."


def test_ties_go_to_the_view_with_more_lesions():
    summary = views.summarize([("left", ok("Mild", 12)), ("right", ok("Mild", 19))])
    assert summary["decided_by"] == "right"


def test_views_more_than_one_grade_apart_get_a_note():
    summary = views.summarize([("left", ok("Clear", 2)), ("front", ok("Mild", 8)), ("right", ok("Severe", 60))])
    assert summary["views_disagree"] is True and summary["severity"] == "Severe"
    assert "disagree by more than one grade" in summary["message"] and "left side: Clear" in summary["message"]
    one_apart = views.summarize([("left", ok("Mild", 8)), ("right", ok("Moderate", 25))])
    assert one_apart["views_disagree"] is False


def test_a_failed_view_is_reported_and_the_others_are_used():
    summary = views.summarize([("left", ok("Mild", 12)), ("front", {"ok": False, "error": "This file is not an image."}),
                               ("right", ok("Moderate", 25))])
    assert [v["view"] for v in summary["views"]] == ["left", "right"] and summary["analysed"] == 2
    assert summary["failed"] == [{"view": "front", "error": "This file is not an image."}]
    assert summary["message"].startswith("The front photo could not be analysed: This file is not an image.")
    assert "uses the left side and right side views" in summary["message"]
    assert summary["severity"] == "Moderate" and summary["total_lesions"] == 37


def test_views_that_were_not_assessed_take_no_part_in_the_grade():
    summary = views.summarize([("left", ok(None, 0, count_grade=None)), ("right", ok("Mild", 9))])
    assert summary["severity"] == "Mild" and summary["decided_by"] == "right"
    assert summary["not_assessed"] == ["left"] and summary["lesion_counts"] == {"right": 9}
    assert "left side photo was not assessed" in summary["message"]
    nothing = views.summarize([("left", ok(None, 0, count_grade=None))])
    assert nothing["severity"] is None and nothing["decided_by"] is None
    assert nothing["message"].startswith("No view could be graded")


def test_nothing_analysed():
    summary = views.summarize([("left", {"ok": False, "error": "Unreadable."})])
    assert summary["views"] == [] and summary["severity"] is None
    assert "No view could be graded" in summary["message"] and "left side photo could not be analysed" in summary["message"]


# --------------------------------------------------------------------------- the command line

def run_cli(env, *args, timeout=240):
    return subprocess.run([sys.executable, "-m", "acne", *map(str, args)], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_views_prints_one_whole_face_summary(tiny_model_env, tiny_analyzer, example_photos, tmp_path):
    broken = tmp_path / "front.jpg"
    broken.write_text("not a photo\n" * 20)
    left, right = example_photos[0], example_photos[-1]
    done = run_cli(tiny_model_env, "analyze", "--views", left, broken, right, "--json",
                   "--overlay-dir", tmp_path / "overlays")
    assert done.returncode == 1, done.stderr    # one view failed; the others are still summarised
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    summary = json.loads(lines[0])
    assert [v["view"] for v in summary["views"]] == ["left", "right"]
    assert [v["file"] for v in summary["views"]] == [str(left), str(right)]
    assert summary["failed"][0]["view"] == "front" and "not an image" in summary["failed"][0]["error"]
    assert "front photo could not be analysed" in summary["message"]
    expected = {name: tiny_analyzer.analyze(path) for name, path in (("left", left), ("right", right))}
    assert summary["lesion_counts"] == {name: r.lesion_count for name, r in expected.items()}
    assert summary["views"][0]["report"]["severity_scores"] == pytest.approx(expected["left"].severity_scores)
    assert all((tmp_path / "overlays" / f"{p.stem}.png").is_file() for p in (left, right))

    human = run_cli(tiny_model_env, "analyze", "--views", left, right)
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith("Whole face: ") and "left side (" in human.stdout and DISCLAIMER in human.stdout


def test_cli_views_usage_errors(tiny_model_env, example_photos, tmp_path):
    done = run_cli(tiny_model_env, "analyze", "--views", *example_photos[:4])
    assert done.returncode == 2 and "at most 3 photos" in done.stderr
    done = run_cli(tiny_model_env, "analyze", "--views", tmp_path)
    assert done.returncode == 2 and "not folders" in done.stderr
