"""DICOM: a folder (or zip) of one or more series, with labels from NIfTI, DICOM-SEG or RTSTRUCT.

Layout::

    path/                          (or path.zip)
      patient01/ct/IM0001.dcm …    one series per folder (several series in one folder need --series UID)
      patient01/rtstruct.dcm       RTSTRUCT or DICOM-SEG referencing that series (optional)
      patient02/…

Each series becomes one 3D case: slices sorted by ImagePositionPatient along the slice normal,
RescaleSlope/Intercept applied per slice, slice spacing taken from the positions (so gaps between
thin slices count), orientation from ImageOrientationPatient, case/patient ids from the tags.

Geometry: the array is ``(slice, row, column)``; the affine maps those indices to RAS+ millimetres
(DICOM's LPS with x and y negated), so a mask written back with the same affine (or with
``--to-nifti``) lies exactly on the series' grid.

Labels: ``--option labels=PATH`` (a NIfTI mask, or a folder of masks named after the case id,
SeriesInstanceUID or PatientID, or carrying the same number as the PatientID — TCIA's ``label0001``
for ``PANCREAS_0001``; each mask is put onto its series' grid through world coordinates, in any
axis order or orientation its header states, and refused when it does not fit; a series without
a mask is refused unless ``--option unlabelled=keep|skip``); a DICOM-SEG in the input (read with
highdicom); or an RTSTRUCT in the input whose closed planar contours are rasterised onto the
series (``--option rois=Liver,Tumour`` picks ROIs by name; later ROIs overwrite earlier ones).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.archives import Extracted, extract, is_zip
from medseg.core.case import Case
from medseg.core.errors import MedsegWarning
from medseg.data.formats.common import fill_polygon, parse_names, volume_stem, volume_suffix, write_nifti_copies
from medseg.data.formats.registry import FORMATS, FormatError, Imported
from medseg.data.store import DatasetInfo, make_classes
from medseg.io import read_volume
from medseg.io.dicom import Series, build_series, compact_header, read_header, read_series_pixels
from medseg.io.dicom_seg import read_seg
from medseg.io.geometry import LPS_TO_RAS, onto_grid

SEG_UID = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_UID = "1.2.840.10008.5.1.4.1.1.481.3"


def _referenced_series_rtstruct(h: Any) -> list[str]:
    uids = []
    for fr in h.get("ReferencedFrameOfReferenceSequence", []):
        for st in fr.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                uids.append(str(se.SeriesInstanceUID))
    return uids


def _referenced_series_seg(h: Any) -> list[str]:
    return [str(s.SeriesInstanceUID) for s in h.get("ReferencedSeriesSequence", [])]


def _roi_names(h: Any) -> dict[int, str]:
    return {int(r.ROINumber): str(r.ROIName) for r in h.get("StructureSetROISequence", [])}


def rasterise_rtstruct(path: Path, series: Series, roi_classes: dict[str, int]) -> np.ndarray:
    """An RTSTRUCT's chosen ROIs as a class-index volume on the series grid.

    Contours on one slice are combined by XOR, so an inner contour cuts a hole; later ROIs overwrite
    earlier ones where they overlap.
    """
    import pydicom

    ds = pydicom.dcmread(path)
    names = _roi_names(ds)
    lps_to_index = np.linalg.inv(LPS_TO_RAS @ series.affine)  # contour points are LPS mm
    label = np.zeros(series.shape, dtype=np.int16)
    d, h, w = series.shape
    for roi in ds.get("ROIContourSequence", []):
        roi_name = names.get(int(roi.ReferencedROINumber), "")
        key = roi_name.lower()
        if key not in roi_classes:
            continue
        cls = roi_classes[key]
        planes: dict[int, np.ndarray] = {}
        for contour in roi.get("ContourSequence", []):
            pts = np.asarray([float(v) for v in contour.ContourData], dtype=np.float64).reshape(-1, 3)
            idx = (lps_to_index @ np.c_[pts, np.ones(len(pts))].T).T[:, :3]
            k = np.round(idx[:, 0])
            if np.abs(idx[:, 0] - k).max() > 0.25 or len(set(k.tolist())) != 1:
                raise FormatError(
                    f"a contour of ROI {roi_name!r} does not lie on a slice of the series", where=path, fix="the RTSTRUCT must be drawn on this series"
                )
            r, c = idx[:, 1], idx[:, 2]
            z = int(k[0])
            if z < 0 or z >= d or r.min() < -0.5 or c.min() < -0.5 or r.max() > h - 0.5 or c.max() > w - 0.5:
                raise FormatError(
                    f"contour points of ROI {roi_name!r} lie outside the image "
                    f"(slice {z}, rows {r.min():.1f}…{r.max():.1f}, columns {c.min():.1f}…{c.max():.1f})",
                    where=path,
                    fix="the RTSTRUCT does not match this series' geometry",
                )
            poly = fill_polygon(np.zeros((h, w), bool), r, c)
            planes[z] = planes[z] ^ poly if z in planes else poly
        for z, m in planes.items():
            label[z][m] = cls
    return label


def seg_label(path: Path, series: Series, seg_classes: dict[str, int]) -> np.ndarray:
    """A DICOM-SEG's segments as a class-index volume on the series grid (``medseg.io.dicom_seg``)."""
    return read_seg(path, series.sop_uids, series.shape, seg_classes)


