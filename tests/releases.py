"""Miniature copies of public data releases, written by code, for importer tests.

Every builder writes a small folder that mirrors what a user gets after downloading and
unpacking a real release: the same folder and file names, file formats, header conventions
and known quirks, at a tiny size. Images hold a simple synthetic structure that coincides
with the label and is placed off-centre and asymmetric, so a wrong pairing, a flip or a
transposition changes the answer. Nothing here uses the project's own writers: files are
written with pydicom, nibabel, SimpleITK, Pillow and numpy, as the releases' producers did.

Releases, where their layout is described, and what the miniature keeps and drops:

``sunnybrook`` - Sunnybrook Cardiac Data, the MICCAI 2009 LV Segmentation Challenge.
    Sources: Radau et al., "Evaluation Framework for Algorithms Segmenting Short Axis
    Cardiac MRI", MIDAS Journal 2009 (http://hdl.handle.net/10380/3070); the Cardiac Atlas
    page http://cardiacatlas.org/standards/sunnybrook-cardiac-data; the NVIDIA DIGITS
    tutorial examples/medical-imaging/README.md and its plug-in
    plugins/data/sunnybrook/digitsDataPluginSunnybrook/data.py (github.com/NVIDIA/DIGITS);
    the Kaggle Data Science Bowl tutorial "A Fully Convolutional Network for Left Ventricle
    Segmentation" by Vu Tran and its table SAX_series.txt (github.com/vuptran/cardiac-segmentation).
    Keeps: ``challenge_training/<case>/IM-<series>-<NNNN>.dcm`` beside
    ``Sunnybrook Cardiac MR Database ContoursPart3/TrainingDataContours/<padded case>/
    contours-manual/IRCCI-expert/IM-0001-<NNNN>-{i,o}contour-manual.txt`` (plus ``-p1-``/``-p2-``
    papillary files on some images), the same for ``challenge_validation`` / ContoursPart2 /
    ValidationDataContours and ``challenge_online`` / ContoursPart1 / OnlineDataContours;
    contour files that always say ``IM-0001`` while the image lives in the case's short-axis
    series (``SAX_SERIES``); several series per case folder with the same instance numbers;
    cine numbering (instance = slice x phases + phase + 1, 20 phases); 16-bit MONOCHROME2 MR
    with oblique geometry; "x y" float points (x = column, y = row) drawn on the end-diastolic
    and end-systolic frames. Drops: the real image size (256 x 256), the number of slices and
    contoured frames, real anatomy, most DICOM tags.

``neuro_numpy`` - the 4-class neuro data set of a course study (BMED6517 midterm report):
    ``task2_2D_4class{train,val,test}{images,labels}.npy``, uint8 stacks (N, 256, 256), labels
    0 background, 1 blood vessel, 2 cell, 3 axon, loaded with ``np.load(...).astype(np.uint8)``.
    Keeps the names, dtype, axis order and label coding; drops the size (N and 256 x 256).

``pancreas_ct82`` - TCIA "Pancreas-CT" (NIH, 82 contrast CT scans, Roth et al.).
    Sources: https://www.cancerimagingarchive.net/collection/pancreas-ct/ (former wiki page
    wiki.cancerimagingarchive.net/display/Public/Pancreas-CT), the label archive
    TCIA_pancreas_labels-02-05-2017.zip; loader code that shows the conventions:
    OrganSegC2F-style ``nii2npy.py`` (``nibabel.load(label).get_data().transpose(1, 0, 2)``
    to line labels up with ``pixel_array`` stacked by InstanceNumber), a public CT-82
    preprocessing script (class CT82MGR: overlays ``mask.T`` on the DICOM slice,
    skips patients 25 and 70, removed from the collection as duplicates of patient 2), the
    deedsBCV README (after dcm2niix the labels must be flipped in y: ``c3d label0001.nii.gz
    -flip y``) and nnU-Net v1's Task062_NIHPancreas (reorients images and labels with
    ``nibabel.as_closest_canonical``). Keeps ``Pancreas-CT/PANCREAS_0001/<date-PANCREAS0001-
    Pancreas-NNNNN>/<Pancreas-NNNNN>/1-001.dcm ...`` (int16 CT with RescaleSlope/Intercept)
    beside ``TCIA_pancreas_labels-02-05-2017/label0001.nii.gz``, labels stored in (column,
    row, slice) or canonical RAS axis order with a header that states their geometry, labels
    without a CT folder (the release keeps label0025/label0070 after removing those scans),
    optional misfitting labels and unlabelled series. Drops: 512 x 512 x ~200 size, anatomy,
    the exact axis order of every real label file (not verified per file).

``gi_tract`` - Kaggle "UW-Madison GI Tract Image Segmentation"
    (https://www.kaggle.com/competitions/uw-madison-gi-tract-image-segmentation/data; Lee et
    al., Data in Brief 57, 111159, 2024). Keeps ``train.csv`` (id, class, segmentation; three
    rows per slice in the order large_bowel, small_bowel, stomach; RLE "start length" pairs,
    1-based starts, row-major over the H x W slice; empty field for an empty mask),
    ``train/caseN/caseN_dayD/scans/slice_SSSS_W_H_SX_SY.png`` (16-bit grey PNG; width, height
    in pixels, then pixel spacing in mm with two decimals), several days per case, overlapping
    organ masks, empty first slices. Drops the image size (234 to 360 px), the 3 mm slice
    thickness (not in the files), the hidden test set and sample_submission.csv.

``hipmri_prostate`` - CSIRO "Labelled weekly MR images of the male pelvis" (HipMRI study,
    https://data.csiro.au/collection/csiro:51392v2; Dowling et al., IJROBP 93(5) 2015), as
    used by COMP3710 course reports: ``semantic_MRs_anon/Case_004_Week0_LFOV.nii.gz`` and
    ``semantic_labels_anon/Case_004_Week0_SEMANTIC_LFOV.nii.gz`` (optionally inside
    ``HipMRI_study_complete_release_v1``), labels 0 Background, 1 Body, 2 Bones, 3 Bladder,
    4 Rectum, 5 Prostate, 1 to 8 weekly scans per patient, L-P-S axis codes, one scan with a
    different size than the rest. Drops the 256 x 256 x 128 size and the true voxel spacing
    (the miniature's anisotropic spacing is invented).

``nnunet_raw`` / ``msd`` - nnU-Net v2 raw data sets and Medical Segmentation Decathlon folders.
    Sources: nnU-Net documentation/dataset_format.md, region_based_training.md,
    ignore_label.md and nnunetv2/dataset_conversion/convert_MSD_dataset.py
    (github.com/MIC-DKFZ/nnUNet); http://medicaldecathlon.com/ and Simpson et al.,
    arXiv:1902.09063. nnU-Net keeps ``DatasetXXX_Name/dataset.json`` (channel_names,
    labels name -> int or region lists, regions_class_order, ignore as the highest value,
    numTraining, file_ending), ``imagesTr/<case>_0000<ending>`` one file per channel,
    ``labelsTr/<case><ending>``, optional ``imagesTs``; 2D endings (.png/.bmp/.tif) are grey
    8-bit images and class-valued label images, 3D endings (.nii.gz/.nrrd/.mha/.gipl) are
    volumes with spacing/origin/direction. MSD keeps ``Task05_Prostate/dataset.json``
    (modality, int -> name labels, training/test lists of ``./imagesTr/...`` paths, the
    "relase" key spelled as in the real file), 4D multi-channel images, 3D labels and the
    ``._*`` AppleDouble files of the macOS-made tarballs. Drops sizes and real content.

``nuclei_tiles`` - a synthetic fluorescence-nuclei set (touching blobs of varying size and
    brightness, uneven illumination, noise, about 20 % foreground) written either as an
    nnU-Net 2D PNG data set or as the common ``images/x.png`` + ``masks/x.png`` (0/255) folder.
    It copies no particular release; it exercises those two layouts with realistic content.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

# --------------------------------------------------------------------------- shapes


def blob_mask(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float], angle: float = 0.0, bump: float = 0.0) -> np.ndarray:
    """Pixels (row, col) inside a rotated, egg-shaped blob; ``bump`` > 0 breaks its point symmetry.

    ``centre`` and ``radii`` are (row, column); ``angle`` (radians) turns the blob's column axis
    towards increasing rows. Pixel (r, c) is tested at its centre, coordinates x = c, y = r.
    """
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(float)
    dy, dx = rows - centre[0], cols - centre[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    un, vn = u / radii[1], v / radii[0]
    return np.hypot(un, vn) <= 1.0 + bump * np.cos(np.arctan2(vn, un))


def blob_outline(centre: tuple[float, float], radii: tuple[float, float], angle: float = 0.0, bump: float = 0.0, n: int = 64) -> np.ndarray:
    """The boundary of :func:`blob_mask` as an (n, 2) array of float (x = column, y = row) points."""
    phi = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    r = 1.0 + bump * np.cos(phi)
    u, v = radii[1] * r * np.cos(phi), radii[0] * r * np.sin(phi)
    x = centre[1] + u * math.cos(angle) - v * math.sin(angle)
    y = centre[0] + u * math.sin(angle) + v * math.cos(angle)
    return np.stack([x, y], axis=1)


def _ellipsoid(grid: Sequence[np.ndarray], centre: Sequence[float], radii: Sequence[float], taper: float = 0.0) -> np.ndarray:
    """Points of ``grid`` (one coordinate array per axis) inside an axis-aligned ellipsoid.

    ``taper`` widens the cross-section towards the positive end of the last axis, so the shape
    is not symmetric under a flip of that axis.
    """
    t = (grid[-1] - centre[-1]) / radii[-1]
    widen = 1.0 + taper * t
    s = sum(((g - c) / (r * (widen if i < len(grid) - 1 else 1.0))) ** 2 for i, (g, c, r) in enumerate(zip(grid, centre, radii, strict=True)))
    return s <= 1.0


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A 3 x 3 rotation matrix from angles (radians) about x, then y, then z."""
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ds(values: Sequence[float] | np.ndarray, decimals: int = 6) -> list[float]:
    """Numbers short enough for a DICOM DS element."""
    return [round(float(v), decimals) + 0.0 for v in values]


