"""``medseg augment-preview``: a picture of what the augmentation does to real training samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.augment import augmentation_pipeline


def augment_preview(config: Any, out: str | Path, n_cases: int = 4, n_samples: int = 4, seed: int = 0) -> Path:
    """A PNG grid: one row per training case, its original then ``n_samples`` augmented versions.

    The label is drawn as coloured contours (class colours of ``dataset.json``); volumes show the slice
    with the most foreground. Uses the run's preprocessing (cache) when it is enabled.

    Args:
        config: the run config (``data`` section: data set, preprocessing, preset, overrides).
        out: the PNG to write (atomically).
        n_cases: rows.
        n_samples: augmented columns per row.
        seed: seed of the augmentation draws.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medseg.core.atomic import atomic_path
    from medseg.data.loading import SegDataModule
    from medseg.data.source import open_dataset, resolve_splits

    ds = open_dataset(config)
    dm = SegDataModule(config, ds, resolve_splits(config, ds))
    items = dm.items("train")
    d = config.data
    preset = d.augmentation.preset or d.augment
    dims = ds.info.dims
    tf = augmentation_pipeline(preset, dims, d.augmentation.overrides)
    colors = [tuple(c / 255 for c in ci.color) for ci in ds.info.classes]
    rows = min(n_cases, len(items))
    fig, axes = plt.subplots(rows, n_samples + 1, figsize=(2.2 * (n_samples + 1), 2.2 * rows), squeeze=False)
    multi = ds.info.multi_label

    def show(ax: Any, image: np.ndarray, label: np.ndarray, z: int | None, title: str) -> None:
        img = np.asarray(image[0] if z is None else image[0, z], dtype=np.float32)
        lab = np.asarray(label if z is None else label[:, z])
        ax.imshow(img, cmap="gray")
        if multi:
            for k in range(lab.shape[0]):
                if lab[k].any():
                    ax.contour(lab[k] > 0.5, levels=[0.5], colors=[colors[k]], linewidths=0.8)
        else:
            for k in range(1, len(colors)):
                if (lab[0] == k).any():
                    ax.contour(lab[0] == k, levels=[0.5], colors=[colors[k]], linewidths=0.8)
        ax.set_title(title, fontsize=8)
        ax.axis("off")

    for r in range(rows):
        it = items[r]
        image, label = np.array(it["image"], dtype=np.float32), np.array(it["label"])
        z = None
        if dims == 3:
            fg = label.any(0) if multi else label[0] > 0
            z = int(np.argmax(fg.reshape(fg.shape[0], -1).sum(1)))
        show(axes[r][0], image, label, z, f"{it['case_id']} (original)")
        for j in range(n_samples):
            tf.set_random_state(seed=seed + 1000 * r + j)
            o = tf({"image": image, "label": label})
            show(axes[r][j + 1], np.asarray(o["image"]), np.asarray(o["label"]), z, f"{preset} #{j + 1}")
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out
