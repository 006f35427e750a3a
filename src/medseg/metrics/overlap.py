"""Overlap metrics from per-class confusion counts.

Convention (docs/metrics.md): a class absent from both prediction and reference has undefined
Dice/IoU/precision/recall/F1 (NaN) and is left out of means; a class present in only one of them
scores 0. F1 equals Dice on voxels; both are reported because the two communities name it
differently. Volumes are in mm³ (mm² in 2D) when a spacing is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _masks(arr: np.ndarray, k: int, multi_label: bool) -> np.ndarray:
    return arr[k].astype(bool) if multi_label else arr == k


def confusion_counts(pred: np.ndarray, ref: np.ndarray, classes: Sequence[int], multi_label: bool = False, valid: np.ndarray | None = None) -> np.ndarray:
    """Counts ``(n_classes, 4)`` = TP, FP, FN, TN per class.

    Args:
        pred, ref: label maps of equal shape (class indices), or for multi-label data boolean
            arrays ``(K, ...)``.
        classes: class indices (or channels) to count.
        multi_label: whether inputs are channel stacks.
        valid: spatial mask of the voxels that count (the others, e.g. the ignore label's, are
            left out of all four counts); default every voxel.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    out = np.zeros((len(classes), 4), dtype=np.int64)
    for i, k in enumerate(classes):
        p = _masks(pred, k, multi_label)
        r = _masks(ref, k, multi_label)
        n = p.size
        if valid is not None:
            p, r, n = p & valid, r & valid, int(np.count_nonzero(valid))
        tp = int(np.count_nonzero(p & r))
        fp = int(np.count_nonzero(p)) - tp
        fn = int(np.count_nonzero(r)) - tp
        out[i] = (tp, fp, fn, n - tp - fp - fn)
    return out


def correct_voxels(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int]:
    """Voxels whose predicted class is the reference class, and how many voxels there are.

    Pixel accuracy is ``right / total``; pooled over cases, sum both first. For multi-label boolean
    stacks ``(K, ...)`` every voxel × channel decision counts. Background voxels count like any
    other, which is why accuracy stays high when a small structure is missed entirely.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    return int(np.count_nonzero(pred == ref)), int(ref.size)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def metrics_from_counts(counts: np.ndarray, voxel_volume: float = 1.0) -> dict[str, np.ndarray]:
    """Dice, IoU, precision, recall, specificity, F1 and volumes from ``(n, 4)`` counts.

    Args:
        counts: TP, FP, FN, TN per class, shape ``(n, 4)``.
        voxel_volume: volume of one voxel (mm³), to express volumes in mm³.

    Returns:
        Arrays of length ``n``: ``dice``, ``iou``, ``precision``, ``recall``, ``specificity``,
        ``f1``, ``volume_pred``, ``volume_ref``, ``volume_diff`` (pred − ref) and
        ``rel_volume_diff`` ((pred − ref) / ref; NaN when the reference is empty).
    """
    c = counts.astype(np.float64)
    tp, fp, fn, tn = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    both_empty = (tp + fp + fn) == 0
    dice = np.where(both_empty, np.nan, _ratio(2 * tp, 2 * tp + fp + fn))
    iou = np.where(both_empty, np.nan, _ratio(tp, tp + fp + fn))
    precision = np.where(both_empty, np.nan, np.where(tp + fp > 0, _ratio(tp, tp + fp), 0.0))
    recall = np.where(both_empty, np.nan, np.where(tp + fn > 0, _ratio(tp, tp + fn), 0.0))
    vp, vr = (tp + fp) * voxel_volume, (tp + fn) * voxel_volume
    return {
        "dice": dice,
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": dice.copy(),
        "volume_pred": vp,
        "volume_ref": vr,
        "volume_diff": vp - vr,
        "rel_volume_diff": _ratio(vp - vr, vr),
    }


def overlap_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Sequence[int],
    multi_label: bool = False,
    spacing: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """Per-class overlap metrics (arrays of length ``len(classes)``) plus raw counts.

    Volumes are in mm³ (mm² in 2D) when ``spacing`` is given, else in voxels.
    """
    counts = confusion_counts(pred, ref, classes, multi_label)
    vv = float(np.prod(spacing)) if spacing is not None else 1.0
    out = metrics_from_counts(counts, vv)
    out.update(tp=counts[:, 0], fp=counts[:, 1], fn=counts[:, 2])
    return out


def confusion_matrix(pred: np.ndarray, ref: np.ndarray, n_classes: int) -> np.ndarray:
    """Voxel confusion matrix ``(n_classes, n_classes)``: rows = reference, columns = prediction.

    Args:
        pred, ref: label maps of class indices ``0 … n_classes − 1``, equal shape.
        n_classes: number of classes, background included.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    r = ref.astype(np.int64, copy=False).ravel()
    p = pred.astype(np.int64, copy=False).ravel()
    if r.size and (min(r.min(), p.min()) < 0 or max(r.max(), p.max()) >= n_classes):
        raise ValueError(f"label values outside 0..{n_classes - 1}")
    return np.bincount(r * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def multilabel_counts(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-channel TP, FP, FN, TN ``(K, 4)`` of boolean stacks ``(K, ...)`` (multi-label data)."""
    return confusion_counts(pred, ref, list(range(pred.shape[0])), multi_label=True)


def classification_report(matrix: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Pixel-level precision, recall, F1 and support per class, with macro and weighted averages.

    The same numbers as scikit-learn's ``classification_report(output_dict=True)`` on the
    flattened label maps, computed from the confusion matrix so no voxel list is ever built.
    Undefined ratios (no prediction or no reference of a class) are 0, as in scikit-learn.

    Args:
        matrix: ``(K, K)`` confusion matrix, rows = reference (see :func:`confusion_matrix`).
        names: class names, one per row.

    Returns:
        ``{name: {precision, recall, f1, support}, "accuracy": {accuracy, support},
        "macro avg": {...}, "weighted avg": {...}}``.
    """
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    out = _report(tp, m.sum(0), m.sum(1), names)
    total = float(m.sum())
    out["accuracy"] = {"accuracy": float(tp.sum() / total) if total else 0.0, "support": total}
    return out


def classification_report_from_counts(counts: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """The report of :func:`classification_report` for multi-label data, from ``(K, 4)`` counts.

    Matches scikit-learn's multi-label report (indicator matrices): per class, ``micro avg``,
    ``macro avg`` and ``weighted avg``.
    """
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = c[:, 0], c[:, 1], c[:, 2]
    out = _report(tp, tp + fp, tp + fn, names)
    micro = _report(np.array([tp.sum()]), np.array([(tp + fp).sum()]), np.array([(tp + fn).sum()]), ["micro avg"])["micro avg"]
    return {**{n: out[n] for n in names}, "micro avg": micro, "macro avg": out["macro avg"], "weighted avg": out["weighted avg"]}


def _report(tp: np.ndarray, predicted: np.ndarray, support: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        s = precision + recall
        f1 = np.where(s > 0, 2 * precision * recall / np.where(s > 0, s, 1), 0.0)
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        out[name] = {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": float(support[i])}
    total = float(support.sum())
    out["macro avg"] = {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean()), "support": total}
    w = support / total if total else np.zeros_like(support)
    out["weighted avg"] = {"precision": float(precision @ w), "recall": float(recall @ w), "f1": float(f1 @ w), "support": total}
    return out
