"""Label overlays on grey-scale images as RGB arrays (used by reports and the demo)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_uint8(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Window a 2D image to its [low, high] percentiles and scale to 0–255."""
    lo, hi = np.percentile(image, [low, high])
    scaled = (image - lo) / max(hi - lo, 1e-8)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, label: np.ndarray, colors: Sequence[Sequence[int]], alpha: float = 0.45, classes: Sequence[int] | None = None) -> np.ndarray:
    """Blend class colours over a grey image.

    Args:
        image: 2D image (any range; windowed to percentiles).
        label: 2D class-index map, or ``(K, H, W)`` booleans for multi-label data (overlaps blend).
        colors: RGB per class index (or channel).
        alpha: opacity of the labels.
        classes: which classes to draw (default: all but index 0 for class maps, all channels otherwise).

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    grey = to_uint8(image).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    multi = label.ndim == image.ndim + 1
    ks = list(classes) if classes is not None else (list(range(label.shape[0])) if multi else [k for k in range(len(colors)) if k != 0])
    for k in ks:
        mask = label[k].astype(bool) if multi else label == k
        if mask.any():
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colors[k], dtype=np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


#: colour of the stripes over voxels of the ignore label (not annotated)
HATCH_COLOR = (255, 255, 255)


def hatch(rgb: np.ndarray, mask: np.ndarray, color: Sequence[int] = HATCH_COLOR, period: int = 4) -> np.ndarray:
    """Diagonal stripes over ``mask`` (every ``period``-th anti-diagonal pixel): how the ignore label is shown,
    so unannotated voxels read as "no answer here" rather than as a class.

    Args:
        rgb: ``(H, W, 3)`` uint8 picture.
        mask: ``(H, W)`` booleans.
    """
    ii, jj = np.indices(mask.shape)
    stripes = mask.astype(bool) & ((ii + jj) % period == 0)
    out = rgb.copy()
    out[stripes] = np.asarray(color, dtype=out.dtype)
    return out


def best_slice(label: np.ndarray, axis: int = 0, multi_label: bool = False) -> int:
    """Index of the slice along ``axis`` of a 3D label with the most foreground."""
    fg = label.any(axis=0) if multi_label else label > 0
    other = tuple(a for a in range(fg.ndim) if a != axis)
    return int(np.argmax(fg.sum(axis=other)))


# ---------------------------------------------------------------- error maps (report and demo)

#: The one error-map colour scheme (report figures, demo, their legends): colours no default class
#: colour uses (classes are red / green / blue by default). Correct voxels are not coloured.
FP_COLOR = (255, 0, 255)  # magenta: predicted, not in the reference
FN_COLOR = (255, 230, 0)  # yellow: in the reference, missed
WRONG_COLOR = (255, 140, 0)  # orange: a foreground class predicted as another foreground class
ERROR_COLORS = {"false positive": FP_COLOR, "false negative": FN_COLOR, "wrong class": WRONG_COLOR}
ERROR_LEGEND = list(ERROR_COLORS.items())


def error_masks(
    pred: np.ndarray, ref: np.ndarray, classes: Sequence[int] | None = None, multi_label: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False positive, false negative and wrong-class masks of a 2D slice.

    Args:
        pred, ref: 2D class maps, or ``(K, H, W)`` boolean stacks when ``multi_label``.
        classes: the classes (channels) looked at; default every foreground class (every channel).
        multi_label: channel stacks: a voxel with a false positive in one channel and a false
            negative in another is "wrong class".

    Returns:
        ``(fp, fn, wrong)``, disjoint boolean masks: ``fp`` — a looked-at class predicted where the
        reference holds none of them; ``fn`` — a looked-at class of the reference predicted as none of
        them; ``wrong`` — both hold a looked-at class, but not the same.
    """
    if multi_label:
        ks = list(range(pred.shape[0])) if classes is None else list(classes)
        p, r = pred[ks].astype(bool), ref[ks].astype(bool)
        fp_any, fn_any = (p & ~r).any(0), (r & ~p).any(0)
        wrong = fp_any & fn_any
        return fp_any & ~wrong, fn_any & ~wrong, wrong
    p_in = pred > 0 if classes is None else np.isin(pred, list(classes))
    r_in = ref > 0 if classes is None else np.isin(ref, list(classes))
    diff = pred != ref
    wrong = diff & p_in & r_in
    return diff & p_in & ~wrong, diff & r_in & ~wrong, wrong


def paint_errors(rgb: np.ndarray, masks: tuple[np.ndarray, np.ndarray, np.ndarray], alpha: float = 1.0) -> np.ndarray:
    """Blend the error colours (:data:`ERROR_COLORS`) into an ``(H, W, 3)`` image at opacity ``alpha``."""
    out = rgb.astype(np.float32, copy=True)
    for mask, color in zip(masks, (FP_COLOR, FN_COLOR, WRONG_COLOR), strict=True):
        if mask.any():
            out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
