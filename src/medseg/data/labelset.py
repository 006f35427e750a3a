"""Label sets as nnU-Net v2 declares them in ``dataset.json``: plain labels, regions, the ignore label.

::

    "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
    "regions_class_order": [1, 2, 3]

A **region** is a name mapped to a list of label values: its mask is the union of those labels
(regions may nest or overlap). A data set is region-based when some value is a list with more
than one entry (nnU-Net's rule); ``regions_class_order`` then gives, per region in declaration
order, the label value it is painted with when predictions are written back as a label map —
later regions overwrite earlier ones. The **ignore label** is a class named ``ignore``; it must be
the highest value and is never a region (docs/formats.md, "Regions and the ignore label").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.errors import FormatError

IGNORE_NAME = "ignore"


@dataclass
class LabelSet:
    """What a ``labels`` mapping declares.

    Attributes:
        names: label value → name, background and ignore included (plain-label data sets), or the
            values painted by ``regions_class_order`` named after their region (region-based).
        regions: region name → its key (a tuple of label values, or an int when declared as one),
            in declaration order; empty for plain labels.
        regions_class_order: the value each region is painted with, in region order.
        ignore: the ignore label's value, or None.
    """

    names: dict[int, str]
    regions: dict[str, int | tuple[int, ...]] = field(default_factory=dict)
    regions_class_order: list[int] = field(default_factory=list)
    ignore: int | None = None

    @property
    def keys(self) -> list[int | tuple[int, ...]]:
        """What is scored, as nnU-Net passes it to its evaluation: the regions, or the foreground labels."""
        if self.regions:
            return list(self.regions.values())
        return [v for v in sorted(self.names) if v != 0 and v != self.ignore]

    @property
    def values(self) -> set[int]:
        """Every label value a label file may hold."""
        out = {0, *self.names}
        for r in self.regions.values():
            out |= set(region_values(r))
        return out | ({self.ignore} if self.ignore is not None else set())


def region_values(key: int | tuple[int, ...]) -> tuple[int, ...]:
    return (int(key),) if isinstance(key, int | np.integer) else tuple(int(v) for v in key)


def _int(v: Any, what: str, where: Path | str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or int(v) != v:
        raise FormatError(f"{what}: {v!r} is not an integer label value", where=where, fix="label values are integers 0, 1, 2, …")
    return int(v)


def parse_labels(raw: Any, regions_class_order: Any = None, *, where: Path | str) -> LabelSet:
    """Read a ``labels`` mapping (nnU-Net v2 ``name → value`` or MSD ``"value" → name``) and check it.

    Raises:
        FormatError: naming ``where`` and the field: an empty region, ``regions_class_order``
            missing or of the wrong length, a region naming a value outside the data set's values,
            an ``ignore`` value that is not the highest.
    """
    if not isinstance(raw, dict) or not raw:
        raise FormatError("'labels' must map names to label values", where=where, fix='e.g. {"background": 0, "liver": 1}')
    if all(str(k).isdigit() for k in raw) and all(isinstance(v, str) for v in raw.values()):  # MSD: "0": "background"
        raw = {str(v): int(k) for k, v in raw.items()}
    plain: dict[str, int] = {}
    lists: dict[str, list[int]] = {}
    for name, v in raw.items():
        if isinstance(v, list | tuple):
            if not v:
                raise FormatError(f"labels.{name}: the region lists no label value", where=where, fix="list the label values whose union it is, e.g. [2, 3]")
            lists[str(name)] = [_int(x, f"labels.{name}", where) for x in v]
        else:
            plain[str(name)] = _int(v, f"labels.{name}", where)
    ignore = plain.pop(IGNORE_NAME, None)
    is_regions = any(len(v) > 1 for v in lists.values())
    if not is_regions:  # one-element lists are plain labels
        plain |= {n: v[0] for n, v in lists.items()}
        values = sorted(plain.values())
        if 0 not in values or len(set(values)) != len(values):
            raise FormatError(f"'labels' values {values} must include the background 0 once each", where=where, fix="give each label its own value")
        if ignore is not None and ignore <= max(values):
            raise FormatError(
                f"labels.ignore: {ignore} is not the highest label value (max {max(values)})",
                where=where,
                fix=f"give the ignore label the value {max(values) + 1}",
            )
        names = {v: n for n, v in plain.items()} | ({ignore: IGNORE_NAME} if ignore is not None else {})
        return LabelSet(names=names, ignore=ignore)
    regions: dict[str, int | tuple[int, ...]] = {}
    for name in raw:
        if name in lists:
            regions[name] = tuple(lists[name])
        elif name != IGNORE_NAME and plain.get(name, 0) != 0:
            regions[name] = plain[name]
    if regions_class_order is None:
        raise FormatError(
            "regions_class_order is missing (the labels declare regions)",
            where=where,
            fix=f'add "regions_class_order": one label value per region, {len(regions)} in all, e.g. {list(range(1, len(regions) + 1))}',
        )
    if not isinstance(regions_class_order, list) or len(regions_class_order) != len(regions):
        n = len(regions_class_order) if isinstance(regions_class_order, list) else "not a list"
        raise FormatError(
            f"regions_class_order has {n} entries for {len(regions)} regions",
            where=where,
            fix=f"give one label value per region, in the order of 'labels' ({', '.join(regions)})",
        )
    order = [_int(v, "regions_class_order", where) for v in regions_class_order]
    known = {0, *order}
    for name, key in regions.items():
        outside = sorted(set(region_values(key)) - known)
        if outside or 0 in region_values(key):
            raise FormatError(
                f"labels.{name}: label value(s) {outside or [0]} are outside the data set's values {sorted(known - {0})}",
                where=where,
                fix="name only foreground values that regions_class_order writes",
            )
    top = max(known)
    if ignore is not None and ignore <= top:
        raise FormatError(f"labels.ignore: {ignore} is not the highest label value (max {top})", where=where, fix=f"give the ignore label the value {top + 1}")
    names = {0: next((n for n, v in plain.items() if v == 0), "background"), **{v: n for v, n in zip(order, regions, strict=True)}}
    if ignore is not None:
        names[ignore] = IGNORE_NAME
    return LabelSet(names=names, regions=regions, regions_class_order=order, ignore=ignore)


def region_channels(label: np.ndarray, regions: Sequence[int | tuple[int, ...]]) -> np.ndarray:
    """Label map → boolean stack ``(K, ...)``: channel k is the union of region k's labels."""
    return np.stack([np.isin(label, region_values(r)) for r in regions]) if regions else np.zeros((0, *label.shape), dtype=bool)


def paint_regions(channels: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Boolean stack ``(K, ...)`` → label map: region k is painted with ``order[k]``, later regions overwrite earlier ones."""
    out = np.zeros(channels.shape[1:], dtype=np.int16 if max(order, default=0) > 255 else np.uint8)
    for k, value in enumerate(order):
        out[np.asarray(channels[k], dtype=bool)] = value
    return out
