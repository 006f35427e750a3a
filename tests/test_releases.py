"""The miniature public-release builders write what they say: files read back as a user would read them."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image, ImageDraw
from pydicom.uid import ExplicitVRLittleEndian

import releases as R

# ---------------------------------------------------------------- helpers (independent of the builders)


def polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fill an (x = column, y = row) polygon the way contour files are usually rasterised."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points], fill=1, outline=1)
    return np.array(canvas, dtype=bool)


def rle_decode(rle: str, height: int, width: int, order: str = "C") -> np.ndarray:
    flat = np.zeros(height * width, dtype=bool)
    values = [int(v) for v in rle.split()]
    for start, length in zip(values[0::2], values[1::2], strict=True):
        flat[start - 1 : start - 1 + length] = True
    return flat.reshape((height, width), order=order)  # type: ignore[call-overload]


def dicom_stack(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Rescaled pixels (rows, cols, n) in InstanceNumber order and each voxel's LPS position (rows, cols, n, 3)."""
    slices = sorted((pydicom.dcmread(p) for p in paths), key=lambda d: int(d.InstanceNumber))
    rows, cols = int(slices[0].Rows), int(slices[0].Columns)
    r, c = np.mgrid[:rows, :cols]
    values, world = [], []
    for d in slices:
        values.append(d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept))
        iop = np.array(d.ImageOrientationPatient, dtype=float)
        ipp = np.array(d.ImagePositionPatient, dtype=float)
        row_spacing, col_spacing = (float(v) for v in d.PixelSpacing)
        world.append(ipp + c[..., None] * col_spacing * iop[:3] + r[..., None] * row_spacing * iop[3:])
    return np.stack(values, axis=-1), np.stack(world, axis=2)


def sample_label(label: nib.Nifti1Image, world_lps: np.ndarray) -> np.ndarray:
    """Nearest label voxel at each LPS position (-1 outside the label)."""
    ras = world_lps * np.array([-1.0, -1.0, 1.0])
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(label.affine), ras)).astype(int)
    data = np.asarray(label.dataobj)
    inside = np.all((ijk >= 0) & (ijk < np.array(data.shape)), axis=-1)
    out = np.full(world_lps.shape[:-1], -1, dtype=int)
    out[inside] = data[tuple(ijk[inside].T)]
    return out


def test_module_stands_alone() -> None:
    source = Path(R.__file__).read_text()
    assert not re.search(r"^\s*(import|from)\s+medseg", source, re.MULTILINE)


# ---------------------------------------------------------------- Sunnybrook


def test_sax_series_table() -> None:
    assert [len(R.SAX_SERIES[p]) for p in ("training", "validation", "online")] == [15, 15, 15]
    table = {case: s for part in R.SAX_SERIES.values() for case, s in part.items()}
    assert len(table) == 45
    assert table["SC-HF-I-1"] == "0004" and table["SC-N-2"] == "0898" and table["SC-HF-I-10"] == "0024"
    assert all(re.fullmatch(r"\d{4}", s) for s in table.values())
    assert R.sunnybrook_contour_folder_name("SC-HF-I-1") == "SC-HF-I-01"
    assert R.sunnybrook_contour_folder_name("SC-HF-NI-34") == "SC-HF-NI-34"


@pytest.fixture(scope="module")
def sunnybrook(tmp_path_factory: pytest.TempPathFactory) -> R.SunnybrookRelease:
    return R.sunnybrook(tmp_path_factory.mktemp("sunnybrook"), validation_cases=("SC-HF-I-5",), online_cases=("SC-HF-I-10",))


