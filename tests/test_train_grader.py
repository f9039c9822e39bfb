"""scripts/train_grader.py's fine-tune stages, run as written on a tiny counting grader and a stand-in ACNE04.

The shipped grader is built by `finetune-cv` (one fine-tune per fold of the grouped CV, counting the held-out
fold) and `finetune` (all of train, its band edges and slope fitted on those out-of-fold counts). This runs
both, as subprocesses, with the heads stage density would have written (here: the tiny grader, copied), and
checks what the shipped weights rely on: the held-out counts are of the held-out photos only, the saved
grader carries the edges fitted on them, it loads and grades through the app's loader, its card states the
CV and valid figures, and a second run reuses what is done.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import EXAMPLES_DIR, PROJECT_DIR

FOLDS = 5
TRAIN_SOURCES = 20     # every fold holds out 4 sources: the grouped split needs sources in each of its blocks
TIMEOUT = 600


def stand_in_acne04(folder):
    """ACNE04's layout with the example photos: 20 train sources (one photo each, grades 0-3 in turn) and the
    6 examples as valid, with made-up lesion boxes (as many as the grade makes likely)."""
    images = folder / "images"
    images.mkdir(parents=True)
    examples = sorted(EXAMPLES_DIR.glob("*.jpg"))
    lesions = {0: 3, 1: 12, 2: 30, 3: 60}
    for split, names in (("train", [f"train{i:02d}.jpg" for i in range(TRAIN_SOURCES)]),
                         ("valid", [p.name for p in examples])):
        coco: dict = {"images": [], "annotations": []}
        for i, name in enumerate(names, start=1):
            (images / name).symlink_to(examples[(i - 1) % len(examples)])
            grade = (i - 1) % 4 if split == "train" else int(re.search(r"grade(\d)", name).group(1))
            coco["images"].append({"id": i, "file_name": name, "source": f"{split}_source{i}", "width": 640,
                                   "height": 640, "grade": grade})
            for j in range(lesions[grade]):
                coco["annotations"].append({"id": 1000 * i + j, "image_id": i, "category_id": 1,
                                            "bbox": [40 + 70 * (j % 8), 40 + 70 * (j // 8) % 560, 14, 12]})
        (folder / "annotations").mkdir(exist_ok=True)
        (folder / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_count_grader_dir):
    """Both stages run once: (work folder, output folder, environment, the second finetune-cv run)."""
    root = tmp_path_factory.mktemp("train_grader")
    env = dict(os.environ, ACNE04_DIR=str(stand_in_acne04(root / "acne04")), OMP_NUM_THREADS="1")
    work, out = root / "work", root / "grader"
    for name in ["head", *(f"head_fold{f}" for f in range(FOLDS))]:
        shutil.copytree(tiny_count_grader_dir, work / name)
    common = ["--work", str(work), "--size", "56", "--ft-batch", "2", "--ft-epochs", "1", "--threads", "1"]

    def run(*args):
        done = subprocess.run([sys.executable, "scripts/train_grader.py", *args, *common], cwd=PROJECT_DIR,
                              env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr[-4000:]
        return done

    run("--stage", "finetune-cv")
    run("--stage", "finetune", "--out", str(out))
    again = run("--stage", "finetune-cv")
    return work, out, env, again


def held_counts(work):
    return [json.loads((work / "finetune" / f"train-fold{f}_s56_e1_s0" / "held_counts.json").read_text())
            for f in range(FOLDS)]


def test_each_fold_counts_only_its_held_out_photos(trained):
    work, *_ = trained
    folds = held_counts(work)
    names = [n for h in folds for n in h["names"]]
    assert sorted(names) == [f"train{i:02d}.jpg" for i in range(TRAIN_SOURCES)]   # each train photo once
    for f, h in enumerate(folds):
        summary = json.loads((work / "finetune" / f"train-fold{f}_s56_e1_s0" / "summary.json").read_text())
        assert summary["photos"] + len(h["names"]) == TRAIN_SOURCES and summary["data"] == f"train-fold{f}"
        assert summary["init"] == str(work / f"head_fold{f}")        # each fold from its own head
        assert len(h["pred"]) == len(h["true"]) == len(h["grade"]) and np.isfinite(h["pred"]).all()


def test_the_saved_grader_carries_the_edges_fitted_on_the_out_of_fold_counts(trained):
    sys.path.insert(0, str(PROJECT_DIR / "scripts"))
    from grader_density import fit_edges, fit_slope

    work, out, *_ = trained
    folds = held_counts(work)
    pred = np.concatenate([h["pred"] for h in folds])
    grade = np.concatenate([h["grade"] for h in folds])
    edges = fit_edges(pred, grade)
    config = json.loads((out / "config.json").read_text())
    assert config["band_edges"] == edges and config["count_slope"] == pytest.approx(fit_slope(pred, grade, edges))
    assert config["drop_path_rate"] == 0.0 and config["dtype"] == "float16"


def test_the_saved_grader_loads_and_grades_and_its_card_states_cv_and_valid(trained):
    from acne.grader import load_grader
    from acne.imaging import load_image

    work, out, *_ = trained
    graded = load_grader(out).predict(load_image(EXAMPLES_DIR / "acne04_valid_grade2_0.jpg"))
    assert set(graded.level_scores) == {"level 0", "level 1", "level 2", "level 3"}
    card = (out / "README.md").read_text()
    summary = json.loads((work / "finetune" / "train_s56_e1_s0" / "summary.json").read_text())
    cv, valid = summary["cv"], summary["valid_saved_model"]["figures"]
    assert cv["n"] == TRAIN_SOURCES and valid["n"] == 6
    assert f"| grouped 5-fold CV on train (n={TRAIN_SOURCES}), edges fitted without the fold | {cv['accuracy']:.3f} |" in card
    assert f"| ACNE04 valid (n=6) | {valid['accuracy']:.3f} |" in card
    assert "Confusion matrix on valid" in card and "Not a medical device" in card
    assert "--mirror" in card and summary["valid_saved_model"]["mirror"]["figures"]["n"] == 6


def test_a_second_run_reuses_the_finished_fine_tunes(trained):
    *_, again = trained
    assert again.stderr.count("done before") == FOLDS, again.stderr[-2000:]
    assert "finetune step" not in again.stderr


@pytest.mark.parametrize("data", ["train", "train+valid"])
def test_the_default_command_runs_every_stage_on_either_pool(tmp_path, tiny_dinov2_grader_dir, data):
    """`--stage all` from a backbone: features (with jittered crops), density (heads), finetune-cv, finetune.
    On train + valid the CV's folds hold valid photos out too, and nothing states a figure on valid."""
    env = dict(os.environ, ACNE04_DIR=str(stand_in_acne04(tmp_path / "acne04")), OMP_NUM_THREADS="1")
    work, out = tmp_path / "work", tmp_path / "grader"
    done = subprocess.run([sys.executable, "scripts/train_grader.py", "--data", data, "--init", str(tiny_dinov2_grader_dir),
                           "--work", str(work), "--out", str(out), "--size", "56", "--train-versions", "1",
                           "--density-epochs", "2", "--ft-batch", "2", "--ft-epochs", "1", "--threads", "1",
                           "--verify-images", "2"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    parts = {p.name for p in next((work / "features").iterdir()).iterdir()}
    pool = data.replace("+", "_")
    held = [n for f in range(FOLDS) for n in json.loads(
        (work / "finetune" / f"{pool}-fold{f}_s56_e1_s0" / "held_counts.json").read_text())["names"]]
    card = (out / "README.md").read_text()
    valid_names = sorted(p.name for p in EXAMPLES_DIR.glob("*.jpg"))
    train_names = [f"train{i:02d}.jpg" for i in range(TRAIN_SOURCES)]
    if data == "train":
        assert parts == {"train_v0", "valid", "train_v0_j0"}
        assert sorted(held) == train_names
        assert "| ACNE04 valid (n=6) |" in card and (work / "head" / "README.md").is_file()
    else:
        assert parts == {"train_v0", "valid", "train_v0_j0", "valid_j0"}
        assert sorted(held) == sorted(train_names + valid_names)      # the CV over both
        assert "ACNE04 valid (n=" not in card and "CV on train + valid (n=26)" in card
        assert "--data train+valid" in card and not (work / "head_train_valid" / "README.md").exists()
        assert "valid_numpy" not in json.loads((work / "result_head_train_valid" / "summary.json").read_text())
        # Its heads are its own: a fold's fine-tune starts from a head that never saw that fold.
        assert not (work / "head").exists()
        summary = json.loads((work / "finetune" / f"{pool}-fold0_s56_e1_s0" / "summary.json").read_text())
        assert summary["init"] == str(work / "head_train_valid_fold0")
