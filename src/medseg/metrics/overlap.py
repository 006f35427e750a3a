"""Overlap metrics from per-class confusion counts.

Convention (docs/metrics.md): a class absent from both prediction and reference has undefined
Dice/IoU/precision/recall (NaN) and is left out of means; a class present in only one of them
scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _masks(arr: np.ndarray, k: int, multi_label: bool) -> np.ndarray:
    return arr[k].astype(bool) if multi_label else arr == k


def confusion_counts(pred: np.ndarray, ref: np.ndarray, classes: Sequence[int], multi_label: bool = False) -> np.ndarray:
    """Counts ``(n_classes, 4)`` = TP, FP, FN, TN per class.

    Args:
        pred, ref: label maps of equal shape (class indices), or for multi-label data boolean
            arrays ``(K, ...)``.
        classes: class indices (or channels) to count.
        multi_label: whether inputs are channel stacks.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    out = np.zeros((len(classes), 4), dtype=np.int64)
    for i, k in enumerate(classes):
        p = _masks(pred, k, multi_label)
        r = _masks(ref, k, multi_label)
        tp = int(np.count_nonzero(p & r))
        fp = int(np.count_nonzero(p)) - tp
        fn = int(np.count_nonzero(r)) - tp
        out[i] = (tp, fp, fn, p.size - tp - fp - fn)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def metrics_from_counts(counts: np.ndarray, voxel_volume: float = 1.0) -> dict[str, np.ndarray]:
    """Dice, IoU, precision, recall, specificity and volumes from ``(n, 4)`` counts."""
    c = counts.astype(np.float64)
    tp, fp, fn, tn = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    both_empty = (tp + fp + fn) == 0
    dice = np.where(both_empty, np.nan, _ratio(2 * tp, 2 * tp + fp + fn))
    iou = np.where(both_empty, np.nan, _ratio(tp, tp + fp + fn))
    precision = np.where(both_empty, np.nan, np.where(tp + fp > 0, _ratio(tp, tp + fp), 0.0))
    recall = np.where(both_empty, np.nan, np.where(tp + fn > 0, _ratio(tp, tp + fn), 0.0))
    return {
        "dice": dice,
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "volume_pred": (tp + fp) * voxel_volume,
        "volume_ref": (tp + fn) * voxel_volume,
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
