"""The run folder: what a finished (or running) training leaves for people and later stages.

Layout::

    RUN/
      config.yaml        the resolved config (enough to rebuild the model and pipeline)
      run.json           status, data set path, timings, best metric, model size
      splits.json        the split actually used
      preprocess.json    the preprocessing recipe (when data.preprocess is enabled), inverted by predictions
      checkpoints/       best.ckpt, last.ckpt (written to a temp file and renamed)
      logs/metrics.csv   every logged value (Lightning CSV logger)
      history.csv        one row per epoch: losses, Dice per class, lr, epoch time
      curves.png         loss and Dice curves, refreshed every epoch
      eval/<split>/      metrics.csv, summary.json, predictions/ (``medseg evaluate``)
      report/index.html  self-contained report (``medseg report``)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

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