def nifti_label(path: Path, series: Series) -> np.ndarray:
    """A NIfTI mask put onto the series grid through world coordinates.

    The mask may store the series' voxels in another axis order or orientation (``(column, row,
    slice)``, RAS-reoriented…) as long as its header says so; one whose grid or world extent differs
    from the series' is refused, never flipped or cropped on a guess.
    """
    lab, aff = read_volume(path, label=True)
    fitted = onto_grid(lab, aff, series.shape, series.affine)
    if isinstance(fitted, str):
        raise FormatError(
            f"label does not fit DICOM series {series.case_id or series.uid} (shape {lab.shape} vs {series.shape}): {fitted}",
            where=path,
            fix="give the mask drawn on this series (same voxel grid, any axis order), or resample it onto the series",
        )
    return fitted


def _number(text: str) -> int | None:
    """The trailing number of a name (``label0001`` → 1, ``PANCREAS_0001`` → 1)."""
    m = re.search(r"(\d+)\D*$", text)
    return int(m[1]) if m else None


def match_labels(built: list[Series], folder: Path, unlabelled: str) -> dict[str, Path]:
    """SeriesInstanceUID → mask file of a folder of masks, by case id, UID, PatientID, or the number in both names.

    A series left without a mask is refused (``unlabelled=error``), kept without a label (``keep``) or
    left out (``skip``); masks that match no series are reported in a warning.
    """
    masks = {volume_stem(q): q for q in sorted(folder.iterdir()) if volume_suffix(q)}
    if not masks:
        raise FormatError("no NIfTI/NRRD masks in the labels folder", where=folder, fix="give the folder of label files")
    by_number: dict[int, list[str]] = {}
    for stem in masks:
        n = _number(stem)
        if n is not None:
            by_number.setdefault(n, []).append(stem)
    out: dict[str, Path] = {}
    missing: list[Series] = []
    for s in built:
        key = next((k for k in (s.case_id, s.uid, s.patient_id) if k in masks), None)
        if key is None:
            n = _number(s.patient_id)
            cands = by_number.get(n, []) if n is not None else []
            if len(cands) > 1:
                raise FormatError(f"masks {', '.join(cands)} all match series {s.case_id}", where=folder, fix="keep one mask per series")
            key = cands[0] if cands else None
        if key is None:
            missing.append(s)
        else:
            out[s.uid] = masks[key]
    if missing and unlabelled == "error":
        s = missing[0]
        raise FormatError(
            f"{len(missing)} series have no mask in the labels folder, e.g. {s.case_id} (PatientID {s.patient_id})",
            where=folder,
            fix="add its mask (named after the case, PatientID or its number), or pass --option unlabelled=keep (or skip)",
        )
    if missing and unlabelled == "skip":
        for s in missing:
            built.remove(s)
    used = {p.name for p in out.values()}
    orphans = [p.name for p in masks.values() if p.name not in used]
    if orphans:
        warnings.warn(MedsegWarning(f"{folder}: {len(orphans)} mask(s) match no DICOM series and were not imported: {', '.join(orphans[:5])}"), stacklevel=2)
    return out


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s) or "x"


