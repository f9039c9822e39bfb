"""Stage `end2end` of train_grader.py: fine-tune the grader's upper DINOv2 blocks on whole photos.

The ACNE04 grade is a lesion count (Hayashi bands <=5, 6-20, 21-50, >50): the boxes' own counts put 96% of
train and valid photos in their labelled grade. So the grader learns to count, densely: every 14 px patch
token is read out by one linear map to the number of box centres in that patch (Gaussian-spread), and the
grade logits get a term that is linear in the summed count. A sum of per-patch linear read-outs is linear
in the mean patch token, so the whole head still folds into Dinov2ForImageClassification's single Linear
on concat(CLS, mean patch): the shipped format and the loading code do not change.

Recipe (CPU, bf16 autocast on AMX): photos decoded once into RAM at the input size; per epoch one of the
3 export versions of every source, random horizontal flip and mild colour jitter (no crops: a crop changes
the count and so the grade); the first --e2e-frozen blocks run without gradients; AdamW, layer-wise lr
decay, warmup + cosine; the dense and total count losses train the backbone, a class-weighted
cross-entropy trains the grade head on detached inputs. A fixed
schedule, the last epoch is saved: valid figures are logged per epoch for the record, never used to choose.
Resumable: a checkpoint after every epoch (--work/end2end/<run>/last.pt).
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from acne.metrics import classification_figures  # noqa: E402

from acne.severity import HAYASHI_BANDS  # noqa: E402

log = logging.getLogger("train_grader")
N_CLASSES = 4
COUNT_SCALE = 10.0       # the grade logits see count / 10
# Start the count term of the logits at the Hayashi bands: class k wins for counts in its band
# (boundaries 5.5, 20.5, 50.5 with slopes 0, 2, 4, 6 per 10 lesions).
SLOPE0 = [0.0, 2.0, 4.0, 6.0]
OFFSET0 = [0.0, -1.1, -5.2, -15.3]


def load_photos(records, size: int) -> np.ndarray:
    """uint8 N x size x size x 3, resized as the saved image processor does (torchvision backend: antialiased
    bicubic on uint8), so training sees the pixels inference will see."""
    from acne.acne04 import read_rgb

    out = np.empty((len(records), size, size, 3), np.uint8)
    for i, r in enumerate(records):
        chw = torch.from_numpy(read_rgb(r.path).transpose(2, 0, 1).copy())[None]
        out[i] = torch.nn.functional.interpolate(chw, size=[size, size], mode="bicubic", align_corners=False,
                                                 antialias=True)[0].permute(1, 2, 0).numpy()
    return out


def to_pixels(batch_u8: np.ndarray) -> torch.Tensor:
    from train_grader import IMAGENET_MEAN, IMAGENET_STD

    x = torch.from_numpy(batch_u8).float().div_(255.0)
    x = (x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    return x.permute(0, 3, 1, 2).contiguous()


class CountingGrader(torch.nn.Module):
    """DINOv2 + per-patch count read-out + grade head whose logits are linear in (CLS, mean patch, count)."""

    def __init__(self, backbone, frozen: int):
        super().__init__()
        self.backbone, self.frozen = backbone, frozen
        d = backbone.config.hidden_size
        self.classifier = torch.nn.Linear(2 * d, N_CLASSES)
        torch.nn.init.zeros_(self.classifier.weight)
        torch.nn.init.zeros_(self.classifier.bias)
        self.count = torch.nn.Linear(d, 1)
        self.slope = torch.nn.Parameter(torch.tensor(SLOPE0))
        self.offset = torch.nn.Parameter(torch.tensor(OFFSET0))
        for p in list(backbone.embeddings.parameters()) + [p for layer in backbone.encoder.layer[:frozen]
                                                            for p in layer.parameters()]:
            p.requires_grad_(False)

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        layers = self.backbone.encoder.layer
        with torch.no_grad():
            h = self.backbone.embeddings(pixels)
            for layer in layers[:self.frozen]:
                h = layer(h)
        for layer in layers[self.frozen:]:
            h = layer(h)
        return self.backbone.layernorm(h)

    def forward(self, pixels: torch.Tensor):
        t = self.tokens(pixels)
        density = self.count(t[:, 1:]).squeeze(-1).float()           # B x patches
        count = density.sum(1)
        # The backbone learns to count, from the boxes alone; the grade loss trains only the head (the bands'
        # slopes and offsets, and the free term) on detached inputs. The count is N x (w . mean patch token):
        # in a first run the grade loss also moved the backbone, the mean token drifted, and the count with
        # it, by tens of lesions.
        free = self.classifier(torch.cat([t[:, 0], t[:, 1:].mean(1)], 1).detach()).float()
        logits = free + self.slope * (count.detach()[:, None] / COUNT_SCALE) + self.offset
        return logits, density, count

    def folded_head(self, n_patches: int) -> tuple[np.ndarray, np.ndarray]:
        """The same logits as one Linear on concat(CLS, mean patch): count = N * (w . mean + b)."""
        d = self.classifier.in_features // 2
        W = self.classifier.weight.detach().double().clone()
        b = self.classifier.bias.detach().double().clone()
        slope = self.slope.detach().double()
        w_count, b_count = self.count.weight.detach().double()[0], float(self.count.bias.detach())
        W[:, d:] += (n_patches / COUNT_SCALE) * slope[:, None] * w_count[None, :]
        b += self.offset.detach().double() + (n_patches / COUNT_SCALE) * slope * b_count
        return W.numpy(), b.numpy()


def ridge_init(net: CountingGrader, photos: np.ndarray, targets: np.ndarray, lam: float = 1.0) -> dict:
    """Start the count read-out at the ridge solution on the initial tokens (a zero read-out would give the
    backbone no count gradient, a random one a count off by hundreds)."""
    d = net.count.in_features
    G, h = np.zeros((d + 1, d + 1)), np.zeros(d + 1)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for s in range(0, len(photos), 8):
            t = net.tokens(to_pixels(photos[s:s + 8]))[:, 1:].float().reshape(-1, d).double().numpy()
            X = np.concatenate([t, np.ones((len(t), 1))], 1)
            G += X.T @ X
            h += X.T @ targets[s:s + 8].reshape(-1)
    reg = lam * np.eye(d + 1)
    reg[-1, -1] = 0.0
    w = np.linalg.solve(G + reg, h)
    with torch.no_grad():
        net.count.weight.copy_(torch.from_numpy(w[:-1]).float()[None])
        net.count.bias.fill_(float(w[-1]))
    return {"photos": int(len(photos)), "lambda": lam}


def augment(batch: np.ndarray, targets: np.ndarray, grid: int, rng: np.random.Generator):
    """Horizontal flip (the count grid flips with it) and mild brightness / contrast / saturation jitter."""
    x = batch.astype(np.float32)
    t = targets.reshape(len(batch), grid, grid).copy()
    for i in range(len(x)):
        if rng.random() < 0.5:
            x[i] = x[i, :, ::-1]
            t[i] = t[i, :, ::-1]
        gray = x[i].mean(2, keepdims=True)
        x[i] = gray + (x[i] - gray) * rng.uniform(0.8, 1.2)                   # saturation
        x[i] = x[i].mean() + (x[i] - x[i].mean()) * rng.uniform(0.85, 1.15)   # contrast
        x[i] *= rng.uniform(0.85, 1.15)                                       # brightness
    return np.clip(x, 0, 255).round().astype(np.uint8), t.reshape(len(batch), -1)


def predict(net: CountingGrader, photos: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Grade logits and lesion counts, as in training (bf16 autocast)."""
    net.eval()
    logits, counts = [], []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for s in range(0, len(photos), batch):
            pixels = to_pixels(photos[s:s + batch])
            lg, _, c = net(pixels)
            logits.append(lg.double().numpy())
            counts.append(c.double().numpy())
    return np.concatenate(logits), np.concatenate(counts)


