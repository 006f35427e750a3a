"""Scoring one case under the evaluation settings and writing an evaluation folder (metrics.csv, summary.json, reports)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medseg.config import EvalConfig
from medseg.core.atomic import write_json, write_text
from medseg.core.errors import ConfigError
from medseg.metrics.clinical import time_saved
from medseg.metrics.lesions import LESION_METRICS, lesion_counts_per_class
from medseg.metrics.overlap import (
    classification_report,
    classification_report_from_counts,
    confusion_counts,
    confusion_matrix,
    metrics_from_counts,
)
from medseg.metrics.summary import OVERLAP_COLUMNS, TIME_COLUMNS, summarize
from medseg.metrics.surface import SURFACE_METRICS, surface_metrics_per_class


def metric_columns(cfg: EvalConfig) -> list[str]:
    """The ``metrics.csv`` columns produced under ``cfg``."""
    cols = list(OVERLAP_COLUMNS)
    if cfg.surface.enabled:
        cols += SURFACE_METRICS
    if cfg.time_saved.enabled:
        cols += TIME_COLUMNS
    if cfg.lesions.enabled:
        cols += LESION_METRICS
    return cols


def _per_class_setting(values: dict[str, float], default: float, names: Sequence[str], field_name: str) -> list[float]:
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown class names {unknown}; the classes are {list(names)}", where=field_name, fix="use the class names of the data set")
    return [float(values.get(n, default)) for n in names]


def score_case(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Sequence[int],
    names: Sequence[str],
    spacing: Sequence[float],
    *,
    cfg: EvalConfig,
    multi_label: bool = False,
) -> dict[str, np.ndarray]:
    """Every enabled metric of one case, as arrays of length ``len(classes)``.

    Args:
        pred, ref: label maps of class indices, or boolean stacks ``(K, ...)`` when ``multi_label``.
        classes: the scored classes (channels).
        names: their names (for per-class settings).
        spacing: voxel size per spatial axis in mm.
        cfg: the evaluation settings.
        multi_label: whether inputs are channel stacks.
    """
    counts = confusion_counts(pred, ref, classes, multi_label)
    out = metrics_from_counts(counts, float(np.prod(spacing)))
    out.update(tp=counts[:, 0].astype(float), fp=counts[:, 1].astype(float), fn=counts[:, 2].astype(float))
    if cfg.surface.enabled:
        s = cfg.surface
        tol = _per_class_setting(s.class_tolerance_mm, s.tolerance_mm, names, "eval.surface.class_tolerance_mm")
        out.update(
            surface_metrics_per_class(
                pred,
                ref,
                classes,
                spacing=spacing,
                multi_label=multi_label,
                tolerances_mm=tol,
                percentile=s.percentile,
                hd95_mode=s.hd95_mode,
                assd_mode=s.assd_mode,
                nsd_mode=s.nsd_mode,
                empty_both=s.empty_both,
                empty_one=s.empty_one,
            )
        )
    if cfg.time_saved.enabled:
        t = cfg.time_saved
        draw = _per_class_setting(t.class_draw_seconds, t.draw_seconds, names, "eval.time_saved.class_draw_seconds")
        axis = min(t.slice_axis, len(spacing) - 1)
        res = time_saved(pred, ref, classes, multi_label, dice_threshold=t.dice_threshold, draw_seconds=draw, check_seconds=t.check_seconds, slice_axis=axis)
        out.update({k: v.astype(float) for k, v in res.items()})
    if cfg.lesions.enabled:
        lz = cfg.lesions
        res = lesion_counts_per_class(pred, ref, classes, multi_label, rule=lz.rule, iou_threshold=lz.iou_threshold, connectivity=lz.connectivity)
        out.update({k: v.astype(float) for k, v in res.items()})
    return out


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return int(v) if v.is_integer() and abs(v) < 2**53 else f"{v:.10g}"
    return v


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([_fmt(v) for v in r])
    return buf.getvalue()


@dataclass
class MetricTable:
    """Rows and pixel-level counts gathered case by case."""

    names: list[str]
    columns: list[str]
    id_columns: list[str]
    all_names: list[str]
    multi_label: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    matrix: np.ndarray | None = None
    ml_counts: np.ndarray | None = None

    def add(self, ids: dict[str, str], pred: np.ndarray, ref: np.ndarray, m: dict[str, np.ndarray]) -> None:
        for i, name in enumerate(self.names):
            self.rows.append({**ids, "class": name, **{k: float(m[k][i]) for k in self.columns}})
        if self.multi_label:
            c = confusion_counts(pred, ref, list(range(len(self.all_names))), multi_label=True)
            self.ml_counts = c if self.ml_counts is None else self.ml_counts + c
        else:
            c = confusion_matrix(pred, ref, len(self.all_names))
            self.matrix = c if self.matrix is None else self.matrix + c

    def write(self, tmp: Path, header: dict[str, Any], cfg: EvalConfig, source: dict[str, Any]) -> dict[str, Any]:
        write_text(
            tmp / "metrics.csv",
            _csv([*self.id_columns, "class", *self.columns], [[r[k] for k in [*self.id_columns, "class", *self.columns]] for r in self.rows]),
        )
        if self.multi_label:
            counts = self.ml_counts if self.ml_counts is not None else np.zeros((len(self.all_names), 4), dtype=np.int64)
            report = classification_report_from_counts(counts, self.all_names)
            write_text(tmp / "confusion_matrix.csv", _csv(["class", "tp", "fp", "fn", "tn"], [[n, *map(int, counts[i])] for i, n in enumerate(self.all_names)]))
        else:
            mat = self.matrix if self.matrix is not None else np.zeros((len(self.all_names),) * 2, dtype=np.int64)
            report = classification_report(mat, self.all_names)
            write_text(
                tmp / "confusion_matrix.csv", _csv(["reference \\ prediction", *self.all_names], [[n, *map(int, mat[i])] for i, n in enumerate(self.all_names)])
            )
        rep_rows = [
            [k, "", "", v["accuracy"], int(v["support"])] if "accuracy" in v else [k, v["precision"], v["recall"], v["f1"], int(v["support"])]
            for k, v in report.items()
        ]
        write_text(tmp / "classification_report.csv", _csv(["class", "precision", "recall", "f1", "support"], rep_rows))
        summary = {
            **header,
            "classes": self.names,
            "columns": self.columns,
            "conventions": conventions(cfg),
            **summarize(self.rows, self.names, self.columns),
            "classification_report": report,
        }
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "eval_config.yaml", yaml.safe_dump({"eval": cfg.model_dump(mode="json"), "source": source}, sort_keys=False, allow_unicode=True))
        return summary


def conventions(cfg: EvalConfig) -> dict[str, str]:
    """One line per convention in force (recorded in ``summary.json``; see docs/metrics.md)."""
    s = cfg.surface
    out = {
        "overlap_empty": "class absent from prediction and reference: Dice/IoU/precision/recall/F1 undefined (NaN), "
        "left out of means and counted as n_undefined; "
        "present in only one: 0",
        "volumes": "mm³ (mm² in 2D) from the voxel spacing",
    }
    if s.enabled:
        out |= {
            "surface": f"hd95_mode={s.hd95_mode}, assd_mode={s.assd_mode}, nsd_mode={s.nsd_mode}, percentile={s.percentile:g}, tolerance_mm={s.tolerance_mm:g}",
            "surface_empty_both": "NaN, left out of means" if s.empty_both == "nan" else "best value: distances 0, NSD 1",
            "surface_empty_one": {"worst": "distances = image diagonal in mm", "inf": "distances = inf", "nan": "distances NaN, left out of means"}[s.empty_one]
            + "; NSD 0",
        }
    if cfg.time_saved.enabled:
        t = cfg.time_saved
        out["time_saved"] = f"per slice × class: Dice ≥ {t.dice_threshold:g} saves {t.draw_seconds:g} s, below costs {t.check_seconds:g} s, absent from both: 0"
    if cfg.lesions.enabled:
        lz = cfg.lesions
        out["lesions"] = f"rule={lz.rule}" + (f" (IoU ≥ {lz.iou_threshold:g})" if lz.rule == "iou" else "") + f", connectivity={lz.connectivity}"
    return out
