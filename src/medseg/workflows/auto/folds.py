"""``medseg auto --folds 5``: patient-grouped 5-fold cross-validation, out-of-fold metrics, one ensemble.

Each fold is a normal run folder (``RUN/folds/fold_<k>``; with ``--ray`` the folds are Ray tasks, as a sweep's
grid points are, under ``RUN/folds/runs/``). The out-of-fold Dice is each case's Dice from the fold that did not
train on it. ``RUN/ensemble.json`` lists the five runs: ``medseg predict RUN`` averages their probabilities.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.core.atomic import write_json


def _fold_raw(raw: dict[str, Any], k: int, n: int) -> dict[str, Any]:
    r = copy.deepcopy(raw)
    r["data"]["split"].update(ratios=[0.8, 0.2, 0.0], n_folds=n, fold=k)
    r["name"] = f"{raw['name']}-fold{k}"
    return r


def train_folds(auto: Any, raw: dict[str, Any], n: int, *, ray: str | None, progress: bool, train: Callable[..., Path]) -> Path:
    """Train the ``n`` folds (resumable), score them out of fold, write ``ensemble.json``; returns fold 0's run."""
    import numpy as np

    from medseg.runs import ENSEMBLE_FILE, METRICS_FILE
    from medseg.runs.results import read_metrics
    from medseg.workflows.evaluate import evaluate_run

    root = auto.out / "folds"
    if ray is not None and not auto.done("folds"):
        from medseg.workflows.search import run_ray

        base = _fold_raw(raw, 0, n)
        run_ray(base, {"data.split.fold": list(range(n))}, root, ray, evaluate=False)
        dirs = sorted(p.parent for p in (root / "runs").glob("*/run.json"))
    else:
        dirs = []
        for k in range(n):
            d = root / f"fold_{k}"
            if not auto.done(f"train.fold{k}"):
                auto.echo(f"training fold {k + 1}/{n}…")
                train(auto, _fold_raw(raw, k, n), d, progress)
                auto.finish(f"train.fold{k}")
            dirs.append(d)
    per_case: dict[str, list[float]] = {}
    for d in dirs:  # a case's rows (one per class) come from the one fold that validated on it
        for row in read_metrics(evaluate_run(d, split="val", progress=False) / METRICS_FILE):
            v = row.get("dice")
            if isinstance(v, float) and v == v:
                per_case.setdefault(str(row["case"]), []).append(v)
    oof = {c: float(np.mean(v)) for c, v in per_case.items()}
    members = [str(d.resolve()) for d in dirs]
    write_json(auto.out / ENSEMBLE_FILE, {"runs": members, "why": f"{n}-fold cross-validation: the folds predict together (mean of probabilities)"})
    auto.decide("ensemble", members, f"the {n} fold models predict as one ensemble")
    mean = float(np.mean(list(oof.values()))) if oof else float("nan")
    auto.finish("folds", out_of_fold_dice=mean, cases=oof)
    auto.echo(f"out-of-fold mean Dice {mean:.4f} over {len(oof)} case(s)")
    return dirs[0]
