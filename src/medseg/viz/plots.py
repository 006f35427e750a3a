"""Matplotlib figures written atomically as PNG files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import json
from typing import Any

import matplotlib.pyplot as plt

from medseg.core.atomic import atomic_path


def curve_series(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """The lines of :func:`plot_curves` as ``{panel: {label: [(epoch, value), ...]}}`` (epochs from 1).

    Panels: ``loss`` (train, validation) and ``validation`` (mean Dice, Dice per class and the pixel
    accuracy, on one 0–1 axis so that a high accuracy beside a low Dice — the imbalance trap of a small
    structure on a large background — shows at a glance).
    """
    ep = [int(r["epoch"]) + 1 for r in rows]

    def points(key: str) -> list[tuple[int, float]]:
        return [(e, float(r[key])) for e, r in zip(ep, rows, strict=True) if isinstance(r.get(key), int | float) and math.isfinite(r[key])]

    loss = {label: points(key) for key, label in (("train_loss", "train"), ("val_loss", "validation"))}
    dice_keys = sorted({k for r in rows for k in r if k.startswith("val_dice")})
    val = {"mean Dice" if key == "val_dice" else key.removeprefix("val_dice_"): points(key) for key in dice_keys}
    val["pixel accuracy"] = points("val_pixel_accuracy")
    return {"loss": {k: v for k, v in loss.items() if v}, "validation": {k: v for k, v in val.items() if v}}


def plot_curves(rows: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Loss (left); validation Dice per class and pixel accuracy (right) against epoch (see :func:`curve_series`)."""
    series = curve_series(rows)
    fig, (ax_l, ax_d) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, pts in series["loss"].items():
        ax_l.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label)
    ax_l.set(xlabel="epoch", ylabel="loss", title="Loss")
    if ax_l.get_lines():
        ax_l.legend()
    for label, pts in series["validation"].items():
        style = {"lw": 2.5} if label == "mean Dice" else {"lw": 2.0, "ls": "--", "color": "black"} if label == "pixel accuracy" else {"lw": 1.2}
        ax_d.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label, **style)
    ax_d.set(xlabel="epoch", ylabel="Dice / accuracy", title="Validation Dice and pixel accuracy", ylim=(0, 1.02))
    if series["validation"]:
        ax_d.legend(fontsize=8)
    for ax in (ax_l, ax_d):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | dict):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def plot_sensitivity(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Best validation Dice against each swept value, one line (mean over the rest) per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from medseg.core.atomic import atomic_path

    runs = [r for r in runs if isinstance(r.get("best_val_dice"), int | float)]
    keys = [k for k in dict.fromkeys(k for r in runs for k in r["point"]) if k not in ("model.name", "train.seed")]
    keys = [k for k in keys if len({format_value(r["point"].get(k)) for r in runs}) > 1]
    if not runs or not keys:  # only models (or seeds) swept: no hyperparameter to plot against
        return None
    groups = list(dict.fromkeys(r["group"] for r in runs))
    n = max(len(keys), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=False):
        values = list(dict.fromkeys(format_value(r["point"].get(key, "")) for r in runs))
        numeric = all(isinstance(r["point"].get(key), int | float) and not isinstance(r["point"].get(key), bool) for r in runs)
        if numeric:
            values = sorted({float(r["point"][key]) for r in runs})
        for g in groups:
            sel = [r for r in runs if r["group"] == g]
            xs, means, lo, hi = [], [], [], []
            for i, v in enumerate(values):
                ys = [r["best_val_dice"] for r in sel if (float(r["point"].get(key, math.nan)) if numeric else format_value(r["point"].get(key, ""))) == v]
                if ys:
                    xs.append(v if numeric else i)
                    means.append(float(np.mean(ys)))
                    lo.append(min(ys))
                    hi.append(max(ys))
            if xs:
                ax.plot(xs, means, marker="o", label=g)
                ax.fill_between(xs, lo, hi, alpha=0.15)
        if numeric and values and min(values) > 0 and max(values) / min(values) >= 20:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=20)
        ax.set(xlabel=key, ylabel="best validation Dice", title=f"Dice vs {key}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path
