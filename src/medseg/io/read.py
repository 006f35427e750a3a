"""Readers: any supported image (a file, a folder of files, a DICOM series) → ``Case`` + ``Source``.

===========================  ==============  ===============================================
input                        array axes      affine
===========================  ==============  ===============================================
NIfTI (nibabel)              as stored       nibabel's, unchanged (RAS+)
NRRD/MHA/MHD/GIPL (ITK)      (z, y, x)       ITK geometry, columns reversed, LPS → RAS
DICOM series (pydicom)       (slice, r, c)   from the slice positions and orientation, RAS+
PNG/TIFF/BMP/JPEG (Pillow)   (row, column)   identity (pixels carry no spacing); TIFF pages:
                             (page, r, c)    pages along world z (a stack of axial pictures)
===========================  ==============  ===============================================
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medseg.core.case import Case
from medseg.core.errors import FormatError
from medseg.io.dicom import looks_like_dicom
from medseg.io.geometry import affine_2d
from medseg.io.itk import read_itk
from medseg.io.labels import as_label, binary_values, warn
from medseg.io.nifti import read_nifti
from medseg.io.raster import read_raster
from medseg.io.source import DICOM_SUFFIXES, Source, image_stem, image_suffix, kind_of

SUPPORTED = "NIfTI, NRRD, MHA/MHD, GIPL, PNG, TIFF, BMP or JPEG files, a DICOM folder, zip or file"


def read_array(path: str | Path, *, label: bool = False) -> tuple[np.ndarray, np.ndarray, Source]:
    """One image file as ``(array, affine, source)``: spatial axes first, a trailing axis for channels.

    Args:
        path: a NIfTI, ITK (NRRD/MHA/MHD/GIPL) or raster (PNG/TIFF/BMP/JPEG) file.
        label: read a mask: palette indices kept, colour refused (rasters).

    Returns:
        The array (channels last: a 4D NIfTI, an ITK vector image, an RGB picture), the affine of
        its spatial axes, and the :class:`Source` (its ``shape`` is the spatial shape).
    """
    path = path if isinstance(path, Path) else Path(path)
    suffix = image_suffix(path)
    kind = kind_of(suffix)
    if kind is None:
        raise FormatError("not a supported image file", where=path, fix=f"give {SUPPORTED}")
    if not path.is_file():
        raise FormatError("file not found", where=path, fix="check the path or the case list")
    header = None
    pages = False
    if kind == "nifti":
        arr, affine, header = read_nifti(path)
        if arr.ndim == 5 and arr.shape[3] == 1:  # NIfTI vector intent: (x, y, z, 1, components)
            arr = arr[:, :, :, 0]
        spatial = min(arr.ndim, 3)
    elif kind == "itk":
        arr, affine, header = read_itk(path)
        spatial = len(header.size)
    else:
        arr, n_pages = read_raster(path, label=label)
        pages = n_pages > 1
        spatial = 3 if pages else 2
        affine = np.eye(spatial + 1)
        if pages:  # pages are slices: array axis 0 runs along world z, rows along y, columns along x
            affine[:3, :3] = np.eye(3)[::-1]
    if arr.ndim > spatial + 1 or arr.size == 0:
        raise FormatError(f"the image has shape {arr.shape}", where=path, fix="give a non-empty 2D or 3D image (channels last)")
    if spatial == 2 and affine.shape == (4, 4):
        affine = affine_2d(affine)
    shape = tuple(int(v) for v in arr.shape[:spatial])
    name = image_stem(path)
    return arr, affine, Source(kind, path, name, suffix or "", affine, shape, header=header, pages=pages)


def read_file(path: str | Path) -> tuple[Case, Source]:
    """One image file as a label-less ``Case`` (channels first) and its ``Source``."""
    arr, affine, src = read_array(path)
    spatial = len(src.shape)
    image = arr[None] if arr.ndim == spatial else np.moveaxis(arr, -1, 0)
    case = Case(image=image, label=None, affine=affine, case_id=src.name, meta={"source": str(path)})
    return case, src


def read_label(path: str | Path) -> tuple[np.ndarray, np.ndarray, Source]:
    """A mask file as ``(class indices, affine, source)``.

    A binary 0/255 (or 0/65535) mask is read as 0/1 and ``source.values`` records the stored
    values; volumes saying so get a warning (image-editor masks are expected to be 0/255).
    Values that are not class indices are refused: fractions, negatives, more than 65,535.
    """
    arr, affine, src = read_array(path, label=True)
    if arr.ndim > len(src.shape):
        if arr.shape[-1] != 1:
            raise FormatError(f"mask has {arr.shape[-1]} channels per voxel (colour image?)", where=path, fix="save the mask as a single-channel label image")
        arr = arr[..., 0]
    lab = as_label(arr, path)
    lab, values = binary_values(lab)
    if values is not None and src.kind != "raster":
        warn(path, f"the label holds only 0 and {values[1]}", f"0 = background, {values[1]} = class 1 (as for image masks)")
    src.values = values
    return lab, affine, src


def read_volume(path: str | Path, *, label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(array, affine)`` of one file: spatial axes first, channels last; ``label`` as :func:`read_label`."""
    if label:
        lab, affine, _ = read_label(path)
        return lab, affine
    arr, affine, _ = read_array(path)
    return np.asarray(arr, dtype=np.float32), affine


