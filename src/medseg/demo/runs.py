"""What the demo reads from a folder of runs: run discovery, per-case metrics, predictions, safe file paths.

Everything here is plain Python (no web framework), so it is tested without a browser.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from medseg import runs
from medseg.core.errors import MedsegError, RunError

#: the evaluation split the demo shows
SPLIT = "test"


class DemoError(MedsegError):
    """A request to the demo cannot be served (unknown run, bad path, unreadable upload)."""


def safe_path(root: str | Path, relative: str) -> Path:
    """Resolve ``relative`` inside ``root``, refusing anything that would leave it.

    Absolute paths, ``..`` components and symbolic links that point outside ``root`` are refused
    (the path is resolved, links included, and must still lie inside the resolved root).

    Args:
        root: the folder files may be served from.
        relative: the requested path, relative to ``root``.

    Returns:
        The resolved path of an existing regular file inside ``root``.

    Raises:
        DemoError: the path is absolute, escapes ``root`` or is not a file.
    """
    base = Path(root).resolve()
    text = str(relative).replace("\\", "/")
    if not text or text.startswith("/") or os.path.isabs(text) or (len(text) > 1 and text[1] == ":"):
        raise DemoError("absolute paths are not served", where=relative, fix="ask for a path relative to the runs folder")
    if any(part == ".." for part in text.split("/")) or "\x00" in text:
        raise DemoError("paths leaving the runs folder are not served", where=relative, fix="ask for a file inside the runs folder")
    target = (base / text).resolve()
    try:
        target.relative_to(base)
    except ValueError:
        raise DemoError("the path leads outside the runs folder (a symbolic link?)", where=relative, fix="copy the file into the runs folder") from None
    if not target.is_file():
        raise DemoError("no such file", where=relative, fix="check the link")
    return target


def _float(v: Any) -> float:
    return float(v) if isinstance(v, int | float) else math.nan


@dataclass
class RunView:
    """One run folder as the demo shows it (metadata is read once; cases on demand), read through
    :mod:`medseg.runs`; predictions come from the run's :class:`~medseg.engine.inferer.Inferer`.

    Args:
        root: the runs folder.
        path: this run's folder.
    """

    root: Path
    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _inferer: Any = field(default=None, repr=False)
    _losses: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def rel(self) -> str:
        """The run folder relative to the runs folder (``""`` when the runs folder is the run itself)."""
        rel = self.path.relative_to(self.root).as_posix()
        return "" if rel == "." else rel

    @property
    def name(self) -> str:
        return self.rel or self.path.name

    @cached_property
    def info(self) -> dict[str, Any]:
        return runs.read_info(self.path)

    @cached_property
    def config(self) -> Any:
        return runs.read_run(self.path)[0]

    @cached_property
    def dataset(self) -> Any:
        return runs.run_dataset(self.path, self.info, self.config)

    _fresh: dict[tuple[str, str], tuple[float, Any]] = field(default_factory=dict, repr=False)

    def _read_fresh(self, key: str, split: str, path: Path, read: Any) -> Any:
        """``read()``, cached until ``path`` changes (a run evaluated after the page loaded shows its scores)."""
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            mtime = -1
        hit = self._fresh.get((key, split))
        if hit is not None and hit[0] == mtime:
            return hit[1]
        value = read()
        self._fresh[(key, split)] = (mtime, value)
        return value

    @property
    def eval_dir(self) -> Path:
        return runs.eval_dir(self.path, SPLIT)

    @property
    def summary(self) -> dict[str, Any]:
        return self.summary_of(SPLIT)

    def summary_of(self, split: str) -> dict[str, Any]:
        """``eval/<split>/summary.json`` (empty if not evaluated), re-read when the file changes."""
        return self._read_fresh("summary", split, runs.eval_dir(self.path, split) / runs.SUMMARY_FILE, lambda: runs.read_summary(self.path, split))

    @property
    def metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        return self.metrics_of(SPLIT)

    def metrics_of(self, split: str) -> dict[str, dict[str, dict[str, float]]]:
        """case → class → column → value, from ``eval/<split>/metrics.csv`` (empty if not evaluated)."""
        p = runs.eval_dir(self.path, split) / runs.METRICS_FILE

        def read() -> dict[str, dict[str, dict[str, float]]]:
            out: dict[str, dict[str, dict[str, float]]] = {}
            if not p.is_file():
                return out
            for row in runs.read_metrics(p):
                case, cls = str(row.pop("case", "")), str(row.pop("class", ""))
                row.pop("patient", None)
                out.setdefault(case, {})[cls] = {k: _float(v) for k, v in row.items()}
            return out

        return self._read_fresh("metrics", split, p, read)

    @property
    def case_ids(self) -> list[str]:
        return self.case_ids_of(SPLIT)

    def case_ids_of(self, split: str) -> list[str]:
        """The cases of ``split``: those scored in its ``metrics.csv``, else the run's split."""
        metrics = self.metrics_of(split)
        if metrics:
            return list(metrics)
        try:
            return runs.split_ids(self.path, self.dataset, split, self.config.data.split.fold)
        except Exception:
            return []

    def case_dice(self, case_id: str, split: str = SPLIT) -> float:
        """Mean Dice over the classes of one case (NaN when unknown)."""
        vals = [m.get("dice", math.nan) for m in self.metrics_of(split).get(case_id, {}).values()]
        vals = [v for v in vals if not math.isnan(v)]
        return float(np.mean(vals)) if vals else math.nan

    @property
    def mtime(self) -> float:
        """When the run last changed (its run.json, else its config): the newest run is the default choice."""
        for name in (runs.RUN_FILE, runs.CONFIG_FILE):
            try:
                return (self.path / name).stat().st_mtime
            except OSError:
                continue
        return 0.0

    @property
    def spatial_dims(self) -> int:
        return int(self.dataset.info.dims)

    def inferer(self) -> Any:
        """The run's inferer (its best checkpoint, loaded once, on the CPU)."""
        with self._lock:
            if self._inferer is None:
                from medseg.engine.load import load_inferer

                self._inferer = load_inferer(self.path, device="cpu")
            return self._inferer

    def prediction(self, case: Any, split: str = SPLIT) -> np.ndarray:
        """The saved prediction of ``case`` on ``split``, or a fresh one when none was saved."""
        label = runs.read_prediction(self.path, split, case.case_id)
        if label is not None and label.shape[-case.ndim :] == case.spatial_shape:
            return label
        return self.inferer().predict(case)

    def case_loss(self, case: Any) -> float:
        """The run's training loss on one case (computed once, NaN when it cannot be computed)."""
        if case.case_id in self._losses:
            return self._losses[case.case_id]
        try:  # as `medseg evaluate` records it: the run's loss on the probabilities on the case's grid
            from medseg.engine.case_loss import probability_loss

            inferer = self.inferer()
            value = probability_loss(inferer.nets[0], inferer.probabilities(case), case)
        except Exception:
            value = math.nan
        self._losses[case.case_id] = value
        return value

    def row(self) -> dict[str, Any]:
        """One line of the comparison table."""
        info, s = self.info, self.summary
        per_class = {name: (e.get("dice") or {}).get("mean") for name, e in (s.get("per_class") or {}).items()}
        report = f"{runs.REPORT_DIR}/index.html"
        return {
            "run": self.name,
            "path": self.rel,
            "dataset": info.get("dataset_name", ""),
            "model": info.get("model", ""),
            "parameters": info.get("parameters"),
            "epochs": info.get("epochs_run"),
            "train_time_s": info.get("train_time_s"),
            "best_val": (info.get("best_metric") or {}).get("value"),
            "mean_dice": s.get("mean_dice"),
            "per_class_dice": per_class,
            "seconds_per_case": s.get("seconds_per_case"),
            "n_cases": s.get("n_cases"),
            "report": report if (self.path / report).is_file() else None,
            "curves": runs.CURVES_FILE if (self.path / runs.CURVES_FILE).is_file() else None,
        }


