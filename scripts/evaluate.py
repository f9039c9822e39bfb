"""Evaluate the lesion segmenter (and the grader) on an ACNE04 split, through the real inference code.

  python scripts/evaluate.py --split valid --out runs/eval                       # segmenter + grader
  python scripts/evaluate.py --split valid --out runs/eval --choose-threshold    # also store the best
                                                      # centre threshold in weights/segmenter/inference.json

Segmenter figures (masks are ellipses inscribed in the ground-truth boxes, the data set has no pixel masks):
- lesion detection: a predicted lesion is found when its centre lies inside a ground-truth box enlarged
  by 25% on each side; each box is matched at most once, nearest first. Precision, recall, F1 over the split.
- counting: mean absolute error of the lesion count per photo.
- count grade: Hayashi band of the predicted count against the photo's grade (accuracy, macro-F1, ...).
- mask Dice / IoU, pooled over the split.
Writes OUT/metrics.json and, with matplotlib (scripts/requirements-train.txt), plots (precision/recall
vs threshold, count scatter, example overlays, the grader's confusion).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from acne.acne04 import ellipse_mask, load_split, read_rgb  # noqa: E402
from acne.metrics import classification_figures, dice_iou, hayashi_band, match_lesions, prf  # noqa: E402

# Centre peaks of a CenterNet-style head sit low (0.05-0.1 here): a fine grid there, a coarse one above.
THRESHOLDS = [round(0.02 + 0.005 * i, 3) for i in range(27)] + [round(0.05 * i, 2) for i in range(4, 17)]  # 0.02 .. 0.80


def _peak_table(center: np.ndarray, min_distance: int, floor: float) -> np.ndarray:
    """Centre-map peaks (x, y, height) at or above `floor`, plateaus merged: the lesions that
    find_lesions would make at any threshold >= floor (cheap, for the threshold sweep)."""
    import cv2

    from acne.lesions import local_maxima

    peaks = local_maxima(center, min_distance) & (center >= floor)
    n, labels = cv2.connectedComponents(peaks.view(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros((0, 3), np.float32)
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs]
    cnt = np.bincount(ids, minlength=n)[1:]
    cx = np.bincount(ids, weights=xs, minlength=n)[1:] / cnt
    cy = np.bincount(ids, weights=ys, minlength=n)[1:] / cnt
    height = np.zeros(n, np.float32)
    np.maximum.at(height, ids, center[ys, xs])
    return np.stack([cx, cy, height[1:]], 1).astype(np.float32)


def evaluate_segmenter(model_dir: str, split: str, out: Path, *, size: int | None = None,
                       limit: int = 0, examples: int = 6) -> dict:
    """Pass 1 sweeps the centre threshold on cheap peak tables; pass 2 runs the app's own
    find_lesions at the chosen threshold, so the reported figures are those of the shipped code."""
    import cv2

    from acne.lesions import find_lesions, render_overlay
    from acne.segmenter import load_segmenter

    seg = load_segmenter(model_dir, size=size)
    records = load_split(split)
    if limit:
        records = records[:limit]
    tp = dict.fromkeys(THRESHOLDS, 0)
    npred = dict.fromkeys(THRESHOLDS, 0)
    inter = psum = tsum = ntrue = 0
    maps = []
    t0 = time.time()
    for i, rec in enumerate(records):
        rgb = read_rgb(rec.path)
        h, w = rgb.shape[:2]
        prob, center = seg.predict_maps(rgb)
        if center is None:
            raise SystemExit("evaluate.py expects a segmenter with a centre channel")
        maps.append((prob.astype(np.float16), center.astype(np.float16), w, h))
        sx, sy = w / prob.shape[1], h / prob.shape[0]
        table = _peak_table(center, seg.min_distance_px, min(THRESHOLDS))
        pts_all = np.stack([(table[:, 0] + 0.5) * sx - 0.5, (table[:, 1] + 0.5) * sy - 0.5], 1)
        ntrue += len(rec.boxes)
        for t in THRESHOLDS:
            pts = pts_all[table[:, 2] >= t]
            tp[t] += match_lesions(pts, rec.boxes)
            npred[t] += len(pts)
        mask = cv2.resize((prob >= seg.threshold).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        a, b, c = dice_iou(mask, ellipse_mask(rec.boxes, h, w))
        inter, psum, tsum = inter + a, psum + b, tsum + c
        if (i + 1) % 50 == 0:
            print(f"  segmenter {i + 1}/{len(records)}  {(time.time() - t0) / (i + 1):.2f}s/photo", flush=True)

    per_t = {t: prf(tp[t], npred[t], ntrue) for t in THRESHOLDS}
    best_t = max(THRESHOLDS, key=lambda t: per_t[t]["f1"])
    true_counts = np.array([len(r.boxes) for r in records])
    grades = np.array([r.grade for r in records])

    def at(t):
        # The app's own post-processing at threshold t.
        tp_t = n_t = 0
        counts = []
        for (prob, center, w, h), rec in zip(maps, records):
            _, lesions = find_lesions(prob.astype(np.float32), center.astype(np.float32), threshold=seg.threshold,
                                      center_threshold=t, min_area_px=seg.min_area_px,
                                      min_distance=seg.min_distance_px)
            sx, sy = w / prob.shape[1], h / prob.shape[0]
            pts = np.array([((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5) for x, y in (l.center for l in lesions)],
                           np.float32).reshape(-1, 2)
            tp_t += match_lesions(pts, rec.boxes)
            n_t += len(pts)
            counts.append(len(pts))
        pred = np.array(counts)
        return {
            "center_threshold": t, **prf(tp_t, n_t, ntrue),
            "count_mae": float(np.abs(pred - true_counts).mean()),
            "count_grade": classification_figures(grades, [hayashi_band(c) for c in pred]),
            "_counts": counts,
        }

    best = at(best_t)
    stored = best if seg.center_threshold == best_t else at(seg.center_threshold)
    example_images = []
    for i in range(0, len(records), max(1, len(records) // examples))[:examples]:
        rec = records[i]
        rgb = read_rgb(rec.path)
        seg.center_threshold = best_t
        full = seg.predict(rgb)
        overlay = render_overlay(rgb, full.mask)
        for x0, y0, x1, y1 in rec.boxes.astype(int):
            cv2.rectangle(overlay, (x0, y0), (x1, y1), (0, 255, 0), 1)
        example_images.append((rec, overlay, len(full.lesions)))

    result = {
        "model": model_dir, "split": split, "photos": len(records), "input_size": seg.input_size,
        "mask_threshold": seg.threshold,
        "dice": 2 * inter / max(1, psum + tsum), "iou": inter / max(1, psum + tsum - inter),
        "mask_note": "masks are filled ellipses inscribed in the ground-truth boxes",
        "stored_threshold": {k: v for k, v in stored.items() if k != "_counts"},
        "best_threshold": {k: v for k, v in best.items() if k != "_counts"},
        "by_threshold": {str(t): per_t[t] for t in THRESHOLDS},
        "seconds_per_photo": (time.time() - t0) / max(1, len(records)),
        "_counts": {"true": true_counts.tolist(), "pred_best": best["_counts"], "grades": grades.tolist()},
    }
    _plots_segmenter(result, example_images, out)
    return result


def _plots_segmenter(result: dict, examples, out: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # a training extra: the figures in metrics.json do not need it
        print("plots skipped: matplotlib is not installed (pip install -r scripts/requirements-train.txt)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [float(t) for t in result["by_threshold"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("precision", "recall", "f1"):
        ax.plot(ts, [result["by_threshold"][str(t)][key] for t in ts], label=key)
    ax.set_xlabel("centre threshold")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(f"Lesion detection on {result['split']}")
    fig.tight_layout()
    fig.savefig(out / "segmenter_pr_threshold.png", dpi=110)
    plt.close(fig)

    c = result["_counts"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(c["true"], c["pred_best"], c=c["grades"], cmap="viridis", s=12)
    lim = max(max(c["true"], default=1), max(c["pred_best"], default=1)) + 5
    ax.plot([0, lim], [0, lim], "k--", lw=0.8)
    for b in (5.5, 20.5, 50.5):
        ax.axvline(b, color="grey", lw=0.5)
        ax.axhline(b, color="grey", lw=0.5)
    ax.set_xlabel("boxes (ground truth)")
    ax.set_ylabel("lesions found")
    ax.set_title("Lesion count per photo (colour: grade)")
    fig.tight_layout()
    fig.savefig(out / "segmenter_counts.png", dpi=110)
    plt.close(fig)

    if examples:
        fig, axes = plt.subplots(1, len(examples), figsize=(3 * len(examples), 3.3))
        for ax, (rec, overlay, n) in zip(np.atleast_1d(axes), examples):
            ax.imshow(overlay)
            ax.set_title(f"grade {rec.grade}: {n} found / {len(rec.boxes)} boxes", fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / "segmenter_examples.png", dpi=110)
        plt.close(fig)


def write_segmenter_card(folder: Path, info: dict, seg: dict) -> None:
    """The model card: data, terms, command, figures on the split, limits."""
    m = info["metrics"]
    cg = seg["best_threshold"]["count_grade"]
    cm = "\n".join(f"| {name} | " + " | ".join(str(v) for v in row) + " |"
                    for name, row in zip(("Clear", "Mild", "Moderate", "Severe"), cg["confusion"]))
    # inference.json may carry the real history of the run ("training": {"commands": [...], "history": "..."}).
    training = info.get("training") or {}
    commands = "\n".join(training.get("commands") or [
        "python scripts/train_segmenter.py --out runs/segmenter --steps N   # (+ --resume)",
        "python scripts/train_segmenter.py --out runs/segmenter --export weights/segmenter",
        "python scripts/evaluate.py --split valid --segmenter weights/segmenter --choose-threshold --skip-grader"])
    history = training.get("history") or (f"Trained for {info.get('trained_steps', '?')} steps "
                                           f"(about {info.get('trained_steps', 0) * 8} crops).")
    text = f"""---
