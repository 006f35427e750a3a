"""Kaggle GI-tract layout: 16-bit PNG slices + a run-length-encoded ``train.csv``.

Layout (UW-Madison GI Tract Image Segmentation)::

    path/
      train.csv                          id,class,segmentation  (one row per slice and organ)
      train/case123/case123_day20/scans/slice_0001_266_266_1.50_1.50.png
                                         slice_XXXX_{W}_{H}_{pixel width mm}_{pixel height mm}.png

Rows are grouped by ``case{N}_day{M}``; the slices of one case-day, sorted by number, become one
3D volume ``(D, H, W)``. Organs may overlap, so the label is multi-label: one boolean channel per
class. The patient is ``case{N}``, so days of one patient never straddle splits.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medseg.core.case import Case
from medseg.data.formats.common import parse_names
from medseg.data.formats.registry import FORMATS, FormatError, Imported
from medseg.data.formats.rle import Order, rle_decode
from medseg.data.store import DatasetInfo, make_classes
from medseg.io import read_array

ID_RE = re.compile(r"^(case\d+)_(day\d+)_slice_(\d+)$")
PNG_RE = re.compile(r"^slice_(\d+)_(\d+)_(\d+)_([\d.]+)_([\d.]+)\.png$")


def parse_slice_name(path: Path) -> tuple[int, int, int, float, float]:
    """``slice_XXXX_W_H_pw_ph.png`` → (slice number, W, H, pixel width, pixel height)."""
    m = PNG_RE.match(path.name)
    if not m:
        raise FormatError("PNG name does not follow slice_XXXX_W_H_pw_ph.png", where=path, fix="keep the names the data set ships with")
    return int(m[1]), int(m[2]), int(m[3]), float(m[4]), float(m[5])


def read_slice(path: Path, width: int, height: int) -> np.ndarray:
    """A 16-bit PNG slice as an ``(H, W)`` array, checked against the size in its name."""
    arr, _, src = read_array(path)
    if len(src.shape) != 2:
        raise FormatError(f"the PNG holds {src.shape[0]} frames", where=path, fix="re-extract the file")
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.shape != (height, width):
        raise FormatError(
            f"PNG is {arr.shape[1]}×{arr.shape[0]} (W×H) but its name says {width}×{height}",
            where=path,
            fix="the file or its name is wrong; re-extract the data set",
        )
    return arr


@FORMATS.register("kaggle-gi", help="Kaggle GI-tract PNG slices + RLE train.csv (id,class,segmentation); multi-label 3D per case-day")
def read_kaggle_gi(
    path: Path,
    *,
    csv_file: str = "train.csv",
    order: Order = "row",
    classes: str | list[str] | None = None,
    slice_thickness: float = 3.0,
    name: str = "",
) -> Imported:
    """Read a GI-tract style folder.

    Args:
        path: the folder holding the CSV and the PNG tree (or the CSV itself).
        csv_file: the CSV's name inside ``path``.
        order: RLE flattening, ``"row"`` (the GI-tract convention) or ``"column"``.
        classes: organ names in channel order (default: order of first appearance in the CSV).
        slice_thickness: slice spacing in mm (not in the file names; 3 mm in the GI-tract data).
        name: data set name (default: the folder's name).
    """
    path = Path(path)
    csv_path = path if path.is_file() else path / csv_file
    root = csv_path.parent
    if not csv_path.is_file():
        raise FormatError("no RLE CSV found", where=csv_path, fix="give the folder holding train.csv or pass --option csv_file=NAME")
    pngs: dict[str, Path] = {}
    for p in root.rglob("slice_*.png"):
        day = next((part for part in reversed(p.parent.parts) if re.match(r"^case\d+_day\d+$", part)), None)
        if day is None:
            continue
        pngs[f"{day}_slice_{parse_slice_name(p)[0]:04d}"] = p
    # rows grouped per case-day; the CSV is read once, only ids/classes/RLE strings are kept
    groups: dict[str, dict[int, dict[str, tuple[str, int]]]] = {}
    seen_classes: list[str] = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["id", "class", "segmentation"]:
            raise FormatError(f"header is {header}, expected id,class,segmentation", where=csv_path, fix="give a Kaggle GI-tract style CSV")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                row = [*row, ""][:3]
            sid, cls, rle = row[0].strip(), row[1].strip(), row[2].strip()
            m = ID_RE.match(sid)
            if not m:
                raise FormatError(f"id {sid!r} is not case{{N}}_day{{M}}_slice_{{XXXX}}", where=f"{csv_path}:{lineno}", fix="fix the id column")
            if sid not in pngs:
                raise FormatError(f"id {sid!r} matches no PNG slice", where=f"{csv_path}:{lineno}", fix=f"put its PNG under {root}/…/{m[1]}_{m[2]}/scans/")
            if cls not in seen_classes:
                seen_classes.append(cls)
            groups.setdefault(f"{m[1]}_{m[2]}", {}).setdefault(int(m[3]), {})[cls] = (rle, lineno)
    names = parse_names(classes) or seen_classes
    unknown = [c for c in seen_classes if c not in names]
    if unknown:
        raise FormatError(f"CSV classes {unknown} are not in the given class list {names}", where=csv_path, fix="add them to --option classes")
    if not groups:
        raise FormatError("CSV lists no slices", where=csv_path, fix="check the file")
    info = DatasetInfo(
        name=name or root.name,
        description=f"Imported from {csv_path.name} (Kaggle GI-tract RLE, {order}-major)",
        dims=3,
        modalities=["MRI"],
        classes=make_classes(names, background=False),
        multi_label=True,
        source={"format": "kaggle-gi", "path": str(path), "order": order, "slice_thickness": slice_thickness},
    )

    def cases() -> Iterator[Case]:
        for day_id in sorted(groups, key=_natural):
            yield _case_day(day_id, groups[day_id], pngs, names, order, thickness=slice_thickness, csv_path=csv_path)

    return Imported(info=info, cases=cases())


def _case_day(
    day_id: str, slices: dict[int, dict[str, tuple[str, int]]], pngs: dict[str, Path], names: list[str], order: Order, *, thickness: float, csv_path: Path
) -> Case:
    numbers = sorted(slices)
    first = pngs[f"{day_id}_slice_{numbers[0]:04d}"]
    _, w, h, pw, ph = parse_slice_name(first)
    image = np.empty((1, len(numbers), h, w), dtype=np.float32)
    label = np.zeros((len(names), len(numbers), h, w), dtype=bool)
    for z, num in enumerate(numbers):
        p = pngs[f"{day_id}_slice_{num:04d}"]
        _, w2, h2, _, _ = parse_slice_name(p)
        if (w2, h2) != (w, h):
            raise FormatError(f"slice is {w2}×{h2} but {first.name} is {w}×{h}", where=p, fix="all slices of a case-day must share one size")
        image[0, z] = read_slice(p, w, h)
        for cls, (rle, lineno) in slices[num].items():
            if rle:
                label[names.index(cls), z] = rle_decode(rle, (h, w), order, where=f"{csv_path}:{lineno}")
    case_id = day_id
    return Case.from_spacing(
        image,
        label,
        spacing=(thickness, ph, pw),
        case_id=case_id,
        patient_id=day_id.split("_")[0],
        meta={"source": str(first.parent), "slices": [numbers[0], numbers[-1]]},
    )


def _natural(s: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
