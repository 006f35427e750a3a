"""`medseg predict` writes each mask like its input: its format, its voxel grid (checked with SimpleITK / nibabel /
pydicom / Pillow reading the INPUT), its name, and the value convention the data set was imported with."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from helpers import tiny_config, write_series
from medseg.cli import app
from medseg.config import config_from_dict
from medseg.core.case import Case
from medseg.data.builtin import make_builtin
from medseg.data.loading import normalize_image
from medseg.engine.load import load_inferer
from medseg.engine.train import train
from releases import nuclei_tiles

ZYX = (5, 31, 29)  # odd and non-cubic; a 2D model predicts it slice by slice along its axial axis


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = config_from_dict(tiny_config(train={"epochs": 2}, data={"cache_dir": str(tmp_path_factory.mktemp("cache"))}))
    return train(cfg, tmp_path_factory.mktemp("runs") / "r", progress=False)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """Phantom slices (what the tiny model learnt), cropped to an odd, non-square size."""
    cases = list(make_builtin("phantom2d", n_patients=2, slices_per_patient=3, size=32, seed=7).cases)
    return np.stack([c.image[0] for c in cases[: ZYX[0]]])[:, : ZYX[1], 2 : 2 + ZYX[2]].astype(np.float32)


_MODULES: dict[Path, object] = {}


def expected(run: Path, array: np.ndarray, axis: int | None = None) -> np.ndarray:
    """The model's labels for the array as the reference library read it: a picture whole, a volume
    slice by slice along ``axis`` (its axial axis: a 2D model trained on pictures predicts volumes in
    axial slices), each slice in the array's own in-plane order."""
    inferer = _MODULES.setdefault(run, load_inferer(run, device="cpu")) if run not in _MODULES else _MODULES[run]
    if axis is None:
        lab = inferer.predict(Case(array[None], None, np.eye(array.ndim + 1), "x"))
    else:
        volume = torch.as_tensor(normalize_image(array[None]))  # normalised as a whole, then cut
        planes = [inferer.labels(s[None]).numpy() for s in volume.movedim(axis + 1, 0)]
        lab = np.moveaxis(np.stack(planes), 0, axis)
    assert len(np.unique(lab)) > 1  # a uniform mask would not show a misplaced voxel
    return lab


def cli(*args: object) -> tuple[int, list[str]]:
    res = CliRunner().invoke(app, ["predict", *[str(a) for a in args], "--no-progress"])
    return res.exit_code, [ln for ln in res.output.splitlines() if ln.strip()]


def oblique_itk(path: Path, array: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((0.7, 0.8, 3.1))
    img.SetOrigin((10.0, -20.0, 5.5))
    img.SetDirection(sitk.VersorTransform((0.2, 0.1, 0.3, 0.9)).GetMatrix())
    sitk.WriteImage(img, str(path))
    return sitk.ReadImage(str(path))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".gipl"])
def test_itk_inputs_come_back_in_their_format_on_their_grid(run: Path, volume: np.ndarray, tmp_path: Path, suffix: str) -> None:
    ref = oblique_itk(tmp_path / f"scan{suffix}", volume)
    code, out = cli(run, tmp_path / f"scan{suffix}", "--out", tmp_path / "pred")
    assert code == 0, out
    got = sitk.ReadImage(str(tmp_path / "pred" / f"scan{suffix}"))
    assert got.GetSize() == ref.GetSize() == ZYX[::-1]
    for a, b in ((got.GetSpacing(), ref.GetSpacing()), (got.GetOrigin(), ref.GetOrigin()), (got.GetDirection(), ref.GetDirection())):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    axial = 2 - int(np.argmax(np.abs(np.reshape(ref.GetDirection(), (3, 3))[2])))  # ITK index axis nearest world z, as an array axis
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), expected(run, sitk.GetArrayFromImage(ref), axis=axial))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_inputs_keep_affine_codes_and_header(run: Path, volume: np.ndarray, tmp_path: Path, suffix: str) -> None:
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    aff = np.eye(4)
    aff[:3, :3] = q * [2.7, 0.9, 1.3]
    aff[:3, 3] = [-12.5, 40.25, 7.0]
    img = nib.Nifti1Image(volume, aff)
    img.set_sform(aff, code=2)
    img.set_qform(aff, code=1)
    nib.save(img, str(tmp_path / f"scan{suffix}"))
    src = nib.load(str(tmp_path / f"scan{suffix}"))
    code, out = cli(run, tmp_path / f"scan{suffix}", "--out", tmp_path / "pred")
    assert code == 0, out
    got = nib.load(str(tmp_path / "pred" / f"scan{suffix}"))
    assert got.shape == src.shape == ZYX
    np.testing.assert_array_equal(got.affine, src.affine)
    for key in ("sform_code", "qform_code", "srow_x", "srow_y", "srow_z", "quatern_b", "quatern_c", "quatern_d", "pixdim"):
        np.testing.assert_array_equal(got.header[key], src.header[key], err_msg=key)
    np.testing.assert_array_equal(np.asarray(got.dataobj), expected(run, src.get_fdata(dtype=np.float32), axis=int(np.argmax(np.abs(src.affine[2, :3])))))
    # --format nrrd: SimpleITK sees the mask where it sees the input
    code, out = cli(run, tmp_path / f"scan{suffix}", "--out", tmp_path / "as_nrrd", "--format", "nrrd")
    assert code == 0, out
    a, b = sitk.ReadImage(str(tmp_path / "as_nrrd" / "scan.nrrd")), sitk.ReadImage(str(tmp_path / f"scan{suffix}"))
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)