license: other
library_name: segmentation-models-pytorch
tags: [acne, segmentation, unet, resnet34]
---

# Acne lesion segmenter (ResNet34-UNet), Acne Detection AI

`smp.Unet("resnet34", encoder_weights=None, classes=2)`, trained from scratch on the CPU (no
pretrained ResNet34 weights could be had). fp16 safetensors in `save_pretrained` layout; load with
`acne.segmenter.load_segmenter(folder)` (or `smp.from_pretrained(folder)`).

Output channels (sigmoid): 0 = lesion mask, 1 = lesion-centre heat map. Each peak of the centre map
at or above `center_threshold` is one lesion; lesion pixels are split between peaks, so touching
lesions stay apart. Input: the photo resized so its long side is {info["input_size"]} px, padded to a
multiple of 32, ImageNet mean/std. `inference.json` holds these settings.

## Data and terms
ACNE04 (Wu et al., ICCV 2019; free for academic use) with lesion boxes from the Roboflow export
"Acne04 Detection v5" (CC BY 4.0), 640 x 640 photos: train split (2,973 files from 991 source photos).
Masks are filled ellipses inscribed in the boxes, and centres are the box centres: the data set has
no pixel masks. **These weights inherit the data's terms: research and educational use, with
attribution to ACNE04 and the Roboflow export.** Not a medical device.

