"""From a data set folder to batches: normalisation, augmentation (MONAI transforms) and a DataModule.

This is the in-memory pipeline: every case of a split is normalised once and kept in RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from monai import transforms as mt
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data import Dataset as TorchDataset

from medseg.config import Config
from medseg.data.case import Case
from medseg.data.splits import load_splits, make_splits, save_splits, select
from medseg.data.store import Dataset, load_dataset
from medseg.errors import ConfigError, SplitError


def resolve_dataset(config: Config) -> Path:
    """The data set folder a config names: a folder path, or a built-in materialised on demand."""
    from medseg.data.builtin import BUILTINS, materialize

    name = config.data.dataset
    path = Path(name).expanduser()
    if path.is_dir() or name not in BUILTINS:
        return path
    return materialize(name, config.data.builtin, config.data.cache_dir)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Per-case, per-channel z-score (the MRI default)."""
    img = image.astype(np.float32, copy=True)
    for c in range(img.shape[0]):
        ch = img[c]
        std = float(ch.std())
        img[c] = (ch - float(ch.mean())) / (std if std > 1e-8 else 1.0)
    return img


def label_to_target(case: Case) -> np.ndarray:
    """Training target: ``(1, ...)`` int64 class indices, or ``(K, ...)`` float32 for multi-label."""
    assert case.label is not None
    if case.multi_label:
        return case.label.astype(np.float32)
    return case.label[None].astype(np.int64)


def case_to_item(case: Case) -> dict[str, Any]:
    item: dict[str, Any] = {"image": normalize_image(case.image), "case_id": case.case_id}
    if case.label is not None:
        item["label"] = label_to_target(case)
    return item


def train_transforms(spatial_dims: int, patch_size: Sequence[int] | None, augment: str) -> mt.Compose:
    keys = ["image", "label"]
    ts: list[Any] = [mt.EnsureTyped(keys=keys, track_meta=False)]
    if patch_size:
        ts += [
            mt.SpatialPadd(keys=keys, spatial_size=list(patch_size)),
            mt.RandSpatialCropd(keys=keys, roi_size=list(patch_size), random_size=False),
        ]
    if augment == "light":
        ts += [mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=a) for a in range(spatial_dims)]
        ts += [mt.RandRotate90d(keys=keys, prob=0.5, spatial_axes=(spatial_dims - 2, spatial_dims - 1))]
    return mt.Compose(ts)


class CaseItems(TorchDataset):
    """Items held in memory, passed through a (random) transform on each access."""

    def __init__(self, items: list[dict[str, Any]], transform: mt.Compose | None = None):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        if self.transform is None:
            return {"image": torch.as_tensor(item["image"]), "label": torch.as_tensor(item["label"]), "case_id": item["case_id"]}
        # draw the augmentation seed from torch's generator, which Lightning seeds per worker and the
        # run's checkpoints restore: augmentation is reproducible and an interrupted run resumes exactly
        self.transform.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,)).item()))
        out = self.transform({"image": item["image"], "label": item["label"]})
        return {"image": torch.as_tensor(out["image"]), "label": torch.as_tensor(out["label"]), "case_id": item["case_id"]}


def resolve_splits(config: Config, ds: Dataset, run_dir: Path | None = None) -> dict[str, Any]:
    """The split of a run: ``data.split.file`` if given, else the data set's ``splits.json`` when its
    seed and ratios match the config, else a new patient-grouped split (saved in the run folder)."""
    sc = config.data.split
    if sc.file:
        return load_splits(sc.file, ds.patients)
    splits: dict[str, Any] | None = None
    if ds.splits_path.is_file():
        cand = load_splits(ds.splits_path, ds.patients)
        same = cand.get("seed") == sc.seed and list(cand.get("ratios", [])) == list(sc.ratios)
        if same and (not sc.n_folds or len(cand.get("folds") or []) == sc.n_folds):
            splits = cand
        elif "seed" not in cand:
            splits = cand  # a user-made split without generator settings is used as given
    if splits is None:
        splits = make_splits(ds.patients, sc.ratios, sc.seed, sc.n_folds)
    if run_dir is not None:
        save_splits(run_dir / "splits.json", splits)
    return splits


class SegDataModule(L.LightningDataModule):
    """Train/val/test loaders over a data set folder and its patient-grouped split.

    Args:
        config: the run config (``data`` section is used).
        dataset: the opened data set.
        splits: the split dictionary.
    """

    def __init__(self, config: Config, dataset: Dataset, splits: dict[str, Any]):
        super().__init__()
        self.config = config
        self.ds = dataset
        self.splits = splits
        self._items: dict[str, list[dict[str, Any]]] = {}

    def ids(self, stage: str) -> list[str]:
        return select(self.splits, stage, self.config.data.split.fold)

    def items(self, stage: str) -> list[dict[str, Any]]:
        if stage not in self._items:
            ids = self.ids(stage)
            if not ids:
                raise SplitError(f"the {stage} set is empty", where="splits", fix="use more patients or other split ratios")
            self._items[stage] = [case_to_item(self.ds.load_case(cid)) for cid in ids]
            missing = [it["case_id"] for it in self._items[stage] if "label" not in it]
            if missing:
                raise ConfigError(f"{stage} cases without labels: {missing[:3]}", where=self.ds.root, fix="only labelled cases can be trained or validated on")
        return self._items[stage]

    def _check_patch(self) -> list[int] | None:
        ps = self.config.data.patch_size
        if ps is not None and len(ps) != self.ds.info.dims:
            raise ConfigError(
                f"patch_size {ps} has {len(ps)} axes but the data set is {self.ds.info.dims}D",
                where="data.patch_size",
                fix=f"give {self.ds.info.dims} sizes or null",
            )
        return ps

    def train_dataloader(self) -> DataLoader:
        d = self.config.data
        tf = train_transforms(self.ds.info.dims, self._check_patch(), d.augment)
        items = CaseItems(self.items("train"), tf)
        iters = self.config.train.iterations_per_epoch
        sampler = RandomSampler(items, replacement=True, num_samples=iters * d.batch_size) if iters else None
        return DataLoader(
            items,
            batch_size=d.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
            drop_last=iters is None and len(self.items("train")) > d.batch_size,
        )

    def _eval_loader(self, stage: str) -> DataLoader:
        return DataLoader(CaseItems(self.items(stage)), batch_size=1, shuffle=False, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def open_dataset(config: Config) -> Dataset:
    return load_dataset(resolve_dataset(config))
