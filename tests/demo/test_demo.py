"""The web demo without a browser: safe file serving, rendering, upload readers, mask geometry, the ASGI routes."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medseg.demo.runs import DemoError, RunsFolder, safe_path
from medseg.demo.uploads import adapt_channels, predict_upload, read_upload
from medseg.viz import render as R
from medseg.viz.overlay import FN_COLOR, FP_COLOR, WRONG_COLOR

# ---------------------------------------------------------------- a tiny evaluated run, made once


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.config import config_from_dict
    from medseg.engine.train import train
    from medseg.workflows.evaluate import evaluate_run

    root = tmp_path_factory.mktemp("demo-runs")
    cfg = config_from_dict(
        {
            "name": "unet2d",
            "data": {
                "dataset": "phantom2d",
                "builtin": {"n_patients": 6, "slices_per_patient": 2, "size": 32},
                "batch_size": 4,
                "cache_dir": str(root / ".cache"),
            },
            "model": {"name": "unet", "params": {"channels": [8, 16], "num_res_units": 0}},
            "train": {"epochs": 1, "device": "cpu", "iterations_per_epoch": None},
        }
    )
    run = train(cfg, root / "runs" / "unet2d", progress=False)
    evaluate_run(run, split="test", progress=False)
    return root / "runs"


# ---------------------------------------------------------------- files served only inside the runs folder


def test_safe_path_serves_files_inside(tmp_path: Path) -> None:
    (tmp_path / "run" / "report").mkdir(parents=True)
    (tmp_path / "run" / "report" / "index.html").write_text("<html></html>")
    assert safe_path(tmp_path, "run/report/index.html") == (tmp_path / "run" / "report" / "index.html").resolve()


@pytest.mark.parametrize(
    "request_path",
    ["../secret.txt", "run/../../secret.txt", "/etc/passwd", "..", "run/..\\..\\secret.txt", "", "C:/Windows/win.ini", "run/\x00x"],
)
def test_safe_path_refuses_traversal_and_absolute(tmp_path: Path, request_path: str) -> None:
    root = tmp_path / "runs"
    (root / "run").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("secret")
    with pytest.raises(DemoError):
        safe_path(root, request_path)


def test_safe_path_refuses_symlinks_out(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    (root / "run").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside / "secret.txt", root / "run" / "link.txt")
    os.symlink(outside, root / "run" / "dirlink")
    (root / "run" / "ok.txt").write_text("ok")
    os.symlink(root / "run" / "ok.txt", root / "run" / "inner.txt")
    with pytest.raises(DemoError, match="outside"):
        safe_path(root, "run/link.txt")
    with pytest.raises(DemoError, match="outside"):
        safe_path(root, "run/dirlink/secret.txt")
    assert safe_path(root, "run/inner.txt").read_text() == "ok"  # a link that stays inside is fine
    with pytest.raises(DemoError, match="no such file"):
        safe_path(root, "run")  # folders are not served


# ---------------------------------------------------------------- rendering


def test_plane_axes_follow_the_affine() -> None:
    assert R.plane_axes(np.eye(4)) == {"sagittal": 0, "coronal": 1, "axial": 2}
    dicom_like = np.array([[0, 0, -0.7, 0], [0, -0.7, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])  # slice axis first, pointing along z
    assert R.plane_axes(dicom_like)["axial"] == 0
    assert sorted(R.plane_axes(dicom_like).values()) == [0, 1, 2]


@pytest.mark.parametrize(
    ("preset", "value", "expected"),
    [("CT soft tissue (W400 L40)", 40.0, 127), ("CT soft tissue (W400 L40)", -1000.0, 0), ("CT bone (W1800 L400)", 2000.0, 255)],
)
def test_window_presets(preset: str, value: float, expected: int) -> None:
    img = np.full((4, 4), value, np.float32)
    assert abs(int(R.window(img, preset)[0, 0]) - expected) <= 1


def test_blend_respects_visibility_and_opacity() -> None:
    grey = np.full((8, 8), 100, np.uint8)
    lab = np.zeros((8, 8), np.int16)
    lab[:4] = 1
    lab[4:] = 2
    colors = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    both = R.blend(grey, lab, colors, [1, 2], 0.5)
    only1 = R.blend(grey, lab, colors, [1], 0.5)
    none = R.blend(grey, lab, colors, [1, 2], 0.0)
    assert both[0, 0, 0] > 150 and both[7, 0, 1] > 150
    assert (only1[7] == 100).all() and only1[0, 0, 0] > 150
    assert (none == 100).all()


def test_error_map_colours_fp_fn_wrong_class() -> None:
    grey = np.zeros((4, 4), np.uint8)
    ref = np.zeros((4, 4), np.int16)
    pred = np.zeros((4, 4), np.int16)
    ref[0, :2] = 1  # (0,0) right, (0,1) FN
    pred[0, 0] = 1
    pred[3, 3] = 1  # FP
    ref[2, 0], pred[2, 0] = 1, 2  # wrong class
    ref[2, 1], pred[2, 1] = 2, 1  # wrong class too, with both classes looked at
    rgb = R.error_map(grey, pred, ref, [1, 2], 1.0)
    assert tuple(rgb[0, 0]) == (0, 0, 0)  # correct voxels stay grey
    assert tuple(rgb[0, 1]) == FN_COLOR and tuple(rgb[3, 3]) == FP_COLOR and tuple(rgb[2, 0]) == tuple(rgb[2, 1]) == WRONG_COLOR
    only1 = R.error_map(grey, pred, ref, [1], 1.0)
    assert tuple(only1[2, 0]) == FN_COLOR and tuple(only1[2, 1]) == FP_COLOR  # the other class is not looked at
    half = R.error_map(np.full((4, 4), 100, np.uint8), pred, ref, [1], 0.5)
    assert tuple(half[3, 3]) == (178, 50, 178)  # 0.5 · 100 + 0.5 · (255, 0, 255), rounded


def test_upscale_keeps_the_physical_aspect() -> None:
    out = R.upscale(np.zeros((8, 32, 3), np.uint8), spacing=(4.0, 1.0), min_size=64)
    assert out.shape[0] == out.shape[1]  # 8 × 4 mm = 32 × 1 mm


# ---------------------------------------------------------------- the runs folder


def test_runs_folder_lists_runs_and_metrics(runs_dir: Path) -> None:
    rf = RunsFolder(runs_dir)
    assert rf.names == ["unet2d"]
    run = rf.get("unet2d")
    assert run.case_ids and set(run.metrics) == set(run.case_ids)
    cid = run.case_ids[0]
    assert 0.0 <= run.case_dice(cid) <= 1.0
    case = run.dataset.load_case(cid)
    assert run.prediction(case).shape == case.spatial_shape
    assert np.isfinite(run.case_loss(case))
    row = rf.table()[0]
    assert row["run"] == "unet2d" and row["mean_dice"] is not None and set(row["per_class_dice"]) == {"LV blood pool", "myocardium", "RV"}
    with pytest.raises(DemoError, match="no run named"):
        rf.get("../etc")


def test_render_changes_with_the_choices(runs_dir: Path) -> None:
    from medseg.demo.app import DemoState

    st = DemoState(runs_dir)
    cid = st.runs.get("unet2d").case_ids[0]
    args = ["unet2d", None, cid, "axial", 0, "auto (1–99 %)"]
    pic, metrics, legend = st.render(*args, 0.5, ["LV blood pool", "myocardium", "RV"], "side by side")
    assert pic is not None and pic.ndim == 3 and "Dice" in metrics and "LV blood pool" in legend
    faint, _, _ = st.render(*args, 0.0, ["LV blood pool", "myocardium", "RV"], "side by side")
    fewer, _, _ = st.render(*args, 0.5, ["RV"], "side by side")
    err, _, legend_err = st.render(*args, 0.5, ["LV blood pool", "myocardium", "RV"], "error map")
    assert not np.array_equal(pic, faint) and not np.array_equal(pic, fewer)
    assert err.shape[1] < pic.shape[1] and "false positive" in legend_err  # one panel instead of two
    cmp, metrics2, _ = st.render("unet2d", "unet2d", cid, "axial", 0, preset="auto (1–99 %)", alpha=0.5, visible=None, view="overlay")
    assert cmp is not None and metrics2.count("mean Dice") == 1  # the same run is not compared with itself
    html = st.runs_html()
    assert "/runs/unet2d/report" not in html  # no report written yet
    assert "unet2d" in html and "curves" in html


# ---------------------------------------------------------------- uploads: readers, checks, mask on the input's grid


def _nifti(path: Path, shape: tuple[int, ...] = (32, 32, 4)) -> np.ndarray:
    import nibabel as nib

    aff = np.array([[-1.2, 0, 0, 50.0], [0, 1.1, 0, -20.0], [0, 0, 3.0, 7.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, aff), str(path))
    return aff


def test_nifti_upload_predicted_on_its_grid(runs_dir: Path, tmp_path: Path) -> None:
    import nibabel as nib

    from medseg.engine.load import load_inferer

    path = tmp_path / "scan.nii.gz"
    aff = _nifti(path)
    up = read_upload(path)
    assert up.case.ndim == 3 and up.case.spatial_shape == (32, 32, 4)
    inferer = load_inferer(runs_dir / "unet2d", device="cpu")
    seen: list[float] = []
    pred, axis = predict_upload(up.case, inferer, lambda f, t: seen.append(f))
    assert axis == 2 and pred.shape == (32, 32, 4) and seen[-1] == 1.0  # 2D model: slice by slice along the axial axis
    out = nib.load(str(up.write_mask(pred, tmp_path / "out")))
    assert out.shape == (32, 32, 4)
    np.testing.assert_allclose(out.affine, aff)
    np.testing.assert_array_equal(np.asarray(out.dataobj), pred)


def test_nrrd_and_png_masks_keep_geometry(runs_dir: Path, tmp_path: Path) -> None:
    import SimpleITK as sitk
    from PIL import Image

    from medseg.engine.load import load_inferer

    module = load_inferer(runs_dir / "unet2d", device="cpu")
    img = sitk.GetImageFromArray(np.random.default_rng(1).normal(size=(3, 32, 32)).astype(np.float32))
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((10.0, -5.0, 3.0))
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    sitk.WriteImage(img, str(tmp_path / "vol.nrrd"))
    up = read_upload(tmp_path / "vol.nrrd")
    pred, _ = predict_upload(up.case, module)
    back = sitk.ReadImage(str(up.write_mask(pred, tmp_path / "o")))
    assert back.GetSize() == img.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing())
    np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin())
    np.testing.assert_allclose(back.GetDirection(), img.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), pred)

    rgb = (np.random.default_rng(2).random((40, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "slice.png")
    up = read_upload(tmp_path / "slice.png")
    assert up.case.n_channels == 3 and adapt_channels(up.case, 1).n_channels == 1
    pred, axis = predict_upload(up.case, module)
    assert axis is None and pred.shape == (40, 30)
    assert np.asarray(Image.open(up.write_mask(pred, tmp_path / "p"))).shape == (40, 30)


def test_zipped_dicom_series_upload(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    series = generate_uid()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for z in range(3):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(f"{z}.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
            ds.SeriesInstanceUID, ds.PatientID, ds.Modality = series, "P1", "CT"
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [0, 0, 2.5 * z]
            ds.PixelSpacing = [0.7, 0.7]
            ds.Rows, ds.Columns = 16, 16
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
            ds.PixelData = (np.full((16, 16), 1000 + z, np.int16)).tobytes()
            ds.is_little_endian, ds.is_implicit_VR = True, False
            b = io.BytesIO()
            pydicom.dcmwrite(b, ds, enforce_file_format=True)
            zf.writestr(f"series/{z}.dcm", b.getvalue())
        zf.writestr("../../evil.txt", "ignored")  # a zip-slip name is never used as a path
    (tmp_path / "ct.zip").write_bytes(buf.getvalue())
    up = read_upload(tmp_path / "ct.zip")
    assert up.case.spatial_shape == (3, 16, 16) and up.case.image[0, 2, 0, 0] == 1000 + 2 - 1024
    assert np.isclose(up.case.spacing[0], 2.5) and R.plane_axes(up.case.affine)["axial"] == 0
    assert not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("notes.txt", b"hello", "not accepted"),
        ("scan.exe", b"MZ", "not accepted"),
        ("scan.nii.gz", b"this is not gzip", "cannot read"),
        ("scan.nii", b"\0" * 10, "cannot read"),
        ("slice.png", b"\x89PNG\r\n\x1a\n broken", "cannot read"),
        ("series.zip", b"PK not a zip", "cannot read"),
        ("scan.nrrd", b"NRRD0004\ntype: float\n", "cannot read"),
    ],
)
def test_malformed_uploads_give_one_line(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DemoError, match=match) as e:
        read_upload(tmp_path / name)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)


def test_upload_limits(tmp_path: Path) -> None:
    path = tmp_path / "scan.nii.gz"
    _nifti(path)
    with pytest.raises(DemoError, match="over the limit"):
        read_upload(path, max_bytes=100)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no images")
    with pytest.raises(DemoError, match="no DICOM"):
        read_upload(empty)
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((4, 4, 2), np.nan, np.float32), np.eye(4)), str(tmp_path / "nan.nii"))
    with pytest.raises(DemoError, match="NaN"):
        read_upload(tmp_path / "nan.nii")


# ---------------------------------------------------------------- the ASGI app (no browser): routes, auth, bad uploads


def test_server_routes_refuse_traversal_and_need_login(runs_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from medseg.demo import create_server

    outside = tmp_path / "secret.txt"
    outside.write_text("TOP-SECRET-CONTENT")
    link = runs_dir / "unet2d" / "escape.txt"
    link.unlink(missing_ok=True)
    os.symlink(outside, link)
    try:
        with TestClient(create_server(runs_dir)) as client:
            assert client.get("/runs/unet2d/run.json").json()["name"] == "unet2d"
            for bad in ("/runs/%2e%2e/%2e%2e/secret.txt", "/runs/unet2d/%2e%2e/%2e%2e/secret.txt", f"/runs/{outside}", "/runs/unet2d/escape.txt"):
                r = client.get(bad)
                assert r.status_code == 403 and "TOP-SECRET" not in r.text, bad
            assert client.get("/runs/unet2d/nothing.txt").status_code == 404
            assert client.get("/").status_code == 200
        with TestClient(create_server(runs_dir, auth=("alice", "pw"))) as client:
            assert client.get("/runs/unet2d/run.json").status_code == 401
            assert client.post("/login", data={"username": "alice", "password": "pw"}).status_code == 200
            assert client.get("/runs/unet2d/run.json").status_code == 200
    finally:
        link.unlink()


def test_cli_checks_its_options(runs_dir: Path) -> None:
    from typer.testing import CliRunner

    from medseg.cli import app
    from medseg.demo import is_loopback, parse_auth

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    assert parse_auth("a:b:c") == ("a", "b:c") and parse_auth(None) is None
    r = CliRunner().invoke(app, ["demo", str(runs_dir), "--auth", "nopassword"])
    assert r.exit_code == 2 and "USER:PASSWORD" in r.output
    r = CliRunner().invoke(app, ["demo", str(runs_dir / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_multi_label_rendering() -> None:
    grey = np.zeros((6, 6), np.uint8)
    ref = np.zeros((2, 6, 6), bool)
    pred = np.zeros((2, 6, 6), bool)
    ref[0, :3] = True
    ref[1, 2:4] = True  # overlapping channels, as in multi-label data
    pred[1, 2:] = True
    colors = [(255, 0, 0), (0, 0, 255)]
    rgb = R.blend(grey, ref, colors, [0, 1], 1.0, multi=True)
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[3, 0]) == (0, 0, 255)
    err = R.error_map(grey, pred, ref, [1], 1.0, multi=True)
    assert tuple(err[2, 0]) == (0, 0, 0) and tuple(err[5, 0]) == FP_COLOR
    only0 = R.error_map(grey, pred, ref, [0], 1.0, multi=True)
    assert tuple(only0[0, 0]) == FN_COLOR and tuple(only0[5, 0]) == (0, 0, 0)
    both = R.error_map(grey, pred, ref, [0, 1], 1.0, multi=True)
    assert tuple(both[4, 0]) == FP_COLOR and tuple(both[0, 0]) == FN_COLOR  # row 4: channel 1 only predicted
    assert tuple(R.error_map(grey, ref[::-1], ref, [0, 1], 1.0, multi=True)[0, 0]) == WRONG_COLOR  # channels swapped: FP in one, FN in the other


def test_uploads_are_queued_with_bounded_concurrency_and_size_limit(runs_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from medseg.demo import build_app, create_server

    blocks = build_app(runs_dir, max_upload_mb=1, max_concurrent=3)
    predict = [f for f in blocks.fns.values() if f.api_name == "predict"]
    assert len(predict) == 1 and predict[0].concurrency_limit == 3
    with TestClient(create_server(runs_dir, max_upload_mb=1)) as client:
        small = client.post("/gradio_api/upload", files={"files": ("a.nii", b"\0" * 1000)})
        big = client.post("/gradio_api/upload", files={"files": ("b.nii", b"\0" * (2 * 2**20))})
        assert small.status_code == 200
        assert big.status_code == 413


def test_a_single_run_folder_is_a_runs_folder(runs_dir: Path) -> None:
    from medseg.demo.app import DemoState

    st = DemoState(runs_dir / "unet2d")
    assert st.runs.names == ["unet2d"]
    assert st.runs.get("unet2d").case_ids
    assert 'href="/runs/curves.png"' in st.runs_html()


def test_cli_warns_when_not_on_loopback(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import medseg.demo
    from medseg.cli import app

    calls: list[dict] = []
    monkeypatch.setattr(medseg.demo, "serve", lambda runs, **kw: calls.append({"runs": runs, **kw}))
    r = CliRunner().invoke(app, ["demo", str(runs_dir), "--host", "0.0.0.0", "--port", "9999", "--max-upload-mb", "64"])
    assert r.exit_code == 0, r.output
    assert "warning" in r.output and "0.0.0.0" in r.output and "--auth" in r.output
    assert calls == [{"runs": runs_dir, "host": "0.0.0.0", "port": 9999, "auth": None, "max_upload_mb": 64.0, "max_concurrent": 2}]
    r = CliRunner().invoke(app, ["demo", str(runs_dir), "--auth", "u:p"])
    assert r.exit_code == 0 and "warning" not in r.output and calls[-1]["host"] == "127.0.0.1" and calls[-1]["auth"] == ("u", "p")


def test_runs_table_follows_an_evaluation_made_after_loading(runs_dir: Path) -> None:
    """A run (re-)evaluated while the page is open shows its new Dice when the Runs tab is refreshed."""
    import json
    import time

    from medseg.demo.app import DemoState

    st = DemoState(runs_dir)
    summary = runs_dir / "unet2d" / "eval" / "test" / "summary.json"
    saved = summary.read_text()
    assert st.runs.get("unet2d").row()["mean_dice"] == pytest.approx(json.loads(saved)["mean_dice"])
    try:
        time.sleep(0.01)
        summary.write_text(json.dumps({**json.loads(saved), "mean_dice": 0.123}))
        assert "0.123" in st.runs_html()
    finally:
        summary.write_text(saved)


def test_newest_run_first_upload_slices_a_volume_for_a_2d_run_and_time_saved_explained(runs_dir: Path, tmp_path: Path) -> None:
    import os
    import shutil

    import nibabel as nib

    from medseg.demo.app import DemoState
    from medseg.workflows.predict import predict

    root = tmp_path / "runs"
    shutil.copytree(runs_dir / "unet2d", root / "b_old")
    shutil.copytree(runs_dir / "unet2d", root / "a_new")
    os.utime(root / "b_old" / "run.json", (1e9, 1e9))
    st = DemoState(root)
    assert st.runs.names == ["a_new", "b_old"] and st.runs.newest == "a_new"
    os.utime(root / "a_new" / "run.json", (1e9 - 5, 1e9 - 5))
    assert st.runs.newest == "b_old"
    assert "a_new" in st.model_note("a_new") and "2D images: it predicts a volume slice by slice in axial planes" in st.model_note("a_new")
    # a volume for a network trained on 2D pictures: what `medseg predict` writes, voxel for voxel, and the page says how
    aff = _nifti(tmp_path / "vol.nii.gz", shape=(33, 31, 5))
    state, mask = st.predict(str(tmp_path / "vol.nii.gz"), "a_new")
    assert state["note"] == "the 2D network predicted the volume slice by slice: 5 axial slices (array axis 2)"
    out = predict([root / "a_new"], tmp_path / "vol.nii.gz", tmp_path / "cli", device="cpu", backend="torch", progress=False)
    by_cli = nib.load(str(next(out.glob("vol*.nii.gz"))))
    by_page = nib.load(str(mask))
    assert by_page.shape == by_cli.shape == (33, 31, 5)
    np.testing.assert_allclose(by_page.affine, aff)
    np.testing.assert_array_equal(np.asarray(by_page.dataobj), np.asarray(by_cli.dataobj))
    cid = st.runs.get("a_new").case_ids[0]
    _, metrics, _ = st.render("a_new", None, cid, "axial", 0, "auto (1–99 %)", 0.5, None, "side by side")
    assert "time saved" in metrics and "Negative" in metrics
    _, val_metrics, _ = st.render("a_new", None, st.case_choices("a_new", "val")[0][1], "axial", 0, "auto (1–99 %)", 0.5, None, "side by side", "val")
    assert "(val)" in val_metrics and "not evaluated on the val split" in val_metrics


def test_workspace_cli_refuses_other_hosts_without_a_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import medseg.demo
    from medseg.cli import app

    calls: list[dict] = []
    monkeypatch.setattr(medseg.demo, "serve", lambda runs, **kw: calls.append({"runs": runs, **kw}))
    r = CliRunner().invoke(app, ["workspace", str(tmp_path / "ws"), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "--auth" in r.output and calls == []
    r = CliRunner().invoke(app, ["workspace", str(tmp_path / "ws"), "--host", "0.0.0.0", "--auth", "u:p", "--max-jobs", "3"])
    assert r.exit_code == 0, r.output
    assert calls[-1]["workspace"] == tmp_path / "ws" and calls[-1]["max_jobs"] == 3 and calls[-1]["auth"] == ("u", "p")
