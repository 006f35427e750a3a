"""Where a run's data comes from: the data set folder a config names (a path or a built-in) and the run's split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.config import Config
from medseg.data.splits import load_splits, make_splits, save_splits
from medseg.data.store import Dataset, load_dataset


def resolve_dataset(config: Config) -> Path:
    """The data set folder a config names: a folder path, or a built-in materialised on demand."""
    from medseg.data.builtin import BUILTINS, materialize

    name = config.data.dataset
    path = Path(name).expanduser()
    if path.is_dir() or name not in BUILTINS:
        return path
    return materialize(name, config.data.builtin, config.data.cache_dir)


def resolve_splits(config: Config, ds: Dataset, run_dir: Path | None = None) -> dict[str, Any]:
    """The split of a run: ``data.split.file`` if given, else the data set's ``splits.json`` when its
    seed and ratios match the config, else a new patient-grouped split (any of them saved in the run folder)."""
    sc = config.data.split
    splits: dict[str, Any] | None = load_splits(sc.file, ds.patients) if sc.file else None
    if splits is None and ds.splits_path.is_file():
        cand = load_splits(ds.splits_path, ds.patients)
        same = cand.get("seed") == sc.seed and list(cand.get("ratios", [])) == list(sc.ratios)
        if same and (not sc.n_folds or len(cand.get("folds") or []) == sc.n_folds):
            splits = cand
        elif "seed" not in cand:
            splits = cand  # a user-made split without generator settings is used as given
    if splits is None:
        splits = make_splits(ds.labelled_patients, sc.ratios, sc.seed, sc.n_folds)
    if run_dir is not None:
        save_splits(run_dir / "splits.json", splits)
    return splits


def open_dataset(config: Config) -> Dataset:
    """The config's data set, with ``data.ignore_label`` applied (checked: the highest class)."""
    from medseg.data.store import with_ignore

    ds = load_dataset(resolve_dataset(config))
    ds.info = with_ignore(ds.info, config.data.ignore_label)
    return ds
