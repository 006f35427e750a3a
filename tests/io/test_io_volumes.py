"""NIfTI and ITK (NRRD, MHA, MHD, GIPL) reading and mask writing, checked against nibabel's and SimpleITK's reading of the input.

Every grid is oblique with a non-symmetric direction matrix and odd, non-cubic sizes, so a
transposed direction, reversed axes or a dropped LPS flip changes the numbers compared here.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.core.errors import FormatError, MedsegError, MedsegWarning
from medseg.io import read_image, read_label, write_mask
from medseg.io.geometry import affine_from_itk, axis_order, itk_from_affine

SHAPE = (7, 9, 5)  # NIfTI i, j, k
ZYX = (5, 9, 7)  # ITK array (z, y, x)


def oblique_affine() -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    assert not np.allclose(q, q.T)  # a transposed direction must give other numbers
    aff = np.eye(4)
    aff[:3, :3] = q * np.array([0.9, 1.3, 2.7])
    aff[:3, 3] = [-12.5, 40.25, 7.0]
    return aff


def oblique_itk(path: Path, pixel: np.ndarray | None = None) -> sitk.Image:
    arr = np.random.default_rng(4).normal(size=ZYX).astype(np.float32) if pixel is None else pixel
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.8, 3.1))
    img.SetOrigin((10.0, -20.0, 5.5))
    img.SetDirection(sitk.VersorTransform((0.2, 0.1, 0.3, 0.9)).GetMatrix())  # a rotation, not symmetric
    sitk.WriteImage(img, str(path))
    return sitk.ReadImage(str(path))  # as stored (NRRD keeps the geometry as decimal text)


def itk_world(img: sitk.Image, zyx: tuple[int, int, int]) -> np.ndarray:
    """SimpleITK's world point of array voxel (z, y, x), converted from LPS to RAS."""
    return np.array(img.TransformIndexToPhysicalPoint(tuple(int(v) for v in zyx[::-1]))) * [-1, -1, 1]


# ---------------------------------------------------------------- geometry


