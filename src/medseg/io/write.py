"""``write_mask``: a mask written exactly like its source image, or in another format on the same grid.

===============  =================================================================================
source           default output
===============  =================================================================================
NIfTI            NIfTI with the source header: same affine, sform/qform codes, pixdim, units, suffix
NRRD/MHA/MHD/    the same format with the source's size, spacing, origin and direction
GIPL
PNG/TIFF/BMP     the same format (JPEG → PNG), height × width of the source; TIFF pages for a volume
DICOM series     DICOM-SEG referencing the series' slices (highdicom)
a data set case  NIfTI with the case's affine
===============  =================================================================================

Class values are written as the data set stored its masks (``values``, e.g. ``[0, 255]``);
multi-label masks are a last axis (NIfTI), vector components (ITK), bits (rasters) or one
segment per class (DICOM-SEG).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.core.errors import MedsegError
from medseg.io.geometry import affine_4x4
from medseg.io.itk import ITK_WRITE_SUFFIX, geometry_from_affine, write_itk
from medseg.io.labels import mask_dtype, to_stored
from medseg.io.nifti import write_nifti
from medseg.io.raster import RASTER_WRITE_SUFFIX, write_raster
from medseg.io.source import Source, check_format, image_suffix


def _out_path(out: Path, source: Source, fmt: str) -> Path:
    low = out.name.lower()
    if image_suffix(out) or low.endswith(".dcm"):
        return out
    return out / source.file_name(fmt)


def _squeeze_to_2d(mask: np.ndarray, where: Path, fmt: str) -> np.ndarray:
    """A 3D mask with one slice along some axis as its 2D picture (a one-slice DICOM series → ``(H, W)``)."""
    if mask.ndim == 2:
        return mask
    ones = [i for i, n in enumerate(mask.shape) if n == 1]
    if not ones:
        raise MedsegError(
            f"a {fmt.upper()} file holds one 2D picture, the mask is a volume {tuple(mask.shape)}",
            where=where,
            fix="use --format nifti, or tiff for a multi-page file",
        )
    return np.squeeze(mask, axis=ones[0])


def write_mask(
    mask: np.ndarray,
    source: Source,
    out: str | Path,
    *,
    fmt: str | None = None,
    values: Sequence[int] | None = None,
    class_names: Sequence[str] = (),
) -> Path:
    """Write ``mask`` (on ``source``'s grid) like ``source``, or in ``fmt``; atomically. Returns the file.

    Args:
        mask: class indices with ``source.shape``, or ``(K, *source.shape)`` booleans (multi-label).
        source: what the reader returned with the image.
        out: a folder (the file is named after the source: ``scan.nii.gz`` → ``scan.nii.gz``) or a file.
        fmt: an output format (``nifti``, ``nrrd``, ``mha``, ``mhd``, ``gipl``, ``png``, ``tiff``,
            ``bmp``, ``dicom-seg``); ``None`` writes the source's own.
        values: the stored value of each class (``[0, 255]``), as the data set's masks were stored.
        class_names: class names (DICOM-SEG segment labels).
    """
    fmt = check_format(fmt) or source.format
    if fmt == "rle-csv":
        raise MedsegError(
            "rle-csv is one submission file for all cases", where="--format", fix="predict a data set of GI-tract case-days with --format rle-csv"
        )
    mask = np.asarray(mask)
    multi = mask.ndim == len(source.shape) + 1
    if tuple(mask.shape[1:] if multi else mask.shape) != tuple(source.shape):
        raise MedsegError(
            f"mask shape {mask.shape} is not on the source grid {source.shape}", where=source.path or source.name, fix="predict on the source grid"
        )
    path = _out_path(Path(out), source, fmt)
    if fmt == "dicom-seg":
        if source.kind != "dicom" or not source.dicom:
            raise MedsegError("DICOM-SEG output is for DICOM inputs", where=source.path or source.name, fix="use --format nifti (or omit --format)")
        from medseg.io.dicom_seg import write_seg

        return write_seg(mask, source.dicom, path, list(class_names), multi_label=multi)
    stored = mask.astype(np.uint8) if multi else to_stored(mask, values)
    stored = stored.astype(mask_dtype(stored), copy=False)
    if fmt in RASTER_WRITE_SUFFIX:
        if multi:  # one bit per class
            stored = np.tensordot(1 << np.arange(stored.shape[0], dtype=np.int64), stored.astype(np.int64), axes=1)
            stored = stored.astype(mask_dtype(stored))
        if fmt != "tiff":
            stored = _squeeze_to_2d(stored, path, fmt)
        return write_raster(stored, path, fmt)
    data = np.moveaxis(stored, 0, -1) if multi else stored  # channels last
    n = len(source.shape)
    if fmt == "nifti":
        if source.kind == "nifti" and source.header is not None:
            return write_nifti(data, path, header=source.header)
        affine = source.affine
        if source.kind in FILE_AXES_REVERSED:  # NIfTI's i, j, k = the source file's x, y, z (as ITK and dcm2niix write it)
            data, affine = _reversed(data, affine, n)
        if n == 2:
            data = data[:, :, None] if not multi else data[:, :, None, :]
        return write_nifti(data, path, affine=affine_4x4(affine))
    if fmt in ITK_WRITE_SUFFIX:
        if source.kind == "itk":
            return write_itk(data, path, source.header, vector=multi)
        affine = source.affine
        if source.kind not in FILE_AXES_REVERSED:  # ITK's x, y, z = the NIfTI's i, j, k
            data, affine = _reversed(data, affine, n)
        return write_itk(data, path, geometry_from_affine(affine, data.shape[:n]), vector=multi)
    raise MedsegError(f"unknown output format {fmt!r}", where="--format")  # check_format let through a name no writer has


#: sources whose file index axes (x, y[, z]) are our array axes reversed
FILE_AXES_REVERSED = ("itk", "dicom", "raster")


def _reversed(data: np.ndarray, affine: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The spatial axes of ``data`` reversed (a trailing channel axis stays last) and the affine's columns to match."""
    order = [*range(n)][::-1] + list(range(n, data.ndim))
    aff = np.asarray(affine, dtype=np.float64).copy()
    aff[:n, :n] = aff[:n, :n][:, ::-1]
    return np.ascontiguousarray(np.transpose(data, order)), aff
