"""Kaggle run-length encoding: decode masks from, and encode masks to, ``id,class,segmentation`` CSVs.

The convention (UW-Madison GI tract and most Kaggle segmentation contests): the mask is flattened,
the string is ``start length start length …`` with **1-based** starts. ``order="row"`` flattens
row-major (C order: pixel ``(r, c)`` is ``r * W + c``), as the GI-tract data does; ``order="column"``
flattens column-major (Fortran order: ``c * H + r``), as some older contests did.

Written by hand because the format is a few lines of array code and no imaging library reads it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medseg.core.atomic import atomic_path
from medseg.core.case import Case
from medseg.core.errors import FormatError, MedsegError

Order = Literal["row", "column"]
_INT = re.compile(r"[+-]?[0-9]+")


def _check_order(order: str) -> str:
    if order not in ("row", "column"):
        raise FormatError(f"unknown RLE order {order!r}", where="order", fix="use 'row' (C order, the GI-tract convention) or 'column'")
    return "C" if order == "row" else "F"


def rle_decode(rle: str | float | None, shape: tuple[int, int], order: Order = "row", where: Any = "RLE") -> np.ndarray:
    """Decode one Kaggle RLE string into a boolean ``(H, W)`` mask.

    Args:
        rle: ``"start length …"`` with 1-based starts; empty, ``None`` or NaN means an empty mask.
        shape: ``(H, W)`` of the image.
        order: ``"row"`` (row-major) or ``"column"`` (column-major) flattening.
        where: names the source (file and line) in errors.

    Returns:
        Boolean array of ``shape``.
    """
    forder = _check_order(order)
    h, w = int(shape[0]), int(shape[1])
    if h < 0 or w < 0:
        raise FormatError(f"image size {h}×{w} is negative", where=where, fix="check the image size")
    n = h * w
    if rle is None or (isinstance(rle, float) and np.isnan(rle)) or not str(rle).strip():
        return np.zeros((h, w), dtype=bool)
    tokens = str(rle).split()
    bad = next((t for t in tokens if not _INT.fullmatch(t)), None)  # ASCII digits only: int() also takes '١', str.isdigit() '²'
    if bad is not None:
        raise FormatError(f"RLE holds a non-numeric token {bad[:40]!r}", where=where, fix="the segmentation column must be 'start length …' integers")
    if len(tokens) % 2:
        raise FormatError(f"RLE has an odd number of values ({len(tokens)})", where=where, fix="give start/length pairs")
    big = next((t for t in tokens if len(t.lstrip("+-0")) > len(str(n))), None)  # more digits than the pixel count: past the end, and past int64
    if big is not None:
        raise FormatError(
            f"RLE value {big[:24]}{'…' if len(big) > 24 else ''} lies past the image end ({h}×{w} = {n} pixels)",
            where=where,
            fix="check the image size and the RLE order (row vs column)",
        )
    values = np.array([int(t) for t in tokens], dtype=np.int64)
    starts, lengths = values[0::2] - 1, values[1::2]
    if (starts < 0).any() or (lengths <= 0).any():
        raise FormatError("RLE has a start < 1 or a length ≤ 0", where=where, fix="starts are 1-based, lengths positive")
    ends = starts + lengths
    if ends.max() > n:
        raise FormatError(
            f"RLE run ends at pixel {int(ends.max())}, past the image end ({h}×{w} = {n} pixels)",
            where=where,
            fix="check the image size and the RLE order (row vs column)",
        )
    delta = np.zeros(n + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    flat = np.cumsum(delta[:n]) > 0
    return flat.reshape((h, w), order=forder)


def rle_encode(mask: np.ndarray, order: Order = "row") -> str:
    """Encode a 2D mask as a Kaggle RLE string (1-based starts); an empty mask gives ``""``.

    ``rle_decode(rle_encode(m, order), m.shape, order)`` equals ``m != 0`` exactly.
    """
    forder = _check_order(order)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise FormatError(f"RLE encodes 2D masks, got shape {mask.shape}", where="mask", fix="encode one slice at a time")
    flat = (mask.ravel(order=forder) != 0).astype(np.int8)
    padded = np.concatenate([[0], flat, [0]])
    change = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    starts, ends = change[0::2], change[1::2]
    runs = np.empty(2 * len(starts), dtype=np.int64)
    runs[0::2] = starts
    runs[1::2] = ends - starts
    return " ".join(map(str, runs.tolist()))


def write_rle_csv(path: str | Path, rows: Iterable[tuple[str, str, np.ndarray]], order: Order = "row") -> Path:
    """Write ``id,class,segmentation`` rows (one per slice and class) atomically.

    Args:
        path: the CSV to write.
        rows: ``(slice id, class name, 2D mask)`` triples, e.g. ``("case1_day2_slice_0001", "stomach", m)``.
        order: RLE flattening order.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "class", "segmentation"])
        for sid, cls, mask in rows:
            w.writerow([sid, cls, rle_encode(mask, order)])
    return path


def rle_rows(case: Case, label: np.ndarray, class_names: list[str]) -> Iterator[tuple[str, str, np.ndarray]]:
    """Kaggle GI-tract submission rows ``(case_slice id, class, 2D mask)`` of one multi-label case-day prediction."""
    if label.ndim != 4 and not (label.ndim == 3 and case.ndim == 2):
        raise MedsegError("RLE CSV needs multi-label predictions of GI-tract case-days", where="--format", fix="use --format nifti")
    vol = label if label.ndim == 4 else label[:, None]
    numbers = case.meta.get("slice_numbers")
    if numbers is None:
        first = (case.meta.get("slices") or [1])[0]
        numbers = list(range(first, first + vol.shape[1]))
    for z, num in enumerate(numbers):
        for k, name in enumerate(class_names):
            yield f"{case.case_id}_slice_{num:04d}", name, vol[k, z]
