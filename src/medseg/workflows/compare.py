"""Compare evaluated runs: one table (Markdown, CSV, HTML) plus paired statistics.

:func:`compare_runs` reads each run folder (``config.yaml``, ``run.json``, ``history.csv``) and its
evaluation on one split (``eval/<split>/summary.json`` + ``metrics.csv``) and returns a
:class:`Comparison`; :func:`medseg.reports.tables.write_comparison` writes it to a folder::

    comparison.md / comparison.csv / comparison.html   one row per run (+ reference rows)
    paired.csv                                         per pair of runs: mean Dice difference,
                                                       bootstrap 95 % CI, Wilcoxon p, n
    comparison.json                                    everything above, and the warnings

Paired statistics use the cases both runs were scored on. Runs scored on different case sets are
restricted to the intersection with a warning naming how many cases were dropped; runs of
different data sets, or without a common case, get no paired statistics (a warning says why).
The statistics live in :mod:`medseg.metrics.paired`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.errors import ConfigError, RunError
from medseg.metrics.paired import ALPHA, paired_stats
from medseg.metrics.registry import METRICS
from medseg.runs import RunResult, expand_runs, load_result, prediction_files, read_macs

#: Below this many paired cases (or patients) a warning says the test set is too small to tell.
MIN_PAIRED = 10
#: With more runs than this, each run is paired with the first one only (the baseline).
ALL_PAIRS_MAX = 4


@dataclass
class Comparison:
    """The table rows, the paired statistics and the warnings of one comparison."""

    split: str
    runs: list[RunResult]
    rows: list[dict[str, Any]]
    references: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    by: str = "case"


# ---------------------------------------------------------------- reading runs


# ---------------------------------------------------------------- statistics


# ---------------------------------------------------------------- the table


def _macs(result: RunResult) -> tuple[int | None, str]:
    """MACs of one forward pass, as recorded at training time (``run.json``), and the input size counted."""
    value, size = read_macs(result.path)
    return value, "×".join(map(str, size)) if value is not None else ""


def _sweep_sensitivity(result: RunResult) -> dict[str, Any] | None:
    """Spread of the best validation Dice over the runs of the same model in the run's sweep."""
    sweep = result.info.get("sweep")
    if not sweep:
        return None
    sdir = Path(sweep.get("dir", ""))
    path = sdir / "sweep.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    vals = [
        r["best_val_dice"]
        for r in data.get("runs", [])
        if r.get("group") == sweep.get("group") and isinstance(r.get("best_val_dice"), int | float) and math.isfinite(r["best_val_dice"])
    ]
    if len(vals) < 2:
        return None
    return {"n_runs": len(vals), "range": float(max(vals) - min(vals)), "std": float(np.std(vals)), "min": float(min(vals)), "max": float(max(vals))}


def _mean_std(entry: dict[str, Any] | None) -> tuple[float, float]:
    if not entry or entry.get("mean") is None or isinstance(entry.get("mean"), str):
        return math.nan, math.nan
    return float(entry["mean"]), math.nan if entry.get("std") is None else float(entry["std"])


def _macro(summary: dict[str, Any], metric: str) -> float:
    v = (summary.get("macro") or {}).get(metric)
    if v is None:
        vals = [float(e[metric]["mean"]) for e in summary["per_class"].values() if metric in e and isinstance(e[metric].get("mean"), int | float)]
        return float(np.mean(vals)) if vals else math.nan
    return math.inf if v == "inf" else float(v)


