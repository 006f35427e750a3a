"""What a data set holds (``medseg inspect``): counts, geometry, intensities, class balance, warnings.

:func:`fingerprint` reads every case once, keeping only small per-case summaries and a bounded
sample of foreground intensities, so memory stays flat however many cases there are. The result
is written as ``fingerprint.json`` and printed by the CLI.

``fingerprint.json``::

    {"dataset": name, "dims": 3, "modalities": [...], "classes": [...], "multi_label": false,
     "cases": {"total": 40, "patients": 20, "per_split": {"train": 32, "val": 4, "test": 4}},
     "shape":   {"median": [...], "min": [...], "max": [...]},
     "spacing": {"median": [...], "min": [...], "max": [...], "anisotropy_median": r, "anisotropy_max": r},
     "intensity": [{"modality": "CT", "foreground": true, "mean", "std", "min", "max",
                    "percentiles": {"0.5": v, "1": v, ..., "99.5": v}}],
     "class_voxels":   {"class": {"train": n, "val": n, ...}},
     "class_fraction": {"class": fraction of labelled voxels},
     "per_case": [{"id", "split", "shape", "spacing", "foreground_voxels"}],
     "warnings": ["..."]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import write_json
from medseg.core.progress import track
from medseg.data.splits import SETS, load_splits
from medseg.data.store import Dataset

FINGERPRINT_FILE = "fingerprint.json"
PERCENTILES = (0.5, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.5)


def _split_of(ds: Dataset) -> dict[str, str]:
    out: dict[str, str] = {}
    if ds.splits_path.is_file():
        splits = load_splits(ds.splits_path, ds.patients)
        for s in SETS:
            for cid in splits.get(s, []) or []:
                out[cid] = s
    return out


def fingerprint(
    ds: Dataset,
    *,
    progress: bool = True,
    samples_per_case: int = 10_000,
    imbalance: float = 0.01,
    spacing_tolerance: float = 1.25,
    min_size: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Describe a data set; reads every case once.

    Args:
        ds: the data set.
        progress: show a progress bar.
        samples_per_case: foreground voxels sampled per case and channel for the intensity statistics.
        imbalance: warn when a class covers less than this fraction of the labelled voxels.
        spacing_tolerance: warn when an axis' spacing varies by more than this factor across cases.
        min_size: warn about cases with a spatial axis shorter than this (in voxels).
        seed: seed of the voxel sampling.

    Returns:
        The fingerprint dictionary (see the module docstring).
    """
    rng = np.random.default_rng(seed)
    split_of = _split_of(ds)
    names = ds.info.class_names
    n_chan = ds.info.n_channels
    voxels: dict[str, dict[str, int]] = {n: {} for n in names}
    labelled_total = 0
    per_case: list[dict[str, Any]] = []
    samples: dict[str, list[list[np.ndarray]]] = {k: [[] for _ in range(n_chan)] for k in ("fg", "all")}
    lo = {k: np.full(n_chan, np.inf) for k in ("fg", "all")}
    hi = {k: np.full(n_chan, -np.inf) for k in ("fg", "all")}
    empty: list[str] = []
    for case in track(ds, "reading cases", total=len(ds), enabled=progress):
        s = split_of.get(case.case_id, "unsplit")
        fg_count = None
        if case.label is not None:
            if case.multi_label:
                counts = case.label.reshape(case.label.shape[0], -1).sum(1)
                fg = case.label.any(0)
            else:
                counts = np.bincount(case.label.ravel().astype(np.int64), minlength=len(names))
                fg = case.label > 0
            for n, c in zip(names, counts, strict=False):
                voxels[n][s] = voxels[n].get(s, 0) + int(c)
            labelled_total += int(np.prod(case.spatial_shape))
            fg_count = int(fg.sum())
            if fg_count == 0:
                empty.append(case.case_id)
        else:
            fg = None
        # foreground intensities from labelled cases; all voxels of unlabelled ones as a fallback
        kind = "fg" if fg is not None else "all"
        if fg is None or fg.any():
            for c in range(n_chan):
                vals = case.image[c][fg] if fg is not None else case.image[c].ravel()
                lo[kind][c] = min(lo[kind][c], float(vals.min()))
                hi[kind][c] = max(hi[kind][c], float(vals.max()))
                if vals.size > samples_per_case:
                    vals = vals[rng.choice(vals.size, samples_per_case, replace=False)]
                samples[kind][c].append(np.asarray(vals, dtype=np.float32))
        per_case.append(
            {
                "id": case.case_id,
                "split": s,
                "shape": list(case.spatial_shape),
                "spacing": [round(v, 6) for v in case.spacing],
                "foreground_voxels": fg_count,
            }
        )
    sh = np.array([c["shape"] for c in per_case], dtype=float)
    sp = np.array([c["spacing"] for c in per_case], dtype=float)
    aniso = sp.max(1) / sp.min(1)
    intensity = []
    kind = "fg" if any(samples["fg"]) else "all"
    fg_based = kind == "fg"
    for c, mod in enumerate(ds.info.modalities):
        if not samples[kind][c]:
            intensity.append({"modality": mod, "foreground": fg_based, "voxels_sampled": 0})
            continue
        v = np.concatenate(samples[kind][c])
        intensity.append(
            {
                "modality": mod,
                "foreground": fg_based,
                "voxels_sampled": int(v.size),
                "mean": float(v.mean()),
                "std": float(v.std()),
                "min": float(lo[kind][c]),
                "max": float(hi[kind][c]),
                "percentiles": {f"{p:g}": float(x) for p, x in zip(PERCENTILES, np.percentile(v, PERCENTILES), strict=True)},
            }
        )
    per_split: dict[str, int] = {}
    for c in per_case:
        per_split[c["split"]] = per_split.get(c["split"], 0) + 1
    totals = {n: sum(v.values()) for n, v in voxels.items()}
    fraction = {n: (t / labelled_total if labelled_total else 0.0) for n, t in totals.items()}
    fp: dict[str, Any] = {
        "dataset": ds.info.name,
        "dims": ds.info.dims,
        "modalities": list(ds.info.modalities),
        "classes": names,
        "multi_label": ds.info.multi_label,
        "cases": {
            "total": len(per_case),
            "patients": len(set(ds.patients.values())),
            "labelled": sum(c["foreground_voxels"] is not None for c in per_case),
            "per_split": per_split,
        },
        "shape": {"median": np.median(sh, 0).tolist(), "min": sh.min(0).astype(int).tolist(), "max": sh.max(0).astype(int).tolist()},
        "spacing": {
            "median": np.median(sp, 0).tolist(),
            "min": sp.min(0).tolist(),
            "max": sp.max(0).tolist(),
            "anisotropy_median": float(np.median(aniso)),
            "anisotropy_max": float(aniso.max()),
        },
        "intensity": intensity,
        "class_voxels": voxels,
        "class_fraction": fraction,
        "per_case": per_case,
    }
    fp["warnings"] = _warnings(fp, ds, empty, imbalance, spacing_tolerance, min_size=min_size)
    return fp


def _ids(ids: list[str], k: int = 5) -> str:
    return ", ".join(ids[:k]) + (f" and {len(ids) - k} more" if len(ids) > k else "")


def _warnings(fp: dict[str, Any], ds: Dataset, empty: list[str], imbalance: float, tol: float, *, min_size: int) -> list[str]:
    out: list[str] = []
    labelled = fp["cases"]["labelled"]
    if labelled == 0:
        out.append("no case has a label: the data set can be predicted on but not trained or evaluated")
    else:
        fg = ds.info.foreground
        for i in fg:
            name = ds.info.classes[i].name
            frac = fp["class_fraction"][name]
            if frac == 0:
                out.append(f"class '{name}' never occurs in any label")
            elif frac < imbalance:
                out.append(
                    f"heavy class imbalance: '{name}' covers {100 * frac:.2g}% of labelled voxels — pixel accuracy will look high "
                    "while Dice stays low; use a Dice/focal loss, class weights or foreground-oversampling patches"
                )
        if empty:
            out.append(f"{len(empty)} of {labelled} labelled case(s) have an empty label (no foreground): {_ids(empty)}")
    sp_min, sp_max = np.asarray(fp["spacing"]["min"]), np.asarray(fp["spacing"]["max"])
    for ax, (a, b) in enumerate(zip(sp_min, sp_max, strict=True)):
        if a > 0 and b / a > tol:
            out.append(f"inconsistent spacing along axis {ax}: {a:.3g}–{b:.3g} mm across cases; resample to a common spacing before training")
    if fp["spacing"]["anisotropy_max"] > 3:
        out.append(f"anisotropic voxels (up to {fp['spacing']['anisotropy_max']:.3g}:1): consider 2D or anisotropic patches")
    small = [c["id"] for c in fp["per_case"] if min(c["shape"]) < min_size]
    n_vox = np.array([np.prod(c["shape"]) for c in fp["per_case"]], dtype=float)
    small += [c["id"] for c, n in zip(fp["per_case"], n_vox, strict=True) if n < 0.1 * np.median(n_vox) and c["id"] not in small]
    if small:
        out.append(f"{len(small)} very small case(s) (an axis < {min_size} voxels, or < 10% of the median size): {_ids(small)}")
    return out


