"""Pictures the demo shows: slices, window/level, label overlays, error maps, labelled panels.

All functions take and return NumPy arrays (RGB ``uint8``); none loops over pixels.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from medseg.viz.overlay import ERROR_LEGEND, error_masks, paint_errors

#: Window/level presets: name → (width, level) in the image's units (Hounsfield units for CT); ``None``: 1–99 % percentiles.
WINDOWS: dict[str, tuple[float, float] | None] = {
    "auto (1–99 %)": None,
    "full range": (0.0, 0.0),
    "CT soft tissue (W400 L40)": (400.0, 40.0),
    "CT lung (W1500 L-600)": (1500.0, -600.0),
    "CT bone (W1800 L400)": (1800.0, 400.0),
    "CT brain (W80 L40)": (80.0, 40.0),
    "CT liver (W150 L30)": (150.0, 30.0),
}
VIEWS = ("side by side", "overlay", "error map")
PLANES = ("axial", "coronal", "sagittal")


def plane_axes(affine: np.ndarray) -> dict[str, int]:
    """Which array axis to slice along for each anatomical plane of a 3D volume.

    Each array axis is matched to the world axis its affine column points along most (x → sagittal,
    y → coronal, z → axial), choosing the assignment that fits best, so oblique volumes work too.

    Args:
        affine: the ``(4, 4)`` voxel → world matrix.

    Returns:
        ``{"axial": a, "coronal": b, "sagittal": c}`` with ``{a, b, c} == {0, 1, 2}``.
    """
    cols = np.abs(np.asarray(affine, dtype=np.float64)[:3, :3])
    cols = cols / np.maximum(np.linalg.norm(cols, axis=0, keepdims=True), 1e-12)
    best = max(itertools.permutations(range(3)), key=lambda perm: sum(cols[w, a] for w, a in enumerate(perm)))
    # best[w] = array axis pointing along world axis w (0: x, 1: y, 2: z)
    return {"sagittal": best[0], "coronal": best[1], "axial": best[2]}


def take_slice(arr: np.ndarray, axis: int, index: int, lead: int = 0) -> np.ndarray:
    """The 2D slice ``index`` along spatial ``axis`` of an array with ``lead`` leading non-spatial axes."""
    index = int(np.clip(index, 0, arr.shape[lead + axis] - 1))
    return np.take(arr, index, axis=lead + axis)


def window(image: np.ndarray, preset: str = "auto (1–99 %)") -> np.ndarray:
    """Grey values 0–255 of a 2D image under a window/level preset (see :data:`WINDOWS`)."""
    image = np.asarray(image, dtype=np.float32)
    wl = WINDOWS.get(preset)
    if wl is None:
        lo, hi = np.percentile(image, [1.0, 99.0]) if image.size else (0.0, 1.0)
    elif wl == (0.0, 0.0):
        lo, hi = float(image.min(initial=0.0)), float(image.max(initial=1.0))
    else:
        width, level = wl
        lo, hi = level - width / 2, level + width / 2
    scaled = (image - lo) / max(float(hi - lo), 1e-8)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _masks(label: np.ndarray, classes: Sequence[int], multi: bool) -> list[tuple[int, np.ndarray]]:
    return [(k, (label[k].astype(bool) if multi else label == k)) for k in classes]


def outline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel boundary of a 2D boolean mask."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def blend(
    grey: np.ndarray, label: np.ndarray | None, colors: Sequence[Sequence[int]], classes: Sequence[int], alpha: float, *, multi: bool = False
) -> np.ndarray:
    """Class colours over a grey ``uint8`` slice at opacity ``alpha``; only ``classes`` are drawn."""
    rgb = np.repeat(grey.astype(np.float32)[..., None], 3, axis=-1)
    if label is not None and alpha > 0:
        for k, m in _masks(label, classes, multi):
            if m.any():
                rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(colors[k], dtype=np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def contour_overlay(
    grey: np.ndarray, pred: np.ndarray, ref: np.ndarray | None, colors: Sequence[Sequence[int]], classes: Sequence[int], *, alpha: float, multi: bool = False
) -> np.ndarray:
    """Prediction as filled colour, ground truth as a solid outline of the same colour."""
    rgb = blend(grey, pred, colors, classes, alpha, multi=multi)
    if ref is not None:
        for k, m in _masks(ref, classes, multi):
            rgb[outline(m)] = colors[k]
    return rgb


def error_map(grey: np.ndarray, pred: np.ndarray, ref: np.ndarray | None, classes: Sequence[int], alpha: float, *, multi: bool = False) -> np.ndarray:
    """Errors of the visible classes over a grey ``uint8`` slice, in the report's scheme
    (:data:`medseg.viz.overlay.ERROR_COLORS`: false positive magenta, false negative yellow, wrong class
    orange) at opacity ``alpha`` (at least 0.15, so errors never vanish); correct voxels stay grey."""
    rgb = np.repeat(grey.astype(np.float32)[..., None], 3, axis=-1)
    if ref is None:
        return rgb.astype(np.uint8)
    return paint_errors(rgb, error_masks(pred, ref, classes, multi), max(alpha, 0.15))


def upscale(rgb: np.ndarray, spacing: Sequence[float] = (1.0, 1.0), min_size: int = 320, max_size: int = 768) -> np.ndarray:
    """Nearest-neighbour resize for display: physical aspect ratio from ``spacing``, at least ``min_size`` pixels."""
    from PIL import Image

    h, w = rgb.shape[:2]
    ph, pw = h * float(spacing[0]), w * float(spacing[1])
    scale = max(min_size / max(min(ph, pw), 1e-6), 1e-6)
    scale = min(scale, max_size / max(ph, pw, 1e-6))
    size = (max(1, round(pw * scale)), max(1, round(ph * scale)))
    if size == (w, h):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.NEAREST))


def titled(rgb: np.ndarray, title: str) -> np.ndarray:
    """A title strip (PIL's built-in bitmap font, nothing downloaded) above an RGB image."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (rgb.shape[1], 18), (24, 24, 24))
    ImageDraw.Draw(strip).text((4, 3), title, fill=(240, 240, 240))
    return np.concatenate([np.asarray(strip), rgb], axis=0)


def side_by_side(panels: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
    """Panels of any heights next to each other on a white background."""
    h = max(p.shape[0] for p in panels)
    parts: list[np.ndarray] = []
    for i, p in enumerate(panels):
        if i:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
        pad = np.full((h - p.shape[0], p.shape[1], 3), 255, np.uint8)
        parts.append(np.concatenate([p, pad], axis=0))
    return np.concatenate(parts, axis=1)


def legend_html(names: Sequence[str], colors: Sequence[Sequence[int]], classes: Sequence[int], view: str = "side by side") -> str:
    """Colour swatches with class names (or the error-map colours in that view)."""
    if view == "error map":
        items = list(ERROR_LEGEND)
    else:
        items = [(names[k], tuple(colors[k])) for k in classes]
    spans = [
        f'<span style="display:inline-block;margin-right:12px"><span style="display:inline-block;width:12px;height:12px;'
        f'background:rgb{tuple(int(v) for v in c)};border:1px solid #444;vertical-align:middle"></span> {_esc(n)}</span>'
        for n, c in items
    ]
    note = " — ground truth drawn as outlines" if view == "overlay" else " — correct voxels are not coloured" if view == "error map" else ""
    return f'<div class="medseg-legend">{"".join(spans)}{note}</div>'


def _esc(text: str) -> str:
    import html

    return html.escape(str(text))
