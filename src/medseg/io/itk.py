"""NRRD, MetaImage (MHA/MHD) and GIPL with SimpleITK.

The array is SimpleITK's ``(z, y, x)`` (a trailing axis holds the components of a vector image);
its affine comes from :func:`medseg.io.geometry.affine_from_itk`. A mask written for such a
source gets the source's size, spacing, origin and direction, in the source's format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.core.atomic import atomic_path
from medseg.core.errors import FormatError
from medseg.io.geometry import affine_from_itk, check_affine
from medseg.io.labels import check_voxels

#: suffix → output format name
ITK_SUFFIXES = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mhd", ".gipl": "gipl", ".gipl.gz": "gipl"}
#: output format name → file suffix written
ITK_WRITE_SUFFIX = {"nrrd": ".nrrd", "mha": ".mha", "mhd": ".mhd", "gipl": ".gipl"}


@dataclass(frozen=True)
class ItkGeometry:
    """An ITK image's grid: ``size`` (x, y[, z]), spacing, origin (LPS for 3D) and row-major direction."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def affine(self) -> np.ndarray:
        return affine_from_itk(self.spacing, self.origin, self.direction)


def read_itk(path: str | Path) -> tuple[np.ndarray, np.ndarray, ItkGeometry]:
    """Read an NRRD/MHA/MHD/GIPL file.

    Returns:
        ``(array, affine, geometry)``: voxels ``(z, y, x[, components])``, the affine of those array
        axes (RAS+ for 3D) and the ITK geometry as stored.

    Raises:
        FormatError: unreadable file, more than three dimensions, complex voxels, degenerate geometry.
    """
    import SimpleITK as sitk

    path = Path(path)
    try:
        img = sitk.ReadImage(str(path))
    except Exception as e:  # SimpleITK raises RuntimeError with a multi-line ITK trace
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        text = lines[-1].replace(str(path), path.name)[:160] if lines else "corrupt file"
        raise FormatError(f"cannot read volume ({text})", where=path, fix="re-export or re-download the file") from None
    n = img.GetDimension()
    if n not in (2, 3):
        raise FormatError(f"the image has {n} dimensions", where=path, fix="give a 2D or 3D image (channels as vector components)")
    geo = ItkGeometry(tuple(int(v) for v in img.GetSize()), tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))
    if min(geo.spacing) <= 0:
        raise FormatError(f"voxel spacing {list(geo.spacing)} is not positive", where=path, fix="repair the header's spacing")
    arr = check_voxels(sitk.GetArrayFromImage(img), path)
    return arr, check_affine(geo.affine, path), geo


def write_itk(data: np.ndarray, path: str | Path, geometry: ItkGeometry, *, vector: bool = False) -> Path:
    """Write ``data`` (``(z, y, x)``, or ``(z, y, x, K)`` with ``vector``) with ``geometry``, atomically, compressed."""
    import SimpleITK as sitk

    path = Path(path)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=vector)
    if tuple(img.GetSize()) != tuple(geometry.size):
        raise FormatError(f"mask size {img.GetSize()} differs from the source's {geometry.size}", where=path, fix="predict on the source grid")
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    suffix = ".gipl" if path.name.lower().endswith((".gipl", ".gipl.gz")) else None
    with atomic_path(path, suffix=suffix) as tmp:
        # GIPL has no compression; MetaImage/NRRD are written deflated
        sitk.WriteImage(img, str(tmp), useCompression=not str(tmp).lower().endswith(".gipl"))
    if path.suffix.lower() == ".mhd":
        _move_raw(path)
    return path


def _move_raw(path: Path) -> None:
    """A MetaImage header names its pixel file: the temporary name is replaced by the final one."""
    header = path.read_text(encoding="latin-1")
    lines = header.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("ElementDataFile"):
            raw = path.parent / line.split("=", 1)[1].strip()
            final = path.with_suffix(raw.suffix)
            raw.replace(final)
            lines[i] = f"ElementDataFile = {final.name}"
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


def geometry_from_affine(affine: np.ndarray, shape: tuple[int, ...]) -> ItkGeometry:
    """The ITK geometry under which ``GetImageFromArray`` of an array ``shape`` lies where ``affine`` puts it."""
    from medseg.io.geometry import itk_from_affine

    spacing, origin, direction = itk_from_affine(affine)
    return ItkGeometry(tuple(int(v) for v in shape[::-1]), spacing, origin, direction)
