"""Which importer reads a folder: :func:`detect_format` looks at the layout only (names, not pixels).

Checked in this order, first match wins:

==========================  ====================================================================
format                      what is looked for
==========================  ====================================================================
``dataset`` (no import)     a medseg data set folder: ``dataset.json`` with ``format_version`` and ``cases``
``msd``                     ``dataset.json`` + ``imagesTr/`` (MSD, nnU-Net v1/v2 raw, any nnU-Net ``file_ending``)
``images``                  ``images/`` + ``masks/`` of 2D pictures (PNG, TIFF, BMP, JPEG)
``nifti``                   ``images/`` (+ ``labels/``) of volumes (NIfTI, NRRD, MHA, GIPL)
``numpy``                   ``*images.npy`` stacks
``kaggle-gi``               ``train.csv`` with a ``segmentation`` column
``dicom``                   DICOM files (``.dcm``, ``DICOMDIR``, or files with the DICOM preamble), a ``.zip``
==========================  ====================================================================
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from medseg.core.errors import FormatError

LOOKED_FOR = (
    "a medseg data set (dataset.json with cases), an MSD / nnU-Net raw folder (dataset.json + imagesTr/), "
    "images/ + masks/ (2D pictures), images/ + labels/ (NIfTI/NRRD/MHA volumes), *images.npy stacks, "
    "a Kaggle GI train.csv, or DICOM files"
)


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _files(folder: Path, limit: int = 200) -> list[Path]:
    return [p for p in islice(folder.rglob("*"), limit) if p.is_file() and not p.name.startswith(".")]


def _suffixes(folder: Path) -> set[str]:
    from medseg.io.source import image_suffix, kind_of

    return {kind_of(image_suffix(p)) or "" for p in _files(folder)}


def _looks_dicom(folder: Path) -> bool:
    from medseg.io.dicom import looks_like_dicom

    for p in _files(folder):
        if p.suffix.lower() in (".dcm", ".dicom", ".ima") or p.name.upper() == "DICOMDIR":
            return True
        if not p.suffix and looks_like_dicom(p):
            return True
    return False


def detect_format(path: str | Path) -> str:
    """The import format of ``path``, or ``"dataset"`` for a medseg data set folder (nothing to import).

    Raises:
        FormatError: nothing recognisable; the message lists what was looked for.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError("input does not exist", where=path, fix="check the path")
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return "dicom"
        raise FormatError("a single file is not a data set", where=path, fix=f"give a folder holding {LOOKED_FOR}")
    meta = _json(path / "dataset.json") if (path / "dataset.json").is_file() else None
    if meta is not None and "format_version" in meta and "cases" in meta:
        return "dataset"
    if meta is not None and (path / "imagesTr").is_dir():
        return "msd"
    if (path / "imagesTr").is_dir():
        raise FormatError("imagesTr/ without dataset.json", where=path, fix="add the MSD / nnU-Net dataset.json (labels, channel_names, file_ending)")
    if (path / "images").is_dir():
        kinds = _suffixes(path / "images")
        if (path / "masks").is_dir() and "raster" in kinds:
            return "images"
        if kinds & {"nifti", "itk"}:
            return "nifti"
    if any(path.glob("*images.npy")):
        return "numpy"
    if (path / "train.csv").is_file():
        head = (path / "train.csv").read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        if head and "segmentation" in head[0]:
            return "kaggle-gi"
    if _looks_dicom(path):
        return "dicom"
    raise FormatError("no data set layout recognised", where=path, fix=f"give {LOOKED_FOR}; or import it with `medseg import FORMAT`")
