"""Evaluate a saved severity grader (save_pretrained folder or Hub id) on an ACNE04 split.

Runs the SAVED model the way the app does (acne.grader.load_grader; plain AutoModel +
AutoImageProcessor if that module is absent) on every photo of the split and writes
OUT/metrics.json (accuracy, macro-F1, MAE, QWK, confusion, per-image predictions) and
OUT/confusion.png. Levels are mapped onto the four ACNE04 grades: level -1 and 0 -> 0 (Clear).
With --mirror every photo is graded a second time, mirrored left to right: the figures on the mirror
images and the share of photos whose grade is the same both ways (a grade that changes with a mirror
changes with any small change of framing too).

    python scripts/eval_grader.py --model weights/grader --out runs/eval_grader
    python scripts/eval_grader.py --model weights/grader --mirror --out runs/eval_grader_mirror
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
from acne.acne04 import load_split, read_rgb  # noqa: E402
from acne.metrics import classification_figures  # noqa: E402

GRADE_NAMES = ("0 Clear", "1 Mild", "2 Moderate", "3 Severe")


def _load_predictor(model_dir: str):
    """-> (name, runner, predict(rgb) -> (level, {label: p}))."""
    try:
        from acne.grader import load_grader
    except ImportError:
        load_grader = None
    if load_grader is not None:
        grader = load_grader(model_dir)

        def predict(rgb):
            res = grader.predict(rgb)
            return res.level, res.level_scores
        return grader.name, "acne.grader.load_grader", predict

    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    local = {"local_files_only": True} if Path(model_dir).is_dir() else {}
    model = AutoModelForImageClassification.from_pretrained(model_dir, dtype=torch.float32, **local).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir, **local)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    levels = [int(label.split()[-1]) for label in labels]

    def predict(rgb):
        pv = processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            p = torch.softmax(model(pixel_values=pv).logits[0].float(), -1).numpy()
        return levels[int(p.argmax())], dict(zip(labels, map(float, p)))
    return str(model_dir), "AutoModelForImageClassification", predict


def plot_confusion(cm: np.ndarray, path: Path, title: str) -> bool:
    try:
        import matplotlib
    except ImportError:  # a training extra: metrics.json has the same confusion matrix
        print("confusion plot skipped: matplotlib is not installed (pip install -r scripts/requirements-train.txt)")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=120)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{rows[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if rows[i, j] > 0.6 else "black")
    ax.set_xticks(range(4), GRADE_NAMES, rotation=20)
    ax.set_yticks(range(4), GRADE_NAMES)
    ax.set_xlabel("predicted grade")
    ax.set_ylabel("true grade (ACNE04)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _rounded(scores: dict) -> dict:
    return {k: round(float(v), 5) for k, v in scores.items()}


def evaluate_grader(model_dir, split: str = "valid", out_dir=None, limit: int | None = None,
                    log_every: int = 50, mirror: bool = False) -> dict:
    """Grade every photo of an ACNE04 split with a saved grader.

    Args:
        model_dir: save_pretrained folder or Hub id.
        split: "train", "valid" or "test".
        out_dir: where metrics.json and confusion.png go (None: nowhere).
        limit: only the first N photos.
        log_every: print progress every N photos (0: never).
        mirror: grade each photo's mirror image too.
    Returns:
        {"model", "runner", "split", "n", "seconds_per_photo", "figures", "per_image"}, and with `mirror`
        {"mirror": {"figures", "same_grade"}}: the figures on the mirror images and the share of photos
        graded the same both ways. Per image: grade, prediction, level and scores (and their mirror's).
    """
    name, runner, predict = _load_predictor(str(model_dir))
    records = load_split(split)
    if limit:
        records = records[:limit]
    per_image, y_true, y_pred, y_mirror = {}, [], [], []
    t0 = time.time()
    for i, r in enumerate(records):
        rgb = read_rgb(r.path)
        level, scores = predict(rgb)
        grade = max(int(level), 0)                       # level -1 (clear skin) counts as grade 0
        per_image[r.path.name] = row = {"source": r.source, "grade": r.grade, "pred": grade, "level": int(level),
                                        "scores": _rounded(scores)}
        y_true.append(r.grade)
        y_pred.append(grade)
        if mirror:
            level_m, scores_m = predict(np.ascontiguousarray(rgb[:, ::-1]))
            row.update(pred_mirror=max(int(level_m), 0), scores_mirror=_rounded(scores_m))
            y_mirror.append(row["pred_mirror"])
        if log_every and (i + 1) % log_every == 0:
            print(f"{i + 1}/{len(records)} photos, {(time.time() - t0) / (i + 1):.2f} s/photo", flush=True)
    figures = classification_figures(y_true, y_pred)
    result = {"model": name, "runner": runner, "split": split, "n": len(records),
              "seconds_per_photo": (time.time() - t0) / max(len(records), 1) / (2 if mirror else 1),
              "figures": figures, "per_image": per_image}
    if mirror:
        result["mirror"] = {"figures": classification_figures(y_true, y_mirror),
                            "same_grade": float(np.mean(np.array(y_pred) == np.array(y_mirror)))}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
        plot_confusion(np.array(figures["confusion"]), out_dir / "confusion.png",
                       f"{Path(str(model_dir)).name} on ACNE04 {split} (n={len(records)})\n"
                       f"acc {figures['accuracy']:.3f}  macro-F1 {figures['macro_f1']:.3f}  "
                       f"MAE {figures['mae']:.3f}  QWK {figures['qwk']:.3f}")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="weights/grader", help="save_pretrained folder or Hub id")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--out", type=Path, default=Path("runs/eval_grader"))
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mirror", action="store_true",
                    help="also grade each photo mirrored left to right: figures on the mirror images, and the "
                         "share of photos graded the same both ways")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = evaluate_grader(args.model, args.split, args.out, limit=args.limit or None, mirror=args.mirror)
    keys = ("accuracy", "macro_f1", "mae", "qwk", "per_class_f1", "confusion")
    summary = {"model": res["model"], "runner": res["runner"], "split": res["split"], "n": res["n"],
               **{k: res["figures"][k] for k in keys}}
    if args.mirror:
        summary["mirror"] = {"same_grade": res["mirror"]["same_grade"],
                             **{k: res["mirror"]["figures"][k] for k in keys}}
    print(json.dumps(summary, indent=1))
    plot = args.out / "confusion.png"
    print(f"wrote {args.out / 'metrics.json'}" + (f" and {plot}" if plot.exists() else ""))


if __name__ == "__main__":
    main()