def test_affine_from_itk_places_every_corner_where_simpleitk_does(tmp_path: Path) -> None:
    img = oblique_itk(tmp_path / "v.nrrd")
    aff = affine_from_itk(img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    for zyx in [(0, 0, 0), (4, 8, 6), (1, 2, 3), (4, 0, 6)]:
        np.testing.assert_allclose((aff @ [*zyx, 1.0])[:3], itk_world(img, zyx), atol=1e-9)
    spacing, origin, direction = itk_from_affine(aff)
    np.testing.assert_allclose(spacing, img.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(origin, img.GetOrigin(), atol=1e-12)
    np.testing.assert_allclose(direction, img.GetDirection(), atol=1e-12)


def test_axis_order_finds_the_permutation_of_one_grid() -> None:
    aff = oblique_affine()
    rev = aff.copy()
    rev[:3, :3] = aff[:3, :3][:, ::-1]
    assert axis_order(SHAPE[::-1], rev, SHAPE, aff) == (2, 1, 0)
    assert axis_order(SHAPE, aff, SHAPE, aff) == (0, 1, 2)
    shifted = aff.copy()
    shifted[0, 3] += 0.5
    assert axis_order(SHAPE, shifted, SHAPE, aff) is None


# ---------------------------------------------------------------- NIfTI


def _nifti(path: Path, *, sform: int = 2, qform: int = 1, data: np.ndarray | None = None) -> nib.Nifti1Image:
    aff = oblique_affine()
    img = nib.Nifti1Image(np.random.default_rng(5).normal(size=SHAPE).astype(np.float32) if data is None else data, aff)
    q = aff.copy()
    q[:3, 3] += [0.25, -0.5, 1.0]  # a qform that differs from the sform: both must survive
    img.set_sform(aff, code=sform)
    img.set_qform(q, code=qform)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return nib.load(str(path))


@pytest.mark.parametrize(("suffix", "sform", "qform"), [(".nii.gz", 2, 1), (".nii", 1, 0), (".nii.gz", 0, 1)])
def test_nifti_mask_has_the_input_header(tmp_path: Path, suffix: str, sform: int, qform: int) -> None:
    src = _nifti(tmp_path / f"scan{suffix}", sform=sform, qform=qform)
    case, source = read_image(tmp_path / f"scan{suffix}")
    np.testing.assert_array_equal(case.affine, src.affine)
    np.testing.assert_array_equal(case.image[0], src.get_fdata(dtype=np.float32))
    mask = (case.image[0] > 0.3).astype(np.uint8) + (case.image[0] > 1.0)
    out = write_mask(mask, source, tmp_path / "pred")
    assert out.name == f"scan{suffix}"
    got = nib.load(str(out))
    assert got.shape == src.shape
    np.testing.assert_array_equal(got.affine, src.affine)
    np.testing.assert_array_equal(got.get_sform(), src.get_sform())
    np.testing.assert_array_equal(got.get_qform(), src.get_qform())
    for key in ("sform_code", "qform_code", "pixdim", "xyzt_units", "quatern_b", "quatern_c", "quatern_d", "srow_x", "srow_y", "srow_z"):
        np.testing.assert_array_equal(got.header[key], src.header[key], err_msg=key)
    expected = (src.get_fdata() > 0.3).astype(np.uint8) + (src.get_fdata() > 1.0)  # nibabel's reading of the input
    np.testing.assert_array_equal(np.asarray(got.dataobj), expected)
    assert float(got.header["scl_slope"]) in (1.0,) or np.isnan(got.header["scl_slope"])  # the mask is not rescaled


def test_nifti_input_to_nrrd_lies_where_simpleitk_puts_the_input(tmp_path: Path) -> None:
    _nifti(tmp_path / "scan.nii.gz", sform=1, qform=1)
    case, source = read_image(tmp_path / "scan.nii.gz")
    out = write_mask((case.image[0] > 0).astype(np.uint8), source, tmp_path / "p", fmt="nrrd")
    ref, got = sitk.ReadImage(str(tmp_path / "scan.nii.gz")), sitk.ReadImage(str(out))
    assert got.GetSize() == ref.GetSize() == SHAPE
    np.testing.assert_allclose(got.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(got.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(got.GetDirection(), ref.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref) > 0)


def test_four_d_nifti_is_channels(tmp_path: Path) -> None:
    data = np.random.default_rng(6).normal(size=(*SHAPE, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, oblique_affine()), str(tmp_path / "mc.nii.gz"))
    case, source = read_image(tmp_path / "mc.nii.gz")
    assert case.image.shape == (2, *SHAPE) and source.shape == SHAPE
    np.testing.assert_array_equal(case.image[1], data[..., 1])
    got = nib.load(str(write_mask(np.ones(SHAPE, np.uint8), source, tmp_path / "p")))
    assert got.shape == SHAPE


# ---------------------------------------------------------------- ITK


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".gipl"])
def test_itk_mask_has_the_input_grid_and_format(tmp_path: Path, suffix: str) -> None:
    ref = oblique_itk(tmp_path / f"vol{suffix}")
    case, source = read_image(tmp_path / f"vol{suffix}")
    arr = sitk.GetArrayFromImage(ref)
    assert case.spatial_shape == ZYX
    np.testing.assert_array_equal(case.image[0], arr)
    for zyx in [(0, 0, 0), (4, 8, 6), (3, 1, 5)]:  # every voxel where SimpleITK puts it (GIPL stores no direction)
        np.testing.assert_allclose((case.affine @ [*zyx, 1.0])[:3], itk_world(ref, zyx), atol=1e-6)
    out = write_mask((case.image[0] > 0).astype(np.uint8), source, tmp_path / "pred")
    assert out.name == f"vol{suffix}"
    got = sitk.ReadImage(str(out))
    assert got.GetSize() == ref.GetSize()
    for a, b in ((got.GetSpacing(), ref.GetSpacing()), (got.GetOrigin(), ref.GetOrigin()), (got.GetDirection(), ref.GetDirection())):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), arr > 0)


def test_itk_input_to_nifti_is_what_simpleitk_reads_as_the_input(tmp_path: Path) -> None:
    ref = oblique_itk(tmp_path / "vol.mha")
    case, source = read_image(tmp_path / "vol.mha")
    out = write_mask((case.image[0] > 0).astype(np.uint8), source, tmp_path / "p", fmt="nifti")
    assert out.name == "vol.nii.gz"
    got = sitk.ReadImage(str(out))
    assert got.GetSize() == ref.GetSize()  # x fastest, as SimpleITK and dcm2niix write NIfTI
    np.testing.assert_allclose(got.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(got.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(got.GetDirection(), ref.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref) > 0)


def test_multi_label_masks_are_channels_or_vector_components(tmp_path: Path) -> None:
    ref = oblique_itk(tmp_path / "vol.nrrd")
    case, source = read_image(tmp_path / "vol.nrrd")
    masks = np.stack([case.image[0] > 0, case.image[0] > 1])
    got = sitk.ReadImage(str(write_mask(masks, source, tmp_path / "p")))
    assert got.GetNumberOfComponentsPerPixel() == 2 and got.GetSize() == ref.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), np.moveaxis(masks, 0, -1))


# ---------------------------------------------------------------- labels and headers that are not what they claim