@FORMATS.register("dicom", help="DICOM folder or zip of series (+ NIfTI mask, DICOM-SEG or RTSTRUCT labels; --to-nifti copies)")
def read_dicom(
    path: Path,
    *,
    series: str | None = None,
    labels: str | None = None,
    rois: str | list[str] | None = None,
    classes: str | list[str] | None = None,
    to_nifti: bool = False,
    nifti_dir: str | None = None,
    name: str = "",
    unlabelled: str = "error",
) -> Imported:
    """Read DICOM series and their labels.

    Args:
        path: a folder or a ``.zip`` of DICOM files.
        series: a SeriesInstanceUID to import (needed when one folder mixes series), or ``all``.
        labels: a NIfTI mask (one series) or a folder of masks named after case id / SeriesInstanceUID / PatientID.
        rois: RTSTRUCT/SEG ROI names to import, in class order (default: all).
        classes: class names for NIfTI masks, background first.
        to_nifti: also write NIfTI copies (nnU-Net raw layout) of images and labels.
        nifti_dir: where to write them (default ``<out>/nifti``).
        name: data set name (default: the folder's name).
        unlabelled: with a labels folder, a series without a mask is refused (``error``), imported
            without a label (``keep``) or left out (``skip``).

    A zip is extracted with :func:`medseg.core.archives.extract` (sizes, count and compression ratio
    checked first; the temporary folder is removed on every exit path); errors name ``archive.zip:member``.
    """
    path = Path(path)
    if unlabelled not in ("error", "keep", "skip"):
        raise FormatError(f"unknown unlabelled={unlabelled!r}", where="--option unlabelled", fix="use error, keep or skip")
    opts = dict(series=series, labels=labels, rois=rois, classes=classes, to_nifti=to_nifti, nifti_dir=nifti_dir, name=name, unlabelled=unlabelled)
    if not is_zip(path):
        if not path.is_dir():
            raise FormatError("expected a folder or a .zip of DICOM files", where=path, fix="give the folder")
        return scan_dicom(path, path, None, **opts)
    tmp = extract(path)
    try:
        with tmp.naming_errors():
            imp = scan_dicom(path, tmp.root, tmp, **opts)
    except BaseException:
        tmp.cleanup()
        raise
    imp.cases = named_cases(imp.cases, tmp)
    return imp


def named_cases(cases: Iterator[Case], tmp: Extracted) -> Iterator[Case]:
    """The cases of an extracted zip: errors name ``archive.zip:member``; the folder goes when they end."""
    try:
        with tmp.naming_errors():
            yield from cases
    finally:
        tmp.cleanup()


