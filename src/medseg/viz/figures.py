"""Report figures: per-class Dice bars, box plots, case galleries with error maps, training GIFs, data set views.

Every function writes one PNG (or GIF) atomically and returns its path. Class colours come from
the data set (``dataset.json``; red / green / blue by default) so they agree everywhere; error maps use
the scheme of :mod:`medseg.viz.overlay` (shared with the demo): false positives magenta, false negatives
yellow, a wrong class orange. Voxels of the ignore label (``ignored``) are striped as in the viewer
(:func:`~medseg.viz.overlay.hatch`) and are never errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from medseg.core.atomic import atomic_path
from medseg.viz.overlay import ERROR_LEGEND, HATCH_COLOR, best_slice, error_masks, hatch, overlay, paint_errors, to_uint8


def _save(fig: Any, path: Path, dpi: int = 90) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return path


def _rgb(c: Sequence[int]) -> tuple[float, float, float]:
    return (c[0] / 255, c[1] / 255, c[2] / 255)


def error_map(image: np.ndarray, pred: np.ndarray, ref: np.ndarray, multi_label: bool = False, ignored: np.ndarray | None = None) -> np.ndarray:
    """RGB error map over a dimmed grey image in the one error scheme of :mod:`medseg.viz.overlay`:
    false positives magenta, false negatives yellow, wrong class orange.

    Args:
        image: 2D image.
        pred, ref: 2D class maps, or ``(K, H, W)`` boolean stacks when ``multi_label``.
        multi_label: channel stacks (an error in any channel counts).
        ignored: ``(H, W)`` voxels of the ignore label: no error there, striped.
    """
    grey = to_uint8(image).astype(np.float32) * 0.5
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    masks = error_masks(pred, ref, None, multi_label)
    if ignored is not None:
        masks = (masks[0] & ~ignored, masks[1] & ~ignored, masks[2] & ~ignored)
    return striped(paint_errors(rgb, masks), ignored)


def striped(rgb: np.ndarray, ignored: np.ndarray | None) -> np.ndarray:
    """``rgb`` with the ignored voxels hatched (unchanged without any)."""
    return rgb if ignored is None or not ignored.any() else hatch(rgb, ignored)


def slice_of(case_image: np.ndarray, label: np.ndarray, pred: np.ndarray | None, multi_label: bool, z: int | None = None) -> tuple:
    """The 2D view of a case: image, reference and prediction at slice ``z`` (3D: the most foreground)."""
    spatial = case_image.ndim - 1
    if spatial == 2:
        return case_image[0], label, pred, None
    if z is None:
        z = best_slice(label, 0, multi_label)

    def cut(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        return a[:, z] if multi_label else a[z]

    return case_image[0, z], cut(label), cut(pred), z


#: the legend entry of the hatched ignore label
IGNORE_LEGEND = "ignore (not annotated)"


def class_legend(fig: Any, class_names: Sequence[str], colors: Sequence[Sequence[int]], errors: bool = True, ignore: bool = False) -> None:
    """A legend along the bottom of ``fig``: class colours, the hatched ignore label, and the error-map colours."""
    handles = [Patch(color=_rgb(c), label=n) for n, c in zip(class_names, colors, strict=True)]
    if ignore:
        handles.append(Patch(facecolor=(0.5, 0.5, 0.5), edgecolor=_rgb(HATCH_COLOR), hatch="///", label=IGNORE_LEGEND))
    if errors:
        handles += [Patch(color=_rgb(c), label=n) for n, c in ERROR_LEGEND]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)


def case_panel(
    path: Path,
    title: str,
    image: np.ndarray,
    ref: np.ndarray,
    preds: Sequence[tuple[str, np.ndarray]],
    *,
    colors: Sequence[Sequence[int]],
    legend: tuple[list[str], list[Sequence[int]]],
    multi_label: bool = False,
    ignored: np.ndarray | None = None,
) -> Path:
    """image | ground truth | (prediction | error map) per model, with the class and error legend; the ignored
    voxels (``(H, W)``, the reference's ignore label) striped on every panel but the image."""
    n = 2 + 2 * len(preds)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.2))
    panels = [("image", np.repeat(to_uint8(image)[..., None], 3, -1)), ("ground truth", striped(overlay(image, ref, colors), ignored))]
    for name, pred in preds:
        panels.append((f"{name}\nprediction", striped(overlay(image, pred, colors), ignored)))
        panels.append((f"{name}\nerrors", error_map(image, pred, ref, multi_label, ignored)))
    for ax, (t, rgb) in zip(axes, panels, strict=True):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    class_legend(fig, *legend, ignore=ignored is not None and bool(ignored.any()))  # the title is the figure's caption in the report
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path)