def _label(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, oblique_affine()), str(path))
    return path


def test_huge_label_value_is_refused_at_once(tmp_path: Path) -> None:
    lab = np.zeros(SHAPE, np.int32)
    lab[1, 2, 3] = 2_000_000_000
    with pytest.raises(FormatError, match="2,000,000,000, which is not a class index") as e:
        read_label(_label(tmp_path / "big.nii.gz", lab))
    assert "big.nii.gz" in str(e.value) and "\n" not in str(e.value)


def test_binary_255_label_reads_as_0_1_with_one_warning(tmp_path: Path) -> None:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:5, 3:6, 1:4] = 255
    path = _label(tmp_path / "m.nii.gz", lab)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got, _, source = read_label(path)
    np.testing.assert_array_equal(got, lab // 255)
    assert source.values == [0, 255]
    ours = [w for w in seen if issubclass(w.category, MedsegWarning)]
    assert len(ours) == 1 and "m.nii.gz" in str(ours[0].message) and "0 and 255" in str(ours[0].message)


def test_complex_voxels_are_refused(tmp_path: Path) -> None:
    data = (np.ones(SHAPE) + 1j * np.ones(SHAPE)).astype(np.complex64)
    nib.save(nib.Nifti1Image(data, oblique_affine()), str(tmp_path / "c.nii.gz"))
    with pytest.raises(FormatError, match="complex") as e:
        read_image(tmp_path / "c.nii.gz")
    assert "c.nii.gz" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("pixdim", "assumed"), [([0.0, 2.0, 1.5], "[1.0, 2.0, 1.5]"), ([1.0, -2.0, 1.5], "[1.0, 2.0, 1.5]")])
def test_bad_pixdim_warns_once_and_says_what_was_assumed(tmp_path: Path, caplog: pytest.LogCaptureFixture, pixdim: list, assumed: str) -> None:
    img = nib.Nifti1Image(np.zeros(SHAPE, np.float32), None)
    img.header["pixdim"][1:4] = pixdim
    img.header.set_sform(None, code=0)
    img.header.set_qform(None, code=0)
    img.update_header = lambda: None  # type: ignore[method-assign]  # keep the broken pixdim as written
    nib.save(img, str(tmp_path / "p.nii"))
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        case, _ = read_image(tmp_path / "p.nii")
    ours = [str(w.message) for w in seen if issubclass(w.category, MedsegWarning)]
    assert len(ours) == 1 and "p.nii" in ours[0] and f"assumed {assumed} mm" in ours[0]
    assert not [r for r in caplog.records if r.name.startswith("nibabel")]  # nibabel's own log lines are silenced
    assert case.spacing == pytest.approx((1.0, 2.0, 1.5))


def test_unreadable_and_wrong_masks_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "t.nii.gz").write_bytes(b"\x1f\x8b not really")
    with pytest.raises(FormatError, match="cannot read volume") as e:
        read_image(tmp_path / "t.nii.gz")
    assert str(tmp_path / "t.nii.gz") in str(e.value) and "\n" not in str(e.value)
    src = _nifti(tmp_path / "s.nii.gz")
    _, source = read_image(tmp_path / "s.nii.gz")
    with pytest.raises(MedsegError, match="not on the source grid"):
        write_mask(np.zeros(SHAPE[::-1], np.uint8), source, tmp_path / "o")
    with pytest.raises(MedsegError, match="DICOM-SEG output is for DICOM inputs"):
        write_mask(np.zeros(src.shape, np.uint8), source, tmp_path / "o", fmt="dicom-seg")
    with pytest.raises(MedsegError, match="unknown output format 'jpeg2000'"):
        write_mask(np.zeros(src.shape, np.uint8), source, tmp_path / "o", fmt="jpeg2000")
    with pytest.raises(MedsegError, match="holds one 2D picture"):
        write_mask(np.zeros(src.shape, np.uint8), source, tmp_path / "o", fmt="png")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_nifti_written_from_an_affine_is_scanner_space_in_both_headers(tmp_path: Path) -> None:
    from medseg.io.nifti import write_nifti

    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))
    aff = np.eye(4)
    aff[:3, :3] = q * [0.9, 1.1, 2.7]  # oblique, anisotropic (a rigid grid, which a qform can hold)
    aff[:3, 3] = [11.0, -4.5, 30.25]
    write_nifti(np.zeros((5, 6, 7), dtype=np.uint8), tmp_path / "m.nii.gz", affine=aff)
    img = nib.load(str(tmp_path / "m.nii.gz"))
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1  # scanner, as documented
    np.testing.assert_allclose(img.get_sform(), aff, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-4)  # a viewer reading either puts it in one place
