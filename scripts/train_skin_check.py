"""Train the skin check (weights/skin_check): a linear head on the grader's frozen DINOv2 class token.

Skin: ACNE04 train photos, each source once more re-framed as a phone photo and cut to the region the
product would analyse, and once as a tighter crop. Not skin: every image under --negatives (see
scripts/fetch_skin_negatives.sh), each whole, as the region the product would cut out of it and as a
random crop, and synthetic walls and rooms. Both also under other light (exposure, white balance,
washed-out colour): each skin source whole and as a close crop, each negative whole. Reported: the catch rate on each negative folder with that
folder left out, valid close-ups and re-framed valid photos wrongly rejected, and, when scikit-image and
scikit-learn are installed, their sample photos (never trained on) caught.

    sh scripts/fetch_skin_negatives.sh runs/skin_negatives
    python scripts/train_skin_check.py                      # writes weights/skin_check
"""
from __future__ import annotations

import argparse
import json
import os
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import save_file

from acne.acne04 import by_source, load_split, read_rgb
from acne.models.skin import LABELS, backbone_key, load_backbone, preprocess
from acne.reframe import make_background, reframe
from acne.region import RegionFinder

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".ppm", ".bmp"}
INPUT_SIZE = 224


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--negatives", type=Path, default=Path("runs/skin_negatives"),
                        help="folder of non-skin images, one subfolder per source (default runs/skin_negatives)")
    parser.add_argument("--per-folder", type=int, default=500, help="images drawn from each subfolder (default 500)")
    parser.add_argument("--backbone", type=Path, default=Path("weights/grader"), help="the grader folder")
    parser.add_argument("--face-detector", type=Path, default=Path("weights/face_detector"))
    parser.add_argument("--out", type=Path, default=Path("weights/skin_check"))
    parser.add_argument("--features", type=Path, default=Path("runs/skin_check/features"),
                        help="folder caching the computed features, per backbone fingerprint and set "
                             "(reused when present)")
    parser.add_argument("--threshold", type=float, default=0.5, help="P(skin) below this: not skin")
    parser.add_argument("--closeup-threshold", type=float, default=0.8,
                        help="whole photo's P(skin) at or above which a photo in which colour found no skin is "
                             "analysed as a close-up (chosen on train close-ups in the grouped CV and negatives "
                             "with their folder left out; default 0.8)")
    parser.add_argument("--C", type=float, default=0.1, help="inverse L2 strength of the logistic regression "
                        "(chosen on skin rejected in a grouped CV and negatives caught with their folder left out)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    backbone, _ = load_backbone(args.backbone)
    regions = RegionFinder.from_pretrained(args.face_detector)
    embed = Embedder(backbone)
    # Each set's features are cached as it is finished: a rerun (or a run that was stopped) starts from there.
    rng = np.random.default_rng(args.seed)
    sets = {}
    makers = {"skin": lambda: skin_photos(regions, rng),
              "negatives": lambda: negative_images(args.negatives, args.per_folder, regions, rng),
              "skin_lit": lambda: lit_skin_photos(np.random.default_rng(args.seed + 1)),
              "negatives_lit": lambda: lit_negative_images(args.negatives, args.per_folder,
                                                           np.random.default_rng(args.seed + 2)),
              "valid": lambda: valid_photos(regions), "held_out": lambda: held_out_negatives(regions)}
    # Keyed by the backbone's fingerprint: features of a grader that has since been retrained are never reused.
    cache_dir = args.features / backbone_key(args.backbone)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, make in makers.items():
        cache = cache_dir / f"{name}.npz"
        if cache.is_file():
            stored = np.load(cache, allow_pickle=False)
            sets[name] = (stored["x"], stored["names"])
            continue
        started = time.time()
        x, names = embed.many(make())
        if len(names):
            np.savez(cache, x=x, names=names)
            sets[name] = (x, names)
        print(f"{name}: {len(names)} crops in {time.time() - started:.0f} s", flush=True)

    from sklearn.linear_model import LogisticRegression

    def fit(x_pos, x_neg):
        return LogisticRegression(C=args.C, class_weight="balanced", max_iter=5000).fit(
            np.concatenate([x_pos, x_neg]), np.r_[np.ones(len(x_pos)), np.zeros(len(x_neg))])

    # Both classes also under other light (exposure, white balance, washed-out colour): pale or grey skin is
    # skin, and an odd colour cast alone must not make something skin.
    pos = np.concatenate([sets["skin"][0], sets["skin_lit"][0]])
    neg = np.concatenate([sets["negatives"][0], sets["negatives_lit"][0]])
    neg_names = np.concatenate([sets["negatives"][1], sets["negatives_lit"][1]])
    folders = np.array([n.split("/")[0] for n in neg_names])
    left_out, p_neg = {}, np.zeros(len(neg))
    for folder in sorted(set(folders)):
        p_neg[folders == folder] = fit(pos, neg[folders != folder]).predict_proba(neg[folders == folder])[:, 1]
        left_out[folder] = float(np.mean(p_neg[folders == folder] < args.threshold))
    # Skin wrongly rejected: a 5-fold CV grouped by ACNE04 source (a photo's crops all in one fold).
    names = np.concatenate([sets["skin"][1], sets["skin_lit"][1]])
    fold = np.array([zlib.crc32(n.split("/")[-1].split("_jpg")[0].encode()) % 5 for n in names])
    lit = np.array([n.startswith("lit") for n in names])
    p_pos = np.zeros(len(pos))
    for f in range(5):
        p_pos[fold == f] = fit(pos[fold != f], neg).predict_proba(pos[fold == f])[:, 1]
    missed = p_pos < args.threshold
    # The close-up bar, on whole photos only: train close-ups (as shot and relit) it would turn away, and
    # whole negatives it would let through.
    kind = np.array([n.split("/")[0] for n in names])
    whole_neg = np.array([n.endswith((":whole", ":lit")) for n in neg_names])
    below = {k: f"{int((p_pos[kind == k] < args.closeup_threshold).sum())}/{int((kind == k).sum())}"
             for k in ("train", "lit")}
    # The case the bar is for: a negative whose colour region the check rejects, then asked about whole.
    p_view = {name: p for name, p in zip(neg_names, p_neg)}
    asked = [n[:-len(":region")] for n in neg_names if n.endswith(":region") and p_view[n] < args.threshold]
    let_through = sum(p_view[f"{n}:whole"] >= args.closeup_threshold for n in asked)
    model = fit(pos, neg)
    figures = {"threshold": args.threshold, "train_skin_crops": int(len(pos)), "train_negative_crops": int(len(neg)),
               "negatives_caught_folder_left_out": left_out,
               "skin_rejected_grouped_cv": f"{int(missed[~lit].sum())}/{int((~lit).sum())}",
               "relit_skin_rejected_grouped_cv": f"{int(missed[lit].sum())}/{int(lit.sum())}",
               "closeup_threshold": args.closeup_threshold,
               "train_closeups_below_closeup_threshold_grouped_cv": below["train"],
               "relit_train_closeups_below_closeup_threshold_grouped_cv": below["lit"],
               "negatives_region_rejected_whole_at_closeup_threshold_folder_left_out": f"{let_through}/{len(asked)}",
               "whole_negatives_at_closeup_threshold_folder_left_out":
                   f"{int((p_neg[whole_neg] >= args.closeup_threshold).sum())}/{int(whole_neg.sum())}"}
    valid_x, valid_n = sets["valid"]
    rejected = model.predict_proba(valid_x)[:, 1] < args.threshold
    closeup = np.array([n.startswith("closeup/") for n in valid_n])
    figures["valid_closeups_rejected"] = f"{int(rejected[closeup].sum())}/{int(closeup.sum())}"
    figures["valid_reframed_rejected"] = f"{int(rejected[~closeup].sum())}/{int((~closeup).sum())}"
    if "held_out" in sets:
        p = model.predict_proba(sets["held_out"][0])[:, 1]
        figures["held_out_samples"] = {n: round(float(v), 3) for n, v in zip(sets["held_out"][1], p)}
    print(json.dumps(figures, indent=1))

    w, b = torch.tensor(model.coef_[0], dtype=torch.float32), float(model.intercept_[0])
    # Two logits whose softmax is the logistic regression's probability: "skin" = +z/2, "not skin" = -z/2.
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({"head.weight": torch.stack([-w / 2, w / 2]).half().contiguous(),
               "head.bias": torch.tensor([-b / 2, b / 2]).half()}, str(args.out / "model.safetensors"))
    config = {"labels": list(LABELS), "backbone": os.path.relpath(args.backbone.resolve(), args.out.resolve()),
              "backbone_key": backbone_key(args.backbone), "input_size": INPUT_SIZE, "threshold": args.threshold,
              "closeup_threshold": args.closeup_threshold,
              "metrics": figures,
              "training": {"command": "python scripts/train_skin_check.py", "seed": args.seed,
                           "per_folder": args.per_folder, "C": args.C}}
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {args.out}")


class Embedder:
    """The backbone's class token of crops, in batches; in bfloat16 autocast on CPUs that compute it natively
    (three times faster there; the head's answers move by less than its margin, see the model card)."""

    def __init__(self, backbone):
        from acne.fastpath import native_bf16

        self.backbone, self.bf16 = backbone, native_bf16()

    @torch.inference_mode()
    def batch(self, xs: list) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.backbone(pixel_values=torch.cat(xs)).pooler_output.float().numpy()

    def many(self, items, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
        feats, names, xs = [], [], []
        for name, rgb in items:
            xs.append(preprocess(rgb, INPUT_SIZE))
            names.append(name)
            if len(xs) == batch:
                feats.append(self.batch(xs))
                xs = []
        if xs:
            feats.append(self.batch(xs))
        return (np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)), np.array(names)


def random_crop(rgb: np.ndarray, rng, low: float, high: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = rng.uniform(low, high)
    ch, cw = min(h, max(32, int(h * s))), min(w, max(32, int(w * s * rng.uniform(0.8, 1.25))))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.ascontiguousarray(rgb[y:y + ch, x:x + cw])


def skin_photos(regions: RegionFinder, rng):
    """ACNE04 train photos whole; each source also re-framed (the region found) and as a tighter crop."""
    records = load_split("train")
    for record in records:
        yield f"train/{record.path.name}", read_rgb(record.path)
    for source, group in sorted(by_source(records).items()):
        rgb = read_rgb(group[0].path)
        photo, _ = reframe(rgb, rng=rng)
        region = regions.find(photo)
        if region.found:
            yield f"reframed/{group[0].path.name}", region.crop(photo)
        yield f"crop/{group[0].path.name}", random_crop(rgb, rng, 0.6, 1.0)


def relight(rgb: np.ndarray, rng) -> np.ndarray:
    """The photo under other light: exposure and gamma, white balance, and colour washed out towards grey."""
    x = rgb.astype(np.float32) / 255
    x = np.clip(x * rng.uniform(0.6, 1.6), 0, 1) ** rng.uniform(0.7, 1.4)
    x = x * rng.uniform(0.85, 1.15, 3)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.3, 1.0)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def lit_skin_photos(rng):
    """Each ACNE04 train source under other light: whole, and as a tighter crop (a cheek, a jaw)."""
    for source, group in sorted(by_source(load_split("train")).items()):
        record = sorted(group, key=lambda r: r.path.name)[-1]
        rgb = read_rgb(record.path)
        yield f"lit/{record.path.name}", relight(rgb, rng)
        yield f"lit_crop/{record.path.name}", relight(random_crop(rgb, rng, 0.35, 0.7), rng)


def sampled_files(root: Path, per_folder: int, rng):
    """(subfolder, image file) for at most `per_folder` files drawn from each subfolder of `root`, in order.
    Lazy, so the random draws interleave with the caller's exactly as they did when each caller looped."""
    if not root.is_dir():
        raise SystemExit(f"no negatives in {root}: run `sh scripts/fetch_skin_negatives.sh {root}` first")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if len(files) > per_folder:
            files = [files[i] for i in sorted(rng.choice(len(files), per_folder, replace=False))]
        for path in files:
            yield folder, path


def lit_negative_images(root: Path, per_folder: int, rng):
    """Each negative image whole under other light (names '<subfolder>/<file>:lit')."""
    for folder, path in sampled_files(root, per_folder, rng):
        rgb, _ = read_image(path, rng)
        if rgb is not None:
            yield f"{folder.name}/{path.name}:lit", relight(rgb, rng)


def read_image(path: Path, rng) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The image as RGB (long side at most 1024), and for a cut-out (a stamp with transparency) also a close
    view inside the object itself (fur, skin of fruit, feathers: what a close photo of it shows)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 3 or min(image.shape[:2]) < 48:
        return None, None
    close = None
    if image.shape[2] == 4:   # a cut-out: on a plain background, filling most of the frame
        h, w = image.shape[:2]
        side = int(max(h, w) / rng.uniform(0.7, 0.95))
        canvas = np.empty((side, side, 3), np.float32)
        canvas[:] = rng.uniform(60, 250, 3)
        y, x = (side - h) // 2, (side - w) // 2
        alpha = image[:, :, 3:4].astype(np.float32) / 255
        canvas[y:y + h, x:x + w] = alpha * image[:, :, :3] + (1 - alpha) * canvas[y:y + h, x:x + w]
        ys, xs = np.nonzero(image[:, :, 3] > 200)
        if len(ys) > 48 * 48:
            oy0, oy1, ox0, ox1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            inner = image[oy0:oy1, ox0:ox1, :3]
            close = cv2.cvtColor(random_crop(np.ascontiguousarray(inner), rng, 0.4, 0.7), cv2.COLOR_BGR2RGB)
        image = canvas.astype(np.uint8)
    rgb = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_BGR2RGB)
    scale = 1024 / max(rgb.shape[:2])
    return (cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb), close


def negative_images(root: Path, per_folder: int, regions: RegionFinder, rng):
    """Each image whole, as the region the product would analyse, as a random crop and (cut-outs) close up
    inside the object; then synthetic walls and rooms. Names are '<subfolder>/<file>:<view>'."""
    for folder, path in sampled_files(root, per_folder, rng):
        rgb, close = read_image(path, rng)
        if rgb is None:
            continue
        name = f"{folder.name}/{path.name}"
        yield f"{name}:whole", rgb
        if close is not None:
            yield f"{name}:close", close
        region = regions.find(rgb)
        if region.found and region.found_by != "whole":
            yield f"{name}:region", region.crop(rgb)
        yield f"{name}:crop", random_crop(rgb, rng, 0.4, 0.9)
    for i in range(120):
        kind = ("plain", "textured", "room")[i % 3]
        width, height = ((756, 1008), (1008, 756), (768, 768))[i % 3]
        yield f"synthetic/{kind}{i}:whole", make_background(kind, width, height, rng)


def valid_photos(regions: RegionFinder):
    """Valid close-ups, and the same photos re-framed as phone photos (the region found)."""
    rng = np.random.default_rng(1234)
    for record in load_split("valid"):
        rgb = read_rgb(record.path)
        yield f"closeup/{record.path.name}", rgb
        photo, _ = reframe(rgb, rng=rng)
        region = regions.find(photo)
        if region.found:
            yield f"reframed/{record.path.name}", region.crop(photo)


def held_out_negatives(regions: RegionFinder):
    """scikit-image's and scikit-learn's sample photos, as the product would crop them (never trained on)."""
    try:
        from skimage import data
        from sklearn.datasets import load_sample_images
    except ImportError:
        return
    photos = [(n, getattr(data, n)()) for n in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
                                                "colorwheel", "logo", "retina", "hubble_deep_field")]
    photos += [(f"sklearn_{i}", im) for i, im in enumerate(load_sample_images().images)]
    for name, image in photos:
        rgb = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
        h, w = rgb.shape[:2]
        for view, crop in (("whole", rgb), ("centre", np.ascontiguousarray(rgb[h // 4:3 * h // 4, w // 4:3 * w // 4]))):
            region = regions.find(crop)
            if region.found:
                yield f"{name}:{view}:{region.found_by}", region.crop(crop)


if __name__ == "__main__":
    main()
