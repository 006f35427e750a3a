"""DICOM image series given as a folder, a zip or a single file, read into ``(Case, Source)`` pairs.

The slices are grouped by SeriesInstanceUID; a folder holding several series needs a choice
(``--series UID``). RTSTRUCT and SEG objects, which are not images, are skipped. A zip is
extracted by :func:`medseg.core.archives.open_zip` (entry count, sizes and compression ratios
checked first, members streamed under sanitised names) into a temporary folder that is removed
once its series have been read; errors name ``archive.zip:member``.
"""

from __future__ import annotations

import contextlib
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.archives import ZipLimits, open_zip
from medseg.core.case import Case
from medseg.core.errors import FormatError
from medseg.io.dicom import Series, build_series, looks_like_dicom, read_header, read_series_pixels
from medseg.io.source import Source

#: refuse zips that would expand to more than this many bytes
MAX_ZIP_BYTES = 8 * 2**30
#: SOP classes that are not images (segmentations, structure sets, reports)
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "KO", "PR"}


def zip_limits(max_bytes: int | None = None) -> ZipLimits:
    """What a zipped series may hold: ``max_bytes`` expanded in all (default 8 GB); large members may compress at most 200×."""
    limit = MAX_ZIP_BYTES if max_bytes is None else max_bytes
    return ZipLimits(max_member_bytes=limit, max_total_bytes=limit, ratio_floor_bytes=min(64 * 2**20, max(limit // 4, 1)))


def _wanted(name: str) -> bool:
    parent, _, base = name.replace("\\", "/").rpartition("/")
    return bool(base) and not base.startswith(".") and "__MACOSX" not in parent


@contextlib.contextmanager
def dicom_files(path: Path, *, max_bytes: int | None = None) -> Iterator[tuple[list[Path], Callable[[Path], str], Callable[[Path], str]]]:
    """``(files, shown, folder_of)`` of a DICOM folder, zip or single file.

    ``shown`` names a file as the person knows it (a zip member as ``scans.zip:member``);
    ``folder_of`` gives the folder a file sits in, relative to the input (``""`` at its top).
    """
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        yield files, str, lambda p: "/".join(p.relative_to(path).parts[:-1])
        return
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        with open_zip(path, zip_limits(max_bytes), keep=_wanted) as ex:  # checked first, streamed, removed on every exit
            names = ex.members
            yield sorted(names), ex.shown, lambda p: names.get(p, "").rpartition("/")[0]
        return
    yield [path], str, lambda p: ""


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s).strip("._") or "series"


def scan_series(files: list[Path], shown: Callable[[Path], str]) -> dict[str, list[tuple[Path, Any]]]:
    """Image slices grouped by SeriesInstanceUID (pixel data left on disk); other objects skipped."""
    by_series: dict[str, list[tuple[Path, Any]]] = {}
    for p in files:
        try:
            h = read_header(p)
        except FormatError:
            raise FormatError("not a DICOM file", where=shown(p), fix="remove it from the folder (or give it a non-DICOM suffix such as .txt)") from None
        if h is None or str(h.get("Modality", "")) in NON_IMAGE_MODALITIES or "PixelData" not in h:
            continue
        by_series.setdefault(str(h.get("SeriesInstanceUID", "")), []).append((p, h))
    return by_series


def choose_series(by_series: dict[str, list[tuple[Path, Any]]], series: str | None, path: Path, folder_of: Callable[[Path], str]) -> list[str]:
    """The series to read: the one asked for, or all when each folder holds one."""
    if not by_series:
        raise FormatError("no DICOM image series found", where=path, fix="give a folder, zip or file of DICOM image slices")
    if series:
        if series not in by_series:
            raise FormatError(f"no series {series!r}", where=path, fix=f"choose one of: {', '.join(sorted(by_series))}")
        return [series]
    folders: dict[str, set[str]] = {}
    for uid, items in by_series.items():
        for p, _ in items:
            folders.setdefault(folder_of(p), set()).add(uid)
    for folder, uids in sorted(folders.items()):
        if len(uids) > 1:
            raise FormatError(
                f"folder mixes {len(uids)} series ({', '.join(sorted(uids))})",
                where=f"{path}/{folder}" if folder else path,
                fix="choose one with --series UID, or put each series in its own folder",
            )
    return sorted(by_series)


def read_dicom(path: str | Path, *, series: str | None = None, max_bytes: int | None = None) -> Iterator[tuple[Case, Source]]:
    """Each image series of a DICOM folder, zip or single file as ``(Case, Source)``.

    The case is ``(1, slices, rows, columns)`` with the series' affine (see ``io.dicom``); the
    source keeps the slice headers (without pixels) so that a DICOM-SEG can reference them. A
    single series is named after the input (folder, zip or file name); several after their folders.
    ``max_bytes`` bounds what a zip may expand to (default 8 GB) and, decoded as float32, a series'
    voxels to twice that: checked from the headers before any pixel is decoded.
    """
    path = Path(path)
    base = path.name[: -len(path.suffix)] if path.is_file() and path.suffix else path.name
    with dicom_files(path, max_bytes=max_bytes) as (files, shown, folder_of):
        by_series = scan_series(files, shown)
        uids = choose_series(by_series, series, path, folder_of)
        names: set[str] = set()
        for uid in uids:
            items = by_series[uid]
            try:
                s = build_series(uid, items)
            except FormatError as e:
                raise FormatError(e.problem, where=shown(Path(e.where)) if e.where else path, fix=e.fix) from None
            folder = folder_of(s.files[0])
            name = _safe(base if len(uids) == 1 or not folder else folder.replace("/", "_"))
            if name in names:
                name = _safe(f"{name}_{uid[-8:]}")
            names.add(name)
            yield _case(s, path, name, headers=dict(items), shown=shown, max_bytes=max_bytes)


def _case(s: Series, path: Path, name: str, *, headers: dict[Path, Any], shown: Callable[[Path], str], max_bytes: int | None = None) -> tuple[Case, Source]:
    voxels = int(np.prod(s.shape))
    if max_bytes is not None and 4 * voxels > 2 * max_bytes:  # decoded as float32: at most twice what the zip may expand to
        raise FormatError(
            f"the series has {voxels:,} voxels ({4 * voxels / 2**20:,.0f} MB decoded), more than the limit of {2 * max_bytes / 2**20:,.0f} MB",
            where=path,
            fix="crop or downsample the series first",
        )
    try:
        pixels = read_series_pixels(s)
    except FormatError as e:
        raise FormatError(e.problem, where=shown(Path(e.where)) if e.where else path, fix=e.fix) from None
    slices = []
    for f in s.files:  # in array order, without the (deferred) pixel data: what a DICOM-SEG references
        h = headers[f]
        if "PixelData" in h:
            del h[0x7FE00010]
        slices.append(h)
    h0 = s.header
    meta = {
        "source": str(path),
        "series_uid": s.uid,
        "study_uid": str(h0.get("StudyInstanceUID", "")),
        "modality": str(h0.get("Modality", "")),
        "series_description": str(h0.get("SeriesDescription", "")),
        "slices": len(s.files),
        "axes": "slice,row,column",
    }
    case = Case(image=pixels[None], label=None, affine=s.affine, case_id=name, patient_id=s.patient_id, meta=meta)
    return case, Source("dicom", path, name, "", s.affine, tuple(s.shape), dicom=slices, meta={"series_uid": s.uid})


def read_slice(path: str | Path) -> tuple[np.ndarray, tuple[float, float]]:
    """One DICOM image file as ``(rows × columns float32 with RescaleSlope/Intercept, (row, column) spacing)``.

    For layouts that annotate single images (contours drawn per file) rather than series.
    """
    import pydicom

    path = Path(path)
    if not looks_like_dicom(path):
        raise FormatError("not a DICOM file", where=path, fix="check the file")
    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as e:
        raise FormatError(f"cannot read DICOM image ({str(e).splitlines()[0] if str(e) else type(e).__name__})", where=path, fix="check the file") from None
    if arr.ndim != 2 or arr.size == 0:
        raise FormatError(f"the image is {arr.shape}", where=path, fix="give single-frame grayscale images")
    arr = arr.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    ps = [float(v) for v in ds.get("PixelSpacing", [1.0, 1.0])]
    return arr, (ps[0], ps[1])