def test_sunnybrook_layout(sunnybrook: R.SunnybrookRelease) -> None:
    root = sunnybrook.root
    assert sunnybrook.n_cases == 4
    assert (root / "challenge_training" / "SC-HF-I-1" / "IM-0004-0001.dcm").is_file()
    assert (root / "challenge_validation" / "SC-HF-I-5" / "IM-0156-0001.dcm").is_file()
    assert (root / "challenge_online" / "SC-HF-I-10" / "IM-0034-0001.dcm").is_file()  # the tutorial's rejected series
    expert = root / "Sunnybrook Cardiac MR Database ContoursPart3" / "TrainingDataContours" / "SC-N-02" / "contours-manual" / "IRCCI-expert"
    assert (expert / "IM-0001-0001-icontour-manual.txt").is_file() and (expert / "IM-0001-0001-ocontour-manual.txt").is_file()
    assert (root / "Sunnybrook Cardiac MR Database ContoursPart1" / "OnlineDataContours" / "SC-HF-I-10").is_dir()
    names = [c.path.name for c in sunnybrook.contours]
    assert all(re.fullmatch(r"IM-0001-\d{4}-(icontour|ocontour|p1|p2)-manual\.txt", n) for n in names)
    assert {c.kind for c in sunnybrook.contours} == {"icontour", "ocontour", "p1", "p2"}
    for case in sunnybrook.cases.values():
        sax = {int(p.stem.split("-")[2]) for p in case.folder.glob(f"IM-{case.sax_series}-*.dcm")}
        other = {int(p.stem.split("-")[2]) for p in case.folder.glob("IM-0001-*.dcm")}
        assert sax == other == set(range(1, case.n_slices * case.n_phases + 1))


