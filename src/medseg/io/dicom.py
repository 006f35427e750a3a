"""DICOM series: headers, geometry (slice order, spacing, orientation) and pixels, with pydicom."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.errors import FormatError
from medseg.io.geometry import LPS_TO_RAS

#: files with these suffixes are not DICOM and are skipped while scanning
NON_DICOM = {
    ".nii",
    ".gz",
    ".txt",
    ".json",
    ".csv",
    ".md",
    ".png",
    ".jpg",
    ".jpeg",
    ".xml",
    ".zip",
    ".nrrd",
    ".mha",
    ".mhd",
    ".npy",
    ".npz",
    ".yaml",
    ".yml",
    ".pdf",
    ".tif",
    ".tiff",
    ".bmp",
    ".gipl",
    ".nhdr",
    ".raw",
    ".zraw",
}


DECODERS_FIX = "install a decoder: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)"


@dataclass
class SliceInfo:
    """What reading one slice's voxels needs, kept instead of the whole header (memory stays flat)."""

    slope: float
    intercept: float
    dtype: np.dtype | None  # native uncompressed layout, or None: decode with pydicom
    offset: int  # byte offset of the pixel data in the file (-1: unknown)
    count: int  # number of pixels


def slice_info(h: Any) -> SliceInfo:
    """Rescale and, for native uncompressed little-endian grayscale, the pixel data's place in the file."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    slope = float(h.get("RescaleSlope", 1) or 1)
    inter = float(h.get("RescaleIntercept", 0) or 0)
    count = int(h.Rows) * int(h.Columns)
    ts = getattr(getattr(h, "file_meta", None), "TransferSyntaxUID", None)
    bits = int(h.get("BitsAllocated", 0) or 0)
    raw = h.get_item(0x7FE00010, keep_deferred=True) if "PixelData" in h else None
    offset = getattr(raw, "value_tell", None)
    if (
        offset is None
        or getattr(raw, "value", b"") is not None
        or ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        or int(h.get("SamplesPerPixel", 1) or 1) != 1
        or bits not in (8, 16, 32)
        or int(h.get("BitsStored", bits) or bits) != bits
        or int(h.get("NumberOfFrames", 1) or 1) != 1
        or int(raw.length) < count * bits // 8
    ):
        return SliceInfo(slope, inter, None, -1, count)
    dtype = np.dtype(f"<{'i' if int(h.get('PixelRepresentation', 0) or 0) else 'u'}{bits // 8}")
    return SliceInfo(slope, inter, dtype, int(offset), count)


#: header fields kept per slice after scanning (the rest is dropped so that memory stays small)
KEEP_TAGS = (
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "PatientID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "NumberOfFrames",
)


class CompactHeader:
    """The few tags kept per slice (``KEEP_TAGS``), as plain Python values, plus its :class:`SliceInfo`.

    A pydicom ``Dataset`` per slice is slow to build and query and weighs tens of kilobytes; this
    answers the same ``get`` / attribute / ``in`` questions the importer asks.
    """

    __slots__ = ("_medseg_slice", "values")

    def __init__(self, values: dict[str, Any], info: SliceInfo):
        self.values = values
        self._medseg_slice = info

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None


def compact_header(h: Any) -> CompactHeader:
    """Keep only ``KEEP_TAGS`` of a slice header (multi-values as lists) and its :class:`SliceInfo`."""
    values: dict[str, Any] = {}
    for key in KEEP_TAGS:
        v = h.get(key)
        if v is not None:
            values[key] = list(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else v
    return CompactHeader(values, slice_info(h))


@dataclass
class Series:
    """The slices of one image series, sorted, with their geometry."""

    uid: str
    files: list[Path]
    slices: list[SliceInfo]
    header: Any  # the first slice's header (ids, modality, description)
    case_id: str = ""
    patient_id: str = ""
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    shape: tuple[int, int, int] = (0, 0, 0)
    sop_uids: list[str] = field(default_factory=list)


#: first bytes of a DICOM data set written without the 128-byte preamble (tag group 0002 or 0008, either endianness)
RAW_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def looks_like_dicom(path: Path) -> bool:
    """A cheap test before any parse: the 128-byte preamble and ``DICM``, or a bare data set's first tag.

    Forcing pydicom to parse an arbitrary 20 MB file takes seconds; this reads 132 bytes.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or head[:2] in RAW_STARTS


