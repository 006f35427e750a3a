"""Label arrays read from files: integer class indices, checked, and the value convention they were stored in.

Masks drawn in image editors are often stored as 0/255 (or 0/65535 in 16-bit files) rather than
0/1. Such a binary mask is read as 0/1 and the convention is recorded (``values=[0, 255]``) so
that predictions can be written back the way the masks were stored.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.core.errors import FormatError, MedsegWarning

#: the largest label value read as a class index (larger values are not class indices)
MAX_LABEL_VALUE = 65535
#: the foreground value of binary masks stored at full intensity (8-bit, 16-bit)
BINARY_TOPS = (255, 65535)


def warn(where: Any, problem: str, assumed: str) -> None:
    """One warning naming the file, the problem and what was assumed (shown once per file and problem)."""
    warnings.warn(MedsegWarning(f"{where}: {problem} — assumed {assumed}"), stacklevel=2)  # one place: shown once per file


def check_voxels(arr: np.ndarray, where: Any) -> np.ndarray:
    """Refuse voxel types that are not real numbers (complex, text, records)."""
    kind = arr.dtype.kind
    if kind == "c":
        raise FormatError(
            f"voxels are complex numbers ({arr.dtype})", where=where, fix="save a real-valued image (the magnitude, or the real part) and import that"
        )
    if kind not in "biuf":
        raise FormatError(f"voxels have an unsupported data type ({arr.dtype})", where=where, fix="save the image with integer or floating-point voxels")
    return arr


def as_label(arr: np.ndarray, where: Any) -> np.ndarray:
    """Integer class indices; complex, fractional, negative or huge (> 65,535) values are refused."""
    arr = check_voxels(np.asarray(arr), where)
    if arr.dtype.kind == "f":
        finite = bool(np.isfinite(arr).all())
        if not finite or not np.array_equal(arr, np.round(arr)):
            bad = arr[~np.isclose(arr, np.round(arr))][:3] if finite else "NaN"
            raise FormatError(
                f"label holds non-integer values (e.g. {bad})", where=where, fix="labels must be class indices; was the image given as the label?"
            )
    elif arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise FormatError(f"label holds negative values ({int(lo)})", where=where, fix="labels must be class indices 0…K-1")
    if hi > MAX_LABEL_VALUE:
        raise FormatError(
            f"label holds the value {int(hi) if np.isfinite(hi) else hi:,}, which is not a class index (at most {MAX_LABEL_VALUE:,})",
            where=where,
            fix="relabel the classes as consecutive indices 0, 1, 2, …",
        )
    return arr.astype(np.uint8 if hi < 256 else np.uint16 if arr.dtype.kind == "f" else arr.dtype, copy=False)


def binary_values(arr: np.ndarray) -> tuple[np.ndarray, list[int] | None]:
    """A 0/255 (or 0/65535) mask as 0/1 with its convention ``[0, 255]``; other labels unchanged with ``None``."""
    if arr.size == 0:
        return arr, None
    top = int(arr.max())
    if top not in BINARY_TOPS or not ((arr == 0) | (arr == top)).all():
        return arr, None
    return (arr == top).astype(np.uint8), [0, top]


def to_stored(mask: np.ndarray, values: Sequence[int] | None) -> np.ndarray:
    """Class indices → the values the data set's masks were stored with (``values[k]`` for class k)."""
    if not values:
        return mask
    lut = np.asarray(values, dtype=np.int64)
    if mask.size and int(mask.max()) >= len(lut):
        lut = np.concatenate([lut, np.arange(len(lut), int(mask.max()) + 1)])
    return lut[mask.astype(np.int64)]


def mask_dtype(mask: np.ndarray) -> np.dtype:
    """The smallest unsigned integer type holding a mask's values (uint8 or uint16)."""
    top = int(mask.max(initial=0)) if mask.size else 0
    if top > MAX_LABEL_VALUE:
        raise FormatError(f"mask holds the value {top:,}", where="mask", fix=f"class values must be at most {MAX_LABEL_VALUE:,}")
    return np.dtype(np.uint8 if top < 256 else np.uint16)


class ValueConvention:
    """Collects how the masks of one data set were stored, to record it at import.

    ``values`` is ``[0, 255]`` (or ``[0, 65535]``) when every mask with a foreground stored it at
    full intensity, and ``None`` when the masks hold class indices (or mix conventions).
    """

    def __init__(self) -> None:
        self.seen: set[tuple[int, ...] | None] = set()

    def add(self, values: list[int] | None, label: np.ndarray) -> None:
        if values is not None or (label.size and label.max() > 0):
            self.seen.add(tuple(values) if values else None)

    @property
    def values(self) -> list[int] | None:
        return list(next(iter(self.seen))) if len(self.seen) == 1 and None not in self.seen else None