def figures(y: np.ndarray, true_counts: np.ndarray, logits: np.ndarray, counts: np.ndarray) -> dict:
    fig = classification_figures(y, logits.argmax(1))
    band = np.digitize(counts, [upper + 0.5 for upper, _ in HAYASHI_BANDS])
    fig["count_mae"] = float(np.abs(counts - true_counts).mean())
    fig["count_band_accuracy"] = float((band == y).mean())
    return fig


def short(f: dict) -> str:
    return " ".join(f"{k} {f[k]:.3f}" for k in ("accuracy", "macro_f1", "mae", "qwk", "count_mae",
                                                 "count_band_accuracy") if k in f)


def end_to_end(args, init: str) -> None:
    from train_grader import load_backbone, patch_counts, split_records

    t0 = time.time()
    size, grid = args.size, args.size // 14
    train = split_records("train", None)
    valid = split_records("valid", None)
    by_source: dict[str, list[int]] = {}
    for i, r in enumerate(train):
        by_source.setdefault(r.source, []).append(i)
    sources = sorted(by_source)
    y = np.array([r.grade for r in train])
    yv = np.array([r.grade for r in valid])
    targets = np.stack([patch_counts(r, size, sigma=args.e2e_sigma) for r in train])
    counts = np.array([len(r.boxes) for r in train], np.float32)
    counts_v = np.array([len(r.boxes) for r in valid], np.float32)
    photos = load_photos(train, size)
    photos_v = load_photos(valid, size)
    log.info("end2end: %d train photos (%d sources), %d valid; decoded at %d px in %.0f s (%.1f GB)", len(train),
             len(sources), len(valid), size, time.time() - t0, (photos.nbytes + photos_v.nbytes) / 1e9)

    net = CountingGrader(load_backbone(init), args.e2e_frozen)
    run = args.work / "end2end" / (f"f{args.e2e_frozen}_e{args.e2e_epochs}_lr{args.e2e_lr:g}_b{args.e2e_batch}"
                                   f"_s{args.e2e_sigma:g}_seed{args.seed}")
    run.mkdir(parents=True, exist_ok=True)
    src_grades = np.array([y[by_source[s][0]] for s in sources])
    class_w = torch.tensor(len(sources) / (N_CLASSES * np.bincount(src_grades, minlength=N_CLASSES)),
                           dtype=torch.float32)

    layers = net.backbone.encoder.layer
    n_layers = len(layers)
    groups = [{"params": list(layers[i].parameters()), "lr": args.e2e_lr * args.e2e_decay ** (n_layers - 1 - i),
               "weight_decay": 0.05} for i in range(args.e2e_frozen, n_layers)]
    # The count read-out (ridge) and the final layernorm stay fixed: the count sums 1024 patch read-outs,
    # so an Adam-sized step on either (the same for every patch) moves it by tens of lesions - two first
    # runs diverged that way. The blocks learn to make tokens the fixed read-out counts correctly.
    for p in list(net.count.parameters()) + list(net.backbone.layernorm.parameters()):
        p.requires_grad_(False)
    groups += [{"params": list(net.classifier.parameters()) + [net.slope, net.offset], "lr": args.e2e_head_lr,
                "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups)
    steps = math.ceil(len(sources) / args.e2e_batch)
    total, warmup = max(1, steps * args.e2e_epochs), min(60, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    start, history = 1, []
    if (run / "last.pt").is_file():
        state = torch.load(run / "last.pt", weights_only=True)
        net.load_state_dict(state["net"]); opt.load_state_dict(state["opt"]); sched.load_state_dict(state["sched"])
        start, history = state["epoch"] + 1, json.loads(state["history"])
        log.info("resumed %s after epoch %d", run, state["epoch"])
    else:
        rng = np.random.default_rng(args.seed)
        rows = np.array([by_source[s][0] for s in rng.permutation(sources)[:args.e2e_ridge_photos]])
        info = ridge_init(net, photos[rows], targets[rows])
        lv, cv = predict(net, photos_v)
        history.append({"epoch": 0, "ridge": info, "valid": figures(yv, counts_v, lv, cv)})
        log.info("epoch 0 (ridge read-out, frozen-init backbone) valid (logged only): %s", short(history[0]["valid"]))

    for epoch in range(start, args.e2e_epochs + 1):
        rng = np.random.default_rng(args.seed * 1000 + epoch)
        torch.manual_seed(args.seed * 1000 + epoch)
        rows = np.array([rng.choice(by_source[sources[j]]) for j in rng.permutation(len(sources))])
        net.train()
        t_ep, sums = time.time(), np.zeros(4)
        for k, s in enumerate(range(0, len(rows), args.e2e_batch)):
            r = rows[s:s + args.e2e_batch]
            batch, tgt = augment(photos[r], targets[r], grid, rng)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits, density, count = net(to_pixels(batch))
            tgt, true = torch.from_numpy(tgt), torch.from_numpy(counts[r])
            ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[r]), weight=class_w,
                                                   label_smoothing=0.05)
            dense = ((density - tgt) ** 2).sum(1).mean()
            total_err = ((count - true) ** 2 / (true + 5.0)).mean()   # Poisson-like: a count error weighs less on big counts
            loss = ce + args.e2e_dense_weight * dense + args.e2e_count_weight * total_err
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 5.0)
            opt.step()
            sched.step()
            sums += [len(r), ce.item() * len(r), dense.item() * len(r), total_err.item() * len(r)]
            if k % 20 == 0:
                log.info("epoch %d step %d/%d: CE %.3f dense %.3f count %.3f, %.2f s/photo", epoch, k, steps,
                         sums[1] / sums[0], sums[2] / sums[0], sums[3] / sums[0], (time.time() - t_ep) / sums[0])
        lv, cv = predict(net, photos_v)
        history.append({"epoch": epoch, "train_ce": sums[1] / sums[0], "train_dense": sums[2] / sums[0],
                        "train_count": sums[3] / sums[0], "seconds": time.time() - t_ep,
                        "valid": figures(yv, counts_v, lv, cv)})
        log.info("epoch %d (%.0f s) valid (logged only): %s", epoch, time.time() - t_ep, short(history[-1]["valid"]))
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch,
                    "history": json.dumps(history)}, run / "last.pt")
    (run / "history.json").write_text(json.dumps(history, indent=1))
    if args.e2e_no_save:
        return
    save_end_to_end(args, init, net, photos_v, len(train), history, t0)


