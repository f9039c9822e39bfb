"""The bad-input corpus (tests/input_corpus.py) through Python and the CLI: every kind is either
analysed (a full report) or refused with its own plain-English message; never a traceback.
The web API side of the same corpus is in test_api_client.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acne.imaging import InvalidImageError, load_image
from acne.severity import CLASSES
from conftest import PROJECT_DIR
from input_corpus import corpus, huge_photo, message_leaks

EXAMPLE = PROJECT_DIR / "images" / "examples" / "acne04_valid_grade2_0.jpg"
CASES = corpus(EXAMPLE if EXAMPLE.exists() else sorted((PROJECT_DIR / "images" / "examples").glob("*.jpg"))[0])
REFUSED = sorted(name for name, case in CASES.items() if case.refusal)
ANALYSED = sorted(name for name, case in CASES.items() if not case.refusal)
HUGE = "huge_12000x9000.jpg"
HUGE_REFUSAL = ("too large", "12000 x 9000", "50 megapixels")


def assert_plain_message(message: str) -> None:
    """What a user may be shown: one or two sentences, no traceback, no paths of ours."""
    assert message and message[0].isupper() and message.rstrip().endswith((".", ")")), message
    assert len(message) < 400, message
    for marker in ("Traceback", 'File "', "site-packages", "Error:", "/tmp/"):
        assert marker not in message, f"{marker!r} in a user-facing message: {message}"
    assert not message_leaks(message), f"{message_leaks(message)} in a user-facing message: {message}"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name, case in CASES.items():
        (folder / name).write_bytes(case.data)
    (folder / HUGE).write_bytes(huge_photo())  # a real 108-megapixel JPEG, a few MB on disk
    return folder


def test_the_corpus_has_every_kind_of_issue_8():
    assert len(REFUSED) == 10 and len(ANALYSED) == 12


# --------------------------------------------------------------------------- Python: load_image

@pytest.mark.parametrize("name", REFUSED)
def test_load_image_refuses_with_its_own_message(corpus_dir, name):
    path = corpus_dir / name
    for source in (path, path.read_bytes(), str(path)):
        with pytest.raises(InvalidImageError) as info:
            load_image(source)
        message = str(info.value)
        assert CASES[name].refusal.lower() in message.lower(), message
        assert_plain_message(message)


def test_load_image_refuses_a_12000_by_9000_photo_before_decoding_it(corpus_dir):
    with pytest.raises(InvalidImageError) as info:
        load_image(corpus_dir / HUGE)
    for phrase in HUGE_REFUSAL:
        assert phrase in str(info.value)
    assert_plain_message(str(info.value))


@pytest.mark.parametrize("name", ANALYSED)
def test_load_image_decodes_odd_formats_to_upright_rgb(corpus_dir, name):
    rgb = load_image(corpus_dir / name)
    width, height = CASES[name].size
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8 and rgb.flags["C_CONTIGUOUS"]
    assert np.array_equal(load_image((corpus_dir / name).read_bytes()), rgb)


# --------------------------------------------------------------------------- Python: Analyzer

@pytest.mark.parametrize("name", REFUSED)
def test_analyzer_refuses_with_the_same_message(tiny_analyzer, name):
    with pytest.raises(InvalidImageError) as info:
        tiny_analyzer.run(CASES[name].data)
    assert CASES[name].refusal.lower() in str(info.value).lower()


@pytest.mark.parametrize("name", ANALYSED)
def test_analyzer_reports_on_every_analysable_kind(tiny_analyzer, corpus_dir, name):
    analysis = tiny_analyzer.run(corpus_dir / name)
    report = analysis.report.to_dict()
    width, height = CASES[name].size
    assert report["image_size"] == [width, height]
    assert analysis.mask.shape == analysis.probability.shape == (height, width)
    assert report["lesion_count"] == len(report["lesions"])
    warnings = " ".join(report["quality_warnings"]).lower()
    if CASES[name].graded:
        assert report["severity"] in CLASSES and report["assessment"] in ("graded", "unreliable")
        assert sum(report["severity_scores"].values()) == pytest.approx(1.0, abs=1e-4)
    else:  # no face and no skin: no verdict, no advice, and a message that says why
        assert report["severity"] is None and report["assessment"] == "not_assessed"
        assert report["lesions"] == [] and report["recommendations"] == [] and report["severity_scores"] == {}
        assert "no face or skin" in warnings, report["quality_warnings"]
        assert not analysis.mask.any()
    expected_warning = {"all_black.png": "dark", "all_white.png": "overexposed"}.get(name)
    if expected_warning:
        assert expected_warning in warnings, report["quality_warnings"]


# --------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def cli_run(corpus_dir, tiny_model_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-out")
    names = sorted(CASES) + [HUGE]
    done = subprocess.run(
        [sys.executable, "-m", "acne", "analyze", *[str(corpus_dir / n) for n in names], "--json",
         "--overlay-dir", str(out / "overlays"), "--mask-dir", str(out / "masks")],
        cwd=PROJECT_DIR, env=tiny_model_env, capture_output=True, text=True, timeout=600)
    records = {Path(r["file"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    return done, records, out


def test_cli_reports_every_input_and_exits_1(cli_run):
    done, records, _ = cli_run
    assert done.returncode == 1, done.stderr  # some inputs failed, the rest were analysed
    assert sorted(records) == sorted([*CASES, HUGE])
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout


@pytest.mark.parametrize("name", [*REFUSED, HUGE])
def test_cli_refusals_are_plain_messages(cli_run, name):
    _, records, out = cli_run
    record = records[name]
    assert record["ok"] is False and set(record) == {"file", "ok", "error"}
    phrases = HUGE_REFUSAL if name == HUGE else (CASES[name].refusal,)
    for phrase in phrases:
        assert phrase.lower() in record["error"].lower(), record["error"]
    assert_plain_message(record["error"])
    assert not (out / "overlays" / f"{Path(name).stem}.png").exists()


@pytest.mark.parametrize("name", ANALYSED)
def test_cli_analyses_odd_formats_and_writes_clean_pngs(cli_run, name):
    _, records, out = cli_run
    record = records[name]
    assert record["ok"] is True, record
    assert record["image_size"] == list(CASES[name].size)
    assert (record["severity"] in CLASSES) if CASES[name].graded else (record["severity"] is None)
    for kind in ("overlay", "mask"):
        assert record[kind] == str(out / f"{kind}s" / f"{Path(name).stem}.png")
        with Image.open(record[kind]) as image:
            assert image.format == "PNG" and image.size == CASES[name].size
            assert not image.getexif() and "exif" not in image.info  # nothing of the input's EXIF