def _uid(*parts: object) -> str:
    """A reproducible DICOM UID derived from ``parts``."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _write_dicom(path: Path, pixels: np.ndarray, sop_class: str, sop_uid: str, attrs: Mapping[str, object]) -> None:
    """One single-frame grey DICOM file (Explicit VR Little Endian, valid file meta)."""
    if pixels.dtype not in (np.uint16, np.int16):
        raise ValueError(f"16-bit pixels expected, got {pixels.dtype}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _png(path: Path, array: np.ndarray) -> Path:
    """A grey PNG (8-bit for uint8, 16-bit for uint16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rle_encode(mask: np.ndarray) -> str:
    """Kaggle run-length encoding: 1-based "start length" pairs over the row-major flattened mask."""
    flat = np.concatenate([[0], np.asarray(mask, dtype=np.uint8).ravel(order="C"), [0]])
    runs = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(int(x)) for x in runs)


# --------------------------------------------------------------------------- 1. Sunnybrook

# Case -> short-axis (SAX) cine series of each case folder, as published with the Kaggle Data
# Science Bowl tutorial "A Fully Convolutional Network for Left Ventricle Segmentation" (Vu Tran,
# Booz Allen Hamilton; file SAX_series.txt in github.com/vuptran/cardiac-segmentation, grouped
# there by challenge part) and, for the 15 training cases, in the NVIDIA DIGITS Sunnybrook
# plug-in (plugins/data/sunnybrook/digitsDataPluginSunnybrook/data.py). The contour files of a
# case always say IM-0001; their image is IM-<SAX series>-<same number>.dcm. Other public copies
# of the 45-case table give SC-N-6 as "0981" instead of "0984"; the tutorial author's file is kept.
SAX_SERIES: dict[str, dict[str, str]] = {
    "training": {
        "SC-HF-I-1": "0004",
        "SC-HF-I-2": "0106",
        "SC-HF-I-4": "0116",
        "SC-HF-I-40": "0134",
        "SC-HF-NI-3": "0379",
        "SC-HF-NI-4": "0501",
        "SC-HF-NI-34": "0446",
        "SC-HF-NI-36": "0474",
        "SC-HYP-1": "0550",
        "SC-HYP-3": "0650",
        "SC-HYP-38": "0734",
        "SC-HYP-40": "0755",
        "SC-N-2": "0898",
        "SC-N-3": "0915",
        "SC-N-40": "0944",
    },
    "online": {
        "SC-HF-I-9": "0241",
        "SC-HF-I-10": "0024",
        "SC-HF-I-11": "0043",
        "SC-HF-I-12": "0062",
        "SC-HF-NI-12": "0286",
        "SC-HF-NI-13": "0304",
        "SC-HF-NI-14": "0331",
        "SC-HF-NI-15": "0359",
        "SC-HYP-9": "0003",
        "SC-HYP-10": "0579",
        "SC-HYP-11": "0601",
        "SC-HYP-12": "0629",
        "SC-N-9": "1031",
        "SC-N-10": "0851",
        "SC-N-11": "0878",
    },
    "validation": {
        "SC-HF-I-5": "0156",
        "SC-HF-I-6": "0180",
        "SC-HF-I-7": "0209",
        "SC-HF-I-8": "0226",
        "SC-HF-NI-7": "0523",
        "SC-HF-NI-11": "0270",
        "SC-HF-NI-31": "0401",
        "SC-HF-NI-33": "0424",
        "SC-HYP-6": "0767",
        "SC-HYP-7": "0007",
        "SC-HYP-8": "0796",
        "SC-HYP-37": "0702",
        "SC-N-5": "0963",
        "SC-N-6": "0984",
        "SC-N-7": "1009",
    },
}

# part -> (image folder, contour archive folder, contour sub-folder)
SUNNYBROOK_PARTS: dict[str, tuple[str, str, str]] = {
    "training": ("challenge_training", "Sunnybrook Cardiac MR Database ContoursPart3", "TrainingDataContours"),
    "validation": ("challenge_validation", "Sunnybrook Cardiac MR Database ContoursPart2", "ValidationDataContours"),
    "online": ("challenge_online", "Sunnybrook Cardiac MR Database ContoursPart1", "OnlineDataContours"),
}

SunnybrookPart = Literal["training", "validation", "online"]
ContourKind = Literal["icontour", "ocontour", "p1", "p2"]


def sunnybrook_contour_folder_name(case: str) -> str:
    """Contour folders pad the case number to two digits: SC-HF-I-1 -> SC-HF-I-01, SC-HF-I-40 stays."""
    return "-".join(f"{int(t):02d}" if t.isdigit() else t for t in case.split("-"))


@dataclass(frozen=True)
class SunnybrookContour:
    """One contour text file and the image it was drawn on."""

    part: str
    case: str
    kind: ContourKind
    path: Path
    instance: int  # the NNNN of both the contour file and its image
    slice_index: int  # 0 = most basal slice of the short-axis stack
    phase: int  # 0-based cardiac phase
    points: np.ndarray  # (n, 2) float, x = column, y = row
    image: Path  # IM-<SAX series>-<NNNN>.dcm, the correct pairing
    decoys: tuple[Path, ...]  # other series' files with the same number (IM-0001-<NNNN>.dcm first)


