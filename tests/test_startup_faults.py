"""Missing or damaged weights and bad settings: `python app.py` and `python -m acne analyze` both stop
at start-up with one clear message naming the file and the fix (exit status 2), never a traceback.

Each case damages a copy of the tiny models in one way. (The loaders' own messages are unit-tested in
test_segmentation.py / test_grading.py; here the two real entry points are run as subprocesses.)
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from app_process import HeldPort
from conftest import PROJECT_DIR

SEG_FIX = "scripts/train_segmenter.py"
GRADER_FIX = "scripts/train_grader.py"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# name -> (what to break, phrases the message must contain; {seg} / {grader} are the broken folders)
CASES = {
    "segmenter config.json missing": (
        lambda seg, grader: (seg / "config.json").unlink(), ["{seg}/config.json", "is missing", SEG_FIX]),
    "segmenter model.safetensors truncated": (
        lambda seg, grader: _truncate(seg / "model.safetensors"), ["{seg}", "damaged or incomplete", SEG_FIX]),
    "segmenter inference.json not JSON": (
        lambda seg, grader: (seg / "inference.json").write_text("threshold = 0.4\n"),
        ["{seg}/inference.json", "JSON", SEG_FIX]),
    "segmenter inference.json with garbage values": (
        lambda seg, grader: (seg / "inference.json").write_text(json.dumps({"input_size": "large", "threshold": 7})),
        ["{seg}/inference.json", "invalid value", "threshold", SEG_FIX]),
    "grader config.json broken": (
        lambda seg, grader: (grader / "config.json").write_text('{"model_type": "vit", "id2label": '),
        ["{grader}/config.json", "not a valid JSON", GRADER_FIX]),
    "grader model.safetensors missing": (
        lambda seg, grader: (grader / "model.safetensors").unlink(), ["{grader}", "model.safetensors", GRADER_FIX]),
    "grader labels not 'level N'": (
        lambda seg, grader: _relabel(grader / "config.json"), ["{grader}", "config.json", "'level -1' ... 'level 3'"]),
}


def _relabel(config_json):
    config = json.loads(config_json.read_text())
    config["id2label"] = {str(i): f"class {i}" for i in range(len(config["id2label"]))}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    config_json.write_text(json.dumps(config))


def start_both(env):
    """`python app.py` and the CLI, side by side (each spends most of its time importing torch)."""
    port = HeldPort()  # held until both have stopped: were the app to start anyway, no one else has the port
    app_env = dict(env, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port.port),
                   GRADIO_ANALYTICS_ENABLED="False")
    photo = PROJECT_DIR / "images" / "examples" / "acne04_valid_grade1_0.jpg"
    app = subprocess.Popen([sys.executable, "app.py"], cwd=PROJECT_DIR, env=app_env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cli = subprocess.Popen([sys.executable, "-m", "acne", "analyze", str(photo), "--json"], cwd=PROJECT_DIR,
                           env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = []
    for proc in (app, cli):
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{proc.args[:3]} did not stop on broken weights: it must exit at start-up\n{out}\n{err}")
        results.append((proc.returncode, out, err))
    port.release()
    return results


def assert_clear_start_up_error(what, returncode, out, err, phrases):
    assert returncode == 2, f"{what}: exit status {returncode}\n{out}\n{err}"
    assert "Traceback" not in out + err, f"{what} printed a traceback:\n{err}"
    for phrase in phrases:
        assert phrase in err, f"{what}: {phrase!r} missing from the message:\n{err}"


@pytest.mark.parametrize("case", list(CASES))
def test_broken_weights_stop_app_and_cli_with_a_clear_message(case, tiny_model_env, tiny_segmenter_dir,
                                                              tiny_grader_dir, tmp_path):
    seg, grader = tmp_path / "segmenter", tmp_path / "grader"
    shutil.copytree(tiny_segmenter_dir, seg)
    shutil.copytree(tiny_grader_dir, grader)
    damage, phrases = CASES[case]
    damage(seg, grader)
    # The grader's fallback is the same broken folder: otherwise a working fallback would hide it.
    env = dict(tiny_model_env, ACNE_SEGMENTER=str(seg), ACNE_GRADER=str(grader), ACNE_GRADER_FALLBACK=str(grader))
    phrases = [p.format(seg=seg, grader=grader) for p in phrases]
    (app_rc, app_out, app_err), (cli_rc, cli_out, cli_err) = start_both(env)

    assert_clear_start_up_error("app.py", app_rc, app_out, app_err, phrases + ["Acne Detection AI cannot start"])
    assert "Running on" not in app_out  # it never served a page without its models
    assert_clear_start_up_error("the CLI", cli_rc, cli_out, cli_err, phrases + ["acne: cannot start"])
    assert cli_out == ""  # no half JSON on stdout


@pytest.mark.parametrize("variable, value", [("ACNE_SEG_SIZE", "big"), ("ACNE_BACKEND", "gpu")])
def test_bad_settings_stop_app_and_cli_with_a_clear_message(variable, value, tiny_model_env):
    env = dict(tiny_model_env, **{variable: value})
    for what, (returncode, out, err) in zip(("app.py", "the CLI"), start_both(env)):
        assert_clear_start_up_error(what, returncode, out, err, [variable, repr(value)])
