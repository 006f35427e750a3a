"""From a data set folder to batches: preprocessing cache, patch sampling, augmentation and a DataModule.

Two sources feed the same loaders:

* without preprocessing (``data.preprocess.enabled: false``, the default) every case of a split is z-scored
  per case on its own grid and kept in RAM — the quickest path for small 2D sets;
* with preprocessing, ``medseg prepare`` (or the first ``medseg train``) writes a cache of uncompressed
  ``.npy`` files (:mod:`medseg.data.preprocess`) and training reads only the cache, memory-mapped: a patch
  reads only its own bytes, so memory stays flat however large the data set.

Sampling (:class:`PatchSampler`): random patches with foreground oversampling (``data.foreground_oversample``,
default 1/3; ``data.class_balanced`` picks the class uniformly first), 2D slices of 3D volumes
(``data.slices``, with ``data.context_slices`` neighbours as extra channels for 2.5D) and whole images
(``data.patch_size: null``). Augmentation presets live in :mod:`medseg.data.augment`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from monai import transforms as mt
from torch.utils.data import DataLoader, RandomSampler, get_worker_info
from torch.utils.data import Dataset as TorchDataset

from medseg.config import Config
from medseg.core.case import Case
from medseg.core.errors import ConfigError, DatasetError, MedsegError, SplitError
from medseg.data.batches import STREAM_SAMPLES, EpochsOfOneStream, case_batches, default_workers
from medseg.data.preprocessing.transforms import normalize_image
from medseg.data.sampling import PatchSampler
from medseg.data.splits import select
from medseg.data.store import Dataset


class CaseLoadError(DatasetError):
    """A case could not be read or sampled in a loader (worker) process.

    When PyTorch re-raises it in the main process it passes the worker's whole traceback as the message;
    only its last line — the original one-line error naming the case — is kept.
    """

    def __init__(self, problem: str, *, where: str | Path | None = None, fix: str | None = None):
        if where is None and fix is None and "Traceback" in problem:
            lines = [ln.strip() for ln in problem.strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else problem
            problem = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(problem, where=where, fix=fix)


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


def train_transforms(
    spatial_dims: int,
    patch_size: Sequence[int] | None,
    augment: str,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> mt.Compose:
    """The training transform: an optional pad + random crop (when no :class:`PatchSampler` crops) and the
    augmentation preset with its overrides (see :mod:`medseg.data.augment`)."""
    from medseg.data.augment import build_augmentation, resolve_augmentation

    keys = ["image", "label"]
    ts: list[Any] = [mt.EnsureTyped(keys=keys, track_meta=False)]
    if patch_size:
        ts += [
            mt.SpatialPadd(keys=keys, spatial_size=list(patch_size)),
            mt.RandSpatialCropd(keys=keys, roi_size=list(patch_size), random_size=False),
        ]
    ts += build_augmentation(resolve_augmentation(augment, overrides), spatial_dims)
    return mt.Compose(ts)


class CachedItems(Sequence):
    """The cases of a preprocessing cache as item dicts with memory-mapped arrays (nothing loaded up front).

    Args:
        cache: the opened :class:`~medseg.data.preprocess.Cache`.
        ids: case ids, in order.
        copy: return in-memory copies instead of memory maps (for evaluation and snapshots).
    """

    def __init__(self, cache: Any, ids: Sequence[str], copy: bool = False):
        self.cache = cache
        self.ids = list(ids)
        self.copy = copy
        self.multi_label = bool(cache.info.get("multi_label"))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        cid = self.ids[i]
        c = self.cache
        img, lab = c.image(cid), c.label(cid)
        if self.copy:
            img = np.array(img)
            lab = np.array(lab).astype(np.float32 if self.multi_label else np.int64)
        return {
            "image": img,
            "label": lab,
            "case_id": cid,
            "load_locs": lambda: c.locations(cid),
            "class_voxels": c.class_voxels(cid),
        }

    def shapes(self) -> list[list[int]]:
        return [list(self.cache.info["cases"][cid]["shape"]) for cid in self.ids]


def _as_target(label: Any, multi_label: bool) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(label) if isinstance(label, np.ndarray) else label)
    return t.float() if multi_label else t.long()


class CaseItems(TorchDataset):
    """Items (in memory or memory-mapped), cropped by an optional sampler and passed through a random transform.

    Args:
        items: a sequence of dicts with ``image``, ``label`` and ``case_id``.
        transform: the augmentation (None = none).
        sampler: draws a patch or slice from each item (None = the whole item).
        slice_index: for evaluation over slices: item index → (case index, slice), else None.
        multi_label: labels are per-class channels (float) rather than class indices (long).
    """

    def __init__(
        self,
        items: Sequence[dict[str, Any]],
        transform: mt.Compose | None = None,
        sampler: PatchSampler | None = None,
        slice_index: list[tuple[int, int]] | None = None,
        multi_label: bool | None = None,
    ):
        self.items = items
        self.transform = transform
        self.sampler = sampler
        self.slice_index = slice_index
        self.multi_label = multi_label

    def __len__(self) -> int:
        return len(self.slice_index) if self.slice_index is not None else len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        case_i, z = self.slice_index[i] if self.slice_index is not None else (i, None)
        cid = self.items.ids[case_i] if isinstance(self.items, CachedItems) else self.items[case_i].get("case_id", case_i)
        try:
            return self._get(self.items[case_i], z)
        except MedsegError as e:
            if get_worker_info() is None:
                raise
            raise CaseLoadError(e.one_line()) from None
        except Exception as e:
            raise CaseLoadError(
                f"case {cid!r} failed in the data loader ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                fix="check the case (medseg inspect) or rebuild the cache (medseg prepare --overwrite)",
            ) from None

    def _get(self, item: dict[str, Any], z: int | None) -> dict[str, Any]:
        multi = self.multi_label
        if multi is None:
            lab = item["label"]
            multi = np.asarray(lab).dtype.kind == "f" or getattr(lab, "dtype", None) == torch.float32
        if self.transform is None and self.sampler is None:
            return {"image": torch.as_tensor(np.asarray(item["image"])), "label": _as_target(item["label"], multi), "case_id": item["case_id"]}
        # draw the augmentation seed from torch's generator, which Lightning seeds per worker and the
        # run's checkpoints restore: augmentation is reproducible and an interrupted run resumes exactly
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        image, label = item["image"], item["label"]
        if self.sampler is not None:
            image, label = self.sampler(item, np.random.default_rng(seed), z)
        if self.transform is None:
            return {"image": torch.as_tensor(image), "label": _as_target(label, multi), "case_id": item["case_id"]}
        self.transform.set_random_state(seed=seed)
        out = self.transform({"image": image, "label": label})
        return {"image": torch.as_tensor(out["image"]), "label": _as_target(out["label"], multi), "case_id": item["case_id"]}


_LABELLED = "only labelled cases can be trained or validated on"


class SegDataModule(L.LightningDataModule):
    """Train/val/test loaders over a data set folder (or its preprocessing cache) and its patient-grouped split.

    Args:
        config: the run config (``data`` section is used).
        dataset: the opened data set.
        splits: the split dictionary.
        progress: show a progress bar when the cache has to be built.
    """

    def __init__(self, config: Config, dataset: Dataset, splits: dict[str, Any], progress: bool = False):
        super().__init__()
        self.config = config
        self.ds = dataset
        self.splits = splits
        self.progress = progress
        self._items: dict[str, Sequence[dict[str, Any]]] = {}
        #: training batches per epoch (``None`` = one pass); ``medseg.engine.length.resolve_length`` sets it
        ipe = config.train.iterations_per_epoch
        self.batches_per_epoch: int | None = ipe if isinstance(ipe, int) else None
        self._cache: Any = None
        self._plan: dict[str, Any] | None = None
        if config.data.plan:
            from medseg.data.plan import load_plan

            self._plan = load_plan(config.data.plan)
        d = config.data
        if d.slices and dataset.info.dims != 3:
            raise ConfigError("data.slices cuts 3D volumes into 2D slices but the data set is 2D", where="data.slices", fix="set data.slices=false")
        if d.context_slices and not d.slices:
            raise ConfigError("data.context_slices needs data.slices=true", where="data.context_slices", fix="set data.slices=true or context_slices=0")

    # ------------------------------------------------------------------------------------- geometry

    @property
    def spatial_dims(self) -> int:
        """Spatial dimensions of the batches (2 when slicing volumes)."""
        return 2 if self.config.data.slices else self.ds.info.dims

    @property
    def in_channels(self) -> int:
        """Channels of the batches (times ``2k+1`` for 2.5D)."""
        return self.ds.info.n_channels * (2 * self.config.data.context_slices + 1)

    @property
    def multi_label(self) -> bool:
        return self.ds.info.multi_label

    @property
    def cache(self) -> Any:
        """The preprocessing cache (built on first use), or None when preprocessing is off."""
        if not self.config.data.preprocess.enabled:
            return None
        if self._cache is None:
            from medseg.data.preprocessing import Cache, default_cache_dir, prepare, resolve_spec

            pc = self.config.data.preprocess
            spec = resolve_spec(self.config, self.ds, self._plan)
            out = Path(pc.cache_dir) if pc.cache_dir else default_cache_dir(self.ds, spec)
            self._cache = Cache(prepare(self.ds, spec, out=out, progress=self.progress), spec)
        return self._cache

    def ids(self, stage: str) -> list[str]:
        return select(self.splits, stage, self.config.data.split.fold)

    def items(self, stage: str) -> Sequence[dict[str, Any]]:
        """The items of a split (dicts with ``image``, ``label``, ``case_id``); memory-mapped from the cache."""
        if stage not in self._items:
            ids = self.ids(stage)
            if not ids:
                raise SplitError(f"the {stage} set is empty", where="splits", fix="use more patients or other split ratios")
            cache = self.cache
            if cache is not None:
                missing = [cid for cid in ids if not cache.has_label(cid)]
                if missing:
                    raise ConfigError(f"{stage} cases without labels: {missing[:3]}", where=self.ds.root, fix=_LABELLED)
                self._items[stage] = CachedItems(cache, ids, copy=stage != "train")
            else:
                items = [case_to_item(self.ds.load_case(cid)) for cid in ids]
                missing = [it["case_id"] for it in items if "label" not in it]
                if missing:
                    raise ConfigError(f"{stage} cases without labels: {missing[:3]}", where=self.ds.root, fix=_LABELLED)
                self._items[stage] = items
        return self._items[stage]

    def patch_size(self) -> list[int] | None:
        """``data.patch_size``, else the plan configuration's patch (when ``data.plan`` is set), else None."""
        ps = self.config.data.patch_size
        if ps is None and self._plan is not None:
            from medseg.data.plan import plan_configuration

            which = self.config.data.configuration
            if which == "auto":
                which = "2d" if self.spatial_dims == 2 else "3d"
            ps = plan_configuration(self._plan, which)["patch_size"]
        dims = self.spatial_dims
        if ps is not None and len(ps) != dims:
            raise ConfigError(
                f"patch_size {list(ps)} has {len(ps)} axes but the {'slices are' if self.config.data.slices else 'data set is'} {dims}D",
                where="data.patch_size",
                fix=f"give {dims} sizes or null",
            )
        return None if ps is None else [int(p) for p in ps]

    def _check_patch(self) -> list[int] | None:
        return self.patch_size()

    def _warn_large_patch(self, items: Sequence[dict[str, Any]], ps: list[int]) -> None:
        shapes = items.shapes() if isinstance(items, CachedItems) else [list(np.shape(it["image"])[1:]) for it in items]
        if self.config.data.slices:
            a = self.config.data.slice_axis
            shapes = [[s for i, s in enumerate(sh) if i != a] for sh in shapes]
        if not shapes:
            return
        big = np.max(np.array(shapes), axis=0).tolist()
        # a patch a few voxels over the largest case (rounded up to its poolings' multiple, as a plan's are) is no mistake
        if any(p > 1.1 * b for p, b in zip(ps, big, strict=True)):
            warnings.warn(f"data.patch_size {ps} is larger than the training cases (largest {big}): patches are zero-padded", stacklevel=2)

    def _workers(self) -> int:
        n = self.config.data.num_workers
        return default_workers() if n == "auto" else int(n)

    def _slice_index(self, items: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
        a = self.config.data.slice_axis
        shapes = items.shapes() if isinstance(items, CachedItems) else [list(np.shape(it["image"])[1:]) for it in items]
        return [(i, z) for i, sh in enumerate(shapes) for z in range(sh[a])]

    def train_dataset(self) -> CaseItems:
        """The training dataset (patches or whole images, augmented)."""
        d = self.config.data
        items = self.items("train")
        ps = self._check_patch()
        preset = d.augmentation.preset or d.augment
        dims = self.spatial_dims
        use_sampler = ps is not None or d.slices or self.cache is not None
        tf = train_transforms(dims, None if use_sampler else ps, preset, d.augmentation.overrides)
        sampler = None
        if use_sampler:
            if ps is not None:
                self._warn_large_patch(items, ps)
            sampler = PatchSampler(
                ps,
                foreground_oversample=d.foreground_oversample,
                class_balanced=d.class_balanced,
                slices=d.slices,
                slice_axis=d.slice_axis,
                context_slices=d.context_slices,
                ignore_class=self.ds.info.ignore_label,
            )
        slice_index = self._slice_index(items) if d.slices else None
        return CaseItems(items, tf, sampler=sampler, slice_index=slice_index, multi_label=self.multi_label)

    def train_dataloader(self) -> DataLoader | EpochsOfOneStream:
        """Batches drawn with replacement, ``batches_per_epoch`` an epoch (else one shuffled pass). With loader
        processes on one device, the epochs are cut from one endless stream (:class:`EpochsOfOneStream`)."""
        d = self.config.data
        ds = self.train_dataset()
        iters = self.batches_per_epoch
        workers = self._workers()
        trainer = self.trainer
        stream = bool(iters) and workers > 0 and (trainer is None or trainer.world_size == 1)  # DDP: Lightning shards a DataLoader
        sampler = RandomSampler(ds, replacement=True, num_samples=(STREAM_SAMPLES if stream else iters) * d.batch_size) if iters else None
        loader = DataLoader(
            ds,
            batch_size=d.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available() and self.config.train.device in ("auto", "cuda"),
            drop_last=iters is None and len(ds) > d.batch_size,
        )
        return EpochsOfOneStream(loader, iters) if stream and iters else loader

    def _eval_loader(self, stage: str) -> DataLoader:
        d = self.config.data
        items = self.items(stage)
        if d.slices:
            sampler = PatchSampler(None, foreground_oversample=0.0, slices=True, slice_axis=d.slice_axis, context_slices=d.context_slices)
            index = self._slice_index(items)
            ds = CaseItems(items, None, sampler=sampler, slice_index=index, multi_label=self.multi_label)
            return DataLoader(ds, batch_sampler=case_batches(index, d.batch_size), num_workers=0)
        return DataLoader(CaseItems(items, multi_label=self.multi_label), batch_size=1, shuffle=False, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