## Training
```
{commands}
```
Random 256 px crops at scale 0.45-0.8 of the 640 px photo (80% near a lesion), flips, rotation,
shear, colour, blur, noise and JPEG augmentation; loss BCE (pos_weight 3) + soft Dice on the mask
and CenterNet focal loss on the centres; AdamW with warm-up and cosine decay, batch 8.
{history}
Model selection on a fixed 58-photo subset of valid; the centre threshold was chosen on valid.

## Figures on ACNE04 valid ({m["photos"]} photos, `scripts/evaluate.py`)
| figure | value |
|---|---|
| lesion precision | {m["lesion_precision"]:.3f} |
| lesion recall | {m["lesion_recall"]:.3f} |
| lesion F1 | {m["lesion_f1"]:.3f} |
| count MAE (lesions per photo) | {m["count_mae"]:.2f} |
| count-grade accuracy (Hayashi band of the count vs the photo's grade) | {m["count_grade_accuracy"]:.3f} |
| count-grade macro-F1 | {m["count_grade_macro_f1"]:.3f} |
| mask Dice / IoU (against the ellipse masks) | {m["mask_dice"]:.3f} / {m["mask_iou"]:.3f} |

A lesion is found when its centre lies inside a ground-truth box enlarged by 25% on each side; each
box is matched at most once, nearest first. Centre threshold {info["center_threshold"]}, input size
{info["input_size"]}, mask threshold {info.get("threshold", 0.5)}.

Count grade confusion (rows: labelled grade, columns: grade from the count):

| | Clear | Mild | Moderate | Severe |
|---|---|---|---|---|
{cm}

## Limits
- Trained briefly on a CPU: the figures above are what it reaches, not a ceiling. Training goes on
  (`--init-from weights/segmenter`) and the weights are replaced only when valid figures improve.
- ACNE04 photos are half-face clinical photos of East-Asian patients under similar lighting; other
  skin tones, lighting, distances and phone cameras are not represented in the data and not measured.
- The four lesion types of the export are not separated (and their reliability is not verified).
- Counts come from boxes whose annotation has its own noise; the Hayashi grade uses the half face.
"""
    (folder / "README.md").write_text(text)
    print(f"wrote {folder / 'README.md'}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--segmenter", default=str(ROOT / "weights" / "segmenter"))
    ap.add_argument("--grader", default=str(ROOT / "weights" / "grader"))
    ap.add_argument("--size", type=int, help="segmenter input size (default: the one stored with the weights)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "eval")
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (smoke tests)")
    ap.add_argument("--skip-grader", action="store_true")
    ap.add_argument("--skip-segmenter", action="store_true")
    ap.add_argument("--choose-threshold", action="store_true",
                    help="write the best centre threshold on this split into the segmenter's inference.json")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict = {}
    if not args.skip_segmenter:
        seg = evaluate_segmenter(args.segmenter, args.split, args.out, size=args.size, limit=args.limit)
        results["segmenter"] = {k: v for k, v in seg.items() if not k.startswith("_")}
        b = seg["best_threshold"]
        print(f"segmenter: F1 {b['f1']:.3f} (P {b['precision']:.3f} R {b['recall']:.3f}) at centre threshold "
              f"{b['center_threshold']}, count MAE {b['count_mae']:.2f}, count-grade accuracy "
              f"{b['count_grade']['accuracy']:.3f}, mask Dice {seg['dice']:.3f} IoU {seg['iou']:.3f}")
        if args.choose_threshold:
            path = Path(args.segmenter) / "inference.json"
            info = json.loads(path.read_text()) if path.exists() else {}
            info["center_threshold"] = b["center_threshold"]
            info["input_size"] = seg["input_size"]
            info["metrics"] = {"split": args.split, "photos": seg["photos"], "lesion_f1": b["f1"],
                               "lesion_precision": b["precision"], "lesion_recall": b["recall"],
                               "count_mae": b["count_mae"], "count_grade_accuracy": b["count_grade"]["accuracy"],
                               "count_grade_macro_f1": b["count_grade"]["macro_f1"],
                               "mask_dice": seg["dice"], "mask_iou": seg["iou"]}
            info.pop("valid_subset_metrics", None)
            path.write_text(json.dumps(info, indent=2) + "\n")
            print(f"stored centre threshold {b['center_threshold']} in {path}")
            write_segmenter_card(Path(args.segmenter), info, seg)
    if not args.skip_grader:
        try:
            from eval_grader import evaluate_grader
        except ImportError as exc:
            print(f"grader evaluation unavailable: {exc}")
        else:
            results["grader"] = evaluate_grader(args.grader, split=args.split, out_dir=args.out,
                                                limit=args.limit or None)
    (args.out / "metrics.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {args.out / 'metrics.json'}")


if __name__ == "__main__":
    main()