def read_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A mask for scoring: ``(int32 class indices, affine)`` in the one convention (compare grids with ``geometry.axis_order``)."""
    lab, affine, _ = read_label(path)
    return lab.astype(np.int32, copy=False), affine


def is_dicom_input(path: Path) -> bool:
    """A single DICOM file (by suffix, or by its preamble for a file without a known suffix)."""
    return path.is_file() and (path.suffix.lower() in DICOM_SUFFIXES or (image_suffix(path) is None and looks_like_dicom(path)))


def read_images(path: str | Path, *, series: str | None = None, max_bytes: int | None = None) -> Iterator[tuple[Case, Source]]:
    """Every image of ``path``: a file, a folder of files, or a DICOM series (folder, zip, single file).

    A folder holding image files gives those (not its sub-folders); a folder whose files are all
    named ``case_0000``, ``case_0001`` … (nnU-Net's channels) gives one case per ``case``, its
    channels stacked and its output named ``case``; a folder without any is read as a DICOM tree,
    one case per series. Files sharing a name but not a suffix get the suffix in
    their output name (``a.nrrd`` → ``a_nrrd``).
    """
    import zipfile

    from medseg.io.dicom_input import read_dicom

    path = Path(path)
    if not path.exists():
        raise FormatError("input does not exist", where=path, fix="check the path")
    if path.is_file() and image_suffix(path):
        yield read_file(path)
        return
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and image_suffix(p))
        if files:
            stems = [image_stem(p) for p in files]
            groups = channel_groups(files, stems)
            if groups is not None:
                for name, paths in groups.items():
                    yield read_channels(name, paths)
                return
            for p, stem in zip(files, stems, strict=True):
                case, src = read_file(p)
                if stems.count(stem) > 1:
                    src.name = case.case_id = f"{stem}_{(image_suffix(p) or '').strip('.').replace('.', '_')}"
                yield case, src
            return
    if path.is_dir() or is_dicom_input(path) or path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        yield from read_dicom(path, series=series, max_bytes=max_bytes)
        return
    raise FormatError("not an image, volume, DICOM series or zip", where=path, fix=f"give {SUPPORTED}, or a data set folder")


def channel_groups(files: list[Path], stems: list[str]) -> dict[str, list[Path]] | None:
    """nnU-Net's channel naming (``case_0000.png``, ``case_0001.png`` …): ``{case: [files by channel]}``.

    ``None`` unless every file of the folder ends in ``_NNNN`` (then the folder is read file by file).
    A case whose channels are not numbered 0, 1, … without gaps is refused.
    """
    import re

    matches = [re.fullmatch(r"(.+)_(\d{4})", s) for s in stems]
    if not all(matches):
        return None
    groups: dict[str, dict[int, Path]] = {}
    for m, p in zip(matches, files, strict=True):
        groups.setdefault(m.group(1), {})[int(m.group(2))] = p  # type: ignore[union-attr]
    counts = {len(g) for g in groups.values()}
    for name, chans in groups.items():
        if sorted(chans) != list(range(len(chans))) or len(counts) > 1:
            have = ", ".join(f"_{c:04d}" for c in sorted(chans))
            raise FormatError(
                f"case {name!r} has channel files {have}",
                where=chans[min(chans)],
                fix=f"give every case the same channels _0000 … _{max(counts) - 1:04d}, numbered without gaps",
            )
    return {name: [chans[c] for c in sorted(chans)] for name, chans in groups.items()}


def read_channels(name: str, paths: list[Path]) -> tuple[Case, Source]:
    """One case from its channel files (same grid), named ``name`` as nnU-Net names predictions."""
    cases = [read_file(p) for p in paths]
    case, src = cases[0]
    for _, osrc in cases[1:]:
        if osrc.shape != src.shape or not np.allclose(osrc.affine, src.affine, atol=1e-3):
            raise FormatError(
                f"channel file is on another grid than {paths[0].name} ({osrc.shape} vs {src.shape})",
                where=osrc.path,
                fix="resample every channel of a case onto one grid",
            )
    image = np.concatenate([c.image for c, _ in cases], axis=0) if len(cases) > 1 else case.image
    src.name = name
    return Case(image=image, label=None, affine=case.affine, case_id=name, meta={"source": [str(p) for p in paths]}), src


def read_image(path: str | Path, *, series: str | None = None, max_bytes: int | None = None) -> tuple[Case, Source]:
    """Exactly one image (a file or one DICOM series) as ``(Case, Source)``."""
    items = read_images(path, series=series, max_bytes=max_bytes)
    first = next(items, None)
    if first is None:
        raise FormatError("no image found", where=path, fix=f"give {SUPPORTED}")
    if next(items, None) is not None:
        items.close()
        raise FormatError("holds several images", where=path, fix="give one file or one series")
    return first
