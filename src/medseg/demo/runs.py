"""What the demo reads from a folder of runs: run discovery, per-case metrics, predictions, safe file paths.

Everything here is plain Python (no web framework), so it is tested without a browser.
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

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


def _num(v: str | None) -> float:
    if v is None or v == "":
        return math.nan
    try:
        return float(v)
    except ValueError:
        return math.nan


@dataclass
class RunView:
    """One run folder as the demo shows it (metadata is read once; cases on demand).

    Args:
        root: the runs folder.
        path: this run's folder.
    """

    root: Path
    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _module: Any = field(default=None, repr=False)
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
        p = self.path / "run.json"
        try:
            return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
        except (OSError, json.JSONDecodeError):
            return {}

    @cached_property
    def config(self) -> Any:
        from medseg.runs import read_run

        return read_run(self.path)[0]

    @cached_property
    def dataset(self) -> Any:
        from medseg.runs import run_dataset

        return run_dataset(self.path, self.info, self.config)

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval" / SPLIT

    @cached_property
    def summary(self) -> dict[str, Any]:
        p = self.eval_dir / "summary.json"
        try:
            return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
        except (OSError, json.JSONDecodeError):
            return {}

    @cached_property
    def metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """case → class → column → value, from ``eval/test/metrics.csv`` (empty if not evaluated)."""
        p = self.eval_dir / "metrics.csv"
        out: dict[str, dict[str, dict[str, float]]] = {}
        if not p.is_file():
            return out
        with open(p, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                case, cls = row.pop("case", ""), row.pop("class", "")
                row.pop("patient", None)
                out.setdefault(case, {})[cls] = {k: _num(v) for k, v in row.items()}
        return out

    @cached_property
    def case_ids(self) -> list[str]:
        """The test cases: those scored in ``metrics.csv``, else the run's test split."""
        if self.metrics:
            return list(self.metrics)
        try:
            from medseg.data.splits import load_splits, select

            return list(select(load_splits(self.path / "splits.json", self.dataset.patients), SPLIT, self.config.data.split.fold))
        except Exception:
            return []

    def case_dice(self, case_id: str) -> float:
        """Mean Dice over the classes of one case (NaN when unknown)."""
        vals = [m.get("dice", math.nan) for m in self.metrics.get(case_id, {}).values()]
        vals = [v for v in vals if not math.isnan(v)]
        return float(np.mean(vals)) if vals else math.nan

    @property
    def spatial_dims(self) -> int:
        return int(self.dataset.info.dims)

    def module(self) -> Any:
        """The trained model (loaded once, CPU unless the config says otherwise)."""
        with self._lock:
            if self._module is None:
                from medseg.engine.inferer import load_module

                self._module = load_module(self.path, "best", "cpu")
            return self._module

    def prediction(self, case: Any) -> np.ndarray:
        """The saved test prediction of ``case``, or a fresh one when none was saved."""
        p = self.eval_dir / "predictions" / f"{case.case_id}.npz"
        if p.is_file():
            try:
                with np.load(p, allow_pickle=False) as z:
                    label = z["label"]
                if label.shape[-case.ndim :] == case.spatial_shape:
                    return label
            except (OSError, ValueError, KeyError):
                pass
        from medseg.engine.inferer import Predictor

        return Predictor(self.module()).predict(case)

    def case_loss(self, case: Any) -> float:
        """The run's training loss on one case (computed once, NaN when it cannot be computed)."""
        if case.case_id in self._losses:
            return self._losses[case.case_id]
        value = math.nan
        try:
            import torch

            from medseg.data.loading import label_to_target, normalize_image

            module = self.module()
            with torch.inference_mode():
                x = torch.as_tensor(normalize_image(case.image))[None].to(module.device)
                y = torch.as_tensor(label_to_target(case))[None].to(module.device)
                logits = module.predict_logits(x)
                value = float(module.loss_fn(logits, y))
        except Exception:
            value = math.nan
        self._losses[case.case_id] = value
        return value

    def row(self) -> dict[str, Any]:
        """One line of the comparison table."""
        info, s = self.info, self.summary
        per_class = {name: (e.get("dice") or {}).get("mean") for name, e in (s.get("per_class") or {}).items()}
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
            "report": "report/index.html" if (self.path / "report" / "index.html").is_file() else None,
            "curves": "curves.png" if (self.path / "curves.png").is_file() else None,
        }


class RunsFolder:
    """The runs below one folder (any depth up to 3), found by their ``config.yaml`` + ``run.json``.

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
            if p.name.startswith(".") or not (p / "config.yaml").is_file() or not (p / "checkpoints").is_dir():
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

    def get(self, name: str | None) -> RunView:
        if not name or name not in self._runs:
            raise DemoError(f"no run named {name!r}", where=self.root, fix=f"pick one of: {', '.join(self.names) or '(none)'}")
        return self._runs[name]

    def table(self) -> list[dict[str, Any]]:
        return [self._runs[n].row() for n in self.names]
