"""Training patches: foreground-oversampled boxes or 2D slices of a case, read box by box (memory maps stay cheap)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

LOCATIONS_PER_CLASS = 10_000


def crop_pad(arr: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """The box ``[start, start + size)`` of ``arr`` ``(C, *spatial)``, zero-padded where it leaves the array.

    Only the box is read, so on a memory-mapped array the cost and the memory are those of the patch.
    """
    src: list[slice] = [slice(None)]
    dst: list[slice] = [slice(None)]
    for st, sz, n in zip(start, size, arr.shape[1:], strict=True):
        a, b = max(int(st), 0), min(int(st) + int(sz), n)
        b = max(a, b)
        src.append(slice(a, b))
        dst.append(slice(a - int(st), a - int(st) + (b - a)))
    out = np.zeros((arr.shape[0], *(int(s) for s in size)), dtype=arr.dtype)
    out[tuple(dst)] = arr[tuple(src)]
    return out


class PatchSampler:
    """Draws a training patch (or slice) from a case, oversampling the foreground.

    Args:
        patch_size: spatial patch size (in-plane size for slices); None = the whole image / slice.
        foreground_oversample: probability that a patch is centred on a foreground voxel.
        class_balanced: choose the foreground class uniformly (else in proportion to its voxels).
        slices: sample 2D slices of 3D volumes.
        slice_axis: the axis cut into slices.
        context_slices: 2.5D — neighbouring slices on each side, stacked as channels.
        ignore_class: the ignore label: never a foreground class to centre a patch on.
    """

    def __init__(
        self,
        patch_size: Sequence[int] | None,
        *,
        foreground_oversample: float = 1 / 3,
        class_balanced: bool = False,
        slices: bool = False,
        slice_axis: int = 0,
        context_slices: int = 0,
        ignore_class: int | None = None,
    ):
        self.patch_size = None if patch_size is None else [int(p) for p in patch_size]
        self.oversample = float(foreground_oversample)
        self.class_balanced = class_balanced
        self.slices = slices
        self.slice_axis = slice_axis
        self.context = context_slices
        self.ignore_class = ignore_class
        self._warned = False

    def _pick_foreground(self, item: dict[str, Any], rng: np.random.Generator) -> np.ndarray | None:
        locs = item_locations(item)
        if locs is not None and self.ignore_class is not None and len(locs):
            locs = np.asarray(locs)
            locs = locs[locs[:, 0] != self.ignore_class]
        if locs is None or len(locs) == 0:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"case {item['case_id']!r} has an empty label: foreground oversampling draws background patches from it",
                    stacklevel=2,
                )
            return None
        classes, first = np.unique(np.asarray(locs[:, 0]), return_index=True)
        if self.class_balanced:
            k = rng.integers(len(classes))
        else:
            counts = item_class_voxels(item, classes, locs)
            k = rng.choice(len(classes), p=counts / counts.sum())
        lo = first[k]
        hi = first[k + 1] if k + 1 < len(first) else len(locs)
        return np.asarray(locs[rng.integers(lo, hi)][1:])

    def __call__(self, item: dict[str, Any], rng: np.random.Generator, slice_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        image, label = item["image"], item["label"]
        shape = list(image.shape[1:])
        nd = len(shape)
        centre = self._pick_foreground(item, rng) if self.oversample > 0 and rng.random() < self.oversample else None
        if self.slices:
            a = self.slice_axis
            inplane = [s for i, s in enumerate(shape) if i != a]
            patch2 = self.patch_size or inplane
            size = list(patch2)
            size.insert(a, 1)
            if centre is not None:
                z = int(centre[a])
            elif slice_index is not None:
                z = int(slice_index)
            else:
                z = int(rng.integers(shape[a]))
        else:
            size = self.patch_size or shape
        start = []
        for ax in range(nd):
            s, p = shape[ax], size[ax]
            lo, hi = min(0, s - p), max(0, s - p)
            if self.slices and ax == self.slice_axis:
                start.append(z)
            elif centre is not None:
                start.append(int(np.clip(int(centre[ax]) - p // 2, lo, hi)))
            else:
                start.append(int(rng.integers(lo, hi + 1)))
        lab = crop_pad(label, start, size)
        if not self.slices:
            return crop_pad(image, start, size), lab
        a = self.slice_axis
        k = self.context
        istart, isize = list(start), list(size)
        istart[a] -= k
        isize[a] = 2 * k + 1
        img = crop_pad(image, istart, isize)
        img = np.moveaxis(img, a + 1, 1).reshape(img.shape[0] * (2 * k + 1), *[s for i, s in enumerate(isize) if i != a])
        lab = np.take(lab, 0, axis=a + 1)
        return img, lab


def item_locations(item: dict[str, Any]) -> np.ndarray | None:
    """Foreground voxel coordinates ``(class, *index)`` of an item (computed once for in-memory items)."""
    if "locs" in item:
        return item["locs"]
    loader = item.get("load_locs")
    if loader is not None:
        return loader()

    lab = np.asarray(item["label"])
    multi = lab.dtype.kind == "f" or lab.shape[0] > 1
    locs, counts = foreground_locations(lab, multi, np.random.default_rng(0))
    item["locs"], item["class_voxels"] = locs, counts
    return locs


def item_class_voxels(item: dict[str, Any], classes: np.ndarray, locs: np.ndarray) -> np.ndarray:
    counts = item.get("class_voxels")
    if not counts:
        return np.array([np.sum(locs[:, 0] == c) for c in classes], dtype=float)
    multi = len(counts) > 0 and np.asarray(item["label"]).shape[0] > 1
    return np.array([counts[int(c)] if multi else counts[int(c) - 1] for c in classes], dtype=float) + 1e-9


def foreground_locations(lab: np.ndarray, multi_label: bool, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Up to ``LOCATIONS_PER_CLASS`` voxel coordinates per foreground class: rows ``(class, *index)``."""
    rows = []
    counts = []
    classes = range(lab.shape[0]) if multi_label else range(1, int(lab.max(initial=0)) + 1)
    for k in classes:
        mask = lab[k] > 0 if multi_label else lab[0] == k
        idx = np.flatnonzero(mask)
        counts.append(int(idx.size))
        if idx.size == 0:
            continue
        if idx.size > LOCATIONS_PER_CLASS:
            idx = np.sort(rng.choice(idx, LOCATIONS_PER_CLASS, replace=False))
        coords = np.stack(np.unravel_index(idx, mask.shape), axis=1)
        rows.append(np.concatenate([np.full((len(idx), 1), k), coords], axis=1))
    nd = lab.ndim - 1
    locs = np.concatenate(rows).astype(np.int32) if rows else np.zeros((0, nd + 1), dtype=np.int32)
    return locs, counts


#: foreground voxel coordinates kept per class and case for foreground oversampling
