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


def best_slice(label: np.ndarray, axis: int = 0, multi_label: bool = False) -> int:
    """Index of the slice along ``axis`` of a 3D label with the most foreground."""
    fg = label.any(axis=0) if multi_label else label > 0
    other = tuple(a for a in range(fg.ndim) if a != axis)
    return int(np.argmax(fg.sum(axis=other)))
