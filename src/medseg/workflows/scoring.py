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
from medseg.metrics.overlap import (
    classification_report,
    classification_report_from_counts,
    confusion_counts,
    confusion_matrix,
)
from medseg.metrics.registry import METRICS, CaseMasks
from medseg.metrics.summary import json_float, summarize


def metric_columns(cfg: EvalConfig) -> list[str]:
    """The ``metrics.csv`` columns produced under ``cfg``: those of every enabled registered metric, in order."""
    return [c.name for c in METRICS.columns(cfg)]


def score_case(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Sequence[int],
    names: Sequence[str],
    spacing: Sequence[float],
    *,
    cfg: EvalConfig,
    multi_label: bool = False,
    ignore: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every enabled registered metric of one case, as arrays of length ``len(classes)``.

    Voxels where ``ignore`` is true (the reference holds the ignore label) are left out of every
    metric, as nnU-Net does: both masks are background there and voxel counts skip them.

    Args:
        pred, ref: label maps of class indices, or boolean stacks ``(K, ...)`` when ``multi_label``.
        classes: the scored classes (channels).
        names: their names (for per-class settings).
        spacing: voxel size per spatial axis in mm.
        cfg: the evaluation settings.
        multi_label: whether inputs are channel stacks.
        ignore: spatial mask of the ignored voxels, or None.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    valid = None
    if ignore is not None and ignore.any():
        pred, ref = without_ignored(pred, ignore), without_ignored(ref, ignore)
        valid = ~ignore
    masks = CaseMasks(pred, ref, list(classes), list(names), tuple(float(s) for s in spacing), multi_label, valid)
    out: dict[str, np.ndarray] = {}
    for metric in METRICS.enabled(cfg):
        out.update(metric.score(masks, cfg))
    return out


def without_ignored(arr: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """A copy of a label map (or channel stack) that is background (0 / false) where ``ignore`` is true."""
    out = arr.copy()
    if out.ndim == ignore.ndim:
        out[ignore] = 0
    else:
        out[:, ignore] = False
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
    """Rows, pixel-level counts and (runs only) the loss of each case, gathered case by case.

    ``summary.json`` gets, besides the registered metrics' summaries, ``pixel_accuracy`` (voxels whose
    predicted class is the reference class, over all voxels and cases, background included; for
    multi-label data, voxel × channel decisions), the classification report and, when losses were
    added, ``loss``: the mean, std and ``n`` over cases of the run's loss and its value per case.
    """

    names: list[str]
    columns: list[str]
    id_columns: list[str]
    all_names: list[str]
    multi_label: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    matrix: np.ndarray | None = None
    ml_counts: np.ndarray | None = None
    losses: dict[str, float] = field(default_factory=dict)
    loss_name: str = ""

    def add(self, ids: dict[str, str], pred: np.ndarray, ref: np.ndarray, m: dict[str, np.ndarray], ignore: np.ndarray | None = None) -> None:
        """One case's rows and voxel counts (voxels where ``ignore`` is true left out)."""
        for i, name in enumerate(self.names):
            self.rows.append({**ids, "class": name, **{k: float(m[k][i]) for k in self.columns}})
        valid = None if ignore is None else ~ignore
        if self.multi_label:
            c = confusion_counts(pred, ref, list(range(len(self.all_names))), multi_label=True, valid=valid)
            self.ml_counts = c if self.ml_counts is None else self.ml_counts + c
        else:
            if valid is not None:
                pred, ref = pred[valid], ref[valid]
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
            right, total = float(counts[:, 0].sum() + counts[:, 3].sum()), float(counts.sum())  # voxel × channel decisions
            write_text(tmp / "confusion_matrix.csv", _csv(["class", "tp", "fp", "fn", "tn"], [[n, *map(int, counts[i])] for i, n in enumerate(self.all_names)]))
        else:
            mat = self.matrix if self.matrix is not None else np.zeros((len(self.all_names),) * 2, dtype=np.int64)
            report = classification_report(mat, self.all_names)
            right, total = float(np.trace(mat)), float(mat.sum())
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
            "pixel_accuracy": right / total if total else None,
            "classification_report": report,
        }
        if self.losses:
            values = np.array(list(self.losses.values()), dtype=np.float64)
            finite = values[np.isfinite(values)]
            summary["loss"] = {
                "name": self.loss_name,
                "mean": float(finite.mean()) if finite.size else None,
                "std": float(finite.std()) if finite.size else None,
                "n": int(finite.size),
                "per_case": {c: json_float(v) for c, v in self.losses.items()},
            }
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "eval_config.yaml", yaml.safe_dump({"eval": cfg.model_dump(mode="json"), "source": source}, sort_keys=False, allow_unicode=True))
        return summary


def conventions(cfg: EvalConfig) -> dict[str, str]:
    """One line per convention in force, from every enabled metric (recorded in ``summary.json``; see docs/metrics.md)."""
    out: dict[str, str] = {}
    for metric in METRICS.enabled(cfg):
        if metric.conventions is not None:
            out |= metric.conventions(cfg)
    return out