def table_row(result: RunResult, with_macs: bool = True) -> dict[str, Any]:
    """One row of the comparison table (numbers as floats; NaN when unknown)."""
    s, info, h = result.summary, result.info, result.history
    pcd = list((s.get("per_case_mean_dice") or {}).values())
    row: dict[str, Any] = {
        "run": result.label,
        "model": result.config.model.name,
        "parameters": info.get("parameters", math.nan),
    }
    if with_macs:
        m, size = _macs(result)
        row["macs"] = math.nan if m is None else m
        row["macs_input"] = size
    row["n_cases"] = s.get("n_cases", len(pcd))
    row["mean_dice"] = math.nan if s.get("mean_dice") is None else float(s["mean_dice"])
    row["mean_dice_std"] = float(np.std(pcd)) if pcd else math.nan
    for cls in result.classes:
        mean, std = _mean_std(s["per_class"][cls].get("dice"))
        row[f"dice_{cls}"] = mean
        row[f"dice_{cls}_std"] = std
    for col in METRICS.shown("compare"):  # macro means of the registered metrics the table shows
        row[col.name] = _macro(s, col.name)
    for col in METRICS.shown("compare_per_class"):
        for cls in result.classes:
            row[f"{col.name}_{cls}"] = _mean_std(s["per_class"][cls].get(col.name))[0]
    for score in METRICS.scores:  # run-level: test loss, pixel accuracy, pixel-level P/R/F1 averages
        row[score.name] = score.value(s)
    row["train_time_s"] = info.get("train_time_s", math.nan)
    row["epochs_run"] = info.get("epochs_run", math.nan)
    best = info.get("best_epoch")
    row["epochs_to_best"] = math.nan if best is None else int(best) + 1
    sps = [r["samples_per_s"] for r in h if isinstance(r.get("samples_per_s"), float) and math.isfinite(r["samples_per_s"])]
    row["train_samples_per_s"] = float(np.median(sps)) if sps else math.nan
    spc = s.get("seconds_per_case")
    row["latency_per_case_s"] = math.nan if spc is None else float(spc)
    slices = _slices_per_case(result)
    row["latency_per_slice_s"] = row["latency_per_case_s"] / slices if slices else math.nan
    mem = [r["peak_memory_mb"] for r in h if isinstance(r.get("peak_memory_mb"), float) and math.isfinite(r["peak_memory_mb"])]
    row["peak_memory_mb"] = max(mem) if mem else math.nan
    row["device"] = info.get("device", "")
    sens = _sweep_sensitivity(result)
    row["sensitivity_dice_range"] = math.nan if sens is None else sens["range"]
    row["sensitivity_n_runs"] = 0 if sens is None else sens["n_runs"]
    return row


def _slices_per_case(result: RunResult) -> float:
    """Mean number of 2D slices per evaluated case (1 for 2D data), from up to 20 saved predictions."""
    counts = []
    for f in prediction_files(result.path, result.split)[:20]:
        with np.load(f) as z:
            shape = z["label"].shape
            dims = int(z["affine"].shape[0]) - 1 if "affine" in z.files else len(shape)
        counts.append(shape[-3] if dims == 3 and len(shape) >= 3 else 1)
    return float(np.mean(counts)) if counts else 1.0


