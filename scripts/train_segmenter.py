"""Train the ResNet34-UNet lesion segmenter on ACNE04 (CPU friendly, resumable).

Two output channels:
  0  lesion mask: filled ellipses inscribed in the ground-truth boxes (the data set has no pixel masks)
  1  lesion centres: a small Gaussian per box; its peaks are the lesions (keeps touching lesions apart)

The default command rebuilds weights/segmenter by the model card's recipe (SESSIONS): 900 steps from
scratch, then 4,400 steps from the first session's best weights at a lower peak learning rate; the best
step of the second session (judged on a fixed subset of valid) is exported fp16 to --export:

  python scripts/train_segmenter.py                                   # both sessions, then the export
  python scripts/train_segmenter.py --stage train --out runs/x --steps 2400 [--resume] [--init-from DIR]
  python scripts/train_segmenter.py --stage export --out runs/x --export weights/segmenter
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from acne.acne04 import ellipse_mask, load_split, read_rgb  # noqa: E402
from acne.imaging import IMAGENET_MEAN, IMAGENET_STD
from acne.metrics import dice_iou, hayashi_band, match_lesions, prf  # noqa: E402

MEAN = np.array(IMAGENET_MEAN, np.float32) * 255
STD = np.array(IMAGENET_STD, np.float32) * 255
CHANNELS = ["lesion", "center"]
# The shipped weights' recipe (weights/segmenter/README.md): the options each session overrides.
SESSIONS = (
    {"name": "session1", "steps": 900, "lr": 1e-3, "eval_every": 100, "eval_images": 60, "threads": 1},
    {"name": "session2", "steps": 4400, "lr": 8e-4, "eval_every": 400, "eval_images": 60, "threads": 2},
)
log = logging.getLogger("train_segmenter")


def build_model() -> torch.nn.Module:
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=len(CHANNELS))
    # Start from the rare-foreground prior (as CenterNet does): a 0.5 start makes the first losses huge.
    with torch.no_grad():
        model.segmentation_head[0].bias.copy_(torch.tensor([-3.0, -4.6]))
    return model


def normalise(rgb: np.ndarray) -> np.ndarray:
    return ((rgb.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)


def center_heatmap(points: np.ndarray, sigmas: np.ndarray, size: int) -> np.ndarray:
    heat = np.zeros((size, size), np.float32)
    for (x, y), s in zip(points, sigmas):
        r = int(math.ceil(3 * s))
        x0, x1 = max(0, int(x) - r), min(size, int(x) + r + 1)
        y0, y1 = max(0, int(y) - r), min(size, int(y) + r + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        xs = np.arange(x0, x1, dtype=np.float32) - x
        ys = np.arange(y0, y1, dtype=np.float32) - y
        g = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * s * s))
        np.maximum(heat[y0:y1, x0:x1], g, out=heat[y0:y1, x0:x1])
    return heat


class CropSampler:
    """Random crops at random scale, mostly centred near a lesion, with photometric/geometric augmentation."""

    def __init__(self, images, records, crop: int, scale: tuple[float, float], lesion_bias: float, rng):
        self.images, self.records, self.crop = images, records, crop
        self.scale, self.lesion_bias, self.rng = scale, lesion_bias, rng
        self.aug = A.Compose(
            [
                A.HorizontalFlip(p=0.5),
                A.Affine(rotate=(-15, 15), scale=(0.9, 1.1), shear=(-5, 5), border_mode=cv2.BORDER_REFLECT_101, p=0.5),
                A.RandomBrightnessContrast(0.25, 0.25, p=0.6),
                A.HueSaturationValue(8, 20, 15, p=0.4),
                A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))], p=0.2),
                A.GaussNoise(std_range=(0.01, 0.04), p=0.15),
                A.ImageCompression(quality_range=(45, 95), p=0.3),
            ],
            keypoint_params=A.KeypointParams(format="xy", label_fields=["sigmas"], remove_invisible=True),
            seed=int(rng.integers(1 << 31)),
        )

    def sample(self):
        i = int(self.rng.integers(len(self.records)))
        rec, img = self.records[i], self.images[i]
        h, w = img.shape[:2]
        s = float(self.rng.uniform(*self.scale))
        side = min(int(round(self.crop / s)), h, w)
        if len(rec.boxes) and self.rng.random() < self.lesion_bias:
            b = rec.boxes[int(self.rng.integers(len(rec.boxes)))]
            cx = (b[0] + b[2]) / 2 + self.rng.uniform(-side / 3, side / 3)
            cy = (b[1] + b[3]) / 2 + self.rng.uniform(-side / 3, side / 3)
        else:
            cx, cy = self.rng.uniform(0, w), self.rng.uniform(0, h)
        x0 = int(np.clip(cx - side / 2, 0, w - side))
        y0 = int(np.clip(cy - side / 2, 0, h - side))
        k = self.crop / side
        patch = cv2.resize(img[y0:y0 + side, x0:x0 + side], (self.crop, self.crop), interpolation=cv2.INTER_AREA)
        boxes = (rec.boxes - np.array([x0, y0, x0, y0], np.float32)) * k
        mask = ellipse_mask(boxes, self.crop, self.crop)
        centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1) if len(boxes) else np.zeros((0, 2), np.float32)
        sigmas = np.maximum(1.0, 0.12 * np.sqrt(np.maximum(1, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))))
        keep = (centers[:, 0] >= 0) & (centers[:, 0] < self.crop) & (centers[:, 1] >= 0) & (centers[:, 1] < self.crop)
        out = self.aug(image=patch, mask=mask, keypoints=centers[keep], sigmas=list(sigmas[keep]))
        pts = np.asarray(out["keypoints"], np.float32).reshape(-1, 2)
        heat = center_heatmap(pts, np.asarray(out["sigmas"], np.float32), self.crop)
        return normalise(out["image"]), out["mask"].astype(np.float32), heat

    def batch(self, n: int):
        xs, ms, hs = zip(*(self.sample() for _ in range(n)))
        x = torch.from_numpy(np.stack(xs)).contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(np.stack(ms)), torch.from_numpy(np.stack(hs))


def center_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # CenterNet's penalty-reduced focal loss: only the exact peaks are positives.
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.ge(0.99).float()
    neg_w = (1 - target).pow(4)
    pos_loss = (torch.log(p) * (1 - p).pow(2) * pos).sum()
    neg_loss = (torch.log(1 - p) * p.pow(2) * neg_w * (1 - pos)).sum()
    return -(pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(3.0))
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + dice


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def find_peaks(heat: np.ndarray, threshold: float, kernel: int = 5) -> np.ndarray:
    dil = cv2.dilate(heat, np.ones((kernel, kernel), np.uint8))
    ys, xs = np.nonzero((heat >= dil) & (heat > threshold))
    return np.stack([xs, ys], 1).astype(np.float32)


@torch.inference_mode()
def predict_maps(model, rgb: np.ndarray, size: int) -> np.ndarray:
    """Sigmoid maps (C x size x size) for a square photo resized to `size` (a multiple of 32)."""
    x = torch.from_numpy(normalise(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)))[None]
    return torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last)))[0].numpy()


CENTER_THRESHOLDS = [0.03, 0.05, 0.07] + [round(float(t), 2) for t in np.arange(0.10, 0.71, 0.05)]


def evaluate(model, images, records, size: int) -> dict:
    model.eval()
    tp = {t: 0 for t in CENTER_THRESHOLDS}
    npred = {t: 0 for t in CENTER_THRESHOLDS}
    counts = {t: [] for t in CENTER_THRESHOLDS}
    inter = psum = tsum = 0
    ntrue = 0
    for img, rec in zip(images, records):
        maps = predict_maps(model, img, size)
        k = img.shape[1] / size
        ntrue += len(rec.boxes)
        for t in CENTER_THRESHOLDS:
            pts = find_peaks(maps[1], t) * k
            # An untrained net has thousands of peaks: matching them is slow and pointless.
            tp[t] += match_lesions(pts, rec.boxes) if len(pts) <= 1000 else 0
            npred[t] += len(pts)
            counts[t].append(len(pts))
        mask = cv2.resize((maps[0] > 0.5).astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        i, p, g = dice_iou(mask, ellipse_mask(rec.boxes, img.shape[0], img.shape[1]))
        inter, psum, tsum = inter + i, psum + p, tsum + g
    model.train()
    per_t = {t: prf(tp[t], npred[t], ntrue) for t in CENTER_THRESHOLDS}
    best_t = float(max(CENTER_THRESHOLDS, key=lambda t: per_t[t]["f1"]))
    true_counts = np.array([len(r.boxes) for r in records])
    pred_counts = np.array(counts[best_t])
    return {
        "center_threshold": best_t,
        **per_t[best_t],
        "count_mae": float(np.abs(pred_counts - true_counts).mean()),
        "count_grade_acc": float(np.mean([hayashi_band(c) == r.grade for c, r in zip(pred_counts, records)])),
        "dice": 2 * inter / max(1, psum + tsum),
        "iou": inter / max(1, psum + tsum - inter),
        "f1_by_threshold": {str(t): round(per_t[t]["f1"], 4) for t in CENTER_THRESHOLDS},
    }


def save_checkpoint(path: Path, model, opt, step: int, best: dict, rng_state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                "rng": rng_state}, tmp)
    tmp.replace(path)  # atomic: a stop mid-write never leaves a broken checkpoint


def export(out_dir: Path, export_dir: Path, input_size: int) -> None:
    ckpt = torch.load(out_dir / "best.pt", map_location="cpu", weights_only=False)
    model = build_model()
    model.load_state_dict(ckpt["model"])
    model.half()
    export_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(export_dir))
    best = ckpt["best"]
    info = {
        "channels": CHANNELS,
        "input_size": input_size,
        "threshold": 0.5,
        "center_threshold": float(best["center_threshold"]),
        "min_area_px": 4,
        "trained_steps": ckpt["step"],
        "valid_subset_metrics": {k: v for k, v in best.items() if k != "f1_by_threshold"},
    }
    (export_dir / "inference.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("exported step %d to %s (%s)", ckpt["step"], export_dir, info["valid_subset_metrics"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("all", "train", "export"), default="all",
                    help="all (default): the shipped recipe's two sessions (SESSIONS; their steps, lr, eval and "
                         "thread options are fixed), then the export; train: one run with the options below; "
                         "export: OUT/best.pt to --export")
    ap.add_argument("--out", type=Path, default=Path("runs/segmenter"), help="checkpoints and logs")
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.45, 0.8), help="crop scale range vs. 640 px photos")
    ap.add_argument("--lesion-bias", type=float, default=0.8, help="share of crops centred near a lesion")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--eval-images", type=int, default=80, help="valid photos used for model selection")
    ap.add_argument("--input-size", type=int, default=384, help="inference size (long side) for evaluation/export")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                    help="bfloat16 autocast for the training forward pass (auto: when the CPU has native bf16, "
                         "e.g. AMX: ~2.8x faster steps); evaluation and export stay fp32")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument("--init-from", type=Path, help="start from a save_pretrained folder (e.g. weights/segmenter)")
    ap.add_argument("--train-limit", type=int, default=0, help="use only the first N train photos (smoke tests)")
    ap.add_argument("--export", type=Path, default=Path("weights/segmenter"),
                    help="where the best step is exported (fp16 save_pretrained + inference.json)")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "train.log")])
    if args.stage == "export":
        export(args.out, args.export, args.input_size)
    elif args.stage == "train":
        train(args)
    else:
        init_from = args.init_from
        for session in SESSIONS:
            run = argparse.Namespace(**{**vars(args), **session, "out": args.out / session["name"],
                                        "init_from": init_from})
            run.out.mkdir(parents=True, exist_ok=True)
            log.info("%s: %s", session["name"], session)
            train(run)
            init_from = run.out / "export"
            export(run.out, init_from, args.input_size)
        export(args.out / SESSIONS[-1]["name"], args.export, args.input_size)


def train(args) -> None:
    """One training run: `args` as main's options (steps, lr, eval_every, out, resume, init_from...).
    Writes OUT/last.pt (to resume), OUT/best.pt (the best step on the valid subset) and OUT/history.jsonl."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    random.seed(args.seed)

    train_records = load_split("train")
    if args.train_limit:
        train_records = train_records[: args.train_limit]
    valid = load_split("valid")
    # A fixed, grade-stratified valid subset keeps model selection cheap; evaluate.py reports all of valid.
    vrng = np.random.default_rng(1234)
    vsub = []
    for g in range(4):
        idx = [i for i, r in enumerate(valid) if r.grade == g]
        vsub += list(vrng.choice(idx, size=min(len(idx), max(1, args.eval_images * len(idx) // len(valid))), replace=False))
    vrecs = [valid[i] for i in sorted(vsub)]
    t0 = time.time()
    images = [read_rgb(r.path) for r in train_records]  # decoded once: JPEG decoding in the loop costs a third
    vimages = [read_rgb(r.path) for r in vrecs]
    log.info("loaded %d train / %d valid-subset photos in %.0fs", len(images), len(vimages), time.time() - t0)

    model = build_model()
    if args.init_from:
        init = smp.from_pretrained(str(args.init_from))
        model.load_state_dict({k: v.float() for k, v in init.state_dict().items()})
        log.info("initialised from %s", args.init_from)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, best = 0, {"f1": -1.0}
    last = args.out / "last.pt"
    if args.resume and last.exists():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step, best = ckpt["step"], ckpt["best"]
        rng = np.random.default_rng([args.seed, step])
        log.info("resumed at step %d (best f1 %.3f)", step, best.get("f1", -1))

    sampler = CropSampler(images, train_records, args.crop, tuple(args.scale), args.lesion_bias, rng)
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    log.info("training forward in %s", "bfloat16 (autocast)" if bf16 else "float32")
    t_last, losses = time.time(), []
    while step < args.steps:
        lr = lr_at(step, args.steps, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        x, m, h = sampler.batch(args.batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        logits = logits.float()  # losses in fp32: the focal loss's logs need the precision
        loss_m = mask_loss(logits[:, 0], m)
        loss_c = center_focal_loss(logits[:, 1], h)
        loss = loss_m + loss_c
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        losses.append((loss_m.item(), loss_c.item()))
        if step % 20 == 0:
            lm, lc = np.mean(losses, 0)
            log.info("step %d/%d lr %.2e mask %.4f center %.4f  %.2fs/step", step, args.steps, lr, lm, lc,
                     (time.time() - t_last) / 20)
            t_last, losses = time.time(), []
        if step % args.eval_every == 0 or step == args.steps:
            te = time.time()
            res = evaluate(model, vimages, vrecs, args.input_size)
            log.info("eval step %d: f1 %.3f (p %.3f r %.3f @%.2f) count MAE %.2f band acc %.3f dice %.3f  [%.0fs]",
                     step, res["f1"], res["precision"], res["recall"], res["center_threshold"], res["count_mae"],
                     res["count_grade_acc"], res["dice"], time.time() - te)
            if res["f1"] > best.get("f1", -1):
                best = {**res, "step": step}
                save_checkpoint(args.out / "best.pt", model, opt, step, best, None)
            save_checkpoint(last, model, opt, step, best, None)
            (args.out / "history.jsonl").open("a").write(json.dumps({"step": step, **res}) + "\n")
            t_last = time.time()
    log.info("done: best step %s f1 %.3f", best.get("step"), best.get("f1", -1))


if __name__ == "__main__":
    main()
