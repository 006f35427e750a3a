"""Read images to predict, and write predictions on the input's exact grid.

Inputs: a NIfTI/NRRD/MHA file, a PNG/TIFF/JPEG image, a DICOM series (folder or zip), a folder of any
of these, or a medseg data set folder. Each prediction is written *like its source*: a NIfTI mask reuses
the source header (so affine, qform/sform codes and voxel order are identical), an NRRD/MHA mask copies
the source's spacing, origin and direction, and anything else gets a NIfTI built from the case's affine.
Outputs: ``nifti`` (default), ``nrrd``, ``png`` (2D), ``rle-csv`` (Kaggle GI-tract submission) and
``dicom-seg`` (for DICOM inputs, with highdicom); optionally probabilities (``.npz``) and overlays.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import atomic_path
from medseg.core.case import Case
from medseg.core.errors import DatasetError, MedsegError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
OUTPUT_FORMATS = ("nifti", "nrrd", "png", "rle-csv", "dicom-seg")


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES


def read_image_file(path: Path) -> Case:
    """A 2D PNG/TIFF/JPEG image (grey or RGB) as a one-case input with unit spacing."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except Exception as e:  # Pillow raises several types for broken files
        raise DatasetError(f"cannot read image ({type(e).__name__})", where=path, fix="give a valid PNG, TIFF or JPEG file") from None
    if arr.ndim == 2:
        img = arr[None]
    elif arr.ndim == 3:
        img = np.moveaxis(arr[..., :3], -1, 0)
    else:
        raise DatasetError(f"image has shape {arr.shape}", where=path, fix="give a 2D grey or RGB image")
    return Case.from_spacing(img.astype(np.float32), None, (1.0, 1.0), case_id=path.stem, meta={"source": str(path), "source_kind": "image"})


def read_volume_file(path: Path) -> Case:
    from medseg.data.formats.common import volume_case, volume_stem, volume_suffix

    case = volume_case([path], None, volume_stem(path))
    case.meta["source_kind"] = "nifti" if volume_suffix(path) in (".nii", ".nii.gz") else "itk"
    return case


def read_inputs(path: str | Path, series: str | None = None) -> Iterator[Case]:
    """Cases to predict from a file or folder (see the module docstring)."""
    from medseg.data.formats.common import volume_suffix

    path = Path(path)
    if not path.exists():
        raise DatasetError("input does not exist", where=path, fix="check the path")
    if path.is_file() and volume_suffix(path):
        yield read_volume_file(path)
        return
    if path.is_file() and _is_image(path):
        yield read_image_file(path)
        return
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and (volume_suffix(p) or _is_image(p)))
        if files:
            for p in files:
                yield read_volume_file(p) if volume_suffix(p) else read_image_file(p)
            return
    if path.is_dir() or zipfile.is_zipfile(path):
        from medseg.data.formats.dicom import read_dicom

        for case in read_dicom(path, series=series).cases:
            case.meta["source_kind"] = "dicom"
            case.meta.setdefault("source", str(path))
            yield case
        return
    raise DatasetError("not an image, volume, DICOM folder or zip", where=path, fix="give NIfTI/NRRD/MHA/PNG files, a DICOM folder or a data set folder")


def _label_array(label: np.ndarray) -> np.ndarray:
    if label.dtype == bool:
        return label.astype(np.uint8)
    return label.astype(np.uint8 if label.max(initial=0) < 256 else np.int16)


def write_nifti(case: Case, label: np.ndarray, path: Path) -> Path:
    """A NIfTI mask on the case's grid; reuses the source NIfTI header when there is one."""
    import nibabel as nib

    data = _label_array(label)
    if case.multi_label or (label.ndim == case.ndim + 1):
        data = np.moveaxis(data, 0, -1)  # channels last, as a 4D NIfTI
    src = case.meta.get("source")
    if case.meta.get("source_kind") == "nifti" and src and Path(src).is_file():
        ref = nib.load(src)
        header = ref.header.copy()
        header.set_data_dtype(data.dtype)
        img = nib.Nifti1Image(data, ref.affine, header=header)
        img.set_sform(*ref.get_sform(coded=True))
        img.set_qform(*ref.get_qform(coded=True))
    else:
        from medseg.data.formats.common import affine_4x4

        if case.ndim == 2:
            data = data[:, :, None] if data.ndim == 2 else data[:, :, None, :]
        img = nib.Nifti1Image(data, affine_4x4(case.affine))
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def write_itk(case: Case, label: np.ndarray, path: Path) -> Path:
    """An NRRD/MHA mask; copies spacing/origin/direction from an ITK source, else from the affine."""
    import SimpleITK as sitk

    data = _label_array(label)
    src = case.meta.get("source")
    if case.meta.get("source_kind") == "itk" and src and Path(src).is_file() and data.ndim == case.ndim:
        reader = sitk.ImageFileReader()
        reader.SetFileName(src)
        reader.ReadImageInformation()
        img = sitk.GetImageFromArray(data)
        img.SetSpacing(reader.GetSpacing())
        img.SetOrigin(reader.GetOrigin())
        img.SetDirection(reader.GetDirection())
    else:
        if data.ndim != case.ndim:
            raise MedsegError("multi-label masks are written as NIfTI", where="--format", fix="use --format nifti")
        n = case.ndim
        aff = case.affine
        if n == 3:
            aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff  # RAS → LPS
        # ITK arrays are (z, y, x): reverse our axes and the affine's columns
        data = np.transpose(data, list(range(n))[::-1])
        cols = aff[:n, :n][:, ::-1]
        spacing = np.linalg.norm(cols, axis=0)
        img = sitk.GetImageFromArray(data)
        img.SetSpacing([float(s) for s in spacing])
        img.SetOrigin([float(v) for v in aff[:n, n]])
        img.SetDirection([float(v) for v in (cols / spacing[None, :]).ravel()])
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)
    return path