def write_fingerprint(fp: dict[str, Any], path: str | Path) -> Path:
    """Write the fingerprint as JSON, atomically."""
    return write_json(path, fp)


def describe(ds: Dataset, progress: bool = True) -> dict[str, Any]:
    """Counts, shapes, spacings and voxels per class per split, plus the full :func:`fingerprint`.

    Returns:
        ``{"summary": {label: text}, "splits": [...], "class_voxels": {...}, "fingerprint": {...}}``.
    """
    fp = fingerprint(ds, progress=progress)
    sh, sp = fp["shape"], fp["spacing"]
    names = ds.info.class_names
    summary = {
        "dimensions": f"{ds.info.dims}D",
        "modalities": ", ".join(ds.info.modalities),
        "classes": ", ".join(names) + (" (multi-label)" if ds.info.multi_label else ""),
        "cases": len(ds),
        "patients": fp["cases"]["patients"],
        "shape median (min–max)": " × ".join(f"{int(m)} ({a}–{b})" for m, a, b in zip(sh["median"], sh["min"], sh["max"], strict=True)),
        "spacing median mm": " × ".join(f"{m:.3g}" for m in sp["median"]),
        "spacing min–max mm": " × ".join(f"{a:.3g}–{b:.3g}" for a, b in zip(sp["min"], sp["max"], strict=True)),
        "anisotropy median (max)": f"{sp['anisotropy_median']:.3g} ({sp['anisotropy_max']:.3g})",
    }
    for s in SETS:
        if s in fp["cases"]["per_split"]:
            summary[f"{s} cases"] = fp["cases"]["per_split"][s]
    for it in fp["intensity"]:
        if it.get("voxels_sampled"):
            p = it["percentiles"]
            where = "foreground" if it["foreground"] else "all voxels"
            summary[f"{it['modality']} intensity ({where})"] = (
                f"mean {it['mean']:.4g} ± {it['std']:.4g}; p0.5 {p['0.5']:.4g}, p50 {p['50']:.4g}, p99.5 {p['99.5']:.4g}"
            )
    voxels = fp["class_voxels"]
    present = [s for s in (*SETS, "unsplit") if any(s in v for v in voxels.values())]
    return {"summary": summary, "splits": present, "class_voxels": voxels, "fingerprint": fp}
