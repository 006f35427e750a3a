"""Per-pixel classifiers train by fitting, not by epochs: fit on the training cases, score validation, save plain arrays."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from medseg.core.atomic import atomic_path
from medseg.core.errors import ConfigError
from medseg.data.loading import SegDataModule
from medseg.engine.callbacks import peak_memory_mb
from medseg.engine.module import SegModule
from medseg.runs import checkpoints_dir


def fit_classical(module: SegModule, dm: SegDataModule, run_dir: Path) -> dict[str, float]:
    """Fit a per-pixel classifier on the (unaugmented) training cases, score the validation cases and
    save it as ``checkpoints/classical.npz`` plus ``best.ckpt``/``last.ckpt`` that point to it.

    Returns:
        The history row (epoch 0): fit time and validation Dice per class.
    """
    from medseg.metrics.overlap import confusion_counts, correct_voxels, metrics_from_counts

    items = list(dm.items("train"))
    shapes = {tuple(np.asarray(it["image"]).shape) for it in items}
    if len(shapes) > 1:
        raise ConfigError(
            f"the pixel classifier fits images of one size; the training cases have {len(shapes)} sizes",
            where="model.name",
            fix="resize them (data.preprocess: {enabled: true, resize: [...]}) or use a network",
        )
    images = np.stack([np.asarray(it["image"]) for it in items])
    labels = np.stack([np.asarray(it["label"]) for it in items])
    t0 = time.perf_counter()
    module.net.fit(images, labels)
    fit_s = time.perf_counter() - t0
    ckpt_dir = checkpoints_dir(run_dir)
    ckpt_dir.mkdir(exist_ok=True)
    saved = module.net.save(ckpt_dir / "classical.npz")
    dice = []
    right = total = 0
    inferer = module.inferer()
    with torch.no_grad():
        for it in dm.items("val"):
            pred = inferer.labels(torch.as_tensor(np.asarray(it["image"]))[None]).numpy()
            ref = np.asarray(it["label"]) > 0.5 if module.multi_label else np.asarray(it["label"])[0]
            dice.append(metrics_from_counts(confusion_counts(pred, ref, module.scored, module.multi_label))["dice"])
            r, n = correct_voxels(pred, ref)
            right, total = right + r, total + n
    with np.errstate(all="ignore"):
        per_class = np.nan_to_num(np.nanmean(np.stack(dice), axis=0), nan=0.0)
    ckpt = {"hyper_parameters": dict(module.hparams), "state_dict": {}, "epoch": 0, "global_step": 0, "classical": saved.name}
    for name in ("best.ckpt", "last.ckpt"):
        with atomic_path(ckpt_dir / name) as tmp:
            torch.save(ckpt, tmp)
    row: dict[str, float] = {"epoch": 0, "step": 0, "train_loss": math.nan, "val_dice": float(per_class.mean())}
    row |= {f"val_dice_{module.class_names[k]}": float(v) for k, v in zip(module.scored, per_class, strict=True)}
    row["val_pixel_accuracy"] = right / total if total else math.nan
    row |= {
        "lr": math.nan,
        "train_time_s": fit_s,
        "samples_per_s": len(items) / max(fit_s, 1e-9),
        "epoch_time_s": fit_s,
        "peak_memory_mb": peak_memory_mb(torch.device("cpu")),
    }
    return row