def _reference_rows(results: list[RunResult]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in results:
        for ref in r.config.eval.reference:
            if ref.name in seen:
                continue
            row: dict[str, Any] = {"run": f"reference: {ref.name}", "model": ref.note or "published", "parameters": ref.parameters or math.nan}
            row["mean_dice"] = math.nan if ref.dice is None else ref.dice
            for cls, v in ref.class_dice.items():
                row[f"dice_{cls}"] = v
            for col in METRICS.shown("compare"):
                v = getattr(ref, col.name, None)
                row[col.name] = math.nan if v is None else v
            row.update({k: float(v) for k, v in ref.metrics.items()})
            seen[ref.name] = row
    return list(seen.values())


def compare_runs(runs: list[str | Path], split: str = "test", by: str = "case", with_macs: bool = True, seed: int = 0) -> Comparison:
    """Read runs (or sweep folders) evaluated on ``split`` and build the comparison.

    Args:
        runs: run folders; a sweep folder stands for its finished runs.
        split: the evaluated split to compare.
        by: paired unit, ``"case"`` or ``"patient"`` (per-case Dice averaged per patient first;
            use it when a patient contributes several cases, which are not independent).
        with_macs: show the multiply-accumulates recorded at training time.
        seed: bootstrap seed.

    Returns:
        The :class:`Comparison` (nothing written; see :func:`write_comparison`).

    Raises:
        RunError: a run is missing or not evaluated on ``split``.
        ConfigError: bad ``by``.
    """
    if by not in ("case", "patient"):
        raise ConfigError(f"unknown paired unit {by!r}", where="--by", fix="use case or patient")
    paths = expand_runs(runs)
    if not paths:
        raise RunError("no run to compare", where="RUN", fix="give one or more run folders")
    results = []
    for p in paths:
        results.append(load_result(p, split))
    _unique_labels(results)
    warnings: list[str] = []
    rows = [table_row(r, with_macs) for r in results]
    paired: list[dict[str, Any]] = []
    n = len(results)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if n <= ALL_PAIRS_MAX else [(0, j) for j in range(1, n)]
    pair_warnings: dict[str, list[str]] = {}
    for i, j in pairs:
        a, b = results[i], results[j]
        found: list[str] = []
        paired += _pair(a, b, by, seed, found)
        for w in found:
            pair_warnings.setdefault(w, []).append(f"{a.label} vs {b.label}")
    for w, who in pair_warnings.items():
        warnings.append(f"{who[0]}: {w}" if len(who) == 1 else f"{w} ({'every pair' if len(who) == len(pairs) else '; '.join(who)})")
    if n > ALL_PAIRS_MAX:
        warnings.append(f"{n} runs: each is paired with the first ({results[0].label}) only")
    return Comparison(split, results, rows, _reference_rows(results), paired, warnings, by)


def _unique_labels(results: list[RunResult]) -> None:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.label] = counts.get(r.label, 0) + 1
    for r in results:
        if counts[r.label] > 1:
            r.label = f"{r.label} ({r.path.name})"
    seen: dict[str, int] = {}
    for r in results:  # still equal (same name, same folder name): number them
        if r.label in seen:
            seen[r.label] += 1
            r.label = f"{r.label} #{seen[r.label]}"
        else:
            seen[r.label] = 1


def _pair(a: RunResult, b: RunResult, by: str, seed: int, warnings: list[str]) -> list[dict[str, Any]]:
    da, db = a.info.get("dataset"), b.info.get("dataset")
    if da and db and da != db:
        warnings.append(f"trained on different data sets ({da} vs {db}); no paired statistics")
        return []
    ca, cb = set(a.per_case()), set(b.per_case())
    common = ca & cb
    if not common:
        warnings.append("no case evaluated by both; no paired statistics (evaluate both on the same split)")
        return []
    if ca != cb:
        warnings.append(f"evaluated on different case sets ({len(ca)} vs {len(cb)} cases); paired statistics use the {len(common)} cases both share")
    out = []
    for cls in [None, *[c for c in a.classes if c in b.classes]]:
        pa = {k: v for k, v in a.per_case(cls, "case").items() if k in common}
        pb = {k: v for k, v in b.per_case(cls, "case").items() if k in common}
        if by == "patient":
            patient = {r["case"]: r.get("patient") or r["case"] for r in a.rows}
            pa, pb = _by_patient(pa, patient), _by_patient(pb, patient)
        st = paired_stats(pa, pb, seed)
        st = {"a": a.label, "b": b.label, "class": "mean" if cls is None else cls, "unit": by, **st}
        out.append(st)
        if cls is None:
            n = st["n"]
            if st["min_p"] > 0.05:
                warnings.append(f"only {n} paired {by}s — the Wilcoxon test cannot reach p < {ALPHA:g}; the test set is too small to tell")
            elif n < MIN_PAIRED:
                warnings.append(f"only {n} paired {by}s — too few to tell reliably; evaluate on more cases")
            n_pat = len({r.get("patient") or r["case"] for r in a.rows if r["case"] in common})
            if by == "case" and n_pat < n:
                warnings.append(f"{n} cases come from {n_pat} patients and are not independent; see also --by patient")
    return out


def _by_patient(values: dict[str, float], patient: dict[str, str]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for c, v in values.items():
        groups.setdefault(patient.get(c, c), []).append(v)
    return {p: float(np.mean(v)) for p, v in groups.items()}


# ---------------------------------------------------------------- output
