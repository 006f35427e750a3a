"""DICOM series (folder, zip, single file) checked against SimpleITK's series reader, and DICOM-SEG written against pydicom/highdicom's reading."""

from __future__ import annotations

import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.data import get_testdata_file

from helpers import COLS, ROWS, write_series
from medseg.core.errors import FormatError
from medseg.io import read_image, read_images, write_mask

N = 5


def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _zip(folder: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(folder.rglob("*.dcm")):
            zf.write(p, prefix + str(p.relative_to(folder)))
    return dest


@pytest.mark.parametrize("packed", ["folder", "zip"])
def test_series_matches_simpleitk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packed: str) -> None:
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    _, hu = write_series(tmp_path / "ct", n=N)  # oblique, files shuffled by name
    ref = sitk_series(tmp_path / "ct")
    src_path = tmp_path / "ct" if packed == "folder" else _zip(tmp_path / "ct", tmp_path / "ct.zip", "series/")
    case, source = read_image(src_path)
    assert source.name == "ct" and source.kind == "dicom" and len(source.dicom) == N
    assert case.spatial_shape == (N, ROWS, COLS) == ref.GetSize()[::-1]
    np.testing.assert_allclose(case.image[0], sitk.GetArrayFromImage(ref), atol=1e-3)  # rescale applied, slices in SimpleITK's order
    np.testing.assert_allclose(case.image[0], hu, atol=1e-3)
    for zyx in [(0, 0, 0), (N - 1, ROWS - 1, COLS - 1), (2, 7, 3)]:
        world = np.array(ref.TransformIndexToPhysicalPoint(zyx[::-1])) * [-1, -1, 1]  # LPS → RAS
        np.testing.assert_allclose((case.affine @ [*zyx, 1.0])[:3], world, atol=1e-4)
    assert not list((tmp_path / "tmp").iterdir())  # nothing left extracted


def test_nrrd_and_nifti_masks_of_a_series_lie_on_simpleitks_grid(tmp_path: Path) -> None:
    write_series(tmp_path / "ct", n=N)
    ref = sitk_series(tmp_path / "ct")
    case, source = read_image(tmp_path / "ct")
    mask = (case.image[0] > 1000).astype(np.uint8)
    assert 0 < mask.sum() < mask.size
    for fmt in ("nrrd", "nifti"):
        got = sitk.ReadImage(str(write_mask(mask, source, tmp_path / fmt, fmt=fmt)))
        assert got.GetSize() == ref.GetSize()
        np.testing.assert_allclose(got.GetSpacing(), ref.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(got.GetOrigin(), ref.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(got.GetDirection(), ref.GetDirection(), atol=1e-5)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref) > 1000)


def test_dicom_seg_references_the_series_slice_by_slice(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom")
    dss, _ = write_series(tmp_path / "ct", n=N)
    case, source = read_image(tmp_path / "ct")
    mask = np.zeros(case.spatial_shape, np.uint8)
    mask[1, 2:6, 3:7] = 1
    mask[3, 5:9, 1:4] = 2
    out = write_mask(mask, source, tmp_path / "seg", class_names=["background", "liver", "tumour"])
    assert out.name == "ct.seg.dcm"
    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == dss[0].SeriesInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "tumour"]
    # each source slice, found by its position (independent of our ordering), carries its own mask slice
    normal = np.cross(np.array(dss[0].ImageOrientationPatient[:3], float), np.array(dss[0].ImageOrientationPatient[3:], float))
    by_position = sorted(dss, key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    back = hd.seg.segread(str(out))
    for z, d in enumerate(by_position):
        px = back.get_pixels_by_source_instance(source_sop_instance_uids=[d.SOPInstanceUID], segment_numbers=[1, 2], combine_segments=True, relabel=True)
        np.testing.assert_array_equal(px[0], mask[z], err_msg=f"slice {z}")


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_single_file_is_a_one_slice_series_and_comes_back_2d_as_png(tmp_path: Path, name: str) -> None:
    shutil.copy(get_testdata_file(name), tmp_path / name)
    case, source = read_image(tmp_path / name)
    src = pydicom.dcmread(tmp_path / name)
    assert source.name == name.split(".")[0] and case.spatial_shape == (1, src.Rows, src.Columns)
    expected = src.pixel_array * float(src.get("RescaleSlope", 1)) + float(src.get("RescaleIntercept", 0))
    np.testing.assert_array_equal(case.image[0, 0], expected.astype(np.float32))
    mask = (case.image[0] > np.median(case.image)).astype(np.uint8)
    with Image.open(write_mask(mask, source, tmp_path / "p", fmt="png")) as im:
        assert np.asarray(im).shape == (src.Rows, src.Columns)
        np.testing.assert_array_equal(np.asarray(im), mask[0])


def test_dicom_file_without_suffix_is_found_by_its_preamble(tmp_path: Path) -> None:
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "IM0001")
    ((case, source),) = list(read_images(tmp_path / "IM0001"))
    assert source.kind == "dicom" and case.spatial_shape == (1, 128, 128)


