"""Inference: sliding window vs MONAI, TTA, ensembles, exports on the input's exact grid, ONNX, faults."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference
from typer.testing import CliRunner

from helpers import tiny_config
from medseg.cli import app
from medseg.config import config_from_dict
from medseg.core.errors import MedsegError, ModelError
from medseg.engine.export import read_inputs
from medseg.engine.checkpoint import load_module
from medseg.engine.inferer import Inferer, tta_axes
from medseg.engine.load import decide_postprocessing, load_inferer
from medseg.engine.postprocessing import apply_postprocessing
from medseg.engine.sliding import sliding_window
from medseg.engine.train import train
from medseg.workflows.predict import predict


@pytest.fixture(scope="module")
def run2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = config_from_dict(tiny_config(train={"epochs": 2}, data={"cache_dir": str(tmp_path_factory.mktemp("cache"))}))
    return train(cfg, tmp_path_factory.mktemp("runs") / "r2d", progress=False)


@pytest.fixture(scope="module")
def run3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = config_from_dict(
        tiny_config(
            data={
                "dataset": "phantom3d",
                "builtin": {"n_patients": 4, "size": 32, "depth": 10},
                "patch_size": [8, 16, 16],
                "batch_size": 2,
                "cache_dir": str(tmp_path_factory.mktemp("cache3")),
            },
            model={"params": {"channels": [4, 8], "num_res_units": 0}},
        )
    )
    return train(cfg, tmp_path_factory.mktemp("runs3") / "r3d", progress=False)


SW_CASES = [((40, 50, 37), (16, 32, 32), 0.5), ((10, 20, 20), (16, 32, 32), 0.5), ((33, 64, 30), (32, 32, 16), 0.25)]


@pytest.mark.parametrize(("shape", "roi", "overlap"), SW_CASES)
def test_sliding_window_equals_monai(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> None:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(3, 1, 3, (4, 8), (2,), num_res_units=0).eval()

    def pred(t: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(t), 1)

    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        ref = sliding_window_inference(x, roi, 4, pred, overlap=overlap, mode="gaussian")[0]
        probs = sliding_window(x, pred, roi, 3, overlap=overlap)
        labels = sliding_window(x, pred, roi, 3, overlap=overlap, reduce=lambda b: b.argmax(0))
    torch.testing.assert_close(probs, ref, atol=1e-6, rtol=1e-6)
    assert torch.equal(labels.long(), ref.argmax(0))
    assert labels.shape == shape


def test_tta_axes() -> None:
    assert tta_axes("none", 3) == [()]
    assert len(tta_axes("all", 3)) == 8 and len(tta_axes([0, 2], 3)) == 4
    with pytest.raises(ModelError, match="out of range"):
        tta_axes([3], 3)


def test_predictor_paths_ensemble_and_tta(run2d: Path, run3d: Path) -> None:
    from medseg.data.builtin import make_builtin

    m3 = load_module(run3d)
    (vol,) = list(make_builtin("phantom3d", n_patients=1, size=32, depth=10, seed=9).cases)
    single = Inferer(m3).predict(vol)
    assert single.shape == vol.spatial_shape and single.dtype == np.int16  # sliding window (volume > patch)
    assert np.array_equal(Inferer([m3, m3]).predict(vol), single)  # ensemble of identical members
    probs = Inferer(m3, tta="all").probabilities(vol)
    assert probs.shape == (4, *vol.spatial_shape) and np.allclose(probs.sum(0), 1, atol=1e-5)
    # a 2D model on a 3D volume predicts slice by slice
    m2 = load_module(run2d)
    lab = Inferer(m2).predict(vol)
    assert lab.shape == vol.spatial_shape
    assert np.array_equal(lab, Inferer(m2, sw_batch_size=1).predict(vol))  # batching slices changes nothing
    assert set(np.unique(lab)) <= {0, 1, 2, 3}


def _oblique_nifti(path: Path, shape: tuple[int, ...] = (12, 32, 32)) -> nib.Nifti1Image:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    aff = np.eye(4)
    aff[:3, :3] = q * np.array([1.3, 0.9, 2.7])
    aff[:3, 3] = [-12.5, 40.25, 7.0]
    img = nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), aff)
    img.set_qform(aff, code=1)
    nib.save(img, str(path))
    return nib.load(str(path))


def test_nifti_prediction_keeps_the_input_grid_exactly(run2d: Path, tmp_path: Path) -> None:
    src = _oblique_nifti(tmp_path / "scan.nii.gz")
    out = predict([run2d], tmp_path / "scan.nii.gz", tmp_path / "pred", progress=False, probabilities=True)
    got = nib.load(str(out / "scan.nii.gz"))
    assert got.shape == src.shape
    np.testing.assert_array_equal(got.affine, src.affine)
    np.testing.assert_array_equal(got.get_sform(), src.get_sform())
    np.testing.assert_array_equal(got.get_qform(), src.get_qform())
    assert got.header["sform_code"] == src.header["sform_code"] and got.header["qform_code"] == src.header["qform_code"]
    listing = json.loads((out / "predictions.json").read_text())
    assert listing["cases"][0]["file"] == "scan.nii.gz"
    with np.load(out / listing["cases"][0]["probabilities"]) as z:
        assert z["probabilities"].shape == (4, *src.shape)


def test_nrrd_prediction_copies_spacing_origin_direction(run2d: Path, tmp_path: Path) -> None:
    img = sitk.GetImageFromArray(np.random.default_rng(1).normal(size=(6, 30, 34)).astype(np.float32))
    img.SetSpacing((0.7, 0.8, 3.0))
    img.SetOrigin((10.0, -20.0, 5.5))
    rot = sitk.VersorTransform((0.2, 0.1, 0.3, 0.9)).GetMatrix()
    img.SetDirection(rot)
    sitk.WriteImage(img, str(tmp_path / "vol.nrrd"))
    out = predict([run2d], tmp_path / "vol.nrrd", tmp_path / "pred", fmt="nrrd", progress=False)
    got = sitk.ReadImage(str(out / "vol.nrrd"))
    img = sitk.ReadImage(str(tmp_path / "vol.nrrd"))  # as stored (NRRD keeps spacing × direction as text)
    assert got.GetSize() == img.GetSize()
    for a, b in ((got.GetSpacing(), img.GetSpacing()), (got.GetOrigin(), img.GetOrigin()), (got.GetDirection(), img.GetDirection())):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)  # NRRD stores geometry as decimal text


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_real_dicom_round_trip(run2d: Path, tmp_path: Path, name: str) -> None:
    from pydicom.data import get_testdata_file

    from medseg.data.formats.common import read_volume

    folder = tmp_path / "series"
    folder.mkdir()
    (folder / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    (case,) = list(read_inputs(folder))
    out = predict([run2d], folder, tmp_path / "pred", progress=False)
    (mask_file,) = out.glob("*.nii.gz")
    arr, aff = read_volume(mask_file, label=True)
    assert arr.shape == case.spatial_shape
    np.testing.assert_allclose(aff, case.affine, atol=1e-5)  # NIfTI stores the affine in float32
    seg = predict([run2d], folder, tmp_path / "seg", fmt="dicom-seg", progress=False)
    import pydicom

    ds = pydicom.dcmread(next(seg.glob("*.dcm")))
    assert ds.Modality == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == case.meta["series_uid"]


def test_png_in_png_out(run2d: Path, tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray((np.random.default_rng(2).random((41, 29)) * 255).astype(np.uint8)).save(tmp_path / "slice.png")
    out = predict([run2d], tmp_path / "slice.png", tmp_path / "pred", fmt="png", overlays=True, progress=False)
    assert np.asarray(Image.open(out / "slice.png")).shape == (41, 29)
    assert (out / "slice_overlay.png").is_file()


def test_dataset_split_and_rle_csv(tmp_path: Path) -> None:
    from helpers import multilabel_dataset

    from medseg.data.splits import make_splits, save_splits
    from medseg.data.store import load_dataset

    ds = multilabel_dataset(tmp_path / "ml")
    save_splits(ds / "splits.json", make_splits(load_dataset(ds).patients))
    run = train(config_from_dict(tiny_config(data={"dataset": str(ds)})), tmp_path / "run", progress=False)
    out = predict([run], ds, tmp_path / "sub", fmt="rle-csv", split="test", progress=False)
    rows = (out / "submission.csv").read_text().splitlines()
    assert rows[0] == "id,class,segmentation" and len(rows) == 1 + 2 * 3  # 2 test slices × 3 labels


def test_onnx_backend_gives_the_same_masks(run2d: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    _oblique_nifti(tmp_path / "scan.nii.gz", shape=(3, 37, 45))
    a = predict([run2d], tmp_path / "scan.nii.gz", tmp_path / "torch", progress=False)
    b = predict([run2d], tmp_path / "scan.nii.gz", tmp_path / "onnx", progress=False, backend="onnx")
    assert (run2d / "export" / "model.onnx").is_file()
    np.testing.assert_array_equal(nib.load(str(a / "scan.nii.gz")).get_fdata(), nib.load(str(b / "scan.nii.gz")).get_fdata())


def test_postprocessing_decision_and_effect(run2d: Path) -> None:
    lab = np.zeros((10, 10), np.int16)
    lab[1:4, 1:4] = 1
    lab[7, 7] = 1
    assert (apply_postprocessing(lab, [1], False) == 1).sum() == 9
    d = decide_postprocessing(run2d, progress=False)
    assert set(d["dice_before"]) == {"LV blood pool", "myocardium", "RV"}
    assert json.loads((run2d / "postprocessing.json").read_text())["keep_largest"] == d["keep_largest"]
    (run2d / "postprocessing.json").unlink()


def test_bad_inputs_one_line_errors_and_no_output(run2d: Path, run3d: Path, tmp_path: Path) -> None:
    from PIL import Image

    runner = CliRunner()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "rgb.png")
    r = runner.invoke(app, ["predict", str(run2d), str(tmp_path / "rgb.png"), "--out", str(tmp_path / "o1"), "--no-progress"])
    assert r.exit_code == 2 and "3 channel(s); the model takes 2D images with 1" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o1").exists() and not list(tmp_path.glob(".o1*"))
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "grey.png")
    r = runner.invoke(app, ["predict", str(run3d), str(tmp_path / "grey.png"), "--out", str(tmp_path / "o2"), "--no-progress"])
    assert r.exit_code == 2 and "is 2D" in r.output and not (tmp_path / "o2").exists()
    bad = tmp_path / "badrun"
    bad.mkdir()
    (bad / "config.yaml").write_text((run2d / "config.yaml").read_text())
    (bad / "checkpoints").mkdir()
    (bad / "checkpoints" / "best.ckpt").write_bytes(b"not a checkpoint")
    r = runner.invoke(app, ["predict", str(bad), str(tmp_path / "grey.png"), "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "checkpoint is corrupt" in r.output
    (tmp_path / "o4").mkdir()
    with pytest.raises(MedsegError, match="already exists"):
        predict([run2d], tmp_path / "grey.png", tmp_path / "o4", progress=False)


def test_dicom_folder_with_two_series_needs_a_choice(run2d: Path, tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, name in enumerate(["CT_small.dcm", "MR_small.dcm"]):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.save_as(folder / f"{i}.dcm")
    r = CliRunner().invoke(app, ["predict", str(run2d), str(folder), "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 2 and "mixes 2 series" in r.output and not (tmp_path / "o").exists()


def test_preprocessed_run_predicts_on_the_original_grid(tmp_path: Path) -> None:
    """Training on a resampled, cropped, resized cache; predictions come back on each case's own grid."""
    from medseg.data.builtin import make_builtin
    from medseg.workflows.evaluate import evaluate_run

    cfg = config_from_dict(
        tiny_config(
            data={
                "dataset": "phantom3d",
                "builtin": {"n_patients": 4, "size": 32, "depth": 10},
                "batch_size": 2,
                "patch_size": [8, 16, 16],
                "preprocess": {"enabled": True, "spacing": [5.0, 2.0, 2.0], "crop": "nonzero", "normalize": "zscore"},
            },
            model={"params": {"channels": [4, 8], "num_res_units": 0}},
        )
    )
    run = train(cfg, tmp_path / "pre", progress=False)
    assert (run / "preprocess.json").is_file()
    (vol,) = list(make_builtin("phantom3d", n_patients=1, size=32, depth=10, seed=5).cases)
    pred = Inferer(load_module(run)).predict(vol)
    assert pred.shape == vol.spatial_shape
    probs = Inferer(load_module(run)).probabilities(vol)
    assert probs.shape == (4, *vol.spatial_shape)
    summary = json.loads((evaluate_run(run, split="test", progress=False) / "summary.json").read_text())
    assert summary["n_cases"] == 1


def test_2d_model_trained_on_slices_of_volumes(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config(data={"dataset": "phantom3d", "builtin": {"n_patients": 4, "size": 32, "depth": 8}, "slices": True, "batch_size": 4}))
    run = train(cfg, tmp_path / "slices", progress=False)
    module = load_module(run)
    assert module.spatial_dims == 2
    from medseg.workflows.evaluate import evaluate_run

    summary = json.loads((evaluate_run(run, split="test", progress=False) / "summary.json").read_text())
    assert summary["n_cases"] == 1 and summary["mean_dice"] is not None