def read_header(path: Path) -> Any | None:
    """A DICOM header without pixels, ``None`` for files that are clearly not DICOM by suffix."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if path.name.startswith(".") or path.suffix.lower() in NON_DICOM or path.name.lower() in ("dicomdir", "readme", "license"):
        return None
    try:
        # pixel data stays on disk (deferred) and is read once, later, without parsing the header again
        return pydicom.dcmread(path, defer_size=4096)
    except InvalidDicomError:
        if looks_like_dicom(path):  # no preamble: old files start with a group 0008 (or 0002) element
            try:
                ds = pydicom.dcmread(path, defer_size=4096, force=True)
                if "SOPClassUID" in ds or "Modality" in ds:
                    return ds
            except Exception:
                pass
    except Exception:
        pass
    raise FormatError("not a DICOM file", where=path, fix="remove it from the folder (or give it a non-DICOM suffix such as .txt)")


def header_vector(ds: Any, tag: str, n: int, where: Path) -> np.ndarray:
    raw = ds.get(tag)
    if raw is None:
        raise FormatError(f"slice lacks {tag}", where=where, fix="only image series with patient geometry can be imported")
    try:
        v = np.asarray([float(x) for x in (raw if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" else [raw])], dtype=np.float64)
    except (TypeError, ValueError):
        raise FormatError(f"{tag} is not numeric ({raw!r})", where=where, fix="repair the header") from None
    if v.shape != (n,):
        raise FormatError(f"{tag} has {v.size} values, expected {n}", where=where, fix="repair the header")
    return v


def build_series(uid: str, items: list[tuple[Path, Any]]) -> Series:
    """Sort a series' slices and derive its affine; refuse gaps and inconsistent geometry."""
    p0, h0 = items[0]
    iop = header_vector(h0, "ImageOrientationPatient", 6, p0)
    spacing = header_vector(h0, "PixelSpacing", 2, p0)
    rows, cols = int(h0.get("Rows", 0) or 0), int(h0.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise FormatError(f"the slice is {rows} × {cols} pixels (Rows × Columns)", where=p0, fix="remove the empty image, or re-export the series")
    if int(h0.get("NumberOfFrames", 1) or 1) > 1:
        raise FormatError(
            "multi-frame (enhanced) images are not supported",
            where=p0,
            fix="convert to single-frame slices (e.g. with dcm2niix to NIfTI and use the nifti format)",
        )
    for p, h in items[1:]:
        if not np.allclose(header_vector(h, "ImageOrientationPatient", 6, p), iop, atol=1e-4):
            raise FormatError(
                "orientation (ImageOrientationPatient) differs from other slices of the series", where=p, fix="split the series or remove the odd slice"
            )
        if not np.allclose(header_vector(h, "PixelSpacing", 2, p), spacing, rtol=1e-4):
            raise FormatError("PixelSpacing differs from other slices of the series", where=p, fix="remove the odd slice")
        if (int(h.Rows), int(h.Columns)) != (rows, cols):
            raise FormatError(f"slice is {h.Rows}×{h.Columns}, others {rows}×{cols}", where=p, fix="remove the odd slice")
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    pos = np.array([header_vector(h, "ImagePositionPatient", 3, p) for p, h in items])
    order = np.argsort(pos @ normal, kind="stable")
    items = [items[i] for i in order]
    pos = pos[order]
    proj = pos @ normal
    if len(items) > 1:
        d = np.diff(proj)
        if (d < 1e-4).any():
            i = int(np.argmax(d < 1e-4))
            raise FormatError(
                f"two slices at the same position ({proj[i]:.3f} mm)",
                where=items[i + 1][0],
                fix="remove the duplicate, or choose one series with --series UID",
            )
        med = float(np.median(d))
        off = np.abs(d - med) > max(1e-3, 0.01 * med)
        if off.any():
            i = int(np.argmax(off))
            ratio = d[i] / med
            if abs(ratio - round(ratio)) < 0.05 and round(ratio) >= 2:
                raise FormatError(
                    f"missing slice: gap of {d[i]:.3f} mm after position {proj[i]:.3f} mm where slices are {med:.3f} mm apart",
                    where=items[i + 1][0],
                    fix="add the missing slice(s) or import the series in parts",
                )
            raise FormatError(
                f"inconsistent slice spacing: {d[i]:.3f} mm after position {proj[i]:.3f} mm, elsewhere {med:.3f} mm",
                where=items[i + 1][0],
                fix="resample the series to even spacing first",
            )
        step = (pos[-1] - pos[0]) / (len(items) - 1)
    else:
        thick = float(h0.get("SpacingBetweenSlices", 0) or h0.get("SliceThickness", 0) or 1.0)
        step = normal * thick
    lps = np.eye(4)
    lps[:3, 0] = step
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = row_dir * spacing[1]
    lps[:3, 3] = pos[0]
    return Series(
        uid=uid,
        files=[p for p, _ in items],
        slices=[h._medseg_slice if hasattr(h, "_medseg_slice") else slice_info(h) for _, h in items],
        header=h0,
        patient_id=str(h0.get("PatientID", "") or "patient"),
        affine=LPS_TO_RAS @ lps,
        shape=(len(items), rows, cols),
        sop_uids=[str(h.SOPInstanceUID) for _, h in items],
    )


def read_series_pixels(series: Series) -> np.ndarray:
    """The series' voxels ``(D, H, W)`` in float32 with RescaleSlope/Intercept applied per slice.

    Native uncompressed slices are read straight from their byte offset (the header was parsed
    once, while scanning); anything else is decoded by pydicom.
    """
    import pydicom

    out = np.empty(series.shape, dtype=np.float32)
    for z, (p, info) in enumerate(zip(series.files, series.slices, strict=True)):
        try:
            if info.dtype is not None:
                with open(p, "rb") as fh:
                    fh.seek(info.offset)
                    arr = np.frombuffer(fh.read(info.count * info.dtype.itemsize), dtype=info.dtype)
                if arr.size != info.count:
                    raise ValueError(f"pixel data is truncated ({arr.size} of {info.count} pixels)")
                arr = arr.reshape(series.shape[1:])
            else:
                ds = pydicom.dcmread(p)
                try:
                    arr = ds.pixel_array
                except Exception:
                    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
                    if ts is not None and ts.is_compressed:
                        raise FormatError(f"cannot decode compressed pixel data ({ts.name})", where=p, fix=DECODERS_FIX) from None
                    raise
        except FormatError:
            raise
        except Exception as e:
            raise FormatError(
                f"cannot read pixel data ({str(e).splitlines()[0] if str(e) else type(e).__name__})", where=p, fix="re-export the slice"
            ) from None
        if arr.shape != series.shape[1:]:
            raise FormatError(f"pixel data is {arr.shape}, expected {series.shape[1:]}", where=p, fix="only single-frame grayscale slices are supported")
        np.multiply(arr, np.float32(info.slope), out=out[z], casting="unsafe")
        if info.intercept:
            out[z] += np.float32(info.intercept)
    return out
