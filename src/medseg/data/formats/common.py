"""Helpers shared by the importers: volume reading, label checks, class lists, polygons, NIfTI copies."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import atomic_dir
from medseg.core.case import Case
from medseg.data.formats.registry import FormatError
from medseg.io.geometry import LPS_TO_RAS

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def volume_suffix(path: str | Path) -> str | None:
    """The volume suffix of ``path`` (``.nii.gz``, ``.mha``...) or ``None``."""
    name = Path(path).name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), None)


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


def read_volume(path: str | Path, *, label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI/NRRD/MHA volume as ``(array, affine)`` with the affine in RAS+ for the array's axes.

    NIfTI is read with nibabel and its affine kept as is (array axes i, j, k). NRRD/MHA are read with
    SimpleITK; its array is ``(z, y, x)`` and its geometry LPS, so the affine's columns are reversed
    and the first two world axes flipped.

    Args:
        path: the file.
        label: read as a label (integer values required; raises on fractional values).

    Returns:
        ``array`` with the spatial axes first (a 4th axis holds channels), and a 4×4 float64 affine.
    """
    path = Path(path)
    suf = volume_suffix(path)
    if not path.is_file():
        raise FormatError("file not found", where=path, fix="check the path or the case list")
    try:
        if suf in (".nii", ".nii.gz"):
            import nibabel as nib

            img = nib.load(str(path))
            arr = np.asanyarray(img.dataobj)
            affine = np.asarray(img.affine, dtype=np.float64)
        else:
            import SimpleITK as sitk

            img = sitk.ReadImage(str(path))
            arr = sitk.GetArrayFromImage(img)
            n = img.GetDimension()
            # a vector image comes back as (z, y, x, components): components stay last, like a 4D NIfTI
            spacing = np.asarray(img.GetSpacing())[::-1]
            direction = np.asarray(img.GetDirection()).reshape(n, n)[:, ::-1]
            origin = np.asarray(img.GetOrigin())
            aff = np.eye(4)
            aff[:n, :n] = direction * spacing[None, :]
            aff[:n, 3] = origin
            affine = LPS_TO_RAS @ aff if n == 3 else aff
    except FormatError:
        raise
    except Exception as e:  # nibabel/ITK raise many types for a truncated or corrupt file
        raise FormatError(
            f"cannot read volume ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'corrupt file'})",
            where=path,
            fix="re-export or re-download the file",
        ) from None
    if label:
        arr = as_label(arr, path)
    else:
        arr = np.asarray(arr, dtype=np.float32)
    return arr, affine


def as_label(arr: np.ndarray, where: Any) -> np.ndarray:
    """Integer label array; fractional or negative values are refused."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            bad = arr[~np.isclose(arr, np.round(arr))][:3] if np.isfinite(arr).all() else "NaN"
            raise FormatError(
                f"label holds non-integer values (e.g. {bad})", where=where, fix="labels must be class indices; was the image given as the label?"
            )
        arr = arr.astype(np.int32)
    elif arr.dtype == bool:
        arr = arr.astype(np.int16)
    elif arr.dtype.kind not in "iu":
        raise FormatError(f"label has dtype {arr.dtype}", where=where, fix="store labels as integers")
    if arr.size and arr.min() < 0:
        raise FormatError(f"label holds negative values ({int(arr.min())})", where=where, fix="labels must be class indices 0…K-1")
    return arr


def check_same_grid(img_shape: tuple[int, ...], img_affine: np.ndarray, lab_shape: tuple[int, ...], lab_affine: np.ndarray, where: Any) -> None:
    """Refuse a label whose grid (shape or affine) differs from the image's."""
    if tuple(img_shape) != tuple(lab_shape):
        raise FormatError(
            f"label shape {tuple(lab_shape)} differs from image shape {tuple(img_shape)}", where=where, fix="resample the label onto the image grid"
        )
    if not np.allclose(img_affine, lab_affine, atol=1e-3, rtol=1e-5):
        raise FormatError(
            "label affine differs from the image affine (not the same voxel grid)",
            where=where,
            fix="resample the label onto the image grid, or fix the header",
        )


def volume_case(image_paths: Sequence[Path], label_path: Path | None, case_id: str, patient_id: str = "", meta: dict[str, Any] | None = None) -> Case:
    """One case from per-channel volume files (or one 4D file) and an optional label file on the same grid."""
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
        lab, laff = read_volume(label_path, label=True)
        if lab.ndim == len(shape) + 1 and lab.shape[-1] == 1:
            lab = lab[..., 0]
        check_same_grid(shape, affine, lab.shape, laff, where=label_path)
        label = lab
    ndim = len(shape)
    if ndim == 2:
        aff2 = np.eye(3)
        aff2[:2, :2] = affine[:2, :2]
        aff2[:2, 2] = affine[:2, 3]
        affine = aff2
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
    import nibabel as nib

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
                nib.save(nib.Nifti1Image(data, aff), str(tmp / "imagesTr" / f"{name}_{c:04d}.nii.gz"))
            if case.label is not None:
                lab = case.label.astype(np.uint8) if case.label.dtype == bool else case.label
                if case.multi_label:
                    lab = np.moveaxis(lab, 0, -1)  # channels last, as a 4D NIfTI
                    data, aff = _orient(lab, affine, n, reverse_axes, channels_last=True)
                else:
                    data, aff = _orient(lab, affine, n, reverse_axes)
                nib.save(nib.Nifti1Image(data, aff), str(tmp / "labelsTr" / f"{name}.nii.gz"))
    return dest


def affine_4x4(affine: np.ndarray) -> np.ndarray:
    """A 2D (3×3) affine lifted to 4×4 with unit slice spacing; a 4×4 one returned unchanged."""
    if affine.shape == (4, 4):
        return affine
    out = np.eye(4)
    out[:2, :2] = affine[:2, :2]
    out[:2, 3] = affine[:2, 2]
    return out


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
