"""The metrics medseg ships, registered in ``metrics.csv`` column order: overlap, surface distances,
time saved, lesions; and the run-level scores (pixel accuracy, pixel-level precision / recall / F1
averages, test loss). The arithmetic lives in :mod:`~medseg.metrics.overlap`,
:mod:`~medseg.metrics.surface`, :mod:`~medseg.metrics.clinical` and :mod:`~medseg.metrics.lesions`;
this module declares, for each, its columns, summary rule, direction, display and settings."""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.metrics.clinical import time_saved
from medseg.metrics.lesions import LESION_METRICS, lesion_counts_per_class
from medseg.metrics.overlap import confusion_counts, metrics_from_counts
from medseg.metrics.registry import CaseMasks, Column, per_class_setting, register_metric, register_score
from medseg.metrics.summary import json_float
from medseg.metrics.surface import surface_metrics_per_class

UNIT = (0.0, 1.0)
COUNT = {"summary": "none", "direction": "none", "digits": 0}


def _has(rows: list[dict[str, Any]], *keys: str) -> bool:
    return bool(rows) and all(k in rows[0] for k in keys)


# ---------------------------------------------------------------- overlap


def _pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = np.array([[sum(r[k] for r in rows) for k in ("tp", "fp", "fn")] + [0]], dtype=np.float64)
    m = metrics_from_counts(counts)
    return {k: json_float(float(m[k][0])) for k in ("dice", "iou", "precision", "recall")} | {k: int(counts[0, i]) for i, k in enumerate(("tp", "fp", "fn"))}


def summarize_overlap(rows: list[dict[str, Any]], class_names: list[str]) -> dict[str, Any]:
    """``pooled``: overlap from the counts summed over all cases, per class and over ``all`` classes."""
    if not _has(rows, "tp", "fp", "fn"):
        return {}
    return {"pooled": {n: _pooled([r for r in rows if r["class"] == n]) for n in class_names} | {"all": _pooled(rows)}}


def overlap_conventions(cfg: Any) -> dict[str, str]:
    return {
        "overlap_empty": "class absent from prediction and reference: Dice/IoU/precision/recall/F1 undefined (NaN), "
        "left out of means and counted as n_undefined; "
        "present in only one: 0",
        "volumes": "mm³ (mm² in 2D) from the voxel spacing",
    }


@register_metric(
    "overlap",
    columns=[
        Column("dice", "Dice", show=frozenset({"per_class", "boxplot", "cli", "demo"}), limits=UNIT),
        Column("iou", "IoU", show=frozenset({"per_class"}), limits=UNIT),
        Column("precision", "precision", show=frozenset({"compare", "per_class", "boxplot"}), limits=UNIT),
        Column("recall", "recall", show=frozenset({"compare", "per_class", "boxplot"}), limits=UNIT),
        Column("specificity", "specificity", limits=UNIT),
        Column("f1", "F1", limits=UNIT),
        Column("volume_pred", "predicted volume", direction="none", digits=1, unit="mm³"),
        Column("volume_ref", "reference volume", direction="none", digits=1, unit="mm³"),
        Column("volume_diff", "volume difference", direction="none", digits=1, unit="mm³"),
        Column("rel_volume_diff", "relative volume difference", direction="none"),
        Column("tp", "TP", **COUNT),  # type: ignore[arg-type]
        Column("fp", "FP", **COUNT),  # type: ignore[arg-type]
        Column("fn", "FN", **COUNT),  # type: ignore[arg-type]
    ],
    conventions=overlap_conventions,
    summarize=summarize_overlap,
)
def overlap(m: CaseMasks, cfg: Any) -> dict[str, np.ndarray]:
    """Dice, IoU, precision, recall, specificity, F1, volumes and voxel counts (docs/metrics.md, Overlap)."""
    counts = confusion_counts(m.pred, m.ref, m.classes, m.multi_label, m.valid)
    out = metrics_from_counts(counts, float(np.prod(m.spacing)))
    out.update(tp=counts[:, 0], fp=counts[:, 1], fn=counts[:, 2])
    return out


# ---------------------------------------------------------------- surface distances


def surface_conventions(cfg: Any) -> dict[str, str]:
    s = cfg.surface
    return {
        "surface": f"hd95_mode={s.hd95_mode}, assd_mode={s.assd_mode}, nsd_mode={s.nsd_mode}, percentile={s.percentile:g}, tolerance_mm={s.tolerance_mm:g}",
        "surface_empty_both": "NaN, left out of means" if s.empty_both == "nan" else "best value: distances 0, NSD 1",
        "surface_empty_one": {"worst": "distances = image diagonal in mm", "inf": "distances = inf", "nan": "distances NaN, left out of means"}[s.empty_one]
        + "; NSD 0",
    }


@register_metric(
    "surface",
    columns=[
        Column("hd", "HD", direction="lower", digits=2, unit="mm"),
        Column("hd95", "HD95", direction="lower", digits=2, unit="mm", show=frozenset({"compare", "per_class", "boxplot", "cli", "demo"})),
        Column("assd", "ASSD", direction="lower", digits=2, unit="mm", show=frozenset({"compare", "per_class", "boxplot", "cli"})),
        Column("nsd", "NSD", show=frozenset({"per_class", "cli"}), limits=UNIT),
    ],
    enabled=lambda cfg: cfg.surface.enabled,
    conventions=surface_conventions,
)
def surface(m: CaseMasks, cfg: Any) -> dict[str, np.ndarray]:
    """HD, HD95, ASSD and NSD in mm under ``eval.surface`` (docs/metrics.md, Surface distances)."""
    s = cfg.surface
    tol = per_class_setting(s.class_tolerance_mm, s.tolerance_mm, m.names, "eval.surface.class_tolerance_mm")
    return surface_metrics_per_class(
        m.pred,
        m.ref,
        m.classes,
        spacing=m.spacing,
        multi_label=m.multi_label,
        tolerances_mm=tol,
        percentile=s.percentile,
        hd95_mode=s.hd95_mode,
        assd_mode=s.assd_mode,
        nsd_mode=s.nsd_mode,
        empty_both=s.empty_both,
        empty_one=s.empty_one,
    )