def test_sunnybrook_dicom_headers(sunnybrook: R.SunnybrookRelease) -> None:
    case = sunnybrook.cases["SC-HF-I-1"]
    sax = [pydicom.dcmread(p) for p in case.series[case.sax_series]]
    lax = pydicom.dcmread(case.series["0001"][0])
    d = sax[0]
    assert d.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (d.Modality, d.PhotometricInterpretation, d.BitsAllocated) == ("MR", "MONOCHROME2", 16)
    assert d.pixel_array.dtype == np.uint16 and d.pixel_array.shape == (48, 48)
    assert d.SeriesNumber == 4 and lax.SeriesNumber == 1 and d.SeriesInstanceUID != lax.SeriesInstanceUID
    assert d.PatientID == lax.PatientID and d.StudyInstanceUID == lax.StudyInstanceUID
    assert [int(x.InstanceNumber) for x in sax] == list(range(1, 61))
    # cine numbering: 20 phases share a position, the next slice is 10 mm along the normal
    iop = np.array(d.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([np.array(x.ImagePositionPatient, dtype=float) @ normal for x in sax]).reshape(3, 20)
    assert np.allclose(pos, pos[:, :1], atol=1e-3) and np.allclose(np.diff(pos[:, 0]), 10.0, atol=1e-3)
    assert [float(x.SliceLocation) for x in sax[::20]] == pytest.approx(list(pos[:, 0]), abs=1e-3)
    assert float(sax[5].TriggerTime) > float(sax[0].TriggerTime)
    assert not np.allclose(np.array(lax.ImageOrientationPatient, dtype=float), iop)


def test_sunnybrook_contours_lie_on_the_short_axis_image(sunnybrook: R.SunnybrookRelease) -> None:
    endo = sunnybrook.of_kind("icontour")
    assert len(endo) == 4 * 3 * 2  # 4 cases x 3 slices x (end-diastole, end-systole)
    for c in endo:
        points = np.loadtxt(c.path)
        assert points.shape[1] == 2 and np.allclose(points, c.points, atol=0.006)
        image = pydicom.dcmread(c.image)
        assert int(image.InstanceNumber) == c.instance and int(image.SeriesNumber) == int(sunnybrook.cases[c.case].sax_series)
        pixels = image.pixel_array.astype(float)
        inside = polygon_mask(points, pixels.shape)
        assert pixels[inside].mean() > 3 * pixels[~inside].mean()
        assert np.median(pixels[inside]) > 700  # mostly blood pool; edge pixels may be myocardium
        # transposed or flipped, the contour misses the blood pool
        assert pixels[inside.T].mean() < 0.7 * pixels[inside].mean()
        assert pixels[inside[::-1]].mean() < 0.7 * pixels[inside].mean()
        # the naive IM-0001-<NNNN>.dcm pairing (and any other series with that number) shows something else
        assert c.decoys and c.decoys[0].name == f"IM-0001-{c.instance:04d}.dcm"
        for decoy in c.decoys:
            other = pydicom.dcmread(decoy)
            assert int(other.InstanceNumber) == c.instance
            assert other.pixel_array.astype(float)[inside].mean() < 0.7 * pixels[inside].mean()
    online = [c for c in endo if c.case == "SC-HF-I-10"]
    assert [d.name.split("-")[1] for d in online[0].decoys] == ["0001", "0034"]


def test_sunnybrook_epicardium_and_papillary_contours(sunnybrook: R.SunnybrookRelease) -> None:
    endo = {(c.case, c.instance): c for c in sunnybrook.of_kind("icontour")}
    for epi in sunnybrook.of_kind("ocontour"):
        pixels = pydicom.dcmread(epi.image).pixel_array.astype(float)
        wall = polygon_mask(epi.points, pixels.shape) & ~polygon_mask(endo[(epi.case, epi.instance)].points, pixels.shape)
        assert 200 < np.median(pixels[wall]) < 500  # myocardium, between blood pool and background
    papillary = sunnybrook.of_kind("p1") + sunnybrook.of_kind("p2")
    assert papillary and all(p.phase == 0 for p in papillary)
    for p in papillary:
        pixels = pydicom.dcmread(p.image).pixel_array.astype(float)
        assert pixels[polygon_mask(p.points, pixels.shape)].mean() < 650


def test_sunnybrook_rejects_unknown_cases(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a training case"):
        R.sunnybrook(tmp_path, cases=("SC-HF-I-5",))


# ---------------------------------------------------------------- neuro .npy


def test_neuro_numpy_loads_like_the_study(tmp_path: Path) -> None:
    rel = R.neuro_numpy(tmp_path / "downloads")
    base = str(tmp_path / "downloads" / "task2_2D_4")
    images = {s: np.load(base + f"class{s}images.npy").astype(np.uint8) for s in ("train", "val", "test")}
    labels = {s: np.load(base + f"class{s}labels.npy").astype(np.uint8) for s in ("train", "val", "test")}
    assert {s: a.shape for s, a in images.items()} == {"train": (6, 32, 32), "val": (2, 32, 32), "test": (2, 32, 32)}
    assert np.load(rel.files["train"][0]).dtype == np.uint8
    assert set(np.unique(labels["train"])) == {0, 1, 2, 3}
    for split in images:
        assert np.array_equal(images[split], rel.images[split]) and np.array_equal(labels[split], rel.labels[split])
    means = [images["train"][labels["train"] == k].mean() for k in range(4)]
    assert means[1] < means[0] < means[3] < means[2]  # vessel < background < axon < cell
    assert rel.label_values == {"background": 0, "blood vessel": 1, "cell": 2, "axon": 3}


# ---------------------------------------------------------------- Pancreas-CT


@pytest.mark.parametrize("layout", ["xyz", "ras"])
def test_pancreas_label_lines_up_through_world_coordinates(tmp_path: Path, layout: str) -> None:
    rel = R.pancreas_ct82(tmp_path, patients=(1,), shape=(32, 28, 12), label_layout=layout)  # type: ignore[arg-type]
    patient = rel.patients[1]
    assert patient.label is not None and patient.label.name == "label0001.nii.gz"
    hu, world = dicom_stack(patient.dicoms)
    assert np.array_equal(hu, patient.hu)
    structure = (hu > 100) & (hu < 300)  # contrast-enhanced pancreas, not spine or fat
    assert np.array_equal(structure, patient.mask) and structure.sum() > 0

    label = nib.load(patient.label)
    data = np.asarray(label.dataobj)
    assert data.shape == (28, 32, 12)  # columns first, not the (rows, columns) of pixel_array
    assert nib.aff2axcodes(label.affine) == (("L", "P", "I") if layout == "xyz" else ("R", "A", "S"))
    assert int(label.header["sform_code"]) == 1
    assert np.array_equal(sample_label(label, world) == 1, patient.mask)
    naive = np.transpose(data, (1, 0, 2)) == 1  # the transpose(1, 0, 2) recipe of the community loaders
    assert np.array_equal(naive, patient.mask) == (layout == "xyz")


def test_pancreas_label_matches_simpleitk_series(tmp_path: Path) -> None:
    rel = R.pancreas_ct82(tmp_path, patients=(1, 2))
    for patient in rel.patients.values():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(patient.series_dir)))
        ct = reader.Execute()
        assert patient.label is not None
        label = sitk.Resample(sitk.ReadImage(str(patient.label)), ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        ct_hu = sitk.GetArrayFromImage(ct)
        assert np.array_equal(sitk.GetArrayFromImage(label) == 1, (ct_hu > 100) & (ct_hu < 300))


def test_pancreas_release_layout_and_quirks(tmp_path: Path) -> None:
    rel = R.pancreas_ct82(tmp_path, patients=(1, 2, 3), misfit_patient=2, unlabelled_patient=3, orphan_labels=(25,), manifest="manifest-1599750808610")
    assert rel.images_dir == tmp_path / "manifest-1599750808610" / "Pancreas-CT"
    assert (rel.images_dir / "LICENSE").is_file()
    dicom = rel.patients[1].dicoms[0]
    study, series = dicom.parent.parent.name, dicom.parent.name
    assert dicom.name == "1-001.dcm" and dicom.parent.parent.parent.name == "PANCREAS_0001"
    assert re.fullmatch(r"11-24-2015-PANCREAS0001-Pancreas-\d{5}", study) and re.fullmatch(r"Pancreas-\d{5}", series)
    d = pydicom.dcmread(dicom)
    assert d.Modality == "CT" and d.pixel_array.dtype == np.int16
    assert (float(d.RescaleSlope), float(d.RescaleIntercept)) == (1.0, -1024.0)
    assert sorted(p.name for p in rel.labels_dir.iterdir()) == ["label0001.nii.gz", "label0002.nii.gz", "label0025.nii.gz"]
    assert rel.patients[3].label is None and rel.n_patients == 3
    assert [p.name for p in rel.orphan_labels] == ["label0025.nii.gz"] and not (rel.images_dir / "PANCREAS_0025").exists()

    misfit = rel.patients[2]
    assert misfit.label is not None and not misfit.label_fits
    label = nib.load(misfit.label)
    label_z = nib.affines.apply_affine(label.affine, np.array([[0, 0, k] for k in range(label.shape[2])]))[:, 2]
    series_z = sorted(float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in misfit.dicoms)
    assert label_z.max() > max(series_z) + 1 and label_z.min() < min(series_z) - 1


# ---------------------------------------------------------------- UW-Madison GI tract


def test_gi_tract_csv_and_pngs(tmp_path: Path) -> None:
    rel = R.gi_tract(tmp_path)
    with rel.csv.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "class", "segmentation"]
    body = rows[1:]
    assert len(body) == 3 * len(rel.slices)
    assert [r[1] for r in body[:3]] == list(R.GI_CLASSES)
    assert rel.n_cases == 2 and len(rel.days) == 4
    pngs = sorted(tmp_path.glob("train/case*/case*_day*/scans/slice_*.png"))
    assert len(pngs) == len(rel.slices)
    overlap = empty = 0
    for sid, klass, rle in body:
        s = rel.slices[sid]
        m = re.fullmatch(r"slice_(\d{4})_(\d+)_(\d+)_(\d+\.\d{2})_(\d+\.\d{2})\.png", s.path.name)
        assert m and s.path.parent.parent.name == f"case{s.case}_day{s.day}" and s.path.parent.name == "scans"
        width, height = int(m[2]), int(m[3])
        pixels = np.array(Image.open(s.path))
        assert pixels.dtype == np.uint16 and pixels.shape == (height, width)
        mask = rle_decode(rle, height, width)
        assert np.array_equal(mask, s.masks[klass])
        if rle:
            assert pixels[mask].mean() > pixels[~mask].mean() + 3000
            if width != height:
                assert not np.array_equal(mask, rle_decode(rle, width, height).T)  # W and H are not interchangeable
        else:
            empty += 1
        overlap += klass == "small_bowel" and bool((s.masks["small_bowel"] & s.masks["large_bowel"]).any())
    assert empty and overlap  # empty masks and overlapping organs both occur
    assert {(s.width, s.height) for s in rel.slices.values()} == {(40, 40), (48, 36)}