@dataclass
class SunnybrookCase:
    part: str
    name: str  # image folder name, e.g. SC-HF-I-1
    contour_name: str  # contour folder name, e.g. SC-HF-I-01
    folder: Path
    contour_folder: Path  # .../<contour_name>/contours-manual/IRCCI-expert
    sax_series: str
    series: dict[str, list[Path]]  # series number -> files in instance order
    patient_id: str
    n_slices: int
    n_phases: int


@dataclass
class SunnybrookRelease:
    root: Path
    image_dirs: dict[str, Path]  # part -> challenge_* folder
    contour_dirs: dict[str, Path]  # part -> .../TrainingDataContours etc.
    cases: dict[str, SunnybrookCase]
    contours: list[SunnybrookContour]
    label_values: dict[str, int] = field(default_factory=lambda: {"background": 0, "left ventricle": 1})

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    def of_kind(self, kind: ContourKind) -> list[SunnybrookContour]:
        return [c for c in self.contours if c.kind == kind]


def _lv_geometry(size: int, s: int, phase: int, n_phases: int) -> dict[str, tuple[float, float]]:
    """Blood pool, epicardium and papillary muscle placement on slice ``s`` at ``phase``."""
    squeeze = 1.0 - 0.25 * math.sin(math.pi * phase / n_phases)  # smallest near end-systole
    scale = (1.0 - 0.1 * s) * squeeze
    centre = (0.40 * size + 0.2 * s, 0.60 * size - 0.2 * s)
    pool = (0.16 * size * scale, 0.13 * size * scale)
    wall = 0.06 * size
    epi = (pool[0] + wall, pool[1] + wall)
    p1 = (centre[0] + 0.55 * pool[0], centre[1] - 0.35 * pool[1])
    p2 = (centre[0] + 0.45 * pool[0], centre[1] + 0.45 * pool[1])
    return {"centre": centre, "pool": pool, "epi": epi, "p1": p1, "p2": p2}


LV_ANGLE, LV_BUMP = 0.5, 0.12


def _sax_frame(size: int, s: int, phase: int, n_phases: int, rng: np.random.Generator) -> np.ndarray:
    g = _lv_geometry(size, s, phase, n_phases)
    img = 60.0 + 15.0 * rng.standard_normal((size, size))
    img[blob_mask((size, size), g["centre"], g["epi"], LV_ANGLE, LV_BUMP)] = 350.0
    img[blob_mask((size, size), g["centre"], g["pool"], LV_ANGLE, LV_BUMP)] = 900.0
    r = max(1.0, 0.03 * size)
    for key in ("p1", "p2"):
        img[blob_mask((size, size), g[key], (r, r))] = 300.0
    return np.clip(img, 0, 4095).astype(np.uint16)


def _lax_frame(size: int, phase: int, n_phases: int, rng: np.random.Generator) -> np.ndarray:
    """A long-axis cine frame: an oblong bright chamber far from where the short-axis LV sits."""
    squeeze = 1.0 - 0.2 * math.sin(math.pi * phase / n_phases)
    img = 60.0 + 15.0 * rng.standard_normal((size, size))
    img[blob_mask((size, size), (0.76 * size, 0.33 * size), (0.08 * size, 0.28 * size * squeeze), 0.25, 0.1)] = 900.0
    return np.clip(img, 0, 4095).astype(np.uint16)


def _static_frame(size: int, rng: np.random.Generator) -> np.ndarray:
    """A stack that 'devolves into distorted static patterns' (the tutorial's rejected series)."""
    return rng.integers(200, 700, size=(size, size)).astype(np.uint16)


def _sunnybrook_case(
    root: Path, part: str, case: str, n_slices: int, n_phases: int, size: int, rng: np.random.Generator
) -> tuple[SunnybrookCase, list[SunnybrookContour]]:
    image_dir, contour_archive, contour_sub = SUNNYBROOK_PARTS[part]
    folder = root / image_dir / case
    contour_name = sunnybrook_contour_folder_name(case)
    contour_folder = root / contour_archive / contour_sub / contour_name / "contours-manual" / "IRCCI-expert"
    sax = SAX_SERIES[part][case]
    study_uid = _uid("sunnybrook", case, "study")
    frame_uid = _uid("sunnybrook", case, "frame")
    spacing = 1.3671875 * 256 / size  # the real 256 x 256 field of view, resampled

    # series number -> (description, rotation, frame maker); the decoys share the SAX instance numbers
    sax_rot = _rotation(math.radians(-50), math.radians(20), math.radians(35))
    series: dict[str, tuple[str, np.ndarray, str]] = {sax: ("FIESTA CINE SAX", sax_rot, "sax")}
    if sax != "0001":
        series["0001"] = ("FIESTA CINE LAX", _rotation(math.radians(10), math.radians(-60), math.radians(5)), "lax")
    if case == "SC-HF-I-10":  # the tutorial's example: series 24 is the SAX stack, series 34 is static
        series["0034"] = ("FIESTA CINE SAX", sax_rot, "static")

    written: dict[str, list[Path]] = {}
    for number, (description, rot, kind) in sorted(series.items()):
        row_dir, col_dir, normal = rot[:, 0], rot[:, 1], rot[:, 2]
        origin = np.array([-120.0, -110.0, 40.0]) - (size * spacing / 2) * (row_dir + col_dir)
        series_uid = _uid("sunnybrook", case, number, "series")
        files = []
        for s in range(n_slices):
            ipp = origin + s * 10.0 * normal  # 8 mm slices, 10 mm apart (illustrative)
            for p in range(n_phases):
                instance = s * n_phases + p + 1
                if kind == "sax":
                    pixels = _sax_frame(size, s, p, n_phases, rng)
                elif kind == "lax":
                    pixels = _lax_frame(size, p, n_phases, rng)
                else:
                    pixels = _static_frame(size, rng)
                path = folder / f"IM-{number}-{instance:04d}.dcm"
                attrs: dict[str, object] = {
                    "Modality": "MR",
                    "Manufacturer": "GE MEDICAL SYSTEMS",
                    "PatientID": case,
                    "PatientName": case,
                    "StudyInstanceUID": study_uid,
                    "SeriesInstanceUID": series_uid,
                    "FrameOfReferenceUID": frame_uid,
                    "SeriesNumber": int(number),
                    "SeriesDescription": description,
                    "InstanceNumber": instance,
                    "ImagePositionPatient": _ds(ipp),
                    "ImageOrientationPatient": _ds(np.concatenate([row_dir, col_dir])),
                    "PixelSpacing": _ds([spacing, spacing]),
                    "SliceThickness": 8.0,
                    "SpacingBetweenSlices": 10.0,
                    "SliceLocation": round(float(ipp @ normal), 4),
                    "TriggerTime": round(1000.0 * p / n_phases, 2),
                    "CardiacNumberOfImages": n_phases,
                }
                _write_dicom(path, pixels, MRImageStorage, _uid("sunnybrook", case, number, instance), attrs)
                files.append(path)
        written[number] = files

    es = round(0.4 * n_phases)
    contours: list[SunnybrookContour] = []
    for s in range(n_slices):
        for p in (0, es):
            g = _lv_geometry(size, s, p, n_phases)
            instance = s * n_phases + p + 1
            shapes: dict[ContourKind, np.ndarray] = {"icontour": blob_outline(g["centre"], g["pool"], LV_ANGLE, LV_BUMP, n=48)}
            if p == 0:
                shapes["ocontour"] = blob_outline(g["centre"], g["epi"], LV_ANGLE, LV_BUMP, n=56)
                if s == n_slices // 2:  # papillary muscles are outlined on some images only
                    r = max(1.0, 0.03 * size)
                    shapes["p1"] = blob_outline(g["p1"], (r, r), n=12)
                    shapes["p2"] = blob_outline(g["p2"], (r, r), n=12)
            image = folder / f"IM-{sax}-{instance:04d}.dcm"
            decoys = tuple(folder / f"IM-{n}-{instance:04d}.dcm" for n in sorted(series) if n != sax)
            for kind, pts in shapes.items():
                path = contour_folder / f"IM-0001-{instance:04d}-{kind}-manual.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(f"{x:.2f} {y:.2f}\n" for x, y in pts))
                contours.append(SunnybrookContour(part, case, kind, path, instance, s, p, pts, image, decoys))
    info = SunnybrookCase(part, case, contour_name, folder, contour_folder, sax, written, case, n_slices, n_phases)
    return info, contours


