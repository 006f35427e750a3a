"""Single uploaded images for the demo: read one file into a ``Case``, predict it, write the mask on its grid.

``medseg.data.formats`` imports whole data sets (folders, many cases); the demo needs one file at a
time and, to hand the mask back on the input's exact grid, the original header. So this module
reads NIfTI with nibabel and NRRD/MHA with SimpleITK itself (same affine conventions as
``medseg.data.formats.common.read_volume``), and a zipped DICOM series with the DICOM importer's
``build_series``/``read_series_pixels``. Every failure becomes one ``DemoError`` line.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.case import Case
from medseg.demo.runs import DemoError

#: accepted upload suffixes (lower case)
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".zip", ".png")
#: refuse volumes larger than this many voxels (a small compressed file can hold a huge array)
MAX_VOXELS = 256 * 1024 * 1024
#: ITK (LPS) ↔ RAS flip of the first two world axes
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_FIX = "upload a NIfTI (.nii/.nii.gz), NRRD, MHA, PNG or a .zip of one DICOM series"


def upload_suffix(path: str | Path) -> str | None:
    """The accepted suffix of ``path`` or ``None``."""
    name = Path(path).name.lower()
    return next((s for s in UPLOAD_SUFFIXES if name.endswith(s)), None)


@dataclass
class Upload:
    """One uploaded image, read, with what is needed to write a mask back on its grid.

    Args:
        case: the image as a ``Case`` (no label).
        kind: ``nifti`` | ``itk`` | ``dicom`` | ``png``.
        name: the upload's file name without suffix.
        suffix: the upload's suffix.
        source: the nibabel image, SimpleITK image or nothing, used when writing the mask.
    """

    case: Case
    kind: str
    name: str
    suffix: str
    source: Any = field(default=None, repr=False)

    def write_mask(self, mask: np.ndarray, folder: str | Path) -> Path:
        """Write ``mask`` (on ``case``'s grid) next to nothing else in ``folder``, in a format matching the input.

        NIfTI → NIfTI with the input's affine and header; NRRD/MHA → the same format with the input's
        origin, spacing and direction; a DICOM series → NIfTI with the series' affine; PNG → PNG of
        class indices. Multi-label masks become a last channel axis (PNG: one bit per class).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        multi = mask.ndim == self.case.ndim + 1
        if self.kind == "png":
            from PIL import Image

            arr = np.tensordot(1 << np.arange(mask.shape[0]), mask.astype(np.uint16), axes=1) if multi else mask
            if arr.max(initial=0) > 255:
                raise DemoError("the mask holds values above 255", where=self.name, fix="upload a NIfTI to get this model's mask")
            out = folder / f"{self.name}_mask.png"
            Image.fromarray(arr.astype(np.uint8)).save(out)
            return out
        data = np.moveaxis(mask, 0, -1).astype(np.uint8) if multi else mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.int16)
        if self.kind == "itk":
            import SimpleITK as sitk

            img = sitk.GetImageFromArray(data, isVector=False) if not multi else sitk.GetImageFromArray(data, isVector=True)
            img.SetSpacing(self.source.GetSpacing())
            img.SetOrigin(self.source.GetOrigin())
            img.SetDirection(self.source.GetDirection())
            out = folder / f"{self.name}_mask{self.suffix}"
            sitk.WriteImage(img, str(out), useCompression=True)
            return out
        import nibabel as nib

        if self.kind == "nifti":
            hdr = self.source.header.copy()
            hdr.set_data_dtype(data.dtype)
            hdr.set_slope_inter(1.0, 0.0)
            img = nib.Nifti1Image(data, self.source.affine, header=hdr)
        else:
            affine = self.case.affine
            if affine.shape == (3, 3):
                affine = np.eye(4)
                affine[:2, :2], affine[:2, 3] = self.case.affine[:2, :2], self.case.affine[:2, 2]
            img = nib.Nifti1Image(data, affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
        out = folder / f"{self.name}_mask.nii.gz"
        nib.save(img, str(out))
        return out


def _check_array(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.size == 0 or min(arr.shape) < 1:
        raise DemoError("the image is empty", where=where, fix=_FIX)
    if arr.size > MAX_VOXELS:
        raise DemoError(f"the image has {arr.size:,} voxels, more than the demo's limit of {MAX_VOXELS:,}", where=where, fix="crop or downsample it first")
    if arr.dtype.kind not in "biuf":
        raise DemoError(f"the image has an unsupported data type ({arr.dtype})", where=where, fix=_FIX)
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DemoError("the image holds NaN or infinite values", where=where, fix="replace them before uploading")
    return arr


def _affine_2d(aff4: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[:2, :2] = aff4[:2, :2]
    out[:2, 2] = aff4[:2, 3]
    return out


def _spatial_case(arr: np.ndarray, affine4: np.ndarray, name: str, channels_last: bool) -> Case:
    """A case from an array with 2 or 3 spatial axes (and optionally a trailing channel axis)."""
    if channels_last and arr.ndim == 4:
        image = np.moveaxis(arr, -1, 0)
    elif arr.ndim in (2, 3):
        image = arr[None]
    else:
        raise DemoError(f"the image has {arr.ndim} dimensions", where=name, fix="upload a 2D or 3D image (4D only with channels last)")
    if image.ndim == 3:
        return Case(image=image, label=None, affine=_affine_2d(affine4), case_id=name)
    return Case(image=image, label=None, affine=affine4, case_id=name)


def read_upload(path: str | Path, max_bytes: int | None = None) -> Upload:
    """Read one uploaded file, checking its type and size first.

    Args:
        path: the uploaded file (its name decides the type: see :data:`UPLOAD_SUFFIXES`).
        max_bytes: refuse files larger than this.

    Returns:
        The upload with its ``Case``.

    Raises:
        DemoError: wrong type, too large, unreadable or inconsistent (one line, never a traceback).
    """
    path = Path(path)
    suffix = upload_suffix(path)
    shown = path.name
    if suffix is None:
        raise DemoError(f"files of type '{''.join(path.suffixes) or path.name}' are not accepted", where=shown, fix=_FIX)
    if not path.is_file():
        raise DemoError("the upload did not arrive", where=shown, fix="upload it again")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise DemoError(f"the file is {size / 2**20:.1f} MB, over the limit of {max_bytes / 2**20:.0f} MB", where=shown, fix="upload a smaller file")
    name = path.name[: -len(suffix)] or "upload"
    try:
        if suffix in (".nii", ".nii.gz"):
            return _read_nifti(path, name, suffix)
        if suffix in (".nrrd", ".mha"):
            return _read_itk(path, name, suffix)
        if suffix == ".png":
            return _read_png(path, name)
        return _read_dicom_zip(path, name, max_bytes)
    except DemoError:
        raise
    except Exception as e:  # readers raise many exception types on corrupt input
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise DemoError(f"cannot read the file ({type(e).__name__}: {msg})", where=shown, fix=_FIX) from None


def _read_nifti(path: Path, name: str, suffix: str) -> Upload:
    import nibabel as nib

    img = nib.load(str(path))
    arr = _check_array(np.asanyarray(img.dataobj), path.name)
    aff = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise DemoError("the NIfTI header holds an invalid affine", where=path.name, fix="repair the header (qform/sform)")
    return Upload(_spatial_case(arr, aff, name, channels_last=True), "nifti", name, suffix, img)


def _read_itk(path: Path, name: str, suffix: str) -> Upload:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    n = img.GetDimension()
    if n not in (2, 3):
        raise DemoError(f"the image has {n} dimensions", where=path.name, fix="upload a 2D or 3D image")
    arr = _check_array(sitk.GetArrayFromImage(img), path.name)
    spacing = np.asarray(img.GetSpacing())[::-1]
    direction = np.asarray(img.GetDirection()).reshape(n, n)[:, ::-1]
    aff = np.eye(4)
    aff[:n, :n] = direction * spacing[None, :]
    aff[:n, 3] = np.asarray(img.GetOrigin())
    if n == 3:
        aff = _LPS_TO_RAS @ aff
    channels_last = img.GetNumberOfComponentsPerPixel() > 1
    if n == 2 and channels_last:
        image = np.moveaxis(arr, -1, 0)
        case = Case(image=image, label=None, affine=_affine_2d(aff), case_id=name)
    elif n == 2:
        case = Case(image=arr[None], label=None, affine=_affine_2d(aff), case_id=name)
    else:
        case = _spatial_case(arr, aff, name, channels_last)
    return Upload(case, "itk", name, suffix, img)


def _read_png(path: Path, name: str) -> Upload:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P", "CMYK", "YCbCr", "1"):
            im = im.convert("RGB" if im.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L")
        arr = _check_array(np.asarray(im), path.name)
    image = np.moveaxis(arr, -1, 0) if arr.ndim == 3 else arr[None]
    return Upload(Case(image=image, label=None, affine=np.eye(3), case_id=name), "png", name, ".png")


def _read_dicom_zip(path: Path, name: str, max_bytes: int | None) -> Upload:
    import pydicom

    from medseg.io.dicom import build_series, read_series_pixels

    with zipfile.ZipFile(path) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        total = sum(m.file_size for m in members)
        limit = 4 * (max_bytes or 512 * 2**20)
        if total > limit:
            raise DemoError(f"the zip expands to {total / 2**20:.0f} MB", where=path.name, fix="upload a smaller series")
        with tempfile.TemporaryDirectory(prefix="medseg-demo-dicom-") as tmp:
            items: dict[str, list[tuple[Path, Any]]] = {}
            for i, m in enumerate(members):
                base = m.filename.rsplit("/", 1)[-1]
                if base.startswith(".") or base.lower().endswith((".txt", ".json", ".xml", ".md", ".png", ".jpg")):
                    continue
                dest = Path(tmp) / f"{i:06d}.dcm"  # never the member's own path: no zip-slip
                dest.write_bytes(zf.read(m))
                try:
                    ds = pydicom.dcmread(dest, defer_size=4096)
                except Exception:
                    continue
                if "ImagePositionPatient" not in ds or "PixelData" not in ds:
                    continue
                items.setdefault(str(ds.get("SeriesInstanceUID", "series")), []).append((dest, ds))
            if not items:
                raise DemoError("the zip holds no DICOM image slices", where=path.name, fix="zip the folder of one DICOM series")
            if len(items) > 1:
                raise DemoError(f"the zip holds {len(items)} series", where=path.name, fix="zip exactly one series")
            uid, slices = next(iter(items.items()))
            series = build_series(uid, slices)
            pixels = _check_array(read_series_pixels(series), path.name)
    case = Case(image=pixels[None], label=None, affine=series.affine, case_id=name, patient_id=series.patient_id)
    return Upload(case, "dicom", name, ".zip")


def adapt_channels(case: Case, in_channels: int) -> Case:
    """Match the image's channels to the model's: RGB → grey by the mean, grey → repeated; otherwise refuse."""
    c = case.n_channels
    if c == in_channels:
        return case
    if in_channels == 1 and c in (3, 4):
        image = case.image[:3].mean(axis=0, keepdims=True)
    elif c == 1:
        image = np.repeat(case.image, in_channels, axis=0)
    else:
        raise DemoError(f"the image has {c} channels; the model expects {in_channels}", where=case.case_id, fix="pick a run trained on images like this one")
    return Case(image=image, label=None, affine=case.affine, case_id=case.case_id, meta=case.meta)


def predict_upload(case: Case, inferer: Any, progress: Callable[[float, str], None] | None = None) -> tuple[np.ndarray, int | None]:
    """Predict an uploaded case with a run's inferer, on the case's own grid (as ``medseg predict`` does).

    A 2D model predicts a volume slice by slice in the plane it was trained on; a 3D model refuses 2D images.

    Args:
        case: the uploaded image.
        inferer: the run's :class:`~medseg.engine.inferer.Inferer`.
        progress: called with (fraction done, text).

    Returns:
        The label map on the case's grid, and the axis the volume was sliced along (``None`` if not).
    """
    r = inferer.resolved
    case = adapt_channels(case, r.in_channels)
    if case.ndim < r.spatial_dims:
        raise DemoError("this run's model is 3D and the image is 2D", where=case.case_id, fix="pick a 2D run, or upload a volume")
    report = progress or (lambda f, t: None)
    report(0.05, "predicting")
    return inferer.predict(case, progress=report), inferer.slice_axis(case)
