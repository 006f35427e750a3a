"""Summaries of per case × class metric rows: mean ± std per class, macro and volume-weighted means, pooled counts, lesion and time-saved totals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.metrics.lesions import LESION_METRICS
from medseg.metrics.overlap import (
    metrics_from_counts,
)
from medseg.metrics.surface import SURFACE_METRICS

OVERLAP_COLUMNS = [
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "f1",
    "volume_pred",
    "volume_ref",
    "volume_diff",
    "rel_volume_diff",
    "tp",
    "fp",
    "fn",
]


TIME_COLUMNS = ["time_saved_s", "slices_passed", "slices_failed"]


#: Every column :func:`score_case` can fill, in ``metrics.csv`` order (disabled groups are left out).
METRIC_COLUMNS = [*OVERLAP_COLUMNS, *SURFACE_METRICS, *TIME_COLUMNS, *LESION_METRICS]


#: Columns summarised as mean ± std per class (counts are summed instead).
MEAN_METRICS = ["dice", "iou", "precision", "recall", "specificity", "f1", "volume_diff", "rel_volume_diff", *SURFACE_METRICS, "time_saved_s"]


def json_float(v: float) -> float | str | None:
    """NaN → null, ±inf → "inf"/"-inf" (JSON has neither)."""
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


def _stats(values: np.ndarray) -> dict[str, Any]:
    undefined = int(np.isnan(values).sum())
    v = values[~np.isnan(values)]
    if v.size == 0:
        return {"mean": None, "std": None, "median": None, "n": 0, "n_undefined": undefined}
    finite = np.isfinite(v).all()
    with np.errstate(invalid="ignore"):
        return {
            "mean": json_float(float(v.mean())),
            "std": json_float(float(v.std())) if finite else None,
            "median": json_float(float(np.median(v))),
            "n": int(v.size),
            "n_undefined": undefined,
        }


def _pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = np.array([[sum(r[k] for r in rows) for k in ("tp", "fp", "fn")] + [0]], dtype=np.float64)
    m = metrics_from_counts(counts)
    return {k: json_float(float(m[k][0])) for k in ("dice", "iou", "precision", "recall")} | {k: int(counts[0, i]) for i, k in enumerate(("tp", "fp", "fn"))}


def _lesion_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    tp, fp, fn = (int(sum(r[k] for r in rows)) for k in ("lesion_tp", "lesion_fp", "lesion_fn"))
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"tp": tp, "fp": fp, "fn": fn, "precision": prec, "recall": rec, "f1": f1}


def summarize(rows: list[dict[str, Any]], class_names: list[str], columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Aggregate ``metrics.csv`` rows.

    * ``per_class[name][metric]``: mean, std, median over cases, ``n`` cases with a defined value
      and ``n_undefined`` left out (NaN under the empty-mask policy, never averaged in);
    * ``macro[metric]``: the mean over classes of the per-class means;
    * ``weighted[metric]``: the per-class means weighted by reference volume (voxels);
    * ``pooled[name]``: overlap from the counts summed over all cases (and ``"all"`` classes);
    * ``lesions`` and ``time_saved`` totals when those columns exist;
    * ``mean_dice`` (= ``macro.dice``) and ``per_case_mean_dice``.
    """
    columns = list(columns) if columns is not None else [m for m in METRIC_COLUMNS if rows and m in rows[0]]
    means = [m for m in MEAN_METRICS if m in columns]
    out: dict[str, Any] = {"per_class": {}}
    ref_vox: dict[str, float] = {}
    for name in class_names:
        sel = [r for r in rows if r["class"] == name]
        out["per_class"][name] = {m: _stats(np.array([r[m] for r in sel], dtype=float)) for m in means}
        out["per_class"][name]["n_empty_reference"] = int(sum(1 for r in sel if r["tp"] + r["fn"] == 0))
        ref_vox[name] = float(sum(r["tp"] + r["fn"] for r in sel))
    macro: dict[str, Any] = {}
    weighted: dict[str, Any] = {}
    for m in means:
        vals = [(out["per_class"][n][m]["mean"], ref_vox[n]) for n in class_names]
        vals = [(math.inf if v == "inf" else v, w) for v, w in vals if v is not None]
        macro[m] = json_float(float(np.mean([v for v, _ in vals]))) if vals else None
        wsum = sum(w for _, w in vals)
        with np.errstate(invalid="ignore"):
            weighted[m] = json_float(float(sum(v * w for v, w in vals if w > 0) / wsum)) if vals and wsum > 0 else None
    out["macro"] = macro
    out["weighted"] = weighted
    out["pooled"] = {n: _pooled([r for r in rows if r["class"] == n]) for n in class_names} | {"all": _pooled(rows)}
    if "lesion_tp" in columns:
        out["lesions"] = {n: _lesion_summary([r for r in rows if r["class"] == n]) for n in class_names} | {"all": _lesion_summary(rows)}
    if "time_saved_s" in columns:
        n_cases = len({r["case"] for r in rows}) or 1
        per = {}
        for n in class_names:
            sel = [r for r in rows if r["class"] == n]
            total = float(sum(r["time_saved_s"] for r in sel))
            slices = int(sum(r["slices_passed"] + r["slices_failed"] for r in sel))
            per[n] = {
                "total_s": total,
                "per_case_s": total / n_cases,
                "per_slice_s": total / slices if slices else None,
                "slices_passed": int(sum(r["slices_passed"] for r in sel)),
                "slices_failed": int(sum(r["slices_failed"] for r in sel)),
            }
        out["time_saved"] = per | {
            "all": {"total_s": float(sum(p["total_s"] for p in per.values())), "per_case_s": float(sum(p["per_case_s"] for p in per.values()))}
        }
    out["mean_dice"] = macro.get("dice")
    per_case: dict[str, list[float]] = {}
    for r in rows:
        if np.isfinite(r["dice"]):
            per_case.setdefault(r["case"], []).append(r["dice"])
    out["per_case_mean_dice"] = {c: float(np.mean(v)) for c, v in per_case.items()}
    return out
