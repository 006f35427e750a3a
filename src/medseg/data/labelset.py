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

A region declared as a number (``"enhancing tumor": 3``) keeps that spelling: nnU-Net keys its
metrics ``"3"``, and ``"(3,)"`` for ``[3]``. The same declaration may come from the run config
(``data.regions``, ``data.regions_class_order``) for any label-map data set: :class:`RegionView`
reads its label maps as region channels; both sources are checked by :func:`check_regions`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.case import Case
from medseg.core.errors import ConfigError, FormatError, MedsegError, MedsegWarning
from medseg.data.store import IGNORE_CLASS, ClassInfo, Dataset, DatasetInfo, make_classes

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


# ----------------------------------------------------------------------------- regions declared in the run config


def config_regions(regions: dict[str, Any] | None, order: Any, known: set[int] | None) -> tuple[dict[str, Key], list[int]]:
    """A config's ``data.regions`` (as keys: :func:`region_key`) and ``data.regions_class_order``, checked by
    :func:`check_regions` (``known``: the label values a region may name; None: those the order writes).

    Raises:
        ConfigError: naming the field (see :func:`check_regions`), or no region at all.
    """
    if not regions:
        fix = "name each region and its label values, e.g. {heart: [1, 2]}, or remove it"
        raise ConfigError("data.regions declares no region", where="data.regions", fix=fix)
    keys = {str(n): region_key(str(n), v, field="data.regions", where=None, error=ConfigError) for n, v in regions.items()}
    return keys, check_regions(keys, order, known=known, where=None, field="data.regions", order_field="data.regions_class_order", error=ConfigError)


def declare_regions(info: DatasetInfo, regions: dict[str, Any], order: Any) -> tuple[DatasetInfo, list[Key]]:
    """A label-map data set's description seen through regions declared in the run config (``data.regions``,
    ``data.regions_class_order``): one boolean class per region, then the ignore label's channel, as a data set
    imported with the same regions in its ``dataset.json`` describes them. Checked by :func:`check_regions`.

    Returns:
        The region description and the key of each of its channels (regions, then the ignore label).

    Raises:
        ConfigError: naming the field: an empty region, a value outside the data set's foreground values (its
            classes less the background and the ignore label), ``regions_class_order`` missing or of another
            length, or a data set that is already multi-label.
    """
    if info.multi_label:
        raise ConfigError(
            f"data set {info.name!r} is multi-label (one channel per class), so its classes are not label values to unite",
            where="data.regions",
            fix="declare regions over a label-map data set, or remove data.regions",
        )
    keys, painted = config_regions(regions, order, known={k for k in range(1, len(info.classes)) if k != info.ignore_label})
    classes = make_classes(list(keys), background=False)
    for c, key in zip(classes, keys.values(), strict=True):
        c.labels = key if isinstance(key, int) else list(key)
    channel_keys = list(keys.values())
    if info.ignore_label is not None:
        classes.append(ClassInfo(name=IGNORE_CLASS, color=(128, 128, 128), labels=[info.ignore_label]))
        channel_keys.append(info.ignore_label)
        painted.append(info.ignore_label)
    source = {**info.source, "regions": {n: list(region_values(k)) for n, k in keys.items()}}
    update = {"classes": classes, "multi_label": True, "regions_class_order": painted, "mask_values": None, "ignore_label": None, "source": source}
    return DatasetInfo.model_validate({**info.model_dump(), **update}), channel_keys


class RegionView(Dataset):
    """A label-map data set read through regions declared in the run config: each case's label map becomes one
    boolean channel per region (and one for the ignore label), as an imported region data set stores them.

    Args:
        base: the data set as stored.
        regions: ``data.regions`` (name → label value or list of them).
        order: ``data.regions_class_order``.
    """

    def __init__(self, base: Dataset, regions: dict[str, Any], order: Any):
        info, self.channel_keys = declare_regions(base.info, regions, order)
        super().__init__(base.root, info)
        self.base = base
        #: what the preprocessing cache's hash includes (the cached labels are region channels)
        self.declaration = {"regions": {n: list(v) if isinstance(v, list | tuple) else v for n, v in regions.items()}, "regions_class_order": list(order)}

    def load_case(self, case_id: str, validate: bool = True) -> Case:
        case = self.base.load_case(case_id, validate)
        if case.label is not None:
            case.label = region_channels(case.label, self.channel_keys)
        return case

    def warn_absent(self) -> None:
        """Warn about each region naming label values that no case of the data set holds (reads every label)."""
        seen: set[int] = set()
        for cid in self.base.case_ids:
            label = self.base.load_label(cid)
            if label is not None:
                seen |= {int(v) for v in np.unique(label)}
        n = len(self.declaration["regions"])
        warn_absent(dict(zip(self.info.class_names[:n], self.channel_keys[:n], strict=True)), seen, where=self.root, field="data.regions")
