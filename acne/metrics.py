"""Evaluation figures shared by the evaluation scripts and the tests: lesion matching, grade figures."""
from __future__ import annotations

import numpy as np


def match_lesions(centers: np.ndarray, boxes: np.ndarray, enlarge: float = 0.25) -> int:
    """Number of predicted centres matched to ground-truth boxes.

    A prediction is found when its centre lies inside a box enlarged by `enlarge` of its size on each
    side; each box is matched at most once, nearest (centre to box centre) pairs first.
    """
    centers = np.asarray(centers, np.float32).reshape(-1, 2)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(centers) == 0 or len(boxes) == 0:
        return 0
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    ex0, ex1 = boxes[:, 0] - enlarge * w, boxes[:, 2] + enlarge * w
    ey0, ey1 = boxes[:, 1] - enlarge * h, boxes[:, 3] + enlarge * h
    px, py = centers[:, 0:1], centers[:, 1:2]
    inside = (px >= ex0) & (px <= ex1) & (py >= ey0) & (py <= ey1)      # P x B
    bcx, bcy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    dist = np.hypot(px - bcx, py - bcy)
    pi, bi = np.nonzero(inside)
    order = np.argsort(dist[pi, bi], kind="stable")
    used_p, used_b = set(), set()
    for k in order:
        p, b = int(pi[k]), int(bi[k])
        if p in used_p or b in used_b:
            continue
        used_p.add(p)
        used_b.add(b)
    return len(used_p)


def prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    """Precision, recall and F1 from `tp` matches among `n_pred` predicted and `n_true` true items."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def dice_iou(pred: np.ndarray, true: np.ndarray) -> tuple[int, int, int]:
    """Returns (intersection, |pred|, |true|) so that figures can be pooled over a split."""
    pred = pred.astype(bool)
    true = true.astype(bool)
    return int(np.logical_and(pred, true).sum()), int(pred.sum()), int(true.sum())


def hayashi_band(count: int) -> int:
    """The Hayashi grade (0..3) of a lesion count: <=5, 6-20, 21-50, >50."""
    return 0 if count <= 5 else 1 if count <= 20 else 2 if count <= 50 else 3


def classification_figures(y_true, y_pred, n_classes: int = 4) -> dict:
    """Accuracy, macro-F1, per-class F1, MAE (in grades), QWK and the confusion matrix of
    integer labels `y_pred` against `y_true` (0..n_classes-1)."""
    y_true = np.asarray(y_true, int)
    y_pred = np.asarray(y_pred, int)
    cm = np.zeros((n_classes, n_classes), int)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    f1s = []
    for c in range(n_classes):
        tp = cm[c, c]
        prec = tp / cm[:, c].sum() if cm[:, c].sum() else 0.0
        rec = tp / cm[c, :].sum() if cm[c, :].sum() else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "macro_f1": float(np.mean(f1s)),
        "per_class_f1": [float(f) for f in f1s],
        "mae": float(np.abs(y_true - y_pred).mean()) if len(y_true) else 0.0,
        "qwk": quadratic_weighted_kappa(cm),
        "confusion": cm.tolist(),
    }


def quadratic_weighted_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights of a confusion matrix (rows true, columns predicted)."""
    cm = np.asarray(cm, float)
    n = cm.shape[0]
    total = cm.sum()
    if total == 0:
        return 0.0
    w = np.array([[(i - j) ** 2 for j in range(n)] for i in range(n)], float) / (n - 1) ** 2
    expected = np.outer(cm.sum(1), cm.sum(0)) / total
    denom = (w * expected).sum()
    return float(1 - (w * cm).sum() / denom) if denom else 0.0
