"""Helpers shared by the importers: volume cases from channel files, class lists, polygons, NIfTI copies (pixels are read by ``medseg.io``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import atomic_dir
from medseg.core.case import Case
from medseg.data.formats.registry import FormatError
from medseg.io import read_label, read_volume
from medseg.io.geometry import affine_2d, affine_4x4, check_same_grid
from medseg.io.labels import ValueConvention
from medseg.io.nifti import write_nifti
from medseg.io.source import image_suffix, kind_of


def volume_suffix(path: str | Path) -> str | None:
    """The volume suffix of ``path`` (``.nii.gz``, ``.nrrd``, ``.mha``, ``.gipl``…) or ``None``."""
    suf = image_suffix(path)
    return suf if kind_of(suf) in ("nifti", "itk") else None


def volume_stem(path: str | Path) -> str:
    """File name without its volume suffix (``case_01.nii.gz`` → ``case_01``)."""
    suf = volume_suffix(path)
    name = Path(path).name
    return name[: -len(suf)] if suf else Path(path).stem


def parse_names(value: str | Sequence[str] | None) -> list[str] | None:
    """A class/ROI list from ``"a,b,c"`` or a list; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    else:
        items = [str(v).strip() for v in value]
    items = [v for v in items if v]
    return items or None


def default_classes(n_values: int, names: list[str] | None, where: Any) -> list[str]:
    """Class names for labels with values ``0 … n_values-1``: the given names, or background + class_i."""
    if names is not None:
        if len(names) < n_values:
            raise FormatError(
                f"labels hold values up to {n_values - 1} but only {len(names)} class names were given ({', '.join(names)})",
                where=where,
                fix=f"give {n_values} names, background first",
            )
        return names
    return ["background"] + [f"class_{i}" for i in range(1, max(n_values, 2))]


def volume_case(
    image_paths: Sequence[Path],
    label_path: Path | None,
    case_id: str,
    patient_id: str = "",
    meta: dict[str, Any] | None = None,
    *,
    convention: ValueConvention | None = None,
) -> Case:
    """One case from per-channel volume files (or one 4D file) and an optional label file on the same grid.

    ``convention`` collects how the label file stored its classes (0/255 masks are read as 0/1).
    """
    chans: list[np.ndarray] = []
    affine: np.ndarray | None = None
    shape: tuple[int, ...] | None = None
    for p in image_paths:
        arr, aff = read_volume(p)
        if arr.ndim == 4:
            parts = [arr[..., i] for i in range(arr.shape[-1])]
        elif arr.ndim in (2, 3):
            parts = [arr]
        else:
            raise FormatError(f"image has {arr.ndim} dimensions", where=p, fix="give 2D, 3D or 4D (channels last) volumes")
        if affine is None:
            affine, shape = aff, parts[0].shape
        else:
            check_same_grid(shape, affine, parts[0].shape, aff, where=p)  # type: ignore[arg-type]
        chans.extend(parts)
    assert affine is not None and shape is not None
    image = np.stack(chans).astype(np.float32, copy=False)
    label = None
    if label_path is not None:
        lab, laff, src = read_label(label_path)
        check_same_grid(shape, affine, lab.shape, laff, where=label_path)
        label = lab
        if convention is not None:
            convention.add(src.values, lab)
    ndim = len(shape)
    if ndim == 2:
        affine = affine_2d(affine)
    m = {"source": str(image_paths[0])}
    if label_path is not None:
        m["label_source"] = str(label_path)
    m.update(meta or {})
    return Case(image=image, label=label, affine=affine, case_id=case_id, patient_id=patient_id, meta=m)


def fill_polygon(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A filled polygon (vertices in pixel coordinates, pixel centres at integers) as a boolean ``mask``-shaped array.

    Uses Pillow's scan-line fill (boundary included); written here because no importer library
    rasterises a bare polygon without pulling in OpenCV.
    """
    from PIL import Image, ImageDraw

    h, w = mask.shape
    im = Image.new("1", (w, h), 0)
    # round off float noise from world → index conversion (6.9999999 must fill pixel 7)
    pts = [(round(float(c), 3), round(float(r), 3)) for r, c in zip(rows, cols, strict=True)]
    if len(pts) >= 3:
        ImageDraw.Draw(im).polygon(pts, fill=1, outline=1)
    elif pts:
        ImageDraw.Draw(im).line(pts, fill=1)
    return np.asarray(im, dtype=bool)


def write_nifti_copies(ds: Any, dest: Path, reverse_axes: bool = True, overwrite: bool = False) -> Path:
    """Write NIfTI copies of a written data set in the nnU-Net raw layout (``imagesTr/`` ``labelsTr/``).

    Args:
        ds: the data set (``medseg.data.store.Dataset``).
        dest: the folder to create (atomically).
        reverse_axes: store the spatial axes reversed (x fastest, as DICOM converters do), with the
            affine's columns permuted to match; world positions are unchanged.
        overwrite: replace an existing ``dest``.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FormatError("NIfTI output folder already exists", where=dest, fix="choose another --to-nifti folder or pass --overwrite")
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for cid in ds.case_ids:
            case = ds.load_case(cid)
            affine = affine_4x4(case.affine)
            n = case.ndim
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", cid)
            for c in range(case.n_channels):
                data, aff = _orient(case.image[c], affine, n, reverse_axes)
                write_nifti(data, tmp / "imagesTr" / f"{name}_{c:04d}.nii.gz", affine=aff)
            if case.label is not None:
                lab = case.label.astype(np.uint8) if case.label.dtype == bool else case.label
                if case.multi_label:
                    lab = np.moveaxis(lab, 0, -1)  # channels last, as a 4D NIfTI
                    data, aff = _orient(lab, affine, n, reverse_axes, channels_last=True)
                else:
                    data, aff = _orient(lab, affine, n, reverse_axes)
                write_nifti(data, tmp / "labelsTr" / f"{name}.nii.gz", affine=aff)
    return dest


def _orient(data: np.ndarray, affine: np.ndarray, n: int, reverse: bool, channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    if n == 2:
        data = data[..., None, :] if channels_last else data[..., None]
        n = 3
    if not reverse:
        return data, affine
    order = list(range(n))[::-1] + ([n] if channels_last else [])
    aff = affine.copy()
    aff[:3, :3] = affine[:3, :3][:, ::-1]
    return np.transpose(data, order), aff
