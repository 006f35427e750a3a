"""Prediction from run folders: the paths of the inferer, exports on the input's exact grid, ONNX, post-processing, faults."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from helpers import tiny_config
from medseg.cli import app
from medseg.config import config_from_dict
from medseg.core.case import Case
from medseg.core.errors import MedsegError
from medseg.data.store import load_dataset
from medseg.engine.checkpoint import load_module
from medseg.engine.inferer import Inferer
from medseg.engine.load import decide_postprocessing, load_inferer
from medseg.engine.postprocessing import apply_postprocessing
from medseg.engine.train import train
from medseg.io import read_images, read_volume
from medseg.io.geometry import axis_order
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

    folder = tmp_path / "series"
    folder.mkdir()
    (folder / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    ((case, _),) = list(read_images(folder))
    out = predict([run2d], folder, tmp_path / "pred", fmt="nifti", progress=False)
    (mask_file,) = out.glob("*.nii.gz")
    arr, aff = read_volume(mask_file, label=True)
    # written (column, row, slice) as DICOM converters do: the same grid with the axes permuted
    assert arr.shape == case.spatial_shape[::-1]
    assert axis_order(arr.shape, aff, case.spatial_shape, case.affine, atol=1e-5) == (2, 1, 0)  # NIfTI stores the affine in float32
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

    ds = multilabel_dataset(tmp_path / "ml")
    save_splits(ds / "splits.json", make_splits(load_dataset(ds).patients))
    run = train(config_from_dict(tiny_config(data={"dataset": str(ds)})), tmp_path / "run", progress=False)
    out = predict([run], ds, tmp_path / "sub", fmt="rle-csv", split="test", progress=False)
    rows = (out / "submission.csv").read_text().splitlines()
    assert rows[0] == "id,class,segmentation" and len(rows) == 1 + 2 * 3  # 2 test slices × 3 labels


def test_onnx_backend_gives_the_same_masks(run2d: Path, tmp_path: Path) -> None:
    import os
    import shutil

    from medseg.engine.load import pick_backend

    run = tmp_path / "run"
    shutil.copytree(run2d, run)
    _oblique_nifti(tmp_path / "scan.nii.gz", shape=(3, 37, 45))
    assert pick_backend([run], "best", "cpu") == "torch"  # no export yet
    a = predict([run], tmp_path / "scan.nii.gz", tmp_path / "torch", progress=False, backend="torch")
    b = predict([run], tmp_path / "scan.nii.gz", tmp_path / "onnx", progress=False, backend="onnx")
    assert (run / "export" / "model.onnx").is_file()
    np.testing.assert_array_equal(nib.load(str(a / "scan.nii.gz")).get_fdata(), nib.load(str(b / "scan.nii.gz")).get_fdata())
    assert pick_backend([run], "best", "cpu") == "onnx" and pick_backend([run], "last", "cpu") == "torch"
    ckpt = run / "checkpoints" / "best.ckpt"
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))  # retrained since the export
    assert pick_backend([run], "best", "cpu") == "torch"


def test_an_exported_run_predicts_without_lightning_monai_or_the_network_code(run2d: Path, tmp_path: Path) -> None:
    """``medseg predict`` on a few pictures is start-up bound: an exported run loads no training or network library."""
    import shutil
    import subprocess
    import sys

    from medseg.engine.onnx import export_onnx

    run = tmp_path / "run"
    shutil.copytree(run2d, run)
    export_onnx(run)
    code = (
        "import sys\n"
        "from medseg.cli import main\n"
        f"sys.argv = ['medseg', 'predict', {str(run)!r}, {str(tmp_path / 'img.png')!r}, '--out', {str(tmp_path / 'out')!r}, '--no-progress']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'monai', 'segmentation_models_pytorch', 'transformers', 'timm'})\n"
        "assert not heavy, heavy\n"
    )
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((40, 52)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "out" / "img.png").is_file()


def _largest_by_hand(label: np.ndarray, classes: list[int]) -> np.ndarray:
    """Per class, voxels outside its largest 8-connected component become background (SciPy labelling)."""
    from scipy import ndimage

    out = label.copy()
    for k in classes:
        comp, n = ndimage.label(label == k, structure=np.ones((3, 3)))
        if n > 1:
            keep = 1 + int(np.argmax(np.bincount(comp.ravel())[1:]))
            out[(label == k) & (comp != keep)] = 0
    return out


def test_postprocessing_decision_and_its_effect_on_later_predictions(run2d: Path, tmp_path: Path) -> None:
    import shutil

    from medseg.data.builtin import make_builtin
    from medseg.runs import read_prediction, write_postprocessing
    from medseg.workflows.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(run2d, run)
    lab = np.zeros((10, 10), np.int16)
    lab[1:4, 1:4] = 1
    lab[7, 7] = 1
    assert (apply_postprocessing(lab, [1], False) == 1).sum() == 9
    d = decide_postprocessing(run, progress=False)
    assert set(d["dice_before"]) == {"LV blood pool", "myocardium", "RV"}
    assert json.loads((run / "postprocessing.json").read_text())["keep_largest"] == d["keep_largest"]
    write_postprocessing(run, {**d, "keep_largest": [1, 2, 3]})  # the saved decision, for every class
    (c,) = list(make_builtin("phantom2d", n_patients=1, slices_per_patient=1, size=32, seed=4).cases)
    twice = Case(np.concatenate([c.image, c.image[:, ::-1]], axis=2), None, np.eye(3), "twice")  # two hearts side by side
    raw = load_inferer(run, postprocess=[], device="cpu").predict(twice)
    got = load_inferer(run, device="cpu").predict(twice)
    np.testing.assert_array_equal(got, _largest_by_hand(raw, [1, 2, 3]))
    assert (got != raw).any()  # the decision removed something: its effect is visible
    ev = evaluate_run(run, split="test", progress=False)
    bare = load_inferer(run, postprocess=[], device="cpu")
    ds = load_dataset(json.loads((run / "run.json").read_text())["dataset"])
    for f in (ev / "predictions").glob("*.npz"):
        np.testing.assert_array_equal(read_prediction(run, "test", f.stem), _largest_by_hand(bare.predict(ds.load_case(f.stem)), [1, 2, 3]))


@pytest.mark.parametrize("mirrored_better", [True, False])
def test_mirroring_decided_on_validation_is_what_predict_applies(run2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirrored_better: bool) -> None:
    """``decide_postprocessing(tta=True)`` scores the validation cases with and without mirroring on every axis and
    keeps mirroring only when it raises Dice; ``--tta auto`` (predict's default) then applies the decision, and the
    largest-component choice is made on the predictions that will be written."""
    import shutil

    from medseg.engine import inferer as inf
    from medseg.engine.inferer import tta_axes
    from medseg.runs import read_tta

    run = tmp_path / "run"
    shutil.copytree(run2d, run)
    assert read_tta(run) == "none"  # undecided: predict does not mirror
    real = inf.Inferer.predict

    def rigged(self: inf.Inferer, case: Case) -> np.ndarray:  # mirroring made visibly better, or visibly worse
        pred = real(self, case)
        good = (len(self.flips) > 1) == mirrored_better
        return np.asarray(case.label, dtype=pred.dtype) if good and case.label is not None else np.zeros_like(pred)

    monkeypatch.setattr(inf.Inferer, "predict", rigged)
    d = decide_postprocessing(run, progress=False, tta=True)
    monkeypatch.setattr(inf.Inferer, "predict", real)
    dice = {m: np.mean(list(v.values())) for m, v in d["tta_dice"].items()}
    assert d["tta"] == ("all" if mirrored_better else "none") and (dice["all"] > dice["none"]) == mirrored_better
    assert set(d["tta_seconds_per_case"]) == {"none", "all"} and d["dice_before"] == d["tta_dice"][d["tta"]]
    assert read_tta(run) == d["tta"]
    assert load_inferer(run, device="cpu", tta="auto").flips == tta_axes(d["tta"], 2)
    assert load_inferer(run, device="cpu", tta="none").flips == [()]  # asked for explicitly: as asked
    dataset = json.loads((run / "run.json").read_text())["dataset"]
    out = predict([run], dataset, tmp_path / "pred", split="test", progress=False)
    assert json.loads((out / "predictions.json").read_text())["tta"] == d["tta"]


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


def test_demo_evaluate_and_predict_give_identical_masks(slices_run: Path, tmp_path: Path) -> None:
    """One run, one image: the evaluation's saved mask, ``medseg predict`` on the image as a NIfTI file (and on
    the same volume stored with its axes in another order), the demo's upload and its case view agree exactly."""
    from medseg.demo.state import DemoState
    from medseg.runs import read_info, read_prediction

    (cid,) = [p.stem for p in (slices_run / "eval" / "test" / "predictions").glob("*.npz")]
    evaluated = read_prediction(slices_run, "test", cid)
    case = load_dataset(read_info(slices_run)["dataset"]).load_case(cid)
    assert evaluated is not None and evaluated.shape == case.spatial_shape and len(np.unique(evaluated)) > 1  # not all background
    nib.save(nib.Nifti1Image(case.image[0], case.affine), str(tmp_path / "scan.nii.gz"))
    moved_affine = case.affine[:, [1, 2, 0, 3]]  # the slice axis stored last, world positions unchanged
    nib.save(nib.Nifti1Image(np.moveaxis(case.image[0], 0, 2), moved_affine), str(tmp_path / "moved.nii.gz"))
    out = predict([slices_run], tmp_path / "scan.nii.gz", tmp_path / "pred", progress=False)
    predicted = np.asarray(nib.load(str(out / "scan.nii.gz")).dataobj)
    moved_out = predict([slices_run], tmp_path / "moved.nii.gz", tmp_path / "pred_moved", progress=False)
    moved = np.moveaxis(np.asarray(nib.load(str(moved_out / "moved.nii.gz")).dataobj), 2, 0)
    st = DemoState(slices_run)
    (name,) = st.runs.names
    _, mask = st.predict(str(tmp_path / "scan.nii.gz"), name)
    uploaded = np.asarray(nib.load(str(mask)).dataobj)
    viewed = st.runs.get(name).inferer().predict(case)  # what the Cases tab computes when nothing was saved
    for other in (predicted, moved, uploaded, viewed):
        np.testing.assert_array_equal(other, evaluated)
