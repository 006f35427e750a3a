"""Matplotlib figures written atomically as PNG files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from medseg.core.atomic import atomic_path


def plot_curves(rows: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Loss (left) and validation Dice per class (right) against epoch."""
    fig, (ax_l, ax_d) = plt.subplots(1, 2, figsize=(10, 3.8))
    ep = [r["epoch"] + 1 for r in rows]
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        pts = [(e, r[key]) for e, r in zip(ep, rows, strict=True) if key in r and not math.isnan(r[key])]
        if pts:
            ax_l.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label)
    ax_l.set(xlabel="epoch", ylabel="loss", title="Loss")
    if ax_l.get_lines():
        ax_l.legend()
    dice_keys = sorted({k for r in rows for k in r if k.startswith("val_dice")})
    for key in dice_keys:
        pts = [(e, r[key]) for e, r in zip(ep, rows, strict=True) if key in r]
        if pts:
            lw = 2.5 if key == "val_dice" else 1.2
            ax_d.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=lw, label="mean" if key == "val_dice" else key.removeprefix("val_dice_"))
    ax_d.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
    if dice_keys:
        ax_d.legend(fontsize=8)
    for ax in (ax_l, ax_d):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)
