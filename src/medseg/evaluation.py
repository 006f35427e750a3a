"""Score a run on a split: per case × per class metrics → ``metrics.csv`` + ``summary.json``."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_dir, write_json, write_text
from medseg.data.pipeline import resolve_dataset
from medseg.data.splits import load_splits, select
from medseg.data.store import Dataset, load_dataset
from medseg.engine.infer import Predictor, load_module
from medseg.engine.run import read_run, update_run
from medseg.errors import RunError, SplitError
from medseg.metrics.overlap import overlap_metrics
from medseg.progress import track

METRIC_COLUMNS = ["dice", "iou", "precision", "recall", "specificity", "volume_pred", "volume_ref", "tp", "fp", "fn"]


def _dataset_of(run_dir: Path, info: dict[str, Any], config: Any) -> Dataset:
    path = info.get("dataset")
    if path and Path(path).is_dir():
        return load_dataset(path)
    return load_dataset(resolve_dataset(config))


def summarize(rows: list[dict[str, Any]], class_names: list[str]) -> dict[str, Any]:
    """Mean ± std per class and over foreground classes (NaN = undefined, left out)."""
    out: dict[str, Any] = {"per_class": {}}
    for name in class_names:
        sel = [r for r in rows if r["class"] == name]
        entry = {}
        for m in ("dice", "iou", "precision", "recall"):
            v = np.array([r[m] for r in sel], dtype=float)
            v = v[np.isfinite(v)]
            entry[m] = {"mean": float(v.mean()) if v.size else None, "std": float(v.std()) if v.size else None, "n": int(v.size)}
        out["per_class"][name] = entry
    means = [out["per_class"][n]["dice"]["mean"] for n in class_names if out["per_class"][n]["dice"]["mean"] is not None]
    out["mean_dice"] = float(np.mean(means)) if means else None
    per_case: dict[str, list[float]] = {}
    for r in rows:
        if np.isfinite(r["dice"]):
            per_case.setdefault(r["case"], []).append(r["dice"])
    out["per_case_mean_dice"] = {c: float(np.mean(v)) for c, v in per_case.items()}
    return out


def evaluate_run(run_dir: str | Path, split: str | None = None, checkpoint: str | None = None, progress: bool = True, save_predictions: bool = True) -> Path:
    """Predict every case of ``split`` with the run's model and score it.

    Writes ``RUN/eval/<split>/`` atomically: ``metrics.csv`` (case, patient, class, every metric),
    ``summary.json`` and ``predictions/<case>.npz`` (label + affine).

    Returns:
        The evaluation folder.
    """
    run_dir = Path(run_dir)
    config, info = read_run(run_dir)
    split = split or config.eval.split
    checkpoint = checkpoint or config.eval.checkpoint
    ds = _dataset_of(run_dir, info, config)
    if not (run_dir / "splits.json").is_file():
        raise RunError("run has no splits.json", where=run_dir, fix="re-run `medseg train`")
    splits = load_splits(run_dir / "splits.json", ds.patients)
    ids = select(splits, split, config.data.split.fold)
    if not ids:
        raise SplitError(f"the {split} set of this run is empty", where=run_dir / "splits.json", fix="evaluate another split (--split val)")
    module = load_module(run_dir, checkpoint, config.train.device)
    predictor = Predictor(module)
    scored = ds.info.foreground
    names = [ds.info.class_names[k] for k in scored]
    rows: list[dict[str, Any]] = []
    out = run_dir / "eval" / split
    t_total = 0.0
    with atomic_dir(out, overwrite=True) as tmp:
        if save_predictions:
            (tmp / "predictions").mkdir()
        for cid in track(ids, f"evaluate {split}", enabled=progress):
            case = ds.load_case(cid)
            t0 = time.perf_counter()
            pred = predictor.predict(case)
            t_total += time.perf_counter() - t0
            if save_predictions:
                with open(tmp / "predictions" / f"{cid}.npz", "wb") as fh:
                    np.savez_compressed(fh, label=pred, affine=case.affine)
            m = overlap_metrics(pred, case.label, scored, ds.info.multi_label, case.spacing)
            for i, name in enumerate(names):
                rows.append({"case": cid, "patient": case.patient_id, "class": name, **{k: float(m[k][i]) for k in METRIC_COLUMNS}})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["case", "patient", "class", *METRIC_COLUMNS])
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        write_text(tmp / "metrics.csv", buf.getvalue())
        summary = {
            "run": str(run_dir),
            "split": split,
            "checkpoint": checkpoint,
            "n_cases": len(ids),
            "classes": names,
            "empty_policy": "class absent from prediction and reference: metric undefined (NaN), left out of means",
            "seconds_per_case": t_total / len(ids),
            **summarize(rows, names),
        }
        write_json(tmp / "summary.json", summary)
    update_run(run_dir, **{f"eval_{split}": {"mean_dice": summary["mean_dice"], "n_cases": len(ids)}})
    return out