@pytest.mark.parametrize(("name", "written"), [("slice.png", "slice.png"), ("slice.bmp", "slice.bmp"), ("slice.tif", "slice.tif"), ("photo.jpg", "photo.png")])
def test_pictures_come_back_as_pictures_of_their_size(run: Path, volume: np.ndarray, tmp_path: Path, name: str, written: str) -> None:
    pixels = np.clip(volume[2] / max(float(volume.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / name, quality=100)
    with Image.open(tmp_path / name) as im:
        read = np.asarray(im).astype(np.float32)
    code, out = cli(run, tmp_path / name, "--out", tmp_path / "pred")
    assert code == 0, out
    with Image.open(tmp_path / "pred" / written) as im:
        got = np.asarray(im)
    assert got.shape == ZYX[1:]  # (H, W), not (H, W, 1)
    np.testing.assert_array_equal(got, expected(run, read))
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text())["cases"][0]["file"] == written


def test_multi_page_tiff_comes_back_as_pages(run: Path, volume: np.ndarray, tmp_path: Path) -> None:
    pages = [Image.fromarray(np.clip(v * 1000, 0, 60000).astype(np.uint16)) for v in volume]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    code, out = cli(run, tmp_path / "stack.tif", "--out", tmp_path / "pred")
    assert code == 0, out
    with Image.open(tmp_path / "pred" / "stack.tif") as im:
        assert im.n_frames == ZYX[0]
        got = []
        for i in range(im.n_frames):
            im.seek(i)
            got.append(np.asarray(im))
    np.testing.assert_array_equal(np.stack(got), expected(run, np.stack([np.asarray(p, dtype=np.float32) for p in pages]), axis=0))


@pytest.mark.parametrize("packed", ["folder", "zip", "file"])
def test_dicom_inputs_come_back_as_dicom_seg_named_after_them(run: Path, tmp_path: Path, packed: str) -> None:
    pytest.importorskip("highdicom")
    if packed == "file":
        shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
        src, uid, n = tmp_path / "ct.dcm", pydicom.dcmread(tmp_path / "ct.dcm").SeriesInstanceUID, 1
    else:
        dss, _ = write_series(tmp_path / "ct", n=4)
        src, uid, n = tmp_path / "ct", dss[0].SeriesInstanceUID, 4
        if packed == "zip":
            with zipfile.ZipFile(tmp_path / "ct.zip", "w") as zf:
                for p in (tmp_path / "ct").iterdir():
                    zf.write(p, f"CT/{p.name}")
            src = tmp_path / "ct.zip"
    code, out = cli(run, src, "--out", tmp_path / "pred")
    assert code == 0, out
    seg = pydicom.dcmread(tmp_path / "pred" / "ct.seg.dcm")
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == n


def test_one_slice_series_as_png_is_2d(run: Path, tmp_path: Path) -> None:
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "mr.dcm")
    code, out = cli(run, tmp_path / "mr.dcm", "--out", tmp_path / "pred", "--format", "png")
    assert code == 0, out
    with Image.open(tmp_path / "pred" / "mr.png") as im:
        assert np.asarray(im).shape == (64, 64)


