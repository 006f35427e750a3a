"""What a reader returns besides the ``Case``: where the image came from and how to write a mask like it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.errors import MedsegError
from medseg.io.itk import ITK_SUFFIXES, ITK_WRITE_SUFFIX
from medseg.io.nifti import NIFTI_SUFFIXES
from medseg.io.raster import RASTER_SUFFIXES, RASTER_WRITE_SUFFIX

#: every mask format ``write_mask`` writes (``rle-csv`` is one submission file per run, see ``medseg.io.rle``)
OUTPUT_FORMATS = ("nifti", "nrrd", "mha", "mhd", "gipl", "png", "tiff", "bmp", "dicom-seg", "rle-csv")
#: the suffixes read as images, longest first (``.nii.gz`` before ``.gz``)
IMAGE_SUFFIXES = tuple(sorted({*NIFTI_SUFFIXES, *ITK_SUFFIXES, *RASTER_SUFFIXES}, key=len, reverse=True))
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def image_suffix(path: str | Path) -> str | None:
    """The image suffix of ``path`` in lower case (``.nii.gz``, ``.nrrd``, ``.png`` …), or ``None``."""
    name = os.path.basename(os.fspath(path)).lower()  # no Path(): this runs once per slice of an import
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def image_stem(path: str | Path) -> str:
    """The file name without its image suffix (``case_01.nii.gz`` → ``case_01``)."""
    name = os.path.basename(os.fspath(path))
    low = name.lower()
    suf = next((s for s in (*IMAGE_SUFFIXES, *DICOM_SUFFIXES) if low.endswith(s)), None)
    return name[: -len(suf)] if suf else os.path.splitext(name)[0]


def kind_of(suffix: str | None) -> str | None:
    """``nifti`` | ``itk`` | ``raster`` for an image suffix, else ``None``."""
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in ITK_SUFFIXES:
        return "itk"
    if suffix in RASTER_SUFFIXES:
        return "raster"
    return None


def check_format(fmt: str | None) -> str | None:
    """``None`` (each input's own format) or a known output format; anything else is refused."""
    if fmt is None or fmt in ("auto", "input", ""):
        return None
    low = str(fmt).lower().replace("_", "-")
    low = {"nii": "nifti", "nii.gz": "nifti", "tif": "tiff", "seg": "dicom-seg", "dicomseg": "dicom-seg", "rle": "rle-csv"}.get(low, low)
    if low not in OUTPUT_FORMATS:
        raise MedsegError(
            f"unknown output format {fmt!r}", where="--format", fix=f"use one of {', '.join(OUTPUT_FORMATS)} (or omit it: each input's own format)"
        )
    return low


@dataclass
class Source:
    """An image's origin, kept to write a mask back exactly like it.

    Args:
        kind: ``nifti`` | ``itk`` | ``raster`` | ``dicom`` | ``array`` (a case without a file, e.g. from a data set).
        path: the file, folder or zip read.
        name: the output file stem (the input's name without its suffix).
        suffix: the input's suffix (``.nii.gz``, ``.nrrd``, ``.png``; empty for a DICOM folder).
        affine: the case's affine (array axes → world mm).
        shape: the case's spatial shape.
        header: NIfTI: the nibabel header; ITK: the :class:`~medseg.io.itk.ItkGeometry`.
        dicom: DICOM: the slice headers (without pixel data) in array order.
        pages: raster: the file held several pages (a volume).
        values: labels only: the stored value of each class when it is not the index (``[0, 255]``).
        meta: what else the case carries (series UID, slice numbers…).
    """

    kind: str
    path: Path | None
    name: str
    suffix: str
    affine: np.ndarray
    shape: tuple[int, ...]
    header: Any = field(default=None, repr=False)
    dicom: list[Any] = field(default_factory=list, repr=False)
    pages: bool = False
    values: list[int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        """The output format a mask of this source is written in by default."""
        if self.kind == "nifti":
            return "nifti"
        if self.kind == "itk":
            return ITK_SUFFIXES.get(self.suffix, "nrrd")
        if self.kind == "raster":
            return RASTER_SUFFIXES.get(self.suffix, "png")
        if self.kind == "dicom":
            return "dicom-seg"
        return "nifti"

    def file_name(self, fmt: str) -> str:
        """``<name><suffix>`` for a mask in ``fmt`` (a NIfTI source keeps ``.nii`` or ``.nii.gz``)."""
        if fmt == "nifti":
            return self.name + (self.suffix if self.kind == "nifti" else ".nii.gz")
        if fmt == "dicom-seg":
            return f"{self.name}.seg.dcm"
        suffix = {**ITK_WRITE_SUFFIX, **RASTER_WRITE_SUFFIX}.get(fmt)
        if suffix is None:
            raise MedsegError(f"{fmt!r} is not written one file per image", where="--format", fix=f"use one of {', '.join(OUTPUT_FORMATS[:-1])}")
        return self.name + suffix