def scan_dicom(
    path: Path,
    root: Path,
    tmp: Extracted | None,
    *,
    series: str | None,
    labels: str | None,
    rois: str | list[str] | None,
    classes: str | list[str] | None,
    to_nifti: bool,
    nifti_dir: str | None,
    name: str,
    unlabelled: str,
) -> Imported:
    """Find the series under ``root`` (``path`` itself, or the folder ``tmp`` extracted ``path`` to) and their labels."""
    by_series: dict[str, list[tuple[Path, Any]]] = {}
    folders: dict[Path, set[str]] = {}
    rtstructs: list[tuple[Path, Any]] = []
    segs: list[tuple[Path, Any]] = []
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h = read_header(p)
        if h is None:
            continue
        sop_class = str(h.get("SOPClassUID", ""))
        modality = str(h.get("Modality", ""))
        if sop_class == RTSTRUCT_UID or modality == "RTSTRUCT":
            rtstructs.append((p, h))
        elif sop_class == SEG_UID or modality == "SEG":
            segs.append((p, h))
        elif "PixelData" in h or "Rows" in h:
            uid = str(h.get("SeriesInstanceUID", ""))
            by_series.setdefault(uid, []).append((p, compact_header(h)))
            folders.setdefault(p.parent, set()).add(uid)
    shown = tmp.shown if tmp else (lambda q: q)
    if series and series != "all":
        if series not in by_series:
            raise FormatError(f"no series {series!r}", where=path, fix=f"choose one of: {', '.join(sorted(by_series)) or 'none found'}")
        by_series = {series: by_series[series]}
    elif series != "all":
        for folder, uids in folders.items():
            if len(uids) > 1:
                raise FormatError(
                    f"folder mixes {len(uids)} series ({', '.join(sorted(uids))})",
                    where=shown(folder),
                    fix="choose one with --series UID (or --series all), or put each series in its own folder",
                )
    if not by_series:
        raise FormatError("no DICOM image series found", where=path, fix="check the folder")
    built = [build_series(uid, items) for uid, items in sorted(by_series.items())]
    used: set[str] = set()
    for s in built:
        h0 = s.header
        base = _safe(f"{s.patient_id}_{h0.get('SeriesNumber', '') or s.uid[-8:]}")
        s.case_id = base if base not in used else _safe(f"{base}_{s.uid[-8:]}")
        used.add(s.case_id)
    uids = {s.uid for s in built}
    # label sources per series
    struct_of: dict[str, Path] = {}
    seg_of: dict[str, Path] = {}
    label_names: list[str] = []
    for kind, items, refs in (("RTSTRUCT", rtstructs, _referenced_series_rtstruct), ("SEG", segs, _referenced_series_seg)):
        for p, h in items:
            ref = refs(h)
            if not ref or not any(r in uids for r in ref):
                if series and series != "all":
                    continue
                raise FormatError(
                    f"{kind} references series {', '.join(ref) or '(none)'}, which is not in the input",
                    where=shown(p),
                    fix="add the referenced series, or remove the file",
                )
            names = list(_roi_names(h).values()) if kind == "RTSTRUCT" else [str(sd.SegmentLabel) for sd in h.get("SegmentSequence", [])]
            for n in names:
                if n.lower() not in [x.lower() for x in label_names]:
                    label_names.append(n)
            for r in ref:
                (struct_of if kind == "RTSTRUCT" else seg_of)[r] = p
    chosen = parse_names(rois)
    if chosen:
        lower = [n.lower() for n in label_names]
        for c in chosen:
            if c.lower() not in lower:
                raise FormatError(f"ROI {c!r} not found", where=path, fix=f"available ROIs: {', '.join(label_names) or 'none (no RTSTRUCT/SEG in the input)'}")
        label_names = [label_names[lower.index(c.lower())] for c in chosen]
    nifti_of: dict[str, Path] = {}
    if labels:
        lp = Path(labels)
        if lp.is_file():
            if len(built) != 1:
                raise FormatError(
                    f"one mask given for {len(built)} series", where=lp, fix="give a folder of masks named after each case id or SeriesInstanceUID"
                )
            nifti_of[built[0].uid] = lp
        elif lp.is_dir():
            nifti_of = match_labels(built, lp, unlabelled)
        else:
            raise FormatError("labels path does not exist", where=lp, fix="give a NIfTI mask or a folder of masks")
    if nifti_of:
        from medseg.data.formats.nifti import classes_from_labels

        names = classes_from_labels(list(nifti_of.values()), parse_names(classes), Path(labels or path))
    else:
        names = ["background", *label_names] if label_names else (parse_names(classes) or ["background", "foreground"])
    class_index = {n.lower(): i for i, n in enumerate(names) if i > 0}
    modality = str(built[0].header.get("Modality", "") or "image")
    info = DatasetInfo(
        name=name or path.stem,
        description=f"Imported from DICOM ({len(built)} series)",
        dims=3,
        modalities=[modality],
        classes=make_classes(names),
        source={"format": "dicom", "path": str(path)},
    )

    def cases() -> Iterator[Case]:
        try:
            for s in built:
                image = read_series_pixels(s)
                label = None
                if s.uid in nifti_of:
                    label = nifti_label(nifti_of[s.uid], s)
                    if label.size and int(label.max()) >= len(names):
                        raise FormatError(
                            f"label value {int(label.max())} has no class", where=nifti_of[s.uid], fix="give all class names with --option classes"
                        )
                elif s.uid in seg_of:
                    label = seg_label(seg_of[s.uid], s, class_index)
                elif s.uid in struct_of:
                    label = rasterise_rtstruct(struct_of[s.uid], s, class_index)
                h0 = s.header
                meta = {
                    "source": str(shown(s.files[0].parent)),
                    "series_uid": s.uid,
                    "study_uid": str(h0.get("StudyInstanceUID", "")),
                    "modality": str(h0.get("Modality", "")),
                    "series_description": str(h0.get("SeriesDescription", "")),
                    "slices": len(s.files),
                    "axes": "slice,row,column",
                }
                if tmp is None:  # the slice files, in array order (a DICOM-SEG of a prediction references them)
                    meta["files"] = [str(f) for f in s.files]
                yield Case(image=image[None], label=label, affine=s.affine, case_id=s.case_id, patient_id=s.patient_id, meta=meta)
        finally:
            if tmp is not None:
                tmp.cleanup()

    after = []
    if to_nifti or nifti_dir:
        after.append(lambda ds: write_nifti_copies(ds, Path(nifti_dir) if nifti_dir else ds.root / "nifti", reverse_axes=True))
    return Imported(info=info, cases=cases(), after=after)