def test_two_series_say_to_use_series(run: Path, tmp_path: Path) -> None:
    write_series(tmp_path / "in", seed=1)
    b, _ = write_series(tmp_path / "tmp", seed=2, series_number=4)
    for p in (tmp_path / "tmp").iterdir():
        p.rename(tmp_path / "in" / f"b_{p.name}")
    code, out = cli(run, tmp_path / "in", "--out", tmp_path / "o", "--format", "nifti")
    assert code == 2 and len(out) == 1 and "mixes 2 series" in out[0] and "--series UID" in out[0] and not (tmp_path / "o").exists()
    code, out = cli(run, tmp_path / "in", "--out", tmp_path / "o", "--format", "nifti", "--series", b[0].SeriesInstanceUID)
    assert code == 0 and (tmp_path / "o" / "in.nii.gz").is_file()


@pytest.mark.parametrize(
    ("fmt", "problem"), [("jpeg2000", "unknown output format 'jpeg2000'"), ("png", "holds one 2D picture"), ("dicom-seg", "for DICOM inputs")]
)
def test_bad_format_is_one_line_and_writes_nothing(run: Path, volume: np.ndarray, tmp_path: Path, fmt: str, problem: str) -> None:
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "v.nii.gz"))
    code, out = cli(run, tmp_path / "v.nii.gz", "--out", tmp_path / "o", "--format", fmt)
    assert code == 2 and len(out) == 1 and problem in out[0], out
    assert not (tmp_path / "o").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]


def test_masks_keep_the_0_255_convention_of_the_data_set(tmp_path: Path) -> None:
    from medseg.data.formats import import_dataset

    rel = nuclei_tiles(tmp_path / "nuclei", n_train=8, n_test=1, size=32, layout="folder")
    ds = import_dataset("images", rel.root, tmp_path / "ds")
    assert ds.info.mask_values == [0, 255]
    trained = train(config_from_dict(tiny_config(data={"dataset": str(tmp_path / "ds")}, train={"epochs": 2})), tmp_path / "run", progress=False)
    tile = rel.test[0][0]
    code, out = cli(trained, tile, "--out", tmp_path / "pred")
    assert code == 0, out
    with Image.open(tmp_path / "pred" / tile.name) as im:
        got = np.asarray(im)
    with Image.open(tile) as im:
        labels = load_inferer(trained, device="cpu").predict(Case(np.asarray(im, dtype=np.float32)[None], None, np.eye(3), "t"))
    assert set(np.unique(got).tolist()) <= {0, 255}
    np.testing.assert_array_equal(got, labels.astype(np.int64) * 255)


def test_evaluate_matches_masks_of_one_grid_stored_in_other_axis_orders(volume: np.ndarray, tmp_path: Path) -> None:
    """A NIfTI prediction (x fastest) scored against an NRRD reference (read as z, y, x): same grid, Dice 1."""
    from medseg.io import read_image, write_mask
    from medseg.workflows.evaluate import evaluate_folders

    ref_img = oblique_itk(tmp_path / "scan.nrrd", volume)
    mask = (sitk.GetArrayFromImage(ref_img) > np.median(volume)).astype(np.uint8)
    (tmp_path / "ref").mkdir()
    lab = sitk.GetImageFromArray(mask)
    lab.CopyInformation(ref_img)
    sitk.WriteImage(lab, str(tmp_path / "ref" / "scan.nrrd"))
    _, source = read_image(tmp_path / "scan.nrrd")
    write_mask(mask, source, tmp_path / "pred", fmt="nifti")
    assert nib.load(str(tmp_path / "pred" / "scan.nii.gz")).shape == ZYX[::-1]  # stored in the other axis order
    summary = json.loads(
        (evaluate_folders(tmp_path / "pred", tmp_path / "ref", labels=["1"], out=tmp_path / "ev", progress=False) / "summary.json").read_text()
    )
    assert summary["per_class"]["1"]["dice"]["mean"] == 1.0
    # the same voxels on a transposed grid are not the reference's grid
    bad = nib.load(str(tmp_path / "pred" / "scan.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(bad.dataobj), bad.affine[:, [1, 0, 2, 3]]), str(tmp_path / "pred" / "scan.nii.gz"))
    code = CliRunner().invoke(app, ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--labels", "1", "--no-progress"])
    assert code.exit_code == 2 and "different grids" in code.output