def sunnybrook(
    dest: str | Path,
    cases: Sequence[str] = ("SC-HF-I-1", "SC-N-2"),
    *,
    validation_cases: Sequence[str] = (),
    online_cases: Sequence[str] = (),
    n_slices: int = 3,
    n_phases: int = 20,
    size: int = 48,
    seed: int = 0,
) -> SunnybrookRelease:
    """Sunnybrook Cardiac Data as unpacked for the DIGITS / Kaggle tutorials.

    ``cases`` go to ``challenge_training`` with contours in ContoursPart3; ``validation_cases``
    (e.g. ``("SC-HF-I-5",)``) and ``online_cases`` (e.g. ``("SC-HF-I-10",)``, which also gets the
    tutorial's static decoy series 0034) add the other two parts. Every case folder holds its
    short-axis cine series and a long-axis series ``0001`` with the same instance numbers.
    """
    root = Path(dest)
    rng = np.random.default_rng(seed)
    wanted: list[tuple[str, str]] = [("training", c) for c in cases]
    wanted += [("validation", c) for c in validation_cases] + [("online", c) for c in online_cases]
    release = SunnybrookRelease(root, {}, {}, {}, [])
    for part, case in wanted:
        if case not in SAX_SERIES[part]:
            raise ValueError(f"{case} is not a {part} case of the Sunnybrook release; known: {sorted(SAX_SERIES[part])}")
        image_dir, archive, sub = SUNNYBROOK_PARTS[part]
        release.image_dirs[part] = root / image_dir
        release.contour_dirs[part] = root / archive / sub
        info, contours = _sunnybrook_case(root, part, case, n_slices, n_phases, size, rng)
        release.cases[case] = info
        release.contours += contours
    return release


# --------------------------------------------------------------------------- 2. neuro .npy stacks

NEURO_CLASSES = ("background", "blood vessel", "cell", "axon")
NEURO_INTENSITY = (110, 45, 205, 155)  # grey level per class, before noise


@dataclass
class NeuroRelease:
    root: Path
    files: dict[str, tuple[Path, Path]]  # split -> (images .npy, labels .npy)
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    classes: tuple[str, ...] = NEURO_CLASSES

    @property
    def label_values(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}


