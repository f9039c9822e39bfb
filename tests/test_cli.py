"""`python -m acne analyze` run as a subprocess on real photos with the tiny models (via env vars)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from acne.report import DISCLAIMER
from acne.severity import CLASSES, class_scores, count_grade, recommendations
from conftest import PROJECT_DIR


def run_cli(env, *args, timeout=240):
    return subprocess.run([sys.executable, "-m", "acne", *map(str, args)], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def json_run(tiny_model_env, example_photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    bad = out / "notes.jpg"
    bad.write_text("This is a text file that someone renamed to .jpg\n")
    done = run_cli(tiny_model_env, "analyze", *example_photos, bad, "--json",
                   "--overlay-dir", out / "overlays", "--mask-dir", out / "masks")
    return done, out, bad


def test_json_contract_field_by_field(json_run, example_photos, tiny_segmenter_dir, tiny_grader_dir):
    done, _, bad = json_run
    lines = done.stdout.splitlines()
    assert len(lines) == len(example_photos) + 1, done.stdout + done.stderr
    records = [json.loads(line) for line in lines]   # every line is one JSON object
    assert [r["file"] for r in records] == [str(p) for p in example_photos] + [str(bad)]
    for record in records[:-1]:
        assert record["ok"] is True and "error" not in record
        assert record["image_size"] == [640, 640]
        assert record["severity"] in CLASSES
        scores = record["severity_scores"]
        assert list(scores) == list(CLASSES) and sum(scores.values()) == pytest.approx(1.0)
        assert record["severity"] == max(scores, key=scores.get)
        grader = record["grader"]
        assert set(grader) == {"model", "level", "level_scores"}
        assert grader["model"] == str(tiny_grader_dir)
        assert list(grader["level_scores"]) == ["level -1", "level 0", "level 1", "level 2", "level 3"]
        assert grader["level"] == int(max(grader["level_scores"], key=grader["level_scores"].get).split()[1])
        assert scores == pytest.approx(class_scores(grader["level_scores"]))
        assert record["severity_source"] == "grader"   # no combination is fitted for the tiny models
        assert record["segmenter"] == str(tiny_segmenter_dir)
        assert record["lesion_count"] == len(record["lesions"])
        for lesion in record["lesions"]:
            assert set(lesion) == {"box", "center", "area_px", "score"}
            x0, y0, x1, y1 = lesion["box"]
            assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 640
            assert x0 - 1 <= lesion["center"][0] <= x1 and y0 - 1 <= lesion["center"][1] <= y1
            assert isinstance(lesion["area_px"], int) and lesion["area_px"] >= 1
            assert 0.0 <= lesion["score"] <= 1.0
        assert record["count_grade"] == count_grade(record["lesion_count"])
        assert set(record["timings_ms"]) >= {"decode", "segment", "grade", "total"}
        assert record["recommendations"] == recommendations(record["severity"])
        assert isinstance(record["quality_warnings"], list)
        assert record["disclaimer"] == DISCLAIMER


def test_bad_input_is_reported_and_exit_status_is_1(json_run):
    done, _, bad = json_run
    assert done.returncode == 1, done.stderr
    record = json.loads(done.stdout.splitlines()[-1])
    assert record == {"file": str(bad), "ok": False, "error": record["error"]}
    assert "not an image" in record["error"] and "Traceback" not in record["error"]
    assert "Traceback" not in done.stderr


def test_overlays_and_masks_are_written_without_exif(json_run, example_photos):
    done, out, _ = json_run
    records = [json.loads(line) for line in done.stdout.splitlines()][:-1]
    for photo, record in zip(example_photos, records):
        overlay, mask = out / "overlays" / f"{photo.stem}.png", out / "masks" / f"{photo.stem}.png"
        assert record["overlay"] == str(overlay) and record["mask"] == str(mask)
        with Image.open(overlay) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (640, 640)
            assert not im.getexif() and "exif" not in im.info
        with Image.open(mask) as im:
            assert im.mode == "L" and im.size == (640, 640) and not im.getexif()
            values = np.asarray(im)
        assert set(np.unique(values)) <= {0, 255}
        assert (values > 0).any() == (record["lesion_count"] > 0)
    assert not (out / "overlays" / "notes.png").exists()


def test_usage_errors_exit_2(tiny_model_env):
    for args in ([], ["analyze"], ["analyze", "x.jpg", "--no-such-flag"], ["frobnicate"]):
        done = run_cli(tiny_model_env, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "usage" in done.stderr.lower()


def test_missing_weights_say_which_and_how_to_get_them(tiny_model_env, example_photo, tmp_path):
    env = dict(tiny_model_env, ACNE_SEGMENTER=str(tmp_path / "weights" / "segmenter"),
               ACNE_GRADER="nobody/no-such-grader", ACNE_GRADER_FALLBACK=str(tmp_path / "weights" / "grader"))
    done = run_cli(env, "analyze", example_photo, "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert str(tmp_path / "weights" / "segmenter") in done.stderr and "train_segmenter.py" in done.stderr
    assert str(tmp_path / "weights" / "grader") in done.stderr and "train_grader.py" in done.stderr
    assert "Traceback" not in done.stderr


def test_human_readable_output_and_flags_overriding_the_environment(tiny_model_env, tiny_grader4_dir,
                                                                    example_photo):
    env = dict(tiny_model_env, ACNE_GRADER="nobody/no-such-grader", ACNE_GRADER_FALLBACK="/nonexistent")
    done = run_cli(env, "analyze", example_photo, "--grader", tiny_grader4_dir, "--seg-size", "128")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith(f"{example_photo}: ")
    assert f"grader: {tiny_grader4_dir} -> level " in out   # --grader beat ACNE_GRADER
    assert "lesions found:" in out and "count-based grade:" in out and "advice:" in out
    assert any(f": {name} (" in out.splitlines()[0] for name in CLASSES)
    assert out.rstrip().endswith(DISCLAIMER)
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])


def test_folders_and_same_named_inputs_in_process(monkeypatch, capsys, tiny_model_env, example_photo, tmp_path):
    """main() in this process (cheap): a folder expands to its photos; equal stems do not overwrite."""
    from acne.cli import main

    for key in ("ACNE_SEGMENTER", "ACNE_GRADER", "ACNE_GRADER_FALLBACK", "ACNE_SKIN_CHECK", "ACNE_SEG_SIZE"):
        monkeypatch.setenv(key, tiny_model_env[key])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "empty").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "face.jpg").write_bytes(example_photo.read_bytes())
    (tmp_path / "a" / "readme.txt").write_text("not a photo, and not picked up from the folder")
    status = main(["analyze", str(tmp_path / "a"), str(tmp_path / "b" / "face.jpg"), str(tmp_path / "empty"),
                   "--json", "--mask-dir", str(tmp_path / "masks")])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert [r["ok"] for r in records] == [True, True, False]
    assert records[0]["file"] == str(tmp_path / "a" / "face.jpg")
    assert "holds no image files" in records[2]["error"]
    assert records[0]["mask"] != records[1]["mask"]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["face-2.png", "face.png"]


def test_missing_inputs_are_a_usage_error_before_the_models_load(tiny_model_env, example_photo, tmp_path):
    # The weights are missing too: the input check answers first, so no model was being loaded.
    env = dict(tiny_model_env, ACNE_SEGMENTER=str(tmp_path / "nowhere"), ACNE_GRADER_FALLBACK=str(tmp_path / "no"),
               ACNE_GRADER="nobody/no-such-grader")
    missing = tmp_path / "gone.jpg"
    for args in (["analyze", example_photo, missing, "--json"], ["analyze", "--views", missing, example_photo]):
        done = run_cli(env, *args, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stdout == "" and "usage:" in done.stderr
        assert f"no such photo file or folder: {missing}" in done.stderr
        assert "cannot start" not in done.stderr and "Traceback" not in done.stderr


def test_printed_timings_add_up_and_say_when_the_models_overlapped():
    from acne.cli import timing_words

    one_by_one = {"decode": 10.0, "region": 20.0, "skin_check": 25.0, "segment": 300.0, "grade": 200.0,
                  "models": 505.0, "total": 565.0}
    assert timing_words(one_by_one) == ("565 ms = decode 10 + region 20 + skin check 25 + models 505 wall "
                                        "(segment 300 + grade 200) + report 5")
    side_by_side = dict(one_by_one, models=320.0, total=380.0)
    assert timing_words(side_by_side) == ("380 ms = decode 10 + region 20 + skin check 25 + models 320 wall "
                                          "(segment 300 and grade 200 side by side) + report 5")
    check_beside = dict(one_by_one, models=330.0, total=365.0)   # the check ran before the segmenter, beside the grader
    assert timing_words(check_beside) == ("365 ms = decode 10 + region 20 + models 330 wall (skin check 25, then "
                                          "segment 300; grade 200 beside them) + report 5")
    not_assessed = {"decode": 10.0, "region": 20.0, "skin_check": 0.0, "segment": 0.0, "grade": 0.0, "models": 0.0,
                    "total": 31.0}
    assert timing_words(not_assessed).startswith("31 ms = decode 10 + region 20 + skin check 0 + models 0 wall")