def per_class_dice_bars(
    path: Path,
    runs: Sequence[tuple[str, dict[str, tuple[float, float]]]],
    colors: dict[str, Sequence[int]],
    references: Sequence[tuple[str, dict[str, float]]] = (),
) -> Path:
    """Per-class Dice (mean ± std over cases), grouped by class, one bar per run; reference values as markers."""
    classes = list(dict.fromkeys(c for _, d in runs for c in d))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(classes) * max(len(runs), 1) + 2), 3.6))
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(classes))
    for i, (name, d) in enumerate(runs):
        means = [d.get(c, (math.nan, math.nan))[0] for c in classes]
        stds = [d.get(c, (math.nan, math.nan))[1] for c in classes]
        stds = [0 if not np.isfinite(s) else s for s in stds]
        bar_colors = [_rgb(colors.get(c, (120, 120, 120))) for c in classes] if len(runs) == 1 else None
        bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, means, width * 0.95, yerr=stds, capsize=3, label=name, color=bar_colors, alpha=0.85)
        for b, m in zip(bars, means, strict=True):
            if np.isfinite(m):
                ax.annotate(f"{m:.2f}", (b.get_x() + b.get_width() / 2, m), ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    for _j, (rname, vals) in enumerate(references):
        pts = [(k, vals[c]) for k, c in enumerate(classes) if c in vals]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker="D", s=40, color="black", zorder=5, label=f"reference: {rname}" if True else None)
    ax.set_xticks(x, classes)
    ax.set(ylabel="Dice", ylim=(0, 1.08), title="Dice per class (mean ± std over cases)")
    ax.grid(axis="y", alpha=0.3)
    if len(runs) > 1 or references:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def metric_boxplots(
    path: Path,
    runs: Sequence[tuple[str, list[dict[str, Any]]]],
    classes: Sequence[str],
    metrics: Sequence[str],
    *,
    titles: dict[str, str] | None = None,
    limits: dict[str, tuple[float, float]] | None = None,
) -> Path:
    """Box plots of per-case metrics: one panel per metric, boxes per class (and per run side by side).

    Args:
        titles: panel title per metric (default: the metric's name).
        limits: y range per metric (e.g. ``(0, 1)`` for ratios); others follow the data.
    """
    titles = titles or {}
    limits = limits or {}
    metrics = [m for m in metrics if any(m in r for _, rows in runs for r in rows[:1])]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(3.4 * max(len(metrics), 1) + 0.8 * max(len(runs) - 1, 0) * len(classes), 3.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, m in zip(axes[0], metrics, strict=False):
        data, pos, cols = [], [], []
        width = 0.8 / max(len(runs), 1)
        for k, cls in enumerate(classes):
            for i, (_, rows) in enumerate(runs):
                v = np.array([r[m] for r in rows if r["class"] == cls and isinstance(r.get(m), float)], dtype=float)
                v = v[np.isfinite(v)]
                data.append(v if v.size else np.array([np.nan]))
                pos.append(k + (i - (len(runs) - 1) / 2) * width)
                cols.append(cmap(i % 10))
        bp = ax.boxplot(data, positions=pos, widths=width * 0.85, patch_artist=True, showfliers=True, manage_ticks=False)
        for patch, c in zip(bp["boxes"], cols, strict=True):
            patch.set_facecolor((*c[:3], 0.45))
        ax.set_xticks(range(len(classes)), classes, rotation=15, fontsize=8)
        ax.set_title(titles.get(m, m), fontsize=10)
        if m in limits:
            lo, hi = limits[m]
            pad = 0.03 * (hi - lo)
            ax.set_ylim(lo - pad, hi + pad)
        ax.grid(axis="y", alpha=0.3)
    if len(runs) > 1:
        handles = [Patch(color=(*cmap(i % 10)[:3], 0.45), label=name) for i, (name, _) in enumerate(runs)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(runs), 4), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    else:
        fig.tight_layout()
    return _save(fig, path)


def _upscale(rgb: np.ndarray, min_size: int = 192) -> np.ndarray:
    f = max(1, math.ceil(min_size / max(rgb.shape[:2])))
    return np.repeat(np.repeat(rgb, f, axis=0), f, axis=1) if f > 1 else rgb


def training_gif(
    path: Path,
    image: np.ndarray,
    ref: np.ndarray,
    snapshots: Sequence[tuple[int, np.ndarray]],
    colors: Sequence[Sequence[int]],
    *,
    title: str = "",
    ignored: np.ndarray | None = None,
) -> Path:
    """Animated GIF: ground truth | prediction at each epoch, with the epoch written on the frame (ignored voxels striped)."""
    from PIL import Image, ImageDraw

    gt = _upscale(striped(overlay(image, ref, colors), ignored))
    frames = []
    for epoch, pred in snapshots:
        pr = _upscale(striped(overlay(image, pred, colors), ignored))
        gap = np.full((gt.shape[0], 6, 3), 255, np.uint8)
        canvas = np.concatenate([gt, gap, pr], axis=1)
        bar = np.full((22, canvas.shape[1], 3), 255, np.uint8)
        frame = Image.fromarray(np.concatenate([bar, canvas], axis=0))
        draw = ImageDraw.Draw(frame)
        draw.text((4, 4), "ground truth", fill=(0, 0, 0))
        draw.text((gt.shape[1] + 10, 4), f"{title + ' ' if title else ''}epoch {epoch + 1}", fill=(0, 0, 0))
        frames.append(frame.convert("P", palette=Image.Palette.ADAPTIVE, colors=255))
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=450, loop=0)
    return path