class RunsFolder:
    """The runs below one folder (any depth up to 3), found by their ``config.yaml`` + ``checkpoints/``.

    Args:
        root: the folder given to ``medseg demo``.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise RunError("runs folder does not exist", where=root, fix="train a run first (`medseg quickstart`) or give the folder holding runs")
        self._runs: dict[str, RunView] = {}
        self.refresh()

    def refresh(self) -> list[str]:
        """Re-scan the folder; keeps already opened runs (and their loaded models)."""
        found: dict[str, RunView] = {}
        candidates = [self.root] + [p for pat in ("*", "*/*", "*/*/*") for p in sorted(self.root.glob(pat)) if p.is_dir()]
        for p in candidates:
            if p.name.startswith(".") or not runs.is_run_dir(p, trained=True):
                continue
            try:
                p.resolve().relative_to(self.root)
            except ValueError:
                continue  # a symbolic link out of the runs folder
            rv = RunView(self.root, p)
            found[rv.name] = self._runs.get(rv.name, rv)
        self._runs = found
        return self.names

    @property
    def names(self) -> list[str]:
        return sorted(self._runs)

    @property
    def newest(self) -> str | None:
        """The run changed last (the page's default run)."""
        return max(self._runs, key=lambda n: (self._runs[n].mtime, n), default=None)

    def get(self, name: str | None) -> RunView:
        if not name or name not in self._runs:
            raise DemoError(f"no run named {name!r}", where=self.root, fix=f"pick one of: {', '.join(self.names) or '(none)'}")
        return self._runs[name]

    def table(self) -> list[dict[str, Any]]:
        return [self._runs[n].row() for n in self.names]