# ---------------------------------------------------------------- HipMRI prostate


def test_hipmri_pairs_and_headers(tmp_path: Path) -> None:
    rel = R.hipmri_prostate(tmp_path, odd_scan=(11, 5), release_folder="HipMRI_study_complete_release_v1")
    assert rel.images_dir == tmp_path / "HipMRI_study_complete_release_v1" / "semantic_MRs_anon"
    assert rel.n_patients == 2 and len(rel.scans) == 5
    assert (rel.images_dir / "Case_004_Week0_LFOV.nii.gz").is_file()
    assert (rel.labels_dir / "Case_004_Week0_SEMANTIC_LFOV.nii.gz").is_file()
    for scan in rel.scans:
        assert scan.label.name == scan.image.name.replace("_LFOV", "_SEMANTIC_LFOV")
        img, lab = nib.load(scan.image), nib.load(scan.label)
        assert img.shape == lab.shape == scan.shape and np.allclose(img.affine, lab.affine)
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        assert img.header.get_zooms() == pytest.approx((1.5625, 1.5625, 2.5))
        labels = np.asarray(lab.dataobj)
        pixels = img.get_fdata()
        assert set(np.unique(labels)) == set(range(6))
        means = [pixels[labels == k].mean() for k in range(6)]
        assert np.argmax(means) == 3 and np.argmin(means) == 0  # bright bladder, dark background
    shapes = {s.shape for s in rel.scans}
    assert shapes == {(24, 24, 12), (24, 24, 14)}
    assert rel.label_values["Prostate"] == 5


# ---------------------------------------------------------------- nnU-Net raw and MSD


@pytest.mark.parametrize("ending", [*R.ENDINGS_2D, *R.ENDINGS_3D])
def test_nnunet_raw_reads_back(tmp_path: Path, ending: str) -> None:
    rel = R.nnunet_raw(tmp_path, ending, channels=("T2", "ADC") if ending == ".mha" else None)  # type: ignore[arg-type]
    assert rel.root == tmp_path / "Dataset501_Tiny"
    meta = json.loads(rel.dataset_json.read_text())
    assert meta["file_ending"] == ending and meta["numTraining"] == 3
    assert meta["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert len(meta["channel_names"]) == (2 if ending == ".mha" else 1)
    for case in rel.training + rel.test:
        assert [p.name for p in case.images] == [f"{case.name}_{i:04d}{ending}" for i in range(len(meta["channel_names"]))]
    for case in rel.training:
        assert case.label == rel.root / "labelsTr" / f"{case.name}{ending}"
        if ending in R.ENDINGS_2D:
            label_img = Image.open(case.label)
            assert label_img.mode == "L"
            label, image = np.array(label_img), np.array(Image.open(case.images[0]))
        else:
            label_itk = sitk.ReadImage(str(case.label))
            assert label_itk.GetSpacing() == pytest.approx(rel.spacing)
            label, image = sitk.GetArrayFromImage(label_itk), sitk.GetArrayFromImage(sitk.ReadImage(str(case.images[0])))
        assert np.array_equal(label, case.label_array) and set(np.unique(label)) == {0, 1, 2}
        assert image[label == 2].mean() > image[label == 1].mean() > image[label == 0].mean()
    assert all(p.parent.name == "imagesTs" for c in rel.test for p in c.images)


def test_nnunet_regions_and_ignore_label(tmp_path: Path) -> None:
    rel = R.nnunet_raw(tmp_path, ".nii.gz", regions=True, ignore=True)
    meta = json.loads(rel.dataset_json.read_text())
    assert list(meta["labels"]) == ["background", "whole_tumor", "tumor_core", "enhancing_tumor", "ignore"]  # order kept
    assert meta["labels"]["whole_tumor"] == [1, 2, 3] and meta["regions_class_order"] == [1, 2, 3]
    assert meta["labels"]["ignore"] == 4
    label = nib.load(rel.training[0].label)  # type: ignore[arg-type]
    assert set(np.unique(np.asarray(label.dataobj))) == {0, 1, 2, 3, 4}


def test_msd_task_layout(tmp_path: Path) -> None:
    rel = R.msd(tmp_path)
    meta = json.loads(rel.dataset_json.read_text())
    assert meta["modality"] == {"0": "T2", "1": "ADC"} and meta["labels"] == {"0": "background", "1": "PZ", "2": "TZ"}
    assert meta["numTraining"] == 3 and meta["training"][0] == {"image": "./imagesTr/prostate_00.nii.gz", "label": "./labelsTr/prostate_00.nii.gz"}
    assert meta["test"] == ["./imagesTs/prostate_03.nii.gz", "./imagesTs/prostate_05.nii.gz"]
    for entry in meta["training"]:
        image, label = nib.load(rel.root / entry["image"]), nib.load(rel.root / entry["label"])
        assert image.shape == (*label.shape, 2) and np.allclose(image.affine, label.affine)
        t2, lab = image.get_fdata()[..., 0], np.asarray(label.dataobj)
        assert set(np.unique(lab)) == {0, 1, 2} and t2[lab == 1].mean() > t2[lab == 0].mean()
    junk = sorted(p.name for p in (rel.root / "imagesTr").iterdir() if p.name.startswith("._"))
    assert junk == ["._prostate_00.nii.gz", "._prostate_01.nii.gz", "._prostate_02.nii.gz"]
    for path in rel.junk:
        raw = path.read_bytes()
        assert len(raw) == 4096 and raw[:4] == bytes.fromhex("00051607")


# ---------------------------------------------------------------- nuclei tiles


def test_nuclei_tiles_nnunet_layout(tmp_path: Path) -> None:
    rel = R.nuclei_tiles(tmp_path, n_train=3, n_test=1, size=64)
    meta = json.loads(rel.dataset_json.read_text())  # type: ignore[arg-type]
    assert meta["labels"] == {"background": 0, "nucleus": 1} and meta["file_ending"] == ".png"
    assert [p.name for p, _ in rel.train] == ["nuclei_000_0000.png", "nuclei_001_0000.png", "nuclei_002_0000.png"]
    for image_path, label_path in rel.train + rel.test:
        assert label_path is not None
        image, label = np.array(Image.open(image_path)), np.array(Image.open(label_path))
        assert image.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
        assert 0.15 < label.mean() < 0.3
        assert image[label == 1].mean() > image[label == 0].mean() + 40


def test_nuclei_tiles_folder_layout(tmp_path: Path) -> None:
    rel = R.nuclei_tiles(tmp_path, n_train=2, n_test=1, size=64, layout="folder")
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(p.name for p in (tmp_path / "masks").iterdir())
    for image_path, mask_path in rel.train + rel.test:
        assert mask_path is not None and image_path.stem == mask_path.stem
        mask = np.array(Image.open(mask_path))
        assert set(np.unique(mask)) == {0, 255}
        assert np.array_equal(mask == 255, rel.masks[image_path.stem])
