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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.errors import FormatError, MedsegError, MedsegWarning

IGNORE_NAME = "ignore"
#: a label value, or a region: the label values whose union it is
Key = int | tuple[int, ...]


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


def _int(v: Any, what: str, where: Path | str | None, error: type[MedsegError] = FormatError) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or int(v) != v:
        raise error(f"{what}: {v!r} is not an integer label value", where=where, fix="label values are integers 0, 1, 2, …")
    return int(v)


def region_key(name: str, v: Any, *, field: str, where: Path | str | None, error: type[MedsegError] = FormatError) -> Key:
    """One region's declaration as nnU-Net keys it: an int stays an int (key ``"3"``), a list becomes a tuple (``"(3,)"``).

    Raises:
        ``error``: an empty list, or a value that is not an integer.
    """
    if isinstance(v, list | tuple):
        if not v:
            raise error(f"{field}.{name}: the region lists no label value", where=where, fix="list the label values whose union it is, e.g. [2, 3]")
        return tuple(_int(x, f"{field}.{name}", where, error) for x in v)
    return _int(v, f"{field}.{name}", where, error)


def check_regions(
    regions: dict[str, Key],
    order: Any,
    *,
    known: set[int] | None,
    where: Path | str | None,
    field: str = "labels",
    order_field: str = "regions_class_order",
    error: type[MedsegError] = FormatError,
) -> list[int]:
    """Check a region declaration (from a ``dataset.json`` or the run config) and return ``regions_class_order``.

    Args:
        regions: region name → key (:func:`region_key`), in declaration order.
        order: the declared ``regions_class_order`` (anything: it is checked here).
        known: the foreground label values a region may name; None: the values ``order`` writes (nnU-Net's rule).
        where: the file (or None for a config field) named in errors.
        field, order_field: the names of the two fields in errors.
        error: the error class raised.

    Raises:
        ``error``: ``order`` missing, not a list of integers, or of another length than ``regions``; a region naming
        a value outside ``known`` (the background 0 included).
    """
    if order is None:
        raise error(
            f"{order_field} is missing ({field} declares regions)",
            where=where,
            fix=f"add {order_field}: one label value per region, {len(regions)} in all, e.g. {list(range(1, len(regions) + 1))}",
        )
    if not isinstance(order, list) or len(order) != len(regions):
        n = len(order) if isinstance(order, list) else "not a list"
        raise error(
            f"{order_field} has {n} entries for {len(regions)} regions",
            where=where,
            fix=f"give one label value per region, in the order of {field} ({', '.join(regions)})",
        )
    out = [_int(v, order_field, where, error) for v in order]
    allowed = set(out) - {0} if known is None else set(known) - {0}
    for name, key in regions.items():
        outside = sorted(set(region_values(key)) - allowed)
        if outside:
            raise error(
                f"{field}.{name}: label value(s) {outside} are outside the data set's values {sorted(allowed)}",
                where=where,
                fix="name only foreground values that regions_class_order writes" if known is None else "name only the data set's foreground label values",
            )
    return out


def warn_absent(regions: dict[str, Key], seen: set[int], *, where: Path | str, field: str = "labels") -> None:
    """Warn about each region naming label values that no case holds (``seen``: the values found in the label maps)."""
    for name, key in regions.items():
        missing = sorted(set(region_values(key)) - seen)
        if missing:
            warnings.warn(MedsegWarning(f"{where}: {field}.{name}: label value(s) {missing} occur in no case"), stacklevel=3)


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
    keys = {str(name): region_key(str(name), v, field="labels", where=where) for name, v in raw.items()}
    ignore = keys.pop(IGNORE_NAME, None)
    if isinstance(ignore, tuple):
        ignore = ignore[0]
    if not any(isinstance(k, tuple) and len(k) > 1 for k in keys.values()):  # one-element lists are plain labels
        plain = {n: region_values(k)[0] for n, k in keys.items()}
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
    regions = {n: k for n, k in keys.items() if k != 0}
    order = check_regions(regions, regions_class_order, known=None, where=where)
    top = max(order, default=0)
    if ignore is not None and ignore <= top:
        raise FormatError(f"labels.ignore: {ignore} is not the highest label value (max {top})", where=where, fix=f"give the ignore label the value {top + 1}")
    names = {0: next((n for n, k in keys.items() if k == 0), "background"), **{v: n for v, n in zip(order, regions, strict=True)}}
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
