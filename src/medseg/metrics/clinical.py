"""Clinical time saved: what a model's masks would save (or cost) a reader drawing contours.

The model (docs/metrics.md, after reference study 000): a reader contours every class on every
slice where it appears. With a model, each slice × class where the reference or the prediction
holds the class is judged by its slice Dice:

* Dice ≥ ``dice_threshold`` — the reader accepts the mask and *saves* ``draw_seconds``;
* Dice < ``dice_threshold`` — the reader checks it, rejects it and draws it anyway: it *costs*
  ``check_seconds``;
* class absent from both on the slice — nothing to draw, nothing to check: 0.

A case's time saved is the sum over its slices; a negative value means the model costs time.
A 2D image is one slice; a 3D volume is cut along ``slice_axis`` (0 = the first spatial axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _per_class(value: float | Sequence[float], n: int, name: str) -> np.ndarray:
    arr = np.full(n, float(value)) if np.isscalar(value) else np.asarray(value, dtype=np.float64)  # type: ignore[arg-type]
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected one value or {n}, got {arr.size}")
    return arr


def slice_dice(pred: np.ndarray, ref: np.ndarray, slice_axis: int = 0) -> np.ndarray:
    """Dice of each slice of two boolean masks (NaN where both are empty).

    Args:
        pred, ref: boolean masks, 2D (one slice) or 3D.
        slice_axis: the axis cut into slices for 3D masks.
    """
    if pred.ndim == 2:
        pred, ref = pred[None], ref[None]
    else:
        pred, ref = np.moveaxis(pred, slice_axis, 0), np.moveaxis(ref, slice_axis, 0)
    n = pred.shape[0]
    p, r = pred.reshape(n, -1), ref.reshape(n, -1)
    tp = np.count_nonzero(p & r, axis=1).astype(np.float64)
    den = np.count_nonzero(p, axis=1) + np.count_nonzero(r, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)


def time_saved(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Sequence[int],
    multi_label: bool = False,
    *,
    dice_threshold: float = 0.8,
    draw_seconds: float | Sequence[float] = 30.0,
    check_seconds: float | Sequence[float] = 10.0,
    slice_axis: int = 0,
) -> dict[str, np.ndarray]:
    """Seconds saved per class for one case, and the slices that passed and failed.

    Args:
        pred, ref: label maps of class indices, or boolean stacks ``(K, ...)`` when ``multi_label``.
        classes: classes (channels) to score.
        multi_label: whether inputs are channel stacks.
        dice_threshold: slice Dice at or above which a mask is accepted as drawn.
        draw_seconds: time to draw one class on one slice (one value, or one per class).
        check_seconds: time lost checking a rejected mask (one value, or one per class).
        slice_axis: the spatial axis cut into slices (3D only).

    Returns:
        ``time_saved_s``, ``slices_passed``, ``slices_failed``: arrays of length ``len(classes)``.
    """
    draw = _per_class(draw_seconds, len(classes), "draw_seconds")
    check = _per_class(check_seconds, len(classes), "check_seconds")
    saved = np.zeros(len(classes))
    passed = np.zeros(len(classes), dtype=np.int64)
    failed = np.zeros(len(classes), dtype=np.int64)
    for i, k in enumerate(classes):
        p = pred[k].astype(bool) if multi_label else pred == k
        r = ref[k].astype(bool) if multi_label else ref == k
        d = slice_dice(p, r, slice_axis)
        scored = np.isfinite(d)
        ok = scored & (np.nan_to_num(d) >= dice_threshold)
        passed[i] = int(ok.sum())
        failed[i] = int(scored.sum() - ok.sum())
        saved[i] = passed[i] * draw[i] - failed[i] * check[i]
    return {"time_saved_s": saved, "slices_passed": passed, "slices_failed": failed}
