"""The run folder: what a finished (or running) training leaves for people and later stages.

Layout::

    RUN/
      config.yaml        the resolved config (enough to rebuild the model and pipeline)
      run.json           status, data set path, timings, best metric, model size
      splits.json        the split actually used
      preprocess.json    the preprocessing recipe (when data.preprocess is enabled), inverted by predictions
      checkpoints/       best.ckpt, last.ckpt (written to a temp file and renamed)
      logs/metrics.csv   every logged value (Lightning CSV logger)
      history.csv        one row per epoch: losses, Dice per class, pixel accuracy, lr, epoch time
      curves.png         loss, Dice and pixel accuracy curves, refreshed every epoch
      eval/<split>/      metrics.csv, summary.json, predictions/ (``medseg evaluate``)
      report/index.html  self-contained report (``medseg report``)
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import Config, load_config
from medseg.core.atomic import write_json
from medseg.core.errors import RunError
from medseg.data.store import Dataset, load_dataset

RUN_FILE = "run.json"
PREPROCESS_FILE = "preprocess.json"  # the preprocessing recipe of the training cache, inverted at prediction
CONFIG_FILE = "config.yaml"


def prepare_run_dir(out: Path, config: Config, overwrite: bool) -> Path:
    """Create ``out`` for a new run; refuse a folder holding another run unless ``overwrite``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        holds_run = (out / CONFIG_FILE).exists() or (out / RUN_FILE).exists()
        if not overwrite:
            what = "another run" if holds_run else "files that are not a medseg run"
            raise RunError(f"output folder already holds {what}", where=out, fix="choose another --out, or pass --overwrite to replace it")
        if not holds_run:
            raise RunError("refusing to delete a folder that is not a medseg run", where=out, fix="choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / CONFIG_FILE)
    return out


def read_run(run_dir: str | Path) -> tuple[Config, dict[str, Any]]:
    """Load a run's config and ``run.json``; raise a ``RunError`` naming what is missing."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError("not a run folder (no config.yaml)", where=run_dir, fix="give a folder written by `medseg train`")
    config = load_config(run_dir / CONFIG_FILE)
    info: dict[str, Any] = {}
    if (run_dir / RUN_FILE).is_file():
        info = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    return config, info


def update_run(run_dir: Path, **fields: Any) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    info.update(fields)
    write_json(path, info)
    return info


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / f"{which}.ckpt"
    if not path.is_file():
        alt = run_dir / "checkpoints" / "last.ckpt"
        if which == "best" and alt.is_file():
            return alt
        raise RunError(f"no {which} checkpoint", where=path, fix="train the run first (`medseg train`), or let it finish an epoch")
    return path


def run_dataset(run_dir: Path, info: dict[str, Any], config: Any) -> Dataset:
    from medseg.data.source import resolve_dataset

    path = info.get("dataset")
    if path and Path(path).is_dir():
        return load_dataset(path)
    return load_dataset(resolve_dataset(config))


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
    path = run_dir / "history.csv"
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
    ev = run_dir / "eval" / split
    if not (ev / "summary.json").is_file() or not (ev / "metrics.csv").is_file():
        raise RunError(f"run has no evaluation on the {split} split", where=run_dir, fix=f"run `medseg evaluate {run_dir} --split {split}` first")
    summary = json.loads((ev / "summary.json").read_text(encoding="utf-8"))
    rows = read_metrics(ev / "metrics.csv")
    return RunResult(run_dir, split, config.name, config, info, summary, rows, read_history(run_dir))


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders as given; a sweep folder (``sweep.json``) stands for its finished runs."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "sweep.json").is_file() and not (p / "config.yaml").is_file():
            sweep = json.loads((p / "sweep.json").read_text(encoding="utf-8"))
            runs = [p / "runs" / r["name"] for r in sweep.get("runs", []) if r.get("status") == "finished" and (p / "runs" / r["name"] / "run.json").is_file()]
            if not runs:
                raise RunError("sweep folder holds no finished run", where=p, fix=f"run the sweep first (`medseg sweep ... --out {p}`)")
            out += runs
        else:
            out.append(p)
    return out
