"""A quick description of a data set folder (``medseg inspect``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.data.splits import SETS, load_splits
from medseg.data.store import Dataset
from medseg.progress import track


def describe(ds: Dataset, progress: bool = True) -> dict[str, Any]:
    """Counts, shapes, spacings and voxels per class per split (reads every case once)."""
    split_of: dict[str, str] = {}
    if ds.splits_path.is_file():
        splits = load_splits(ds.splits_path, ds.patients)
        for s in SETS:
            for cid in splits.get(s, []):
                split_of[cid] = s
    shapes, spacings = [], []
    names = ds.info.class_names
    voxels: dict[str, dict[str, int]] = {n: {} for n in names}
    for case in track(ds, "reading cases", total=len(ds), enabled=progress):
        shapes.append(case.spatial_shape)
        spacings.append(case.spacing)
        s = split_of.get(case.case_id, "unsplit")
        if case.label is None:
            continue
        if case.multi_label:
            counts = case.label.reshape(case.label.shape[0], -1).sum(1)
        else:
            counts = np.bincount(case.label.ravel(), minlength=len(names))
        for n, c in zip(names, counts, strict=False):
            voxels[n][s] = voxels[n].get(s, 0) + int(c)
    sh = np.array(shapes)
    sp = np.array(spacings)
    summary = {
        "dimensions": f"{ds.info.dims}D",
        "modalities": ", ".join(ds.info.modalities),
        "classes": ", ".join(names) + (" (multi-label)" if ds.info.multi_label else ""),
        "cases": len(ds),
        "patients": len(set(ds.patients.values())),
        "shape median (min–max)": " × ".join(f"{int(np.median(sh[:, i]))} ({sh[:, i].min()}–{sh[:, i].max()})" for i in range(sh.shape[1])),
        "spacing median mm": " × ".join(f"{np.median(sp[:, i]):.3g}" for i in range(sp.shape[1])),
    }
    for s in SETS:
        if any(v == s for v in split_of.values()):
            summary[f"{s} cases"] = sum(1 for v in split_of.values() if v == s)
    present = [s for s in (*SETS, "unsplit") if any(s in v for v in voxels.values())]
    return {"summary": summary, "splits": present, "class_voxels": voxels}