# ---------------------------------------------------------------- time saved


def summarize_time_saved(rows: list[dict[str, Any]], class_names: list[str]) -> dict[str, Any]:
    """``time_saved``: per class the total, the mean per case and per judged slice; ``all`` classes."""
    if not _has(rows, "time_saved_s", "slices_passed", "slices_failed"):
        return {}
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
    everything = {"total_s": float(sum(p["total_s"] for p in per.values())), "per_case_s": float(sum(p["per_case_s"] for p in per.values()))}
    return {"time_saved": per | {"all": everything}}


def time_saved_conventions(cfg: Any) -> dict[str, str]:
    t = cfg.time_saved
    return {"time_saved": f"per slice × class: Dice ≥ {t.dice_threshold:g} saves {t.draw_seconds:g} s, below costs {t.check_seconds:g} s, absent from both: 0"}


@register_metric(
    "time_saved",
    columns=[
        Column("time_saved_s", "time saved", digits=0, unit="s", show=frozenset({"compare_per_class", "demo"})),
        Column("slices_passed", "slices passed", **COUNT),  # type: ignore[arg-type]
        Column("slices_failed", "slices failed", **COUNT),  # type: ignore[arg-type]
    ],
    group="clinical",
    enabled=lambda cfg: cfg.time_saved.enabled,
    conventions=time_saved_conventions,
    summarize=summarize_time_saved,
)
def time_saved_metric(m: CaseMasks, cfg: Any) -> dict[str, np.ndarray]:
    """Reader seconds saved per case × class under ``eval.time_saved`` (docs/metrics.md, Clinical time saved)."""
    t = cfg.time_saved
    draw = per_class_setting(t.class_draw_seconds, t.draw_seconds, m.names, "eval.time_saved.class_draw_seconds")
    axis = min(t.slice_axis, len(m.spacing) - 1)
    return time_saved(
        m.pred, m.ref, m.classes, m.multi_label, dice_threshold=t.dice_threshold, draw_seconds=draw, check_seconds=t.check_seconds, slice_axis=axis
    )


# ---------------------------------------------------------------- lesions


def _lesion_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    tp, fp, fn = (int(sum(r[k] for r in rows)) for k in ("lesion_tp", "lesion_fp", "lesion_fn"))
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"tp": tp, "fp": fp, "fn": fn, "precision": prec, "recall": rec, "f1": f1}


def summarize_lesions(rows: list[dict[str, Any]], class_names: list[str]) -> dict[str, Any]:
    """``lesions``: lesion counts summed per class and over ``all``, with lesion precision, recall and F1."""
    if not _has(rows, "lesion_tp", "lesion_fp", "lesion_fn"):
        return {}
    return {"lesions": {n: _lesion_totals([r for r in rows if r["class"] == n]) for n in class_names} | {"all": _lesion_totals(rows)}}


def lesion_conventions(cfg: Any) -> dict[str, str]:
    lz = cfg.lesions
    return {"lesions": f"rule={lz.rule}" + (f" (IoU ≥ {lz.iou_threshold:g})" if lz.rule == "iou" else "") + f", connectivity={lz.connectivity}"}


@register_metric(
    "lesions",
    columns=[Column(name, name.replace("_", " "), **COUNT) for name in LESION_METRICS],  # type: ignore[arg-type]
    enabled=lambda cfg: cfg.lesions.enabled,
    conventions=lesion_conventions,
    summarize=summarize_lesions,
)
def lesions(m: CaseMasks, cfg: Any) -> dict[str, np.ndarray]:
    """Lesion-wise TP / FP / FN and component counts under ``eval.lesions`` (docs/metrics.md, Lesion-wise detection)."""
    lz = cfg.lesions
    return lesion_counts_per_class(m.pred, m.ref, m.classes, m.multi_label, rule=lz.rule, iou_threshold=lz.iou_threshold, connectivity=lz.connectivity)


# ---------------------------------------------------------------- run-level scores


def _pixel_accuracy(s: dict[str, Any]) -> float | None:
    if s.get("pixel_accuracy") is not None:
        return s["pixel_accuracy"]
    return (s.get("classification_report") or {}).get("accuracy", {}).get("accuracy")  # evaluations written before pixel_accuracy


def _report(avg: str, key: str) -> Any:
    return lambda s: s["classification_report"][avg][key]


register_score("test_loss", "test loss", lambda s: s["loss"]["mean"], direction="lower", digits=4, group="loss")
register_score("pixel_accuracy", "pixel accuracy", _pixel_accuracy, group="classification")
for _avg in ("macro", "weighted"):
    for _key, _label in (("precision", "P"), ("recall", "R"), ("f1", "F1")):
        register_score(f"{_avg}_{_key}", f"{_avg} {_label}", _report(f"{_avg} avg", _key), group="classification")