def write_png(case: Case, label: np.ndarray, path: Path) -> Path:
    from PIL import Image

    if case.ndim != 2 or label.ndim != 2:
        raise MedsegError(f"PNG masks are for single-label 2D images; {case.case_id!r} is {case.ndim}D", where="--format", fix="use --format nifti")
    with atomic_path(path) as tmp:
        Image.fromarray(_label_array(label)).save(tmp, format="PNG")
    return path


def write_overlay(case: Case, label: np.ndarray, colors: list[tuple[int, int, int]], path: Path) -> Path:
    """An overlay PNG (the slice with most foreground for volumes)."""
    from PIL import Image

    from medseg.viz.overlay import best_slice, overlay

    multi = label.ndim == case.ndim + 1
    img = case.image[0]
    if case.ndim == 3:
        z = best_slice(label, 0, multi)
        img, label = img[z], (label[:, z] if multi else label[z])
    with atomic_path(path) as tmp:
        Image.fromarray(overlay(img, label, colors)).save(tmp, format="PNG")
    return path


def rle_rows(case: Case, label: np.ndarray, class_names: list[str]) -> Iterator[tuple[str, str, np.ndarray]]:
    """Kaggle GI-tract submission rows ``(case_slice id, class, 2D mask)`` for a case-day volume."""
    if label.ndim != 4 and not (label.ndim == 3 and case.ndim == 2):
        raise MedsegError("RLE CSV needs multi-label predictions of GI-tract case-days", where="--format", fix="use --format nifti")
    vol = label if label.ndim == 4 else label[:, None]
    numbers = case.meta.get("slice_numbers")
    if numbers is None:
        first = (case.meta.get("slices") or [1])[0]
        numbers = list(range(first, first + vol.shape[1]))
    for z, num in enumerate(numbers):
        for k, name in enumerate(class_names):
            yield f"{case.case_id}_slice_{num:04d}", name, vol[k, z]


def write_dicom_seg(case: Case, label: np.ndarray, class_names: list[str], path: Path) -> Path:
    """A DICOM-SEG object referencing the source series (highdicom)."""
    try:
        import highdicom as hd
        import pydicom
        from pydicom.sr.codedict import codes
    except ImportError:
        raise MedsegError("DICOM-SEG output needs highdicom", where="--format", fix="pip install 'medseg[dicom]'") from None
    files = case.meta.get("files")
    if case.meta.get("source_kind") != "dicom" or not files:
        raise MedsegError("DICOM-SEG output is for DICOM inputs", where=case.meta.get("source", case.case_id), fix="use --format nifti")
    sources = [pydicom.dcmread(f) for f in files]
    multi = label.ndim == case.ndim + 1
    if multi:
        arr = np.moveaxis(label.astype(bool), 0, -1)  # (D, H, W, K)
        names = class_names
    else:
        present = [k for k in range(1, len(class_names)) if (label == k).any()] or [1]
        arr = np.stack([label == k for k in present], -1)
        names = [class_names[k] for k in present]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(name="medseg", version="1", family=codes.DCM.ArtificialIntelligence),
        )
        for i, name in enumerate(names)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=arr.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name="medseg",
        software_versions="1",
        device_serial_number="0",
    )
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def write_prediction(case: Case, label: np.ndarray, out_dir: Path, fmt: str, class_names: list[str]) -> Path:
    """Write one mask in ``fmt`` under ``out_dir``; returns the file."""
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case.case_id)
    if fmt == "nifti":
        return write_nifti(case, label, out_dir / f"{name}.nii.gz")
    if fmt == "nrrd":
        return write_itk(case, label, out_dir / f"{name}.nrrd")
    if fmt == "png":
        return write_png(case, label, out_dir / f"{name}.png")
    if fmt == "dicom-seg":
        return write_dicom_seg(case, label, class_names, out_dir / f"{name}.seg.dcm")
    raise MedsegError(f"unknown output format {fmt!r}", where="--format", fix=f"use one of {', '.join(OUTPUT_FORMATS)}")


def meta_of(case: Case) -> dict[str, Any]:
    return {"case": case.case_id, "source": case.meta.get("source"), "shape": list(case.spatial_shape), "spacing": list(case.spacing)}
