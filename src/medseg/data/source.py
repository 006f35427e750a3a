"""Where a run's data comes from: the data set folder a config names (a path or a built-in) and the run's split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.config import Config
from medseg.core.errors import ConfigError
from medseg.data.labelset import RegionView, declare_regions
from medseg.data.splits import load_splits, make_splits, save_splits
from medseg.data.store import Dataset, DatasetInfo, load_dataset


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
    """The config's data set as its runs see it (:func:`configured`); a region of ``data.regions`` naming label
    values that no case holds is warned about (every label is read)."""
    ds = configured(load_dataset(resolve_dataset(config)), config)
    if isinstance(ds, RegionView):
        ds.warn_absent()
    return ds


def configured(ds: Dataset, config: Config) -> Dataset:
    """A data set as a run of ``config`` sees it: ``data.ignore_label`` applied (checked: the highest class), and
    read through ``data.regions`` when the config declares regions (:class:`~medseg.data.labelset.RegionView`)."""
    ds.info = with_ignore(ds.info, config.data.ignore_label)
    d = config.data
    if d.regions is not None:
        return RegionView(ds, d.regions, d.regions_class_order)
    if d.regions_class_order is not None:
        raise ConfigError("data.regions_class_order is set but data.regions is not", where="data.regions_class_order", fix="declare data.regions, or remove it")
    return ds


def configured_info(info: DatasetInfo, config: Config) -> DatasetInfo:
    """A data set's description as a run of ``config`` sees it (:func:`configured`, without the cases)."""
    info = with_ignore(info, config.data.ignore_label)
    return declare_regions(info, config.data.regions, config.data.regions_class_order)[0] if config.data.regions is not None else info


def with_ignore(info: DatasetInfo, configured: int | None, where: str = "data.ignore_label") -> DatasetInfo:
    """The description with a configured ignore label (``data.ignore_label``) applied and checked.

    Raises:
        ConfigError: the value is not the data set's highest class, or differs from its ignore class.
    """
    if configured is None or configured == info.ignore_label:
        return info
    last = len(info.classes) - 1
    if info.multi_label or configured != last or info.ignore_label is not None:
        raise ConfigError(
            f"ignore label {configured} is not the highest class of {info.name!r} ({last}: {info.class_names[last]!r})",
            where=where,
            fix=f"set it to {last}, or relabel so the unannotated value is the highest",
        )
    return info.model_copy(update={"ignore_label": configured})
