"""NIfTI (``.nii``, ``.nii.gz``) with nibabel: the array as stored (axes i, j, k), nibabel's affine unchanged.

A mask written for a NIfTI source reuses the source's header, so its affine, sform/qform codes,
pixdim and units are the source's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import atomic_path
from medseg.core.errors import FormatError
from medseg.io.geometry import check_affine
from medseg.io.labels import check_voxels, warn

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """nibabel logs each header fix it makes (once per load); medseg warns once itself instead."""
    from nibabel.imageglobals import logger

    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def _raw_pixdim(path: Path, header_class: Any) -> np.ndarray:
    """pixdim as written in the file, before nibabel's fixes (zero → 1, negative → absolute)."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as fh:
        raw = header_class.from_fileobj(fh, check=False)
    return np.asarray(raw["pixdim"], dtype=np.float64)


def read_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray, Any]:
    """Read a NIfTI file.

    Returns:
        ``(array, affine, header)``: the voxels as stored (scaled by ``scl_slope``/``scl_inter``),
        nibabel's affine (float64) and a copy of the header (used to write masks like the source).

    Raises:
        FormatError: unreadable or truncated file, complex voxels, a degenerate affine.
    """
    import nibabel as nib

    path = Path(path)
    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
            arr = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for a truncated or corrupt file
        text = str(e).splitlines()[0].replace(str(path), path.name) if str(e) else "corrupt file"
        raise FormatError(
            f"cannot read volume ({type(e).__name__}: {text[:160]})",
            where=path,
            fix="re-export or re-download the file",
        ) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise FormatError(f"not a single-file NIfTI ({type(img).__name__})", where=path, fix="convert it to .nii or .nii.gz")
    check_voxels(arr, path)
    header = img.header.copy()
    ndim = min(int(header["dim"][0]), 3)
    if int(header["sform_code"]) == 0:  # then pixdim is part of the geometry
        raw = _raw_pixdim(path, type(header))[1 : ndim + 1]
        if not (np.isfinite(raw) & (raw > 0)).all():
            used = [float(v) for v in header.get_zooms()[:ndim]]
            warn(path, f"voxel spacing {[float(v) for v in raw]} mm in the header is not positive", f"{used} mm (as NIfTI readers do)")
    return arr, check_affine(np.asarray(img.affine, dtype=np.float64), path), header


def write_nifti(data: np.ndarray, path: str | Path, *, header: Any = None, affine: np.ndarray | None = None) -> Path:
    """Write ``data`` as NIfTI, atomically.

    Args:
        data: the voxels, in the axis order of ``header`` / ``affine`` (channels last for 4D).
        path: ``.nii`` or ``.nii.gz``.
        header: a source header to reuse: affine, sform/qform (matrices and codes), pixdim and units
            are kept exactly; the data type and scaling are the mask's own.
        affine: without ``header``: the affine (written as sform and qform with code 1, scanner).
    """
    import nibabel as nib

    path = Path(path)
    if header is not None:
        hdr = header.copy()
        hdr.set_data_dtype(data.dtype)
        hdr.set_slope_inter(1.0, 0.0)
        hdr["cal_min"], hdr["cal_max"] = 0.0, 0.0
        klass = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
        img = klass(data, None, header=hdr)  # no affine: the header's sform/qform stay bit for bit
    else:
        if affine is None:
            raise ValueError("write_nifti needs a header or an affine")
        img = nib.Nifti1Image(data, affine)
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