def test_two_series_need_a_choice(tmp_path: Path) -> None:
    write_series(tmp_path / "in", seed=1)
    b, _ = write_series(tmp_path / "tmp", seed=2, series_number=4)
    for p in (tmp_path / "tmp").iterdir():
        p.rename(tmp_path / "in" / f"b_{p.name}")
    with pytest.raises(FormatError, match="mixes 2 series") as e:
        read_image(tmp_path / "in")
    assert "--series UID" in str(e.value) and "--option" not in str(e.value)
    _, source = read_image(tmp_path / "in", series=b[0].SeriesInstanceUID)
    assert source.meta["series_uid"] == b[0].SeriesInstanceUID and source.name == "in"


def test_series_in_sub_folders_are_named_after_them(tmp_path: Path) -> None:
    write_series(tmp_path / "study" / "P1" / "ct", patient="P1", seed=1)
    write_series(tmp_path / "study" / "P2" / "ct", patient="P2", seed=2)
    names = sorted(src.name for _, src in read_images(tmp_path / "study"))
    assert names == ["P1_ct", "P2_ct"]


def test_empty_slices_are_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "in", n=3)
    for p in (tmp_path / "in").iterdir():
        ds = pydicom.dcmread(p)
        ds.Rows, ds.Columns, ds.PixelData = 0, 0, b""
        ds.save_as(p)
    with pytest.raises(FormatError, match=r"0 × 0 pixels") as e:
        read_image(tmp_path / "in")
    assert ".dcm" in str(e.value) and "\n" not in str(e.value)


def test_large_file_that_is_not_dicom_is_refused_fast(tmp_path: Path) -> None:
    junk = b"XY" + bytes(20 * 2**20)  # pydicom, forced, spends seconds on it
    (tmp_path / "blob").write_bytes(junk)
    t0 = time.perf_counter()
    with pytest.raises(FormatError, match="not an image, volume, DICOM series or zip"):
        read_image(tmp_path / "blob")
    write_series(tmp_path / "series")
    (tmp_path / "series" / "blob").write_bytes(junk)
    with pytest.raises(FormatError, match="not a DICOM file") as e:
        read_image(tmp_path / "series")
    assert time.perf_counter() - t0 < 1.0 and "blob" in str(e.value)


def test_zipped_series_errors_name_the_member_and_bombs_are_refused_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    write_series(tmp_path / "ct", n=4)
    files = sorted((tmp_path / "ct").iterdir())
    files[2].write_bytes(files[2].read_bytes()[:-40])  # pixel data cut short
    with pytest.raises(FormatError) as e:
        read_image(_zip(tmp_path / "ct", tmp_path / "ct.zip", "series/"))
    text = str(e.value)
    assert f"ct.zip:series/{files[2].name}" in text and str(tmp_path / "tmp") not in text and "\n" not in text, text
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf, zf.open("IM1.dcm", "w", force_zip64=True) as fh:
        for _ in range(80):
            fh.write(bytes(2**20))  # 80 MB of zeros in about 80 KB
    t0 = time.perf_counter()
    with pytest.raises(FormatError, match=r"member 'IM1.dcm' expands .*a zip bomb") as e:
        read_image(tmp_path / "bomb.zip")
    assert time.perf_counter() - t0 < 1.0 and "bomb.zip" in str(e.value)
    with pytest.raises(FormatError, match=r"member .IM1.dcm. expands to 80 MB, more than the limit of 10 MB"):
        read_image(tmp_path / "bomb.zip", max_bytes=10 * 2**20)
    assert not list((tmp_path / "tmp").iterdir())  # nothing left extracted


def test_series_too_large_for_the_limit_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medseg.io.dicom_input as D

    write_series(tmp_path / "ct", n=5)
    voxels = 5 * ROWS * COLS
    case, _ = read_image(tmp_path / "ct", max_bytes=2 * voxels)  # float32 takes 4 × voxels = twice the limit: allowed
    assert case.spatial_shape == (5, ROWS, COLS)
    monkeypatch.setattr(D, "read_series_pixels", lambda s: pytest.fail("pixels decoded"))
    with pytest.raises(FormatError, match=rf"the series has {voxels:,} voxels"):
        read_image(tmp_path / "ct", max_bytes=2 * voxels - 1)
