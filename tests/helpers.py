"""Builders shared by the tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medseg.core.case import Case, make_affine
from medseg.data.builtin import make_builtin
from medseg.data.formats.rle import rle_encode
from medseg.data.store import Dataset, DatasetInfo, make_classes, write_dataset

#: the repository root (docs/, configs/, benchmarks/)
REPO = Path(__file__).resolve().parents[1]
SHAPE = (6, 7, 5)
ORGANS = ["large_bowel", "small_bowel", "stomach"]
ROWS, COLS = 12, 10


def tiny_config(**sections: Any) -> dict[str, Any]:
    """A config dict for a seconds-long run on a tiny phantom; sections override the defaults."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "data": {"dataset": "phantom2d", "builtin": {"n_patients": 6, "slices_per_patient": 2, "size": 32}, "batch_size": 4},
        "model": {"name": "unet", "params": {"channels": [8, 16], "num_res_units": 0}},
        "train": {"epochs": 1, "lr": 3e-3, "device": "cpu", "iterations_per_epoch": None},
    }
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value) if isinstance(value, dict) else cfg.__setitem__(key, value)
    return cfg


def multilabel_dataset(root: Path) -> Path:
    cases = []
    for c in make_builtin("phantom2d", n_patients=6, slices_per_patient=2, size=32).cases:
        heart = (c.label == 1) | (c.label == 2)  # overlapping labels: heart ⊃ LV blood pool
        lab = np.stack([heart, c.label == 1, c.label == 3])
        cases.append(Case(c.image, lab, c.affine, c.case_id, c.patient_id))
    info = DatasetInfo(name="ml", dims=2, modalities=["MRI"], classes=make_classes(["heart", "LV", "RV"], background=False), multi_label=True)
    write_dataset(root, info, cases)
    return root


def make_gi(root: Path, rng: np.random.Generator, days: dict[str, int] | None = None, w: int = 12, h: int = 10, order: str = "row") -> dict:
    """A tiny GI-tract folder; returns {(day, slice): {organ: mask}} and images."""
    days = days or {"case1_day1": 3, "case1_day3": 2, "case7_day0": 4}
    truth: dict = {}
    with open(root / "train.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["id", "class", "segmentation"])
        for day, n in days.items():
            case = day.split("_")[0]
            scans = root / "train" / case / day / "scans"
            scans.mkdir(parents=True)
            for s in range(1, n + 1):
                img = rng.integers(0, 4000, size=(h, w)).astype(np.uint16)
                Image.fromarray(img).save(scans / f"slice_{s:04d}_{w}_{h}_1.50_1.25.png")
                for organ in ORGANS:
                    m = rng.random((h, w)) < 0.2
                    m[:, -1] = m[:, 0]  # overlaps between organs happen and are kept
                    truth[(day, s, organ)] = m
                    truth[(day, s, "image")] = img
                    wr.writerow([f"{day}_slice_{s:04d}", organ, rle_encode(m, order)])  # type: ignore[arg-type]
    return truth


def write_series(
    folder: Path,
    n: int = 5,
    patient: str = "P1",
    spacing: tuple[float, float] = (0.8, 0.7),
    step: float = 2.5,
    oblique: bool = True,
    seed: int = 0,
    series_number: int = 3,
) -> tuple[list[Dataset], np.ndarray]:
    """An oblique CT series (files shuffled by name); returns the datasets and the HU volume (slice, row, col)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    r = rotation() if oblique else np.eye(3)
    row_dir, col_dir, normal = r[:, 0], r[:, 1], r[:, 2]
    origin = np.array([-40.5, 12.25, 100.0])
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    stored = rng.integers(0, 2000, size=(n, ROWS, COLS)).astype(np.int16)
    out = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = DicomDataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientID = patient
        ds.PatientName = "Test^Patient"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "20240101", "120000", "1", "", "1"
        ds.Manufacturer = "test"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = series_number, k + 1
        ds.ImagePositionPatient = [float(v) for v in origin + k * step * normal]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = step
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
        ds.PixelData = stored[k].tobytes()
        ds.save_as(folder / f"IM{(k * 7) % n:04d}_{k}.dcm", enforce_file_format=True)
        out.append(ds)
    return out, stored.astype(np.float32) * 2 - 1024


def oblique(seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return make_affine((0.9, 1.1, 2.5), (12.5, -30.25, 7.0), q)


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def make_pair(root: Path, rng: np.random.Generator, n: int = 3, channels: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    aff = oblique()
    truth = {}
    for i in range(n):
        cid = f"case_{i:02d}"
        imgs = [rng.normal(size=SHAPE).astype(np.float32) for _ in range(channels)]
        lab = rng.integers(0, 3, size=SHAPE).astype(np.uint8)
        for c, im in enumerate(imgs):
            save(root / "images" / (f"{cid}_{c:04d}.nii.gz" if channels > 1 else f"{cid}.nii.gz"), im, aff)
        save(root / "labels" / f"{cid}.nii.gz", lab, aff)
        truth[cid] = (np.stack(imgs), lab)
    return truth


def make_sunnybrook(root: Path) -> Path:
    """One patient, one image (pydicom's MR_small.dcm, 64×64) with inner and outer contours."""
    img_dir = root / "images" / "SC-HF-I-01"
    con_dir = root / "contours" / "SC-HF-I-01" / "contours-manual" / "IRCCI-expert"
    img_dir.mkdir(parents=True)
    con_dir.mkdir(parents=True)
    shutil.copy(get_testdata_file("MR_small.dcm"), img_dir / "IM-0001-0048.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), img_dir / "IM-0001-0049.dcm")
    (con_dir / "IM-0001-0048-icontour-manual.txt").write_text("20.0 20.0\n30.0 20.0\n30.0 30.0\n20.0 30.0\n")
    (con_dir / "IM-0001-0048-ocontour-manual.txt").write_text("15.0 15.0\n35.0 15.0\n35.0 35.0\n15.0 35.0\n")
    (con_dir / "IM-0001-0048-p1contour-manual.txt").write_text("1 1\n2 2\n3 1\n")  # ignored
    return con_dir


def rotation() -> np.ndarray:
    a, b = np.deg2rad(25), np.deg2rad(-12)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx
