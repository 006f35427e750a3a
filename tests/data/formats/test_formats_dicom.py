"""DICOM series import: geometry, rescale, labels from NIfTI / DICOM-SEG / RTSTRUCT, bad input."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

from helpers import COLS, ROWS, rotation, write_series
from medseg.data.formats import FormatError, import_dataset
from medseg.data.formats.dicom import RTSTRUCT_UID


def lps_affine(ds0: Dataset, step: float) -> np.ndarray:
    iop = np.array(ds0.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    a = np.eye(4)
    a[:3, 0] = normal * step
    a[:3, 1] = iop[3:] * float(ds0.PixelSpacing[0])
    a[:3, 2] = iop[:3] * float(ds0.PixelSpacing[1])
    a[:3, 3] = np.array(ds0.ImagePositionPatient, float)
    return a


def write_rtstruct(
    path: Path, series: list[Dataset], rois: dict[str, list[tuple[int, list[tuple[float, float]]]]], step: float = 2.5, ref_series: str | None = None
) -> None:
    """An RTSTRUCT with closed planar contours given as (slice, [(row, col), …]) in voxel indices."""
    aff = lps_affine(series[0], step)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rt = Dataset()
    rt.file_meta = meta
    rt.SOPClassUID, rt.SOPInstanceUID, rt.Modality = RTSTRUCT_UID, meta.MediaStorageSOPInstanceUID, "RTSTRUCT"
    rt.PatientID, rt.StudyInstanceUID, rt.SeriesInstanceUID = series[0].PatientID, series[0].StudyInstanceUID, generate_uid()
    ref = Dataset()
    ref.SeriesInstanceUID = ref_series or series[0].SeriesInstanceUID
    study = Dataset()
    study.RTReferencedSeriesSequence = [ref]
    frame = Dataset()
    frame.FrameOfReferenceUID = series[0].FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    rt.ReferencedFrameOfReferenceSequence = [frame]
    rt.StructureSetROISequence, rt.ROIContourSequence = [], []
    for i, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = i, name
        rt.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = i
        rc.ContourSequence = []
        for k, pts in contours:
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            world = [(aff @ np.array([k, r, col, 1.0]))[:3] for r, col in pts]
            c.NumberOfContourPoints = len(world)
            c.ContourData = [float(v) for p in world for v in p]
            rc.ContourSequence.append(c)
        rt.ROIContourSequence.append(rc)
    rt.save_as(path, enforce_file_format=True)


SQUARE = [(2, 3), (2, 7), (6, 7), (6, 3)]  # rows 2..6, columns 3..7 → 25 pixels


def test_series_geometry_and_rescale(tmp_path: Path) -> None:
    dss, hu = write_series(tmp_path / "in" / "P1" / "ct")
    ds = import_dataset("dicom", tmp_path / "in", tmp_path / "out")
    (cid,) = ds.case_ids
    case = ds.load_case(cid)
    assert case.patient_id == "P1" and cid == "P1_3"
    assert np.array_equal(case.image[0], hu)  # sorted by position, slope/intercept applied
    assert case.spacing == pytest.approx((2.5, 0.8, 0.7))
    expected = np.diag([-1.0, -1, 1, 1]) @ lps_affine(dss[0], 2.5)
    np.testing.assert_allclose(case.affine, expected, atol=1e-6)
    assert case.meta["series_uid"] == dss[0].SeriesInstanceUID


def test_to_nifti_mask_sits_on_the_source_grid(tmp_path: Path) -> None:
    dss, _ = write_series(tmp_path / "in" / "P1" / "ct")
    write_rtstruct(tmp_path / "in" / "P1" / "rs.dcm", dss, {"Liver": [(2, SQUARE)]})
    ds = import_dataset("dicom", tmp_path / "in", tmp_path / "out", to_nifti=True)
    # reference: SimpleITK's own reading of the series (LPS, x fastest)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "in" / "P1" / "ct")))
    ref = reader.Execute()
    mask = sitk.ReadImage(str(tmp_path / "out" / "nifti" / "labelsTr" / "P1_3.nii.gz"))
    img = sitk.ReadImage(str(tmp_path / "out" / "nifti" / "imagesTr" / "P1_3_0000.nii.gz"))
    for got in (mask, img):
        assert got.GetSize() == ref.GetSize()
        np.testing.assert_allclose(got.GetSpacing(), ref.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(got.GetOrigin(), ref.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(got.GetDirection(), ref.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(ref).astype(np.float32))
    lab = sitk.GetArrayFromImage(mask)
    assert lab.sum() == 25 and lab[2, 2:7, 3:8].all()
    np.testing.assert_array_equal(lab, ds.load_case("P1_3").label)


def test_rtstruct_roi_choice_and_holes(tmp_path: Path) -> None:
    dss, _ = write_series(tmp_path / "in" / "ct")
    ring = [(1, [(1, 1), (1, 8), (10, 8), (10, 1)]), (1, [(4, 4), (4, 5), (6, 5), (6, 4)])]
    write_rtstruct(tmp_path / "in" / "rs.dcm", dss, {"Body": [(0, SQUARE)], "Liver": ring, "Tumour": [(3, SQUARE)]})
    ds = import_dataset("dicom", tmp_path / "in", tmp_path / "out", rois="tumour,Liver")
    assert ds.info.class_names == ["background", "Tumour", "Liver"]
    lab = ds.load_case(ds.case_ids[0]).label
    assert (lab[3] == 1).sum() == 25 and (lab[0] == 0).all()
    assert (lab[1] == 2).sum() == 10 * 8 - 3 * 2  # the inner contour cuts a hole
    with pytest.raises(FormatError, match="ROI 'Kidney' not found") as e:
        import_dataset("dicom", tmp_path / "in", tmp_path / "o2", rois="Kidney")
    assert "Body" in str(e.value) and not (tmp_path / "o2").exists()


def test_rtstruct_bad_references_and_points(tmp_path: Path) -> None:
    dss, _ = write_series(tmp_path / "a" / "ct")
    write_rtstruct(tmp_path / "a" / "rs.dcm", dss, {"Liver": [(2, SQUARE)]}, ref_series=generate_uid())
    with pytest.raises(FormatError, match=r"references series .* not in the input") as e:
        import_dataset("dicom", tmp_path / "a", tmp_path / "out")
    assert "rs.dcm" in str(e.value)
    dss, _ = write_series(tmp_path / "b" / "ct")
    write_rtstruct(tmp_path / "b" / "rs.dcm", dss, {"Liver": [(2, [(2, 3), (2, 30), (6, 30)])]})
    with pytest.raises(FormatError, match="outside the image"):
        import_dataset("dicom", tmp_path / "b", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dicom_seg_labels(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    dss, _ = write_series(tmp_path / "in" / "ct", oblique=False)
    mask = np.zeros((len(dss), ROWS, COLS), dtype=bool)
    mask[1:3, 2:5, 4:9] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Liver",
        segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=dss,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=generate_uid(),
        series_number=9,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(tmp_path / "in" / "seg.dcm")
    ds = import_dataset("dicom", tmp_path / "in", tmp_path / "out")
    assert ds.info.class_names == ["background", "Liver"]
    np.testing.assert_array_equal(ds.load_case(ds.case_ids[0]).label, mask.astype(np.int16))


def test_nifti_mask_on_the_grid_and_off_it(tmp_path: Path, rng: np.random.Generator) -> None:
    dss, _ = write_series(tmp_path / "in" / "ct")
    affine = np.diag([-1.0, -1, 1, 1]) @ lps_affine(dss[0], 2.5)
    lab = rng.integers(0, 3, size=(5, ROWS, COLS)).astype(np.uint8)
    # stored x-fastest (reversed axes), as converters write it
    rev = affine.copy()
    rev[:3, :3] = affine[:3, :3][:, ::-1]
    nib.save(nib.Nifti1Image(lab.transpose(2, 1, 0), rev), str(tmp_path / "mask.nii.gz"))
    ds = import_dataset("dicom", tmp_path / "in", tmp_path / "out", labels=str(tmp_path / "mask.nii.gz"), classes="bg,a,b")
    np.testing.assert_array_equal(ds.load_case(ds.case_ids[0]).label, lab)
    shifted = rev.copy()
    shifted[:3, 3] += 1.0
    nib.save(nib.Nifti1Image(lab.transpose(2, 1, 0), shifted), str(tmp_path / "bad.nii.gz"))
    with pytest.raises(FormatError, match="label does not fit DICOM series") as e:
        import_dataset("dicom", tmp_path / "in", tmp_path / "o2", labels=str(tmp_path / "bad.nii.gz"))
    assert "bad.nii.gz" in str(e.value) and not (tmp_path / "o2").exists()


def test_zip_and_several_series(tmp_path: Path) -> None:
    write_series(tmp_path / "in" / "P1" / "ct", patient="P1", seed=1)
    write_series(tmp_path / "in" / "P2" / "ct", patient="P2", seed=2)
    zpath = tmp_path / "scans.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in (tmp_path / "in").rglob("*.dcm"):
            zf.write(p, p.relative_to(tmp_path / "in"))
    ds = import_dataset("dicom", zpath, tmp_path / "out")
    assert sorted(ds.case_ids) == ["P1_3", "P2_3"]
    assert ds.patients == {"P1_3": "P1", "P2_3": "P2"}


def test_pydicom_shipped_files(tmp_path: Path) -> None:
    for name in ("CT_small.dcm", "MR_small.dcm"):
        d = tmp_path / "in" / name.split(".")[0]
        d.mkdir(parents=True)
        shutil.copy(get_testdata_file(name), d / name)
    ds = import_dataset("dicom", tmp_path / "in", tmp_path / "out")
    assert len(ds) == 2
    for cid in ds.case_ids:
        case = ds.load_case(cid)
        src = pydicom.dcmread(get_testdata_file("CT_small.dcm" if case.meta["modality"] == "CT" else "MR_small.dcm"))
        expected = src.pixel_array * float(src.get("RescaleSlope", 1)) + float(src.get("RescaleIntercept", 0))
        np.testing.assert_array_equal(case.image[0, 0], expected.astype(np.float32))
        ps = [float(v) for v in src.PixelSpacing]
        assert case.spacing[1:] == pytest.approx(ps)
        # the first voxel's centre is ImagePositionPatient, in RAS (x and y negated)
        ipp = np.array(src.ImagePositionPatient, float)
        np.testing.assert_allclose(case.origin, ipp * [-1, -1, 1], atol=1e-5)


# ---------------------------------------------------------------- bad input


def _expect_error(tmp_path: Path, src: Path, match: str, name: str, **opts: object) -> None:
    out = tmp_path / "out"
    with pytest.raises(FormatError, match=match) as e:
        import_dataset("dicom", src, out, **opts)
    assert name in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_mixed_series_in_one_folder(tmp_path: Path) -> None:
    write_series(tmp_path / "in", seed=1)
    dss, _ = write_series(tmp_path / "tmp2", seed=2, series_number=4)
    for p in (tmp_path / "tmp2").iterdir():
        p.rename(tmp_path / "in" / f"b_{p.name}")
    _expect_error(tmp_path, tmp_path / "in", "mixes 2 series", "in")
    ds = import_dataset("dicom", tmp_path / "in", tmp_path / "chosen", series=dss[0].SeriesInstanceUID)
    assert ds.case_ids == ["P1_4"]


def test_missing_slice(tmp_path: Path) -> None:
    write_series(tmp_path / "in", n=6)
    victim = next(p for p in (tmp_path / "in").iterdir() if p.name.endswith("_2.dcm"))
    victim.unlink()
    _expect_error(tmp_path, tmp_path / "in", "missing slice", "_3.dcm")


def test_inconsistent_spacing_and_orientation(tmp_path: Path) -> None:
    write_series(tmp_path / "in", n=6)
    p = next(p for p in (tmp_path / "in").iterdir() if p.name.endswith("_5.dcm"))
    ds = pydicom.dcmread(p)
    ipp = np.array(ds.ImagePositionPatient, float)
    ds.ImagePositionPatient = [float(v) for v in ipp + 0.9 * rotation()[:, 2]]
    ds.save_as(p)
    _expect_error(tmp_path, tmp_path / "in", "inconsistent slice spacing", "_5.dcm")
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = [1.0, 0, 0, 0, 1, 0]
    ds.save_as(p)
    _expect_error(tmp_path, tmp_path / "in", "orientation", "_5.dcm")


def test_file_that_is_not_dicom(tmp_path: Path) -> None:
    write_series(tmp_path / "in")
    (tmp_path / "in" / "notes.dcm").write_text("not an image\n")
    _expect_error(tmp_path, tmp_path / "in", "not a DICOM file", "notes.dcm")


def test_compressed_without_decoder(tmp_path: Path) -> None:
    src = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
    if "ImagePositionPatient" not in src:
        src.ImagePositionPatient = [0.0, 0.0, 0.0]
        src.ImageOrientationPatient = [1.0, 0, 0, 0, 1, 0]
        src.PixelSpacing = [1.0, 1.0]
    (tmp_path / "in").mkdir()
    src.save_as(tmp_path / "in" / "jpeg12.dcm")
    try:
        _ = pydicom.dcmread(tmp_path / "in" / "jpeg12.dcm").pixel_array
        pytest.skip("a 12-bit JPEG decoder is installed here")
    except Exception:
        pass
    _expect_error(tmp_path, tmp_path / "in", "cannot decode compressed pixel data .* fix: install a decoder: pip install pylibjpeg", "jpeg12.dcm")
