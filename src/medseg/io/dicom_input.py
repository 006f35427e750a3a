"""DICOM image series given as a folder, a zip or a single file, read into ``(Case, Source)`` pairs.

The slices are grouped by SeriesInstanceUID; a folder holding several series needs a choice
(``--series UID``). RTSTRUCT and SEG objects, which are not images, are skipped. A zip is
extracted member by member into a temporary folder (sizes checked first, names never used as
paths) that is removed once its series have been read.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.case import Case
from medseg.core.errors import FormatError
from medseg.io.dicom import Series, build_series, looks_like_dicom, read_header, read_series_pixels
from medseg.io.source import Source

#: refuse zips that would expand to more than this many bytes
MAX_ZIP_BYTES = 8 * 2**30
#: SOP classes that are not images (segmentations, structure sets, reports)
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "KO", "PR"}


def extract_zip(path: Path, dest: Path, max_bytes: int | None = None) -> dict[Path, str]:
    """Extract a zip's files into ``dest`` under numbered folders; returns extracted file → member name.

    Member names are never used as paths (no zip-slip); the declared sizes are checked before
    anything is written and the bytes actually inflated are counted while copying.
    """
    limit = MAX_ZIP_BYTES if max_bytes is None else max_bytes
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise FormatError(f"cannot read zip ({e})", where=path, fix="re-create the zip") from None
    out: dict[Path, str] = {}
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        total = sum(m.file_size for m in members)
        if total > limit:
            raise FormatError(f"the zip expands to {total / 2**20:,.0f} MB, over the limit of {limit / 2**20:,.0f} MB", where=path, fix="zip fewer files")
        written = 0
        for i, m in enumerate(members):
            parent, _, base = m.filename.rpartition("/")
            if base.startswith(".") or "__MACOSX" in parent:
                continue
            folder = dest / f"{i:06d}"  # the member's base name (sanitised) keeps its suffix: .txt, .json … are skipped
            folder.mkdir()
            target = folder / _safe(base)
            with zf.open(m) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > limit:
                        raise FormatError(f"the zip expands to more than {limit / 2**20:,.0f} MB", where=path, fix="zip fewer files")
                    dst.write(chunk)
            out[target] = m.filename
    return out


@contextlib.contextmanager
def dicom_files(path: Path, *, max_bytes: int | None = None) -> Iterator[tuple[list[Path], Callable[[Path], str], Callable[[Path], str]]]:
    """``(files, shown, folder_of)`` of a DICOM folder, zip or single file.

    ``shown`` names a file as the person knows it (a zip member as ``scans.zip/member``);
    ``folder_of`` gives the folder a file sits in, relative to the input (``""`` at its top).
    """
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        yield files, str, lambda p: "/".join(p.relative_to(path).parts[:-1])
        return
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        tmp = Path(tempfile.mkdtemp(prefix="medseg-dicom-"))
        try:
            names = extract_zip(path, tmp, max_bytes)
            yield sorted(names), lambda p: f"{path}/{names.get(p, p.name)}", lambda p: names.get(p, "").rpartition("/")[0]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
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
            yield _case(s, path, name, headers=dict(items), shown=shown)


def _case(s: Series, path: Path, name: str, *, headers: dict[Path, Any], shown: Callable[[Path], str]) -> tuple[Case, Source]:
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