def sample_grid(
    path: Path,
    items: Sequence[tuple[str, np.ndarray, np.ndarray] | tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    colors: Sequence[Sequence[int]],
    legend: tuple[list[str], list],
) -> Path:
    """A grid of data set samples: image with the reference overlaid (an item's fourth entry, the ignored
    voxels, striped), titled with the case id."""
    n = len(items)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    shown_ignore = False
    for ax, (cid, img, lab, *rest) in zip(axes.ravel(), items, strict=False):
        ignored = rest[0] if rest else None
        shown_ignore |= ignored is not None and bool(ignored.any())
        ax.imshow(striped(overlay(img, lab, colors), ignored), interpolation="nearest")
        ax.set_title(cid, fontsize=8)
    class_legend(fig, *legend, errors=False, ignore=shown_ignore)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, path)


def class_stats_plot(path: Path, voxels: dict[str, dict[str, int]], colors: dict[str, Sequence[int]]) -> Path:
    """Labelled voxels per class and split (fraction of each split's labelled voxels)."""
    splits = list(dict.fromkeys(s for v in voxels.values() for s in v))
    classes = list(voxels)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(splits) + 2), 3.2))
    x = np.arange(len(splits))
    width = 0.8 / max(len(classes), 1)
    for i, c in enumerate(classes):
        tot = [sum(voxels[k].get(s, 0) for k in classes) or 1 for s in splits]
        frac = [voxels[c].get(s, 0) / t for s, t in zip(splits, tot, strict=True)]
        ax.bar(x + (i - (len(classes) - 1) / 2) * width, frac, width * 0.95, color=_rgb(colors.get(c, (128, 128, 128))), label=c)
    ax.set_yscale("log")
    ax.set_xticks(x, splits)
    ax.set(ylabel="fraction of voxels (log)", title="Class balance per split")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def multi_curves(path: Path, runs: Sequence[tuple[str, list[dict[str, float]]]]) -> Path:
    """Training and validation loss, and validation Dice and pixel accuracy, of several runs on shared axes."""
    fig, (ax_l, ax_d) = plt.subplots(1, 2, figsize=(10, 3.8))
    cmap = plt.get_cmap("tab10")
    for i, (name, rows) in enumerate(runs):
        c = cmap(i % 10)
        ep = [int(r["epoch"]) + 1 for r in rows]
        for key, ls in (("train_loss", "-"), ("val_loss", "--")):
            pts = [(e, r[key]) for e, r in zip(ep, rows, strict=True) if isinstance(r.get(key), float) and math.isfinite(r[key])]
            if pts:
                ax_l.plot(*zip(*pts, strict=True), ls=ls, color=c, label=f"{name} ({'train' if key == 'train_loss' else 'val'})")
        for key, ls, label in (("val_dice", "-", name), ("val_pixel_accuracy", ":", f"{name} (pixel accuracy)")):
            pts = [(e, r[key]) for e, r in zip(ep, rows, strict=True) if isinstance(r.get(key), float) and math.isfinite(r[key])]
            if pts:
                ax_d.plot(*zip(*pts, strict=True), marker="o", ms=3, ls=ls, color=c, label=label)
    ax_l.set(xlabel="epoch", ylabel="loss", title="Loss (solid: train, dashed: validation)")
    ax_d.set(xlabel="epoch", ylabel="Dice / accuracy", title="Validation mean Dice (solid), pixel accuracy (dotted)", ylim=(0, 1.02))
    for ax in (ax_l, ax_d):
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
