"""Summaries of per case × class metric rows, each column by its registered rule: mean ± std per class, macro and
volume-weighted means, totals; plus what each metric adds (pooled counts, lesion and time-saved totals)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.metrics.registry import METRICS


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


def summarize(rows: list[dict[str, Any]], class_names: list[str], columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Aggregate ``metrics.csv`` rows, each column by the rule its metric declares (:mod:`medseg.metrics.registry`).

    * ``per_class[name][metric]`` (``summary="mean"`` columns): mean, std, median over cases, ``n``
      cases with a defined value and ``n_undefined`` left out (NaN under the empty-mask policy, never
      averaged in); ``n_empty_reference`` cases whose reference lacks the class;
    * ``macro[metric]``: the mean over classes of the per-class means;
    * ``weighted[metric]``: the per-class means weighted by reference volume (voxels);
    * ``totals[metric]`` (``summary="sum"`` columns): the sum per class and over ``all``;
    * what each metric's ``summarize`` adds: ``pooled`` overlap from summed counts, ``lesions`` and
      ``time_saved`` totals;
    * ``mean_dice`` (= ``macro.dice``) and ``per_case_mean_dice``.

    A column no metric declares is summarised as a mean.
    """
    registered = {c.name: c for c in METRICS.columns()}
    columns = list(columns) if columns is not None else [c for c in registered if rows and c in rows[0]]

    def rule(name: str) -> str:
        return registered[name].summary if name in registered else "mean"

    means = [m for m in columns if rule(m) == "mean"]
    sums = [m for m in columns if rule(m) == "sum"]
    counted = "tp" in columns and "fn" in columns
    out: dict[str, Any] = {"per_class": {}}
    ref_vox: dict[str, float] = {}
    for name in class_names:
        sel = [r for r in rows if r["class"] == name]
        out["per_class"][name] = {m: _stats(np.array([r[m] for r in sel], dtype=float)) for m in means}
        if counted:
            out["per_class"][name]["n_empty_reference"] = int(sum(1 for r in sel if r["tp"] + r["fn"] == 0))
            ref_vox[name] = float(sum(r["tp"] + r["fn"] for r in sel))
    macro: dict[str, Any] = {}
    weighted: dict[str, Any] = {}
    for m in means:
        vals = [(out["per_class"][n][m]["mean"], ref_vox.get(n, 0.0)) for n in class_names]
        vals = [(math.inf if v == "inf" else -math.inf if v == "-inf" else v, w) for v, w in vals if v is not None]
        macro[m] = json_float(float(np.mean([v for v, _ in vals]))) if vals else None
        wsum = sum(w for _, w in vals)
        with np.errstate(invalid="ignore"):
            weighted[m] = json_float(float(sum(v * w for v, w in vals if w > 0) / wsum)) if vals and wsum > 0 else None
    out["macro"] = macro
    out["weighted"] = weighted
    if sums:
        out["totals"] = {m: {n: float(sum(r[m] for r in rows if r["class"] == n)) for n in class_names} | {"all": float(sum(r[m] for r in rows))} for m in sums}
    keep = ("case", "class", *columns)
    scored = [{k: r[k] for k in keep if k in r} for r in rows]
    for metric in METRICS:
        if metric.summarize is not None:
            out.update(metric.summarize(scored, class_names))
    out["mean_dice"] = macro.get("dice")
    per_case: dict[str, list[float]] = {}
    for r in scored:
        if "dice" in r and np.isfinite(r["dice"]):
            per_case.setdefault(r["case"], []).append(r["dice"])
    out["per_case_mean_dice"] = {c: float(np.mean(v)) for c, v in per_case.items()}
    return out
