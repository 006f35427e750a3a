"""Reading and writing the files of one run folder (layout in :mod:`medseg.runs.layout`).

Everything that opens a file inside a run folder — training, evaluation, prediction, compare,
reports, sweeps and the demo — goes through these functions, so a run folder is read one way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import Config, load_config
from medseg.core.atomic import atomic_path, is_temporary, write_json
from medseg.core.errors import RunError
from medseg.data.store import Dataset, load_dataset
from medseg.runs.layout import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    ENSEMBLE_FILE,
    POSTPROCESS_FILE,
    PREDICTIONS_DIR,
    PREPROCESS_FILE,
    RUN_FILE,
    SNAPSHOT_FILE,
    SNAPSHOTS_DIR,
    SPLITS_FILE,
    SUMMARY_FILE,
    checkpoint_file,
    eval_dir,
)


def _json(path: Path) -> dict[str, Any] | None:
    """A JSON file as a dict; None when it is missing or unreadable (a half-written or foreign file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------------------ config and run.json


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


def read_info(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` (empty when absent or unreadable)."""
    return _json(Path(run_dir) / RUN_FILE) or {}


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
    """Merge ``fields`` into ``run.json`` (written atomically) and return the whole record."""
    path = Path(run_dir) / RUN_FILE
    info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    info.update(fields)
    write_json(path, info)
    return info


def run_status(run_dir: str | Path) -> str:
    """``missing`` (no run.json), ``unknown`` (unreadable) or the recorded status (running, finished, failed…)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return "missing"
    info = _json(path)
    return "unknown" if info is None else str(info.get("status", "unknown"))


def read_macs(run_dir: str | Path) -> tuple[int | None, list[int]]:
    """Multiply-accumulates of one forward pass recorded at training time, and the input size counted."""
    m = read_info(run_dir).get("macs") or {}
    value = m.get("value")
    return (int(value) if isinstance(value, int | float) else None), [int(s) for s in m.get("input") or []]


# ------------------------------------------------------------------------------ checkpoints, data, splits


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """An existing checkpoint (``best`` falls back to ``last``); a ``RunError`` naming the fix otherwise."""
    path = checkpoint_file(run_dir, which)
    if not path.is_file():
        alt = checkpoint_file(run_dir, "last")
        if which == "best" and alt.is_file():
            return alt
        raise RunError(f"no {which} checkpoint", where=path, fix="train the run first (`medseg train`), or let it finish an epoch")
    return path


def has_checkpoint(run_dir: str | Path, which: str = "last") -> bool:
    return checkpoint_file(run_dir, which).is_file()


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def run_dataset(run_dir: Path, info: dict[str, Any], config: Any) -> Dataset:
    """The data set the run was trained on (the recorded folder, else the config's data set), as the run sees it:
    its ignore label and regions applied (:func:`medseg.data.source.configured`)."""
    from medseg.data.source import configured, resolve_dataset

    path = info.get("dataset")
    ds = load_dataset(path) if path and Path(path).is_dir() else load_dataset(resolve_dataset(config))
    return configured(ds, config)


def split_ids(run_dir: str | Path, ds: Dataset, split: str, fold: int | None = None) -> list[str]:
    """The case ids of ``split`` in the run's own ``splits.json`` (validated against the data set)."""
    from medseg.data.splits import load_splits, select

    path = Path(run_dir) / SPLITS_FILE
    if not path.is_file():
        raise RunError("run has no splits.json", where=run_dir, fix="re-run `medseg train`")
    return select(load_splits(path, ds.patients), split, fold)


def read_splits(run_dir: str | Path, ds: Dataset) -> dict[str, Any]:
    """The run's ``splits.json`` (empty when the run has none)."""
    from medseg.data.splits import load_splits

    path = Path(run_dir) / SPLITS_FILE
    return load_splits(path, ds.patients) if path.is_file() else {}


# ------------------------------------------------------------------------------ pre- and post-processing


def write_preprocess(run_dir: str | Path, spec: dict[str, Any]) -> Path:
    return write_json(Path(run_dir) / PREPROCESS_FILE, spec)


def read_preprocess(run_dir: str | Path) -> dict[str, Any] | None:
    """The preprocessing recipe the run trained on (None: each case was z-scored on its own grid)."""
    path = Path(run_dir) / PREPROCESS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_postprocessing(run_dir: str | Path, decision: dict[str, Any]) -> Path:
    return write_json(Path(run_dir) / POSTPROCESS_FILE, decision)


def read_postprocessing(run_dir: str | Path) -> list[int]:
    """Class indices whose largest connected component alone is kept (empty when nothing was decided)."""
    path = Path(run_dir) / POSTPROCESS_FILE
    return [int(k) for k in json.loads(path.read_text(encoding="utf-8"))["keep_largest"]] if path.is_file() else []


def read_tta(run_dir: str | Path) -> str:
    """The test-time mirroring decided on validation (``medseg auto``: ``all`` or ``none``); ``none`` when undecided."""
    data = _json(Path(run_dir) / POSTPROCESS_FILE)
    return str(data.get("tta", "none")) if data else "none"


def read_ensemble(run_dir: str | Path) -> list[Path]:
    """The member runs listed in ``RUN/ensemble.json`` (``medseg auto --folds 5``); empty for a single run."""
    data = _json(Path(run_dir) / ENSEMBLE_FILE)
    return [Path(r) for r in data.get("runs", [])] if data else []


# ------------------------------------------------------------------------------ evaluations


def read_summary(run_dir: str | Path, split: str) -> dict[str, Any]:
    """``eval/<split>/summary.json`` (empty when the run was not evaluated on ``split``)."""
    return _json(eval_dir(run_dir, split) / SUMMARY_FILE) or {}


def save_prediction(folder: Path, case_id: str, label: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``<folder>/<case>.npz`` (the label map and its affine), as ``medseg evaluate`` keeps them."""
    path = Path(folder) / f"{case_id}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a killed evaluation leaves no truncated prediction
        np.savez_compressed(fh, label=label, affine=affine)
    return path


def prediction_files(run_dir: str | Path, split: str) -> list[Path]:
    """The saved predictions of an evaluation, sorted by name (temporaries of unfinished writes are not predictions)."""
    return sorted(p for p in (eval_dir(run_dir, split) / PREDICTIONS_DIR).glob("*.npz") if not is_temporary(p))


def read_prediction(run_dir: str | Path, split: str, case_id: str) -> np.ndarray | None:
    """The label map ``medseg evaluate`` saved for a case (None when absent or unreadable)."""
    path = eval_dir(run_dir, split) / PREDICTIONS_DIR / f"{case_id}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["label"]
    except (OSError, ValueError, KeyError):
        return None


# ------------------------------------------------------------------------------ training snapshots


def write_snapshot(run_dir: str | Path, epoch: int, label: np.ndarray, meta: dict[str, Any]) -> Path:
    """``snapshots/epoch_NNNN.npz`` (a 2D label slice); ``snapshot.json`` (case, slice) on the first call."""
    folder = Path(run_dir) / SNAPSHOTS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"epoch_{epoch:04d}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, label=label, epoch=epoch)
    if not (folder / SNAPSHOT_FILE).exists():
        write_json(folder / SNAPSHOT_FILE, meta)
    return path


def read_snapshots(run_dir: str | Path) -> tuple[dict[str, Any], list[tuple[int, np.ndarray]]] | None:
    """``snapshots/snapshot.json`` and the per-epoch predictions, or None when the run has none."""
    d = Path(run_dir) / SNAPSHOTS_DIR
    if not (d / SNAPSHOT_FILE).is_file():
        return None
    meta = json.loads((d / SNAPSHOT_FILE).read_text(encoding="utf-8"))
    snaps = []
    for f in sorted(d.glob("epoch_*.npz")):
        with np.load(f) as z:
            snaps.append((int(z["epoch"]) if "epoch" in z.files else int(f.stem.split("_")[1]), z["label"]))
    return (meta, snaps) if snaps else None
