"""Every command the README and the model cards (weights/*/README.md) name runs as written, after the
README's install steps (requirements.txt + tests/requirements.txt, which includes the training and
evaluation extras of scripts/requirements-train.txt):

- each script answers --help, and every option the documented command uses is one it has;
- the evaluation commands that make the README's figures run for real on two photos (--limit 2) of a
  stand-in for ACNE04 built from the example photos (the data set itself is not in CI), and write their
  figures and plots;
- the fake chat server's standalone command prints a base URL that answers;
- CI runs the README's test command verbatim; the configuration table lists exactly the variables
  acne/config.py reads.
Commands that start the app or run these tests are run elsewhere (AppProcess runs `python app.py`).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import EXAMPLES_DIR, PROJECT_DIR

DOCUMENTS = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "weights").glob("*/README.md"))]
HELP_TIMEOUT = 180   # seconds; a script's --help imports torch and friends (~5-10 s on 2 busy cores)
RUN_TIMEOUT = 600


def code_of(text: str) -> list[str]:
    """The code in a Markdown text: fenced blocks (shell ones only) and inline spans (which may wrap)."""
    pieces: list[str] = []
    for language, block in re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        if language in ("", "bash", "sh", "shell", "console"):
            pieces += block.splitlines()
    without_blocks = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    pieces += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", without_blocks)]
    return pieces


def documented_commands() -> list[tuple[str, str]]:
    """(document, command) for every `python ...` command line in the documents, env assignments dropped."""
    found: dict[str, str] = {}
    for document in DOCUMENTS:
        for code in code_of(document.read_text()):
            for part in re.split(r"&&|;", code.split(" # ")[0].split("  #")[0]):
                words = shlex.split(part.strip(), comments=True) if part.strip() else []
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                    words = words[1:]  # VAR=value before the command
                if len(words) >= 2 and words[0] == "python":
                    found.setdefault(" ".join(words), str(document.relative_to(PROJECT_DIR)))
    return [(document, command) for command, document in found.items()]


COMMANDS = documented_commands()
NOT_RUN_HERE = {  # the command's first words -> why this test does not run it
    ("python", "app.py"): "starts the web app; every app test runs it as written (tests/app_process.py)",
    ("python", "-m", "pytest"): "the test suite itself",
}


def script_of(command: str) -> list[str]:
    """The part of a command that names the program: ['python', 'scripts/x.py'] or ['python', '-m', 'acne', 'analyze']."""
    words = command.split()
    if words[1] == "-m":
        return words[:4] if words[2] == "acne" else words[:3]
    return words[:2]


def run(args: list[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_documents_name_the_commands_this_test_knows():
    scripts = {tuple(script_of(c)) for _, c in COMMANDS}
    # A sample that must be found (the parser works): the README's figures and the cards' training commands.
    for expected in [("python", "scripts/evaluate.py"), ("python", "scripts/eval_grader.py"),
                     ("python", "scripts/benchmark.py"),
                     ("python", "scripts/train_grader.py"), ("python", "scripts/train_segmenter.py"),
                     ("python", "-m", "acne", "analyze"), ("python", "tests/fake_openai_server.py"),
                     ("python", "app.py"), ("python", "-m", "pytest")]:
        assert expected in scripts, (expected, sorted(scripts))
    # The README's wrapped inline command is read whole.
    assert any(c.startswith("python scripts/screenshot.py --width 1280 --height 800") and "--out" in c
               for _, c in COMMANDS)
    for words in scripts:
        if words[:2] != ("python", "-m") and words not in NOT_RUN_HERE:
            assert (PROJECT_DIR / words[1]).is_file(), f"{words[1]} is named but does not exist"


PROGRAMS = sorted({tuple(script_of(c)) for _, c in COMMANDS} - set(NOT_RUN_HERE))


@pytest.mark.parametrize("program", PROGRAMS, ids=[" ".join(p[1:]) for p in PROGRAMS])
def test_each_documented_program_has_the_options_its_commands_use(program):
    result = run([sys.executable, *program[1:], "--help"], timeout=HELP_TIMEOUT)
    assert result.returncode == 0, f"{' '.join(program)} --help failed:\n{result.stderr[-3000:]}"
    assert "usage:" in result.stdout, result.stdout[:500]
    for document, command in COMMANDS:
        if tuple(script_of(command)) != program:
            continue
        for option in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", command):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.stdout), \
                f"{document}: `{command}` uses {option}, which {' '.join(program[1:])} does not have"


# --------------------------------------------------------------------------- the figures' commands

def stand_in_acne04(folder: Path) -> Path:
    """Three example photos (ACNE04 valid photos) in ACNE04's layout, with made-up lesion boxes: one more
    than the commands' --limit 2, so a pass that ignores the limit shows."""
    images = folder / "images"
    images.mkdir(parents=True)
    coco: dict = {"images": [], "annotations": []}
    for i, name in enumerate(["acne04_valid_grade1_1.jpg", "acne04_valid_grade2_1.jpg", "acne04_valid_grade3_0.jpg"],
                             start=1):
        (images / name).symlink_to(EXAMPLES_DIR / name)
        coco["images"].append({"id": i, "file_name": name, "source": f"source{i}", "width": 640, "height": 640,
                               "grade": int(re.search(r"grade(\d)", name).group(1))})
        for j in range(4 * i):
            coco["annotations"].append({"id": 100 * i + j, "image_id": i, "category_id": 1,
                                        "bbox": [60 + 90 * (j % 5), 80 + 100 * (j // 5), 16, 14]})
    (folder / "annotations").mkdir()
    (folder / "annotations" / "valid.json").write_text(json.dumps(coco))
    return folder


def figure_command(name: str) -> str:
    command = next((c for _, c in COMMANDS if c.split()[:2] == ["python", f"scripts/{name}"]), None)
    assert command, f"the README no longer names scripts/{name}"
    return command


@pytest.fixture(scope="module")
def acne04_env(tmp_path_factory) -> dict[str, str]:
    env = dict(os.environ, ACNE04_DIR=str(stand_in_acne04(tmp_path_factory.mktemp("acne04"))),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return env


def test_the_segmenter_evaluation_runs_as_written(acne04_env, tmp_path):
    command = figure_command("evaluate.py")  # python scripts/evaluate.py --split valid
    out = tmp_path / "eval"
    result = run([sys.executable, *shlex.split(command)[1:], "--limit", "2", "--out", str(out)], env=acne04_env,
                 timeout=RUN_TIMEOUT)
    assert result.returncode == 0, f"`{command}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["segmenter"]["photos"] == 2 and 0 <= metrics["segmenter"]["best_threshold"]["f1"] <= 1
    assert metrics["grader"]["n"] == 2  # --limit reaches the grader's pass too
    for plot in ("segmenter_pr_threshold.png", "segmenter_counts.png", "segmenter_examples.png", "confusion.png"):
        assert (out / plot).stat().st_size > 1000, plot


def test_the_grader_evaluation_runs_as_written(acne04_env, tmp_path):
    command = figure_command("eval_grader.py")  # python scripts/eval_grader.py --model weights/grader
    out = tmp_path / "eval_grader"
    result = run([sys.executable, *shlex.split(command)[1:], "--limit", "2", "--out", str(out)], env=acne04_env,
                 timeout=RUN_TIMEOUT)
    assert result.returncode == 0, f"`{command}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 2 and set(metrics["per_image"]) == {"acne04_valid_grade1_1.jpg", "acne04_valid_grade2_1.jpg"}
    assert (out / "confusion.png").stat().st_size > 1000


def test_the_grader_evaluation_grades_the_mirror_images_as_its_card_says(acne04_env, tmp_path):
    import numpy as np

    from acne.acne04 import read_rgb
    from acne.grader import load_grader

    command = next(c for _, c in COMMANDS if c.startswith("python scripts/eval_grader.py") and "--mirror" in c)
    out = tmp_path / "eval_grader_mirror"
    args = shlex.split(command)[1:]   # the card's command names no --out: the test adds its own
    result = run([sys.executable, *args, "--limit", "2", "--out", str(out)], env=acne04_env, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, f"`{command}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    metrics = json.loads((out / "metrics.json").read_text())
    printed = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    grader = load_grader(args[args.index("--model") + 1])
    same = 0
    for name, row in metrics["per_image"].items():
        mirrored = grader.predict(np.ascontiguousarray(read_rgb(EXAMPLES_DIR / name)[:, ::-1]))
        assert row["scores_mirror"] == pytest.approx(mirrored.level_scores, abs=1e-3)   # the mirror image's grade,
        assert row["scores_mirror"] != pytest.approx(row["scores"], abs=1e-3)           # not the photo's again
        assert row["pred_mirror"] == max(mirrored.level, 0)
        same += row["pred_mirror"] == row["pred"]
    assert metrics["mirror"]["same_grade"] == printed["mirror"]["same_grade"] == same / len(metrics["per_image"])
    assert metrics["mirror"]["figures"]["accuracy"] == printed["mirror"]["accuracy"]


# --------------------------------------------------------------------------- the fake chat server

def test_the_fake_chat_server_runs_standalone_as_written():
    command = next(c for _, c in COMMANDS if "tests/fake_openai_server.py" in c)  # ... --port 0
    proc = subprocess.Popen([sys.executable, *shlex.split(command)[1:]], cwd=PROJECT_DIR, stdout=subprocess.PIPE,
                            text=True)
    try:
        base_url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url), base_url
        with urllib.request.urlopen(base_url + "/models", timeout=10) as response:
            assert json.loads(response.read())["data"][0]["id"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- CI and configuration

def test_ci_runs_the_readme_test_command_verbatim():
    readme = (PROJECT_DIR / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "python -m pytest tests" in line and line.startswith("pip "))
    command = line.split("  #")[0].strip()
    assert "-p randomly" in command  # a new order every run
    ci = [line.strip() for line in (PROJECT_DIR / ".ci" / "run").read_text().splitlines()]
    assert command in ci, f"the README's test command is not in .ci/run: {command}"


def test_the_configuration_table_lists_every_variable_the_app_reads():
    config = (PROJECT_DIR / "acne" / "config.py").read_text()
    read = set(re.findall(r'_(?:env|int|float|bool)\("([A-Z][A-Z0-9_]+)"', config))
    readme = (PROJECT_DIR / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## Skincare chat")]
    listed = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", table, re.MULTILINE))
    assert read <= listed, f"read in acne/config.py but not in the README's table: {sorted(read - listed)}"
    others = {"GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "GRADIO_TEMP_DIR", "HF_HUB_OFFLINE"}  # app.py, Gradio, Hub
    assert listed - read <= others, f"in the README's table but read nowhere: {sorted(listed - read - others)}"