def _neuro_slice(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = (size, size)
    label = np.zeros(shape, np.uint8)
    c = rng.uniform(0.35, 0.65, 2) * size
    label[blob_mask(shape, (c[0], c[1] + 0.1 * size), (0.36 * size, 0.26 * size), rng.uniform(0, 3), 0.2)] = 3
    label[blob_mask(shape, (0.2 * size, 0.3 * size), (0.05 * size, 0.18 * size), rng.uniform(-0.4, 0.4), 0.1)] = 1
    for _ in range(3):
        cc = rng.uniform(0.15, 0.85, 2) * size
        r = rng.uniform(0.05, 0.08) * size
        label[blob_mask(shape, (cc[0], cc[1]), (r, 1.2 * r), rng.uniform(0, 3))] = 2
    image = np.asarray(NEURO_INTENSITY, float)[label] + rng.normal(0, 6, shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def neuro_numpy(dest: str | Path, n_train: int = 6, n_val: int = 2, n_test: int = 2, size: int = 32, seed: int = 0, image_dtype: str = "uint8") -> NeuroRelease:
    """``task2_2D_4class{train,val,test}{images,labels}.npy`` (N, H, W) stacks, labels 0..3.

    The study reads them with ``np.load(base + 'classtrainimages.npy').astype(np.uint8)`` where
    ``base = 'downloads/task2_2D_4'``; ``image_dtype`` lets a test store images in another dtype.
    """
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    release = NeuroRelease(root, {}, {}, {})
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        pairs = [_neuro_slice(size, rng) for _ in range(n)]
        images = np.stack([p[0] for p in pairs]).astype(image_dtype) if n else np.zeros((0, size, size), image_dtype)
        labels = np.stack([p[1] for p in pairs]) if n else np.zeros((0, size, size), np.uint8)
        img_path = root / f"task2_2D_4class{split}images.npy"
        lab_path = root / f"task2_2D_4class{split}labels.npy"
        np.save(img_path, images)
        np.save(lab_path, labels)
        release.files[split] = (img_path, lab_path)
        release.images[split] = images
        release.labels[split] = labels
    return release


# --------------------------------------------------------------------------- 3. TCIA Pancreas-CT

PANCREAS_LABEL_DIR = "TCIA_pancreas_labels-02-05-2017"
LabelLayout = Literal["xyz", "ras"]


@dataclass
class PancreasPatient:
    number: int
    folder: Path  # Pancreas-CT/PANCREAS_0001
    series_dir: Path  # .../<study folder>/<series folder>
    dicoms: list[Path]  # 1-001.dcm ... in InstanceNumber order (instance 1 = most superior slice)
    label: Path | None  # None: a series without a label
    label_layout: LabelLayout | None
    label_fits: bool  # False: the label's world extent does not match the series
    mask: np.ndarray  # bool (rows, columns, slices), slices in InstanceNumber order: [..., k] <-> instance k + 1
    hu: np.ndarray  # int16 Hounsfield units, same layout as ``mask``
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm
    slice_spacing: float


@dataclass
class PancreasRelease:
    root: Path
    images_dir: Path  # .../Pancreas-CT
    labels_dir: Path  # .../TCIA_pancreas_labels-02-05-2017
    patients: dict[int, PancreasPatient]
    orphan_labels: list[Path]  # label files whose CT folder is absent (like label0025, label0070)
    label_values: dict[str, int] = field(default_factory=lambda: {"background": 0, "pancreas": 1})

    @property
    def n_patients(self) -> int:
        return len(self.patients)


def _lps_to_ras(affine: np.ndarray) -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def pancreas_ct82(
    dest: str | Path,
    patients: Sequence[int] = (1, 2),
    shape: tuple[int, int, int] = (32, 32, 12),
    *,
    label_layout: LabelLayout | Literal["mixed"] = "mixed",
    misfit_patient: int | None = None,
    unlabelled_patient: int | None = None,
    orphan_labels: Sequence[int] = (),
    manifest: str | None = None,
    seed: int = 0,
) -> PancreasRelease:
    """TCIA Pancreas-CT DICOM series beside the 2017 NIfTI label archive.

    ``shape`` is (rows, columns, slices). Labels are written in (column, row, slice) order with
    slices in InstanceNumber order ("xyz", as the community loaders expect) or reoriented to RAS+
    ("ras", rows, columns and slices all reversed); "mixed" alternates per patient. Either way the
    NIfTI affine states the label's true position, so it lines up with the DICOMs only through
    world coordinates. ``misfit_patient`` gets a label reaching 3 slices above and 1 below its
    series; ``unlabelled_patient`` gets no label; ``orphan_labels`` writes labels for patient
    numbers without a CT folder; ``manifest`` nests everything in an NBIA-retriever folder such
    as ``manifest-1599750808610``.
    """
    base = Path(dest) / manifest if manifest else Path(dest)
    images_dir, labels_dir = base / "Pancreas-CT", base / PANCREAS_LABEL_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    (images_dir / "LICENSE").write_text("Licence terms of the collection (placeholder text).\n")
    rng = np.random.default_rng(seed)
    rows, cols, n = shape
    release = PancreasRelease(base, images_dir, labels_dir, {}, [])

    for index, number in enumerate(list(patients) + [int(o) for o in orphan_labels]):
        orphan = index >= len(patients)
        dy = dx = round(0.70 + 0.05 * (index % 3), 4)  # mm, real scans: about 0.66 to 0.98
        dz = (1.5, 2.0, 2.5)[index % 3]
        x0, y0 = -dx * cols / 2 + 3.0 * index, -dy * rows / 2 - 20.0
        z_top = -80.0 - 7.0 * index  # InstanceNumber 1 is the most superior slice; z falls with the instance
        # world (LPS, mm) of voxel (row r, column c, instance k + 1)
        r_idx, c_idx, k_idx = np.meshgrid(np.arange(rows), np.arange(cols), np.arange(n), indexing="ij")
        wx, wy, wz = x0 + c_idx * dx, y0 + r_idx * dy, z_top - k_idx * dz
        body = ((wx / (0.46 * cols * dx)) ** 2 + ((wy - y0 - rows * dy / 2) / (0.40 * rows * dy)) ** 2) <= 1.0
        spine = ((wx - x0 - 0.52 * cols * dx) ** 2 + (wy - y0 - 0.78 * rows * dy) ** 2) <= (0.09 * cols * dx) ** 2
        centre = (x0 + 0.62 * cols * dx, y0 + 0.38 * rows * dy, z_top - 0.42 * (n - 1) * dz)
        radii = (0.22 * cols * dx, 0.08 * rows * dy, 0.28 * n * dz)
        mask = _ellipsoid((wx, wy, wz), centre, radii, taper=0.5) & body
        hu = np.full(shape, -1000.0)
        hu[body] = 40.0
        hu[spine] = 700.0
        hu[mask] = 130.0
        hu = np.round(hu + rng.normal(0, 4, shape)).astype(np.int16)

        folder = images_dir / f"PANCREAS_{number:04d}"
        series_dir = folder / f"11-24-2015-PANCREAS{number:04d}-Pancreas-{rng.integers(10000, 99999)}" / f"Pancreas-{rng.integers(10000, 99999)}"
        dicoms: list[Path] = []
        if not orphan:
            study_uid, series_uid = _uid("pancreas", number, "study"), _uid("pancreas", number, "series")
            frame_uid = _uid("pancreas", number, "frame")
            for k in range(n):
                ipp = [x0, y0, z_top - k * dz]
                attrs: dict[str, object] = {
                    "Modality": "CT",
                    "PatientID": f"PANCREAS_{number:04d}",
                    "PatientName": f"PANCREAS_{number:04d}",
                    "StudyInstanceUID": study_uid,
                    "SeriesInstanceUID": series_uid,
                    "FrameOfReferenceUID": frame_uid,
                    "SeriesNumber": 1,
                    "SeriesDescription": "Pancreas",
                    "InstanceNumber": k + 1,
                    "ImagePositionPatient": _ds(ipp),
                    "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                    "PixelSpacing": _ds([dy, dx]),
                    "SliceThickness": dz,
                    "SliceLocation": round(ipp[2], 4),
                    "KVP": 120,
                    "RescaleIntercept": -1024.0,
                    "RescaleSlope": 1.0,
                    "RescaleType": "HU",
                }
                stored = (hu[:, :, k].astype(np.int32) + 1024).astype(np.int16)
                path = series_dir / f"1-{k + 1:03d}.dcm"
                _write_dicom(path, stored, CTImageStorage, _uid("pancreas", number, k), attrs)
                dicoms.append(path)

        layout: LabelLayout = label_layout if label_layout != "mixed" else ("xyz", "ras")[index % 2]
        label_path: Path | None = labels_dir / f"label{number:04d}.nii.gz"
        fits = True
        # (column, row, slice) voxel array; affine columns: +column, +row, +instance, in LPS, then to RAS
        data = np.transpose(mask, (1, 0, 2)).astype(np.uint8)
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = [dx, 0, 0], [0, dy, 0], [0, 0, -dz], [x0, y0, z_top]
        if number == misfit_patient:
            data = np.pad(data, ((0, 0), (0, 0), (3, 1)))
            lps[:3, 3] = [x0, y0, z_top + 3 * dz]
            fits = False
        image = nib.Nifti1Image(data, _lps_to_ras(lps))
        if layout == "ras":
            image = nib.as_closest_canonical(image)
        image.set_qform(image.affine, code=1)
        image.set_sform(image.affine, code=1)
        if number == unlabelled_patient and not orphan:
            label_path = None
        else:
            nib.save(image, label_path)
        if orphan:
            assert label_path is not None
            release.orphan_labels.append(label_path)
            continue
        release.patients[number] = PancreasPatient(number, folder, series_dir, dicoms, label_path, layout if label_path else None, fits, mask, hu, (dy, dx), dz)
    return release


# --------------------------------------------------------------------------- 4. UW-Madison GI tract

GI_CLASSES = ("large_bowel", "small_bowel", "stomach")
GI_INTENSITY = {"large_bowel": 9000, "small_bowel": 6000, "stomach": 14000}


@dataclass
class GISlice:
    id: str  # case123_day20_slice_0001
    case: int
    day: int
    slice: int
    path: Path
    width: int
    height: int
    spacing: tuple[float, float]  # (x, y) mm, as in the file name
    masks: dict[str, np.ndarray]  # class -> bool (height, width)


@dataclass
class GIRelease:
    root: Path
    csv: Path
    slices: dict[str, GISlice]
    classes: tuple[str, ...] = GI_CLASSES

    @property
    def n_cases(self) -> int:
        return len({s.case for s in self.slices.values()})

    @property
    def days(self) -> list[tuple[int, int]]:
        return sorted({(s.case, s.day) for s in self.slices.values()})


def _gi_masks(height: int, width: int, t: float, shift: tuple[float, float]) -> dict[str, np.ndarray]:
    """Organ masks at relative slice position ``t`` in [0, 1]; the stomach sits high, the bowels low."""
    shape = (height, width)
    sy, sx = shift
    masks = {k: np.zeros(shape, bool) for k in GI_CLASSES}
    if 0.15 < t < 0.7:
        r = 0.18 * (1.0 - abs(t - 0.4) * 1.5)
        masks["stomach"] = blob_mask(shape, ((0.30 + sy) * height, (0.66 + sx) * width), (r * height, 1.3 * r * width), 0.4, 0.15)
    if t > 0.3:
        g = 0.8 + 0.3 * t  # the bowels widen towards the pelvis
        outer = blob_mask(shape, ((0.62 + sy) * height, (0.42 + sx) * width), (0.22 * g * height, 0.30 * g * width), -0.2, 0.1)
        inner = blob_mask(shape, ((0.62 + sy) * height, (0.42 + sx) * width), (0.12 * g * height, 0.18 * g * width), -0.2, 0.1)
        masks["large_bowel"] = outer & ~inner
        # small bowel loops fill the large bowel's frame and overlap it on one side
        masks["small_bowel"] = blob_mask(shape, ((0.66 + sy) * height, (0.32 + sx) * width), (0.12 * g * height, 0.14 * g * width), 0.7, 0.2)
    return masks


def gi_tract(
    dest: str | Path,
    cases: Mapping[int, Sequence[int]] | None = None,
    n_slices: int = 5,
    sizes: Mapping[int, tuple[int, int]] | None = None,
    spacings: Mapping[int, float] | None = None,
    seed: int = 0,
) -> GIRelease:
    """``train.csv`` + ``train/caseN/caseN_dayD/scans/slice_SSSS_W_H_SX_SY.png``.

    ``cases`` maps case number -> scan days (default two cases, two days each); ``sizes`` maps
    case -> (width, height) (default 40 x 40 and a non-square 48 x 36, like the real 360 x 310);
    ``spacings`` maps case -> pixel spacing in mm (written with two decimals).
    """
    root = Path(dest)
    cases = dict(cases) if cases is not None else {123: (0, 20), 42: (0, 13)}
    case_list = list(cases)
    sizes = dict(sizes) if sizes is not None else {c: ((40, 40), (48, 36))[i % 2] for i, c in enumerate(case_list)}
    spacings = dict(spacings) if spacings is not None else {c: (1.50, 1.63)[i % 2] for i, c in enumerate(case_list)}
    rng = np.random.default_rng(seed)
    release = GIRelease(root, root / "train.csv", {})
    lines = ["id,class,segmentation"]
    for case, days in cases.items():
        width, height = sizes[case]
        sp = spacings[case]
        for day in days:
            shift = (rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03))
            day_dir = root / "train" / f"case{case}" / f"case{case}_day{day}" / "scans"
            for s in range(1, n_slices + 1):
                t = (s - 1) / max(1, n_slices - 1)
                masks = _gi_masks(height, width, t, shift)
                img = 800.0 + 150.0 * rng.standard_normal((height, width))
                for organ in GI_CLASSES:
                    img[masks[organ]] += GI_INTENSITY[organ]
                pixels = np.clip(img, 0, 65535).astype(np.uint16)
                path = _png(day_dir / f"slice_{s:04d}_{width}_{height}_{sp:.2f}_{sp:.2f}.png", pixels)
                sid = f"case{case}_day{day}_slice_{s:04d}"
                release.slices[sid] = GISlice(sid, case, day, s, path, width, height, (sp, sp), masks)
                lines += [f"{sid},{organ},{rle_encode(masks[organ])}" for organ in GI_CLASSES]
    release.csv.parent.mkdir(parents=True, exist_ok=True)
    release.csv.write_text("\n".join(lines) + "\n")
    return release


# --------------------------------------------------------------------------- 5. HipMRI prostate

HIPMRI_CLASSES = ("Background", "Body", "Bones", "Bladder", "Rectum", "Prostate")
HIPMRI_INTENSITY = (5.0, 300.0, 120.0, 900.0, 450.0, 600.0)  # T2-like grey level per class


@dataclass
class HipMRIScan:
    patient: int
    week: int
    image: Path
    label: Path
    shape: tuple[int, int, int]
    affine: np.ndarray
    label_array: np.ndarray  # as stored in the label file (voxel axes of the NIfTI)


@dataclass
class HipMRIRelease:
    root: Path
    images_dir: Path
    labels_dir: Path
    scans: list[HipMRIScan]
    classes: tuple[str, ...] = HIPMRI_CLASSES

    @property
    def label_values(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    @property
    def n_patients(self) -> int:
        return len({s.patient for s in self.scans})


def _hipmri_label(shape: tuple[int, int, int], shift: np.ndarray) -> np.ndarray:
    """Voxel axes (i -> patient left, j -> posterior, k -> superior), as in the L-P-S release files."""
    i, j, k = np.meshgrid(*(np.arange(s, dtype=float) for s in shape), indexing="ij")
    ni, nj, nk = shape
    c = np.array([ni, nj, nk], float) / 2 + shift
    lab = np.zeros(shape, np.uint8)
    lab[_ellipsoid((i, j, k), c, (0.46 * ni, 0.40 * nj, 0.9 * nk))] = 1
    # femoral heads: left larger than right, pubic bone anterior
    lab[_ellipsoid((i, j, k), c + np.array([0.30 * ni, 0.05 * nj, -0.15 * nk]), (0.09 * ni, 0.09 * nj, 0.2 * nk))] = 2
    lab[_ellipsoid((i, j, k), c + np.array([-0.30 * ni, 0.05 * nj, -0.15 * nk]), (0.07 * ni, 0.07 * nj, 0.16 * nk))] = 2
    lab[_ellipsoid((i, j, k), c + np.array([0.02 * ni, -0.30 * nj, -0.30 * nk]), (0.16 * ni, 0.04 * nj, 0.1 * nk))] = 2
    lab[_ellipsoid((i, j, k), c + np.array([0.03 * ni, -0.12 * nj, 0.12 * nk]), (0.14 * ni, 0.11 * nj, 0.22 * nk), taper=0.3)] = 3
    lab[_ellipsoid((i, j, k), c + np.array([-0.02 * ni, 0.22 * nj, 0.0]), (0.06 * ni, 0.06 * nj, 0.35 * nk))] = 4
    lab[_ellipsoid((i, j, k), c + np.array([0.01 * ni, 0.06 * nj, -0.22 * nk]), (0.08 * ni, 0.07 * nj, 0.13 * nk), taper=0.4)] = 5
    return lab


def hipmri_prostate(
    dest: str | Path,
    scans: Mapping[int, Sequence[int]] | None = None,
    shape: tuple[int, int, int] = (24, 24, 12),
    spacing: tuple[float, float, float] = (1.5625, 1.5625, 2.5),
    *,
    odd_scan: tuple[int, int] | None = None,
    release_folder: str | None = None,
    image_dtype: str = "int16",
    seed: int = 0,
) -> HipMRIRelease:
    """``semantic_MRs_anon/Case_PPP_WeekW_LFOV.nii.gz`` + ``semantic_labels_anon/Case_PPP_WeekW_SEMANTIC_LFOV.nii.gz``.

    ``scans`` maps patient number -> weeks (default Case_004 weeks 0-2 and Case_011 weeks 0 and 5).
    ``odd_scan`` = (patient, week) is written with two extra slices, like the one scan of the
    release whose size differs from all others. ``release_folder`` (e.g.
    ``"HipMRI_study_complete_release_v1"``) nests both folders in it.
    """
    root = Path(dest) / release_folder if release_folder else Path(dest)
    scans = dict(scans) if scans is not None else {4: (0, 1, 2), 11: (0, 5)}
    images_dir, labels_dir = root / "semantic_MRs_anon", root / "semantic_labels_anon"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    release = HipMRIRelease(root, images_dir, labels_dir, [])
    for patient, weeks in scans.items():
        base_shift = rng.uniform(-1.0, 1.0, 3)
        for week in weeks:
            shp = (shape[0], shape[1], shape[2] + (2 if odd_scan == (patient, week) else 0))
            lab = _hipmri_label(shp, base_shift + rng.uniform(-0.5, 0.5, 3))
            img = np.asarray(HIPMRI_INTENSITY)[lab] + rng.normal(0, 15, shp)
            # L-P-S voxel axes: +i towards the patient's left, +j posterior, +k superior (RAS affine)
            affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
            affine[:3, 3] = [spacing[0] * shp[0] / 2 + 1.3 * patient, spacing[1] * shp[1] / 2 - 12.0, -spacing[2] * shp[2] / 2 + 3.0 * week]
            name = f"Case_{patient:03d}_Week{week}"
            image_path, label_path = images_dir / f"{name}_LFOV.nii.gz", labels_dir / f"{name}_SEMANTIC_LFOV.nii.gz"
            for arr, path, dtype in ((img, image_path, image_dtype), (lab, label_path, "uint8")):
                out = nib.Nifti1Image(np.round(arr).astype(dtype) if np.dtype(dtype).kind in "iu" else arr.astype(dtype), affine)
                out.set_qform(affine, code=1)
                out.set_sform(affine, code=1)
                nib.save(out, path)
            release.scans.append(HipMRIScan(patient, week, image_path, label_path, shp, affine, lab))
    return release


# --------------------------------------------------------------------------- 6. nnU-Net v2 raw and MSD

FileEnding = Literal[".png", ".bmp", ".tif", ".nii.gz", ".nrrd", ".mha", ".gipl"]
ENDINGS_2D = (".png", ".bmp", ".tif")
ENDINGS_3D = (".nii.gz", ".nrrd", ".mha", ".gipl")


@dataclass
class NNUNetCase:
    name: str
    images: list[Path]  # one per channel, _0000 first
    label: Path | None
    label_array: np.ndarray  # as written; 2D (rows, cols) or 3D in SimpleITK order (z, y, x)


@dataclass
class NNUNetRelease:
    root: Path  # the DatasetXXX_Name folder
    dataset_json: Path
    dataset: dict[str, object]
    file_ending: str
    training: list[NNUNetCase]
    test: list[NNUNetCase]
    label_values: dict[str, int | list[int]]
    spacing: tuple[float, ...] | None  # (x, y, z) for 3D files

    @property
    def n_cases(self) -> int:
        return len(self.training)


def _nested_label(shape: tuple[int, ...], levels: int, rng: np.random.Generator) -> np.ndarray:
    """Label values 1..levels as nested, off-centre blobs (each inside the previous one)."""
    lab = np.zeros(shape, np.uint8)
    centre = np.array([0.42, 0.58, 0.5][: len(shape)]) * np.array(shape) + rng.uniform(-1.0, 1.0, len(shape))
    radii = np.array([0.30, 0.22, 0.35][: len(shape)]) * np.array(shape)
    grid = np.meshgrid(*(np.arange(s, dtype=float) for s in shape), indexing="ij")
    for level in range(1, levels + 1):
        offset = (level - 1) * np.array([0.06, 0.05, 0.02][: len(shape)]) * np.array(shape)
        lab[_ellipsoid(grid, centre + offset, radii * (1.0 - 0.28 * (level - 1)), taper=0.3)] = level
    return lab


def _write_nnunet_image(path: Path, array: np.ndarray, ending: str, spacing: tuple[float, ...] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if ending in ENDINGS_2D:
        Image.fromarray(array.astype(np.uint8)).save(path)
        return
    import SimpleITK as sitk  # here only: the PNG releases (the nuclei proxy) need no ITK

    img = sitk.GetImageFromArray(array)
    assert spacing is not None
    img.SetSpacing(spacing)
    img.SetOrigin((-12.5, 30.0, -48.0))
    if ending != ".gipl":  # GIPL stores no direction
        img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(path))


def nnunet_raw(
    dest: str | Path,
    file_ending: FileEnding = ".png",
    *,
    dataset_id: int = 501,
    name: str = "Tiny",
    channels: Sequence[str] | None = None,
    classes: Sequence[str] = ("organ", "lesion"),
    regions: bool = False,
    ignore: bool = False,
    n_train: int = 3,
    n_test: int = 1,
    shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> NNUNetRelease:
    """An nnU-Net v2 raw data set ``Dataset{id:03d}_{name}`` with one file per channel.

    2D endings write grey 8-bit images of ``shape`` (rows, cols), default (24, 32); 3D endings
    write volumes of ``shape`` in SimpleITK array order (z, y, x), default (10, 20, 16), with
    anisotropic spacing and a rotated direction. ``channels`` default ("fluorescence",) for 2D and
    ("CT",) for 3D. ``classes`` name labels 1, 2, ... (nested blobs). ``regions`` writes the
    BraTS-style region labels of region_based_training.md instead; ``ignore`` adds an "ignore"
    label (the highest value) over part of each training label.
    """
    is_2d = file_ending in ENDINGS_2D
    if not is_2d and file_ending not in ENDINGS_3D:
        raise ValueError(f"unknown file ending {file_ending!r}")
    channels = tuple(channels) if channels is not None else (("fluorescence",) if is_2d else ("CT",))
    shape = tuple(shape) if shape is not None else ((24, 32) if is_2d else (10, 20, 16))
    spacing = None if is_2d else (0.8, 0.8, 2.5)
    rng = np.random.default_rng(seed)
    root = Path(dest) / f"Dataset{dataset_id:03d}_{name}"

    labels: dict[str, int | list[int]] = {"background": 0}
    if regions:
        labels.update({"whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3})
        levels = 3
    else:
        labels.update({c: i + 1 for i, c in enumerate(classes)})
        levels = len(classes)
    if ignore:
        labels["ignore"] = levels + 1
    dataset: dict[str, object] = {
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": labels,
        "numTraining": n_train,
        "file_ending": file_ending,
        "name": name,
    }
    if regions:
        dataset["regions_class_order"] = [1, 2, 3]

    def make_case(case: str, folder: str, with_label: bool) -> NNUNetCase:
        lab = _nested_label(shape, levels, rng)
        base = (lab.astype(float) * (160.0 / levels) + 40.0) if is_2d else (lab.astype(float) * 90.0 - 50.0)
        images = []
        for ch in range(len(channels)):
            contrast = base if ch % 2 == 0 else base.max() + base.min() - base  # second channel: inverted contrast
            noisy = contrast + rng.normal(0, 4, shape)
            arr = np.clip(noisy, 0, 255).astype(np.uint8) if is_2d else noisy.astype(np.float32)
            path = root / folder / f"{case}_{ch:04d}{file_ending}"
            _write_nnunet_image(path, arr, file_ending, spacing)
            images.append(path)
        label_path = None
        if with_label:
            if ignore:  # sparse annotation: the last rows (2D) or slices (3D) are not annotated
                lab[-max(1, shape[0] // 4) :] = levels + 1
            label_path = root / "labelsTr" / f"{case}{file_ending}"
            _write_nnunet_image(label_path, lab, file_ending, spacing)
        return NNUNetCase(case, images, label_path, lab)

    prefix = name.lower()
    training = [make_case(f"{prefix}_{i:03d}", "imagesTr", True) for i in range(n_train)]
    test = [make_case(f"{prefix}_{n_train + i:03d}", "imagesTs", False) for i in range(n_test)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    dataset_json = root / "dataset.json"
    dataset_json.write_text(json.dumps(dataset, indent=4, sort_keys=False))
    return NNUNetRelease(root, dataset_json, dataset, file_ending, training, test, labels, spacing)


@dataclass
class MSDRelease:
    root: Path  # the TaskNN_Name folder
    dataset_json: Path
    dataset: dict[str, object]
    training: list[tuple[Path, Path]]  # (4D image, 3D label)
    test: list[Path]
    junk: list[Path]  # ._* AppleDouble files
    labels: dict[str, np.ndarray]  # case name -> label array as stored (x, y, z)
    modalities: tuple[str, ...] = ("T2", "ADC")

    @property
    def n_cases(self) -> int:
        return len(self.training)


def _appledouble(path: Path) -> Path:
    """A macOS AppleDouble file (magic 0x00051607, 4096 bytes), as left in the MSD tarballs."""
    # magic, version 2, 16-byte filler, 2 entries: Finder info (id 9) and resource fork (id 2)
    header = struct.pack(">II16sH", 0x00051607, 0x00020000, b"Mac OS X        ", 2)
    header += struct.pack(">III", 9, 50, 3760) + struct.pack(">III", 2, 3810, 286)
    path.write_bytes(header.ljust(4096, b"\0"))
    return path


def msd(
    dest: str | Path, n_train: int = 3, n_test: int = 2, shape: tuple[int, int, int] = (20, 16, 8), *, appledouble: bool = True, seed: int = 0
) -> MSDRelease:
    """``Task05_Prostate``: dataset.json, 4D two-channel images (T2, ADC), 3D labels 0/1/2 (PZ, TZ).

    Case numbers are not consecutive in the real release (e.g. prostate_16 and prostate_04 train,
    prostate_08 tests); the miniature interleaves them the same way.
    """
    root = Path(dest) / "Task05_Prostate"
    rng = np.random.default_rng(seed)
    numbers = [0, 1, 2, 4, 6, 7, 10, 13, 14, 16][:n_train] if n_train <= 10 else list(range(0, 2 * n_train, 2))
    test_numbers = [3, 5, 8, 9, 11, 12, 15][:n_test] if n_test <= 7 else list(range(1, 2 * n_test, 2))
    spacing = (0.625, 0.625, 3.6)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [80.0, 70.0, -20.0]
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    release = MSDRelease(root, root / "dataset.json", {}, [], [], [], {})

    def write_image(path: Path, lab: np.ndarray) -> None:
        t2 = np.asarray([200.0, 600.0, 350.0])[lab] + rng.normal(0, 10, lab.shape)
        adc = np.asarray([900.0, 1500.0, 1100.0])[lab] + rng.normal(0, 20, lab.shape)
        nib.save(nib.Nifti1Image(np.stack([t2, adc], axis=-1).astype(np.float32), affine), path)

    for num in numbers:
        case = f"prostate_{num:02d}"
        lab = _nested_label(shape, 2, rng)  # 1 (PZ) is the outer shell around 2 (TZ)
        image, label = root / "imagesTr" / f"{case}.nii.gz", root / "labelsTr" / f"{case}.nii.gz"
        write_image(image, lab)
        nib.save(nib.Nifti1Image(lab, affine), label)
        release.training.append((image, label))
        release.labels[case] = lab
    for num in test_numbers:
        image = root / "imagesTs" / f"prostate_{num:02d}.nii.gz"
        write_image(image, _nested_label(shape, 2, rng))
        release.test.append(image)
    if appledouble:
        for path in [p for pair in release.training for p in pair] + release.test:
            release.junk.append(_appledouble(path.with_name("._" + path.name)))
    release.dataset = {
        "name": "PROSTATE",
        "description": "Prostate transitional zone and peripheral zone segmentation",
        "reference": "Radboud University, Nijmegen Medical Centre",
        "licence": "CC-BY-SA 4.0",
        "relase": "1.0 04/05/2018",
        "tensorImageSize": "4D",
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": len(release.training),
        "numTest": len(release.test),
        "training": [{"image": f"./imagesTr/{i.name}", "label": f"./labelsTr/{lab.name}"} for i, lab in release.training],
        "test": [f"./imagesTs/{t.name}" for t in release.test],
    }
    release.dataset_json.write_text(json.dumps(release.dataset, indent=4))
    return release


# --------------------------------------------------------------------------- 7. nuclei tiles


@dataclass
class NucleiRelease:
    root: Path
    layout: str  # "nnunet" or "folder"
    train: list[tuple[Path, Path]]  # (image, mask)
    test: list[tuple[Path, Path | None]]
    masks: dict[str, np.ndarray]  # image stem -> bool mask
    foreground_fraction: float
    dataset_json: Path | None
    label_values: dict[str, int] = field(default_factory=lambda: {"background": 0, "nucleus": 1})


def _nuclei_tile(size: int, rng: np.random.Generator, target: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    shape = (size, size)
    signal = np.zeros(shape)
    mask = np.zeros(shape, bool)
    rows, cols = np.mgrid[:size, :size].astype(float)
    # nuclei in loose clusters so that many touch or overlap
    clusters = rng.uniform(0.15, 0.85, (3, 2)) * size
    while mask.mean() < target:
        cy, cx = clusters[rng.integers(len(clusters))] + rng.normal(0, 0.15 * size, 2)
        ry = rng.uniform(0.03, 0.075) * size
        rx = ry * rng.uniform(0.7, 1.3)
        angle = rng.uniform(0, math.pi)
        blob = blob_mask(shape, (cy, cx), (ry, rx), angle, rng.uniform(0.0, 0.15))
        if not blob.any():
            continue
        brightness = rng.uniform(0.35, 1.0)
        # brighter rim-to-centre profile inside each nucleus; overlaps add up like stained DNA
        d = np.hypot((rows - cy) / ry, (cols - cx) / rx)
        signal[blob] += brightness * (1.0 - 0.35 * np.clip(d[blob], 0, 1))
        mask |= blob
    illumination = 0.6 + 0.4 * (rows / size) * (1.0 - 0.5 * cols / size) + 0.2 * np.sin(cols / size * math.pi)
    image = 15.0 + 190.0 * np.clip(signal, 0, 1.4) * illumination + rng.normal(0, 6, shape)
    # slight optical blur: mean of the 3 x 3 neighbourhood
    padded = np.pad(image, 1, mode="edge")
    image = sum(padded[1 + dy : 1 + dy + size, 1 + dx : 1 + dx + size] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0
    return np.clip(image, 0, 255).astype(np.uint8), mask


def nuclei_tiles(
    dest: str | Path,
    n_train: int = 12,
    n_test: int = 4,
    size: int = 128,
    seed: int = 0,
    *,
    layout: Literal["nnunet", "folder"] = "nnunet",
    dataset_id: int = 777,
    name: str = "Nuclei",
    test_labels: bool = True,
) -> NucleiRelease:
    """Fluorescence-nuclei tiles: nnU-Net 2D PNG data set, or ``images/`` + ``masks/`` (0/255).

    In the nnU-Net layout test masks go to ``labelsTs`` (a common addition, not part of the
    format) when ``test_labels``; in the folder layout all tiles share ``images``/``masks`` and
    the split is only in the returned lists.
    """
    rng = np.random.default_rng(seed)
    tiles = [_nuclei_tile(size, rng) for _ in range(n_train + n_test)]
    fg = float(np.mean([m.mean() for _, m in tiles])) if tiles else 0.0
    masks: dict[str, np.ndarray] = {}
    if layout == "nnunet":
        root = Path(dest) / f"Dataset{dataset_id:03d}_{name}"
        prefix = name.lower()
        train: list[tuple[Path, Path]] = []
        test: list[tuple[Path, Path | None]] = []
        for i, (img, mask) in enumerate(tiles):
            case = f"{prefix}_{i:03d}"
            masks[case] = mask
            if i < n_train:
                train.append((_png(root / "imagesTr" / f"{case}_0000.png", img), _png(root / "labelsTr" / f"{case}.png", mask.astype(np.uint8))))
            else:
                lab = _png(root / "labelsTs" / f"{case}.png", mask.astype(np.uint8)) if test_labels else None
                test.append((_png(root / "imagesTs" / f"{case}_0000.png", img), lab))
        dataset = {
            "channel_names": {"0": "fluorescence"},
            "labels": {"background": 0, "nucleus": 1},
            "numTraining": n_train,
            "file_ending": ".png",
            "name": name,
        }
        dataset_json = root / "dataset.json"
        dataset_json.write_text(json.dumps(dataset, indent=4, sort_keys=False))
        return NucleiRelease(root, layout, train, test, masks, fg, dataset_json)
    if layout != "folder":
        raise ValueError(f"unknown layout {layout!r}")
    root = Path(dest)
    pairs: list[tuple[Path, Path]] = []
    for i, (img, mask) in enumerate(tiles):
        stem = f"tile_{i:03d}"
        masks[stem] = mask
        pairs.append((_png(root / "images" / f"{stem}.png", img), _png(root / "masks" / f"{stem}.png", mask.astype(np.uint8) * 255)))
    return NucleiRelease(root, layout, pairs[:n_train], list(pairs[n_train:]), masks, fg, None)