def save_end_to_end(args, init: str, net: CountingGrader, photos_v: np.ndarray, n_train: int, history: list,
                    t0: float) -> None:
    """Fold the head, save fp16 save_pretrained, reload-check, evaluate the saved model, write the card."""
    from train_grader import save_model, verify_saved, write_card

    n_patches = (args.size // 14) ** 2
    W, b = net.folded_head(n_patches)
    with torch.inference_mode():      # fp32 reference for the reload check
        t = net.eval().float().tokens(to_pixels(photos_v[:args.verify_images]))
        ref_cls = t[:, 0].double().numpy()
        ref_logits = torch.cat([t[:, 0], t[:, 1:].mean(1)], 1).double().numpy() @ W.T + b
    k = len(net.backbone.encoder.layer)
    blocks = {"k": k, "layers": [layer.state_dict() for layer in net.backbone.encoder.layer],
              "norm": net.backbone.layernorm.state_dict()}
    save_model(args, init, W, b, blocks)
    summary = {"method": "end-to-end", "init": args.init, "init_path": init, "size": args.size,
               "train_photos": n_train, "train_versions": 3, "seed": args.seed,
               "end2end": {"frozen_blocks": args.e2e_frozen, "epochs": args.e2e_epochs, "lr": args.e2e_lr,
                           "layer_decay": args.e2e_decay, "head_lr": args.e2e_head_lr,
                           "batch": args.e2e_batch, "sigma": args.e2e_sigma, "dense_weight": args.e2e_dense_weight,
                           "count_weight": args.e2e_count_weight, "history": history},
               "command": " ".join(["python"] + [str(a) for a in sys.argv])}
    summary["saved_check"] = verify_saved(args.out, ref_logits, ref_cls, n=args.verify_images)
    res = args.work / f"result_{args.out.name}"
    res.mkdir(parents=True, exist_ok=True)
    if not args.skip_eval:
        from eval_grader import evaluate_grader

        ev = evaluate_grader(args.out, split="valid", out_dir=res / "eval_valid")
        summary["valid_saved_model"] = {k: v for k, v in ev.items() if k != "per_image"}
        log.info("saved model on valid: %s", {k: round(ev["figures"][k], 4) for k in ("accuracy", "macro_f1", "mae", "qwk")})
    summary["valid_numpy"] = history[-1]["valid"]
    summary["fit_seconds"] = time.time() - t0
    (res / "summary.json").write_text(json.dumps(summary, indent=1))
    write_card(args.out, summary)
    log.info("done in %.0f s", time.time() - t0)

