"""Single uploaded images for the demo: read one file into a ``Case``, predict it, write the mask on its grid.

Reading and writing go through ``medseg.io`` (the same readers and writers as ``medseg predict``):
a NIfTI mask reuses the upload's header, an NRRD/MHA mask its geometry, a picture comes back as
a picture of the same size, and a DICOM series (zipped, or one ``.dcm`` slice) as NIfTI on the
series' grid. This module adds the demo's own checks (type, size, voxel count, finite values)
and turns every failure into one ``DemoError`` line that names the upload, never a server path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.case import Case
from medseg.core.errors import MedsegError
from medseg.demo.runs import DemoError
from medseg.io import Source, read_image, write_mask

#: accepted upload suffixes (lower case)
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".gipl", ".zip", ".dcm", ".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
#: a zipped upload expands to at most this many bytes, whatever the upload limit (memory and disk stay
#: bounded: the decoded series may take twice as much, see ``medseg.io.dicom_input``)
MAX_EXPANDED_BYTES = 2**30
#: refuse volumes larger than this many voxels (a small compressed file can hold a huge array)
MAX_VOXELS = 256 * 1024 * 1024
_FIX = "upload a NIfTI (.nii/.nii.gz), NRRD, MHA, PNG/TIFF picture, a .dcm slice or a .zip of one DICOM series"


def upload_suffix(path: str | Path) -> str | None:
    """The accepted suffix of ``path`` or ``None``."""
    name = Path(path).name.lower()
    return next((s for s in UPLOAD_SUFFIXES if name.endswith(s)), None)


@dataclass
class Upload:
    """One uploaded image, read, with what is needed to write a mask back on its grid.

    Args:
        case: the image as a ``Case`` (no label).
        kind: ``nifti`` | ``itk`` | ``dicom`` | ``raster``.
        name: the upload's file name without suffix.
        suffix: the upload's suffix.
        source: what ``medseg.io`` needs to write the mask like the upload.
    """

    case: Case
    kind: str
    name: str
    suffix: str
    source: Source | None = field(default=None, repr=False)

    def write_mask(self, mask: np.ndarray, folder: str | Path) -> Path:
        """Write ``mask`` (on ``case``'s grid) into ``folder`` as ``<name>_mask<suffix>``, like the upload.

        NIfTI → NIfTI with the upload's header; NRRD/MHA/GIPL → the same format and geometry;
        PNG/TIFF/BMP/JPEG → a PNG/TIFF/BMP of class indices (multi-label: one bit per class);
        a DICOM series → NIfTI on the series' grid.
        """
        assert self.source is not None
        src = self.source
        fmt = "nifti" if src.kind == "dicom" else None
        out = Path(folder) / Source(**{**src.__dict__, "name": f"{self.name}_mask"}).file_name(fmt or src.format)
        try:
            return write_mask(mask, src, out, fmt=fmt)
        except MedsegError as e:
            raise DemoError(e.problem, where=self.name, fix=e.fix) from None


def _check_array(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.size == 0 or min(arr.shape) < 1:
        raise DemoError("the image is empty", where=where, fix=_FIX)
    if arr.size > MAX_VOXELS:
        raise DemoError(f"the image has {arr.size:,} voxels, more than the demo's limit of {MAX_VOXELS:,}", where=where, fix="crop or downsample it first")
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DemoError("the image holds NaN or infinite values", where=where, fix="replace them before uploading")
    return arr


def read_upload(path: str | Path, max_bytes: int | None = None) -> Upload:
    """Read one uploaded file, checking its type and size first.

    Args:
        path: the uploaded file (its name decides the type: see :data:`UPLOAD_SUFFIXES`).
        max_bytes: refuse files larger than this (a zip may expand to four times as much, at most
            :data:`MAX_EXPANDED_BYTES`).

    Returns:
        The upload with its ``Case``.

    Raises:
        DemoError: wrong type, too large, unreadable or inconsistent (one line naming the upload, never a traceback).
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
    expand = min(4 * (max_bytes or 512 * 2**20), MAX_EXPANDED_BYTES)
    try:
        case, src = read_image(path, max_bytes=expand)
    except MedsegError as e:  # named after the upload (``ct.zip:ct/IM1.dcm``), never a server path
        named = lambda text: text.replace(str(path), shown)  # noqa: E731
        problem = named(e.problem)
        if not (problem.startswith(("cannot read", "the zip", "member")) or "series" in problem):
            problem = f"cannot read the file ({problem})"
        where = named(str(e.where)) if e.where is not None and str(e.where).startswith(f"{path}:") else shown
        raise DemoError(problem, where=where, fix=named(e.fix) if e.fix else _FIX) from None
    except Exception as e:  # a reader library failing in a way medseg.io did not foresee
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise DemoError(f"cannot read the file ({type(e).__name__}: {msg})", where=shown, fix=_FIX) from None
    image = _check_array(case.image, shown)
    case = Case(image=image, label=None, affine=case.affine, case_id=name, patient_id=case.patient_id, meta=case.meta)
    return Upload(case, src.kind, name, suffix, src)


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

    A 2D model predicts a volume slice by slice in the plane it was trained on (axial for one trained on 2D
    images), as ``medseg predict`` does; a 3D model refuses 2D images.

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
