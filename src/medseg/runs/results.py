"""Evaluated runs as one record each (for compare, reports and sweeps): config, run.json, history,
``eval/<split>/summary.json`` and ``metrics.csv``; sweep folders expanded to their finished runs."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import Config
from medseg.core.errors import RunError
from medseg.runs.folder import read_run
from medseg.runs.layout import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, RUN_FILE, SUMMARY_FILE, SWEEP_FILE, eval_dir


@dataclass
class RunResult:
    """One evaluated run, as read from its folder."""

    path: Path
    split: str
    label: str
    config: Config
    info: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    history: list[dict[str, float]]

    @property
    def classes(self) -> list[str]:
        return list(self.summary.get("classes") or self.summary["per_class"])

    def per_case(self, cls: str | None = None, by: str = "case") -> dict[str, float]:
        """Dice per case (mean over classes when ``cls`` is None), or per patient when ``by="patient"``."""
        vals: dict[str, list[float]] = {}
        for r in self.rows:
            if cls is not None and r["class"] != cls:
                continue
            d = r["dice"]
            if math.isfinite(d):
                vals.setdefault(r["case"], []).append(d)
        per_case = {c: float(np.mean(v)) for c, v in vals.items()}
        if by == "case":
            return per_case
        patient = {r["case"]: r.get("patient") or r["case"] for r in self.rows}
        groups: dict[str, list[float]] = {}
        for c, v in per_case.items():
            groups.setdefault(patient[c], []).append(v)
        return {p: float(np.mean(v)) for p, v in groups.items()}


def _num(v: str) -> Any:
    if v in ("", None):
        return math.nan
    try:
        return float(v)
    except ValueError:
        return v


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """``history.csv`` as a list of rows of floats (empty if absent)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """``metrics.csv`` rows: ``case``, ``patient``, ``class`` as text, every metric as float."""
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: (v if k in ("case", "patient", "class") else _num(v)) for k, v in r.items()} for r in csv.DictReader(fh)]


def load_result(run_dir: str | Path, split: str = "test") -> RunResult:
    """Read a run folder and its evaluation on ``split``.

    Raises:
        RunError: not a run folder, or no evaluation on ``split`` (the fix names the command).
    """
    run_dir = Path(run_dir)
    config, info = read_run(run_dir)
    ev = eval_dir(run_dir, split)
    if not (ev / SUMMARY_FILE).is_file() or not (ev / METRICS_FILE).is_file():
        raise RunError(f"run has no evaluation on the {split} split", where=run_dir, fix=f"run `medseg evaluate {run_dir} --split {split}` first")
    summary = json.loads((ev / SUMMARY_FILE).read_text(encoding="utf-8"))
    rows = read_metrics(ev / METRICS_FILE)
    return RunResult(run_dir, split, config.name, config, info, summary, rows, read_history(run_dir))


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders as given; a sweep folder (``sweep.json``) stands for its finished runs."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / SWEEP_FILE).is_file() and not (p / CONFIG_FILE).is_file():
            sweep = json.loads((p / SWEEP_FILE).read_text(encoding="utf-8"))
            runs = [p / "runs" / r["name"] for r in sweep.get("runs", []) if r.get("status") == "finished" and (p / "runs" / r["name"] / RUN_FILE).is_file()]
            if not runs:
                raise RunError("sweep folder holds no finished run", where=p, fix=f"run the sweep first (`medseg sweep ... --out {p}`)")
            out += runs
        else:
            out.append(p)
    return out
