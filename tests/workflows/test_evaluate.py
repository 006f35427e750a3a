"""Evaluation of runs and of folders of masks: files written, metrics, bad inputs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.config import EvalConfig, config_from_dict
from medseg.core.errors import ConfigError, DatasetError
from medseg.io import read_mask
from medseg.metrics.surface import surface_metrics
from medseg.workflows.evaluate import evaluate_folders, evaluate_run
from medseg.workflows.masks import parse_labels
from medseg.workflows.scoring import metric_columns

medpy_binary = pytest.importorskip("medpy.metric.binary")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.engine.train import train

    tmp = tmp_path_factory.mktemp("run")
    cfg = config_from_dict(
        {
            "name": "tiny",
            "data": {
                "dataset": "phantom2d",
                "builtin": {"n_patients": 6, "slices_per_patient": 2, "size": 32},
                "cache_dir": str(tmp / "cache"),
                "batch_size": 4,
            },
            "model": {"params": {"channels": [8, 16], "num_res_units": 0}},
            "train": {"epochs": 1, "device": "cpu", "threads": 1, "iterations_per_epoch": None},
        }
    )
    return train(cfg, tmp / "run", progress=False)


def test_evaluate_run_writes_every_file(tiny_run: Path) -> None:
    out = evaluate_run(tiny_run, split="test", progress=False)
    for name in ("metrics.csv", "summary.json", "classification_report.csv", "confusion_matrix.csv", "eval_config.yaml"):
        assert (out / name).is_file(), name
    rows = _rows(out / "metrics.csv")
    assert list(rows[0]) == ["case", "patient", "class", *metric_columns(EvalConfig())]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == sorted({r["class"] for r in rows}, key=summary["classes"].index)
    assert len(rows) == summary["n_cases"] * len(summary["classes"])
    for name, entry in summary["per_class"].items():
        for m in ("dice", "hd95", "assd", "nsd", "time_saved_s"):
            assert {"mean", "std", "n", "n_undefined"} <= set(entry[m]), (name, m)
    assert {"macro", "weighted", "pooled", "lesions", "time_saved", "classification_report", "conventions"} <= set(summary)
    assert summary["mean_dice"] == pytest.approx(summary["macro"]["dice"])
    cfg = yaml.safe_load((out / "eval_config.yaml").read_text())
    assert cfg["eval"]["surface"]["hd95_mode"] == "medpy"
    preds = sorted((out / "predictions").glob("*.npz"))
    assert len(preds) == summary["n_cases"]
    # surface metrics in metrics.csv equal MedPy's on the saved prediction of one case
    from medseg.data.store import load_dataset

    info = json.loads((tiny_run / "run.json").read_text())
    ds = load_dataset(info["dataset"])
    for r in rows:
        case = ds.load_case(r["case"])
        k = ds.info.class_names.index(r["class"])
        with np.load(out / "predictions" / f"{r['case']}.npz") as z:
            p, g = z["label"] == k, case.label == k
        if p.any() and g.any():
            assert float(r["hd95"]) == pytest.approx(medpy_binary.hd95(p, g, voxelspacing=case.spacing), abs=1e-6)
            break
    else:
        pytest.fail("no case with both masks non-empty")
    # nnU-Net's summary layout beside ours: counts of the saved predictions, by hand
    nn = json.loads((out / "summary_nnunet.json").read_text())
    assert len(nn["metric_per_case"]) == summary["n_cases"]
    for entry in nn["metric_per_case"]:
        cid = Path(entry["prediction_file"]).stem
        case = ds.load_case(cid)
        with np.load(out / "predictions" / f"{cid}.npz") as z:
            pred = z["label"]
        for k in ds.info.foreground:
            p, g = pred == k, case.label == k
            assert entry["metrics"][str(k)]["TP"] == int((p & g).sum()) and entry["metrics"][str(k)]["FP"] == int((p & ~g).sum())
            assert entry["metrics"][str(k)]["TN"] == int((~p & ~g).sum())
    first = ds.info.foreground[0]
    dices = [e["metrics"][str(first)]["Dice"] for e in nn["metric_per_case"]]
    assert nn["mean"][str(first)]["Dice"] == pytest.approx(np.nanmean(dices))


def test_test_loss_and_pixel_accuracy_of_a_run(tiny_run: Path) -> None:
    """The test loss is the run's loss function on each case (computed here from the logits directly),
    pixel accuracy the share of voxels of the right class (counted here on the saved predictions)."""
    import torch

    from medseg.data.loading import label_to_target, normalize_image
    from medseg.data.store import load_dataset
    from medseg.engine.checkpoint import load_module
    from medseg.workflows.compare import compare_runs

    out = evaluate_run(tiny_run, split="test", progress=False)
    summary = json.loads((out / "summary.json").read_text())
    module = load_module(tiny_run, "best", "cpu")
    ds = load_dataset(json.loads((tiny_run / "run.json").read_text())["dataset"])
    losses, right, total = {}, 0, 0
    for cid in summary["per_case_mean_dice"]:
        case = ds.load_case(cid)
        with torch.no_grad():
            logits = module.net(torch.as_tensor(normalize_image(case.image))[None])  # the whole image
            losses[cid] = float(module.loss_fn(logits, torch.as_tensor(label_to_target(case))[None]))
        with np.load(out / "predictions" / f"{cid}.npz") as z:
            right += int((z["label"] == case.label).sum())
        total += case.label.size
    assert summary["loss"]["name"] == "dice_ce" and summary["loss"]["n"] == len(losses) == summary["n_cases"]
    assert summary["loss"]["per_case"] == pytest.approx(losses, rel=1e-4)
    assert summary["loss"]["mean"] == pytest.approx(np.mean(list(losses.values())), rel=1e-4)
    assert summary["pixel_accuracy"] == pytest.approx(right / total, abs=1e-12)
    row = compare_runs([tiny_run], with_macs=False).rows[0]
    assert row["test_loss"] == summary["loss"]["mean"] and row["pixel_accuracy"] == summary["pixel_accuracy"]
    assert row["macro_f1"] == summary["classification_report"]["macro avg"]["f1"]
    out = evaluate_run(tiny_run, split="test", progress=False, save_predictions=False, overrides=["eval.loss=false"])
    assert "loss" not in json.loads((out / "summary.json").read_text())


def test_evaluate_run_overrides_conventions(tiny_run: Path) -> None:
    out = evaluate_run(tiny_run, split="test", progress=False, save_predictions=False, overrides=["eval.surface.enabled=false", "eval.lesions.rule=iou"])
    rows = _rows(out / "metrics.csv")
    assert "hd95" not in rows[0] and "lesion_tp" in rows[0]
    assert "rule=iou" in json.loads((out / "summary.json").read_text())["conventions"]["lesions"]
    with pytest.raises(ConfigError, match="hd95_mode"):
        evaluate_run(tiny_run, split="test", progress=False, overrides=["eval.surface.hd95_mode=scipy"])


# ---------------------------------------------------------------- folders


def _vol(seed: int, shape: tuple[int, ...] = (12, 14, 10)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    c = rng.integers(4, 8, 3)
    lab[c[0] - 3 : c[0] + 3, c[1] - 3 : c[1] + 4, c[2] - 2 : c[2] + 3] = 1
    lab[c[0] : c[0] + 2, c[1] : c[1] + 2, c[2] : c[2] + 2] = 2
    return lab


def _write_nifti(path: Path, lab: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(lab, affine), str(path))


AFF = np.array([[0.0, 0.9, 0.0, -10.0], [0.8, 0.0, 0.0, 5.0], [0.0, 0.0, 2.5, 30.0], [0, 0, 0, 1]])


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for i in range(3):
        r = _vol(i)
        p = np.roll(r, 1, axis=i % 3)
        _write_nifti(ref / f"case{i}.nii.gz", r, AFF)
        _write_nifti(pred / f"case{i}.nii.gz", p, AFF)
    return pred, ref


def test_folders_metrics_match_references(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    out = evaluate_folders(pred, ref, labels=["1=organ", "2=lesion"], out=tmp_path / "ev", progress=False)
    rows = _rows(out / "metrics.csv")
    assert list(rows[0])[:2] == ["case", "class"] and len(rows) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == {"1": "organ", "2": "lesion"}
    for r in rows:
        i = int(r["case"][-1])
        k = 1 if r["class"] == "organ" else 2
        p = np.asarray(nib.load(str(pred / f"case{i}.nii.gz")).dataobj) == k
        g = np.asarray(nib.load(str(ref / f"case{i}.nii.gz")).dataobj) == k
        sp = nib.load(str(ref / f"case{i}.nii.gz")).header.get_zooms()
        assert float(r["dice"]) == pytest.approx(medpy_binary.dc(p, g), abs=1e-9)
        assert float(r["hd95"]) == pytest.approx(medpy_binary.hd95(p, g, voxelspacing=sp), abs=1e-6)
        assert float(r["assd"]) == pytest.approx(medpy_binary.assd(p, g, voxelspacing=sp), abs=1e-6)
    with open(out / "confusion_matrix.csv", newline="") as fh:
        mat = list(csv.reader(fh))
    assert mat[0] == ["reference \\ prediction", "background", "organ", "lesion"]
    total = sum(int(v) for row in mat[1:] for v in row[1:])
    assert total == 3 * 12 * 14 * 10


def test_folders_mixed_formats_and_default_labels(tmp_path: Path) -> None:
    pred, ref = tmp_path / "p", tmp_path / "r"
    pred.mkdir()
    ref.mkdir()
    lab = _vol(5)
    img = sitk.GetImageFromArray(lab)
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(img, str(ref / "a.nrrd"))
    sitk.WriteImage(img, str(pred / "a.mha"))
    png = np.zeros((16, 16), np.uint8)
    png[4:10, 4:12] = 255
    Image.fromarray(png).save(ref / "b.png")
    Image.fromarray((png > 0).astype(np.uint8)).save(pred / "b.png")
    out = evaluate_folders(pred, ref, labels=None, out=tmp_path / "ev", progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == {"1": "1", "2": "2"}
    rows = {(r["case"], r["class"]): r for r in _rows(out / "metrics.csv")}
    assert float(rows[("a", "1")]["dice"]) == 1.0 and float(rows[("b", "1")]["dice"]) == 1.0
    assert rows[("b", "2")]["dice"] == "nan"  # absent from both: undefined, not a crash
    assert summary["per_class"]["2"]["dice"]["n_undefined"] == 1
    assert summary["per_class"]["2"]["dice"]["mean"] == 1.0


def test_empty_reference_follows_policy(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    lab = np.asarray(nib.load(str(ref / "case0.nii.gz")).dataobj)
    _write_nifti(ref / "case0.nii.gz", np.zeros_like(lab), AFF)
    out = evaluate_folders(pred, ref, labels=["1", "2"], out=tmp_path / "ev", progress=False)
    rows = [r for r in _rows(out / "metrics.csv") if r["case"] == "case0"]
    diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(lab.shape, (0.8, 0.9, 2.5), strict=True)))
    for r in rows:
        assert float(r["dice"]) == 0.0 and float(r["nsd"]) == 0.0
        assert float(r["hd95"]) == pytest.approx(diag, rel=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    for entry in summary["per_class"].values():
        assert entry["n_empty_reference"] == 1
        for m in ("dice", "hd95", "assd", "nsd"):
            assert isinstance(entry[m]["mean"], float) and math.isfinite(entry[m]["mean"])

    def no_constants(c: str) -> None:
        raise AssertionError(f"summary.json holds {c}")

    json.loads((out / "summary.json").read_text(), parse_constant=no_constants)
    nan_cfg = EvalConfig.model_validate({"surface": {"empty_one": "nan"}})
    out2 = evaluate_folders(pred, ref, labels=["1"], out=tmp_path / "ev2", config=nan_cfg, progress=False)
    s2 = json.loads((out2 / "summary.json").read_text())["per_class"]["1"]["hd95"]
    assert s2["n_undefined"] == 1 and s2["n"] == 2 and math.isfinite(s2["mean"])


def test_different_grids_are_refused(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    lab = _vol(0)
    shifted = AFF.copy()
    shifted[0, 3] += 0.5
    _write_nifti(pred / "case1.nii.gz", lab, shifted)
    with pytest.raises(DatasetError, match="different grids") as e:
        evaluate_folders(pred, ref, labels=["1"], out=tmp_path / "ev", progress=False)
    assert "\n" not in str(e.value) and "case1" in str(e.value)
    assert not (tmp_path / "ev").exists()  # nothing half-written
    _write_nifti(pred / "case1.nii.gz", lab[:, :, :-1], AFF)
    with pytest.raises(DatasetError, match="shape"):
        evaluate_folders(pred, ref, labels=["1"], out=tmp_path / "ev", progress=False)


def test_missing_prediction_and_bad_labels(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    (pred / "case2.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case2"):
        evaluate_folders(pred, ref, labels=["1"], out=tmp_path / "ev", progress=False)
    with pytest.raises(ConfigError, match="--labels"):
        parse_labels(["liver"])
    with pytest.raises(ConfigError, match="background"):
        parse_labels(["0"])
    assert parse_labels(["1,2=t", "3"]) == {1: "1", 2: "t", 3: "3"}
    with pytest.raises(DatasetError, match="not found"):
        evaluate_folders(tmp_path / "nope", ref, labels=["1"], progress=False)


def test_bad_mask_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(DatasetError, match="cannot read") as e:
        read_mask(bad)
    assert "x.nii.gz" in str(e.value) and "\n" not in str(e.value)
    rgb = tmp_path / "c.png"
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[1, 1] = (255, 0, 0)
    Image.fromarray(colour).save(rgb)
    with pytest.raises(DatasetError, match="colour"):
        read_mask(rgb)
    prob = tmp_path / "p.nii.gz"
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), 0.4, np.float32), np.eye(4)), str(prob))
    with pytest.raises(DatasetError, match="non-integer"):
        read_mask(prob)


def test_read_mask_geometry_matches_nibabel(tmp_path: Path) -> None:
    lab = _vol(1)
    _write_nifti(tmp_path / "m.nii.gz", lab, AFF)
    arr, aff = read_mask(tmp_path / "m.nii.gz")
    assert sorted(np.linalg.norm(aff[:3, :3], axis=0).round(6)) == sorted([0.8, 0.9, 2.5])
    assert int(arr.sum()) == int(lab.astype(int).sum())
    # the same physical spacing as the surface metric uses
    sp = tuple(np.linalg.norm(aff[:3, :3], axis=0))
    p = arr == 1
    assert surface_metrics(p, p, sp)["hd"] == 0.0


def test_cli_folders_and_errors(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    runner = CliRunner()
    base = ["evaluate", "--pred", str(pred), "--ref", str(ref), "--no-progress"]
    res = runner.invoke(app, [*base, "--labels", "1=organ,2=lesion", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "organ" in res.output and (tmp_path / "ev" / "metrics.csv").is_file()
    res = runner.invoke(app, [*base, "--set", "eval.surface.hd95_mode=monai", "--out", str(tmp_path / "ev2")])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((tmp_path / "ev2" / "eval_config.yaml").read_text())["eval"]["surface"]["hd95_mode"] == "monai"
    _write_nifti(pred / "case0.nii.gz", _vol(0)[:-1], AFF)
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "ev3")])
    assert res.exit_code == 2 and "different grids" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["evaluate", "--pred", str(pred)])
    assert res.exit_code == 2 and "--ref" in res.output


def test_corrupt_checkpoint_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    from medseg.core.errors import RunError

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(b"\x00garbage")
    with pytest.raises(RunError, match="corrupt") as e:
        evaluate_run(run, split="test", progress=False)
    assert "\n" not in str(e.value)
    assert not (run / "eval" / "test").exists()


def test_cli_run(tiny_run: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(tiny_run), "--split", "test", "--no-progress", "--set", "eval.surface.nsd_mode=monai"])
    assert res.exit_code == 0, res.output
    assert "HD95" in res.output and "mean Dice" in res.output
    res = runner.invoke(app, ["evaluate", str(tiny_run), "--labels", "1"])
    assert res.exit_code == 2 and "--pred/--ref" in res.output


def test_score_case_multi_label_and_accumulator(tmp_path: Path) -> None:
    from medseg.workflows.scoring import MetricTable, score_case

    rng = np.random.default_rng(0)
    ref = rng.random((2, 6, 10, 10)) > 0.7
    pred = ref.copy()
    pred[1] = False  # channel 1 missed entirely
    cfg = EvalConfig()
    m = score_case(pred, ref, [0, 1], ["a", "b"], (2.0, 1.0, 1.0), cfg=cfg, multi_label=True)
    assert m["dice"].tolist() == [1.0, 0.0] and m["hd95"][0] == 0.0 and m["nsd"][1] == 0.0
    assert m["lesion_fn"][1] == m["n_ref_lesions"][1] > 0
    acc = MetricTable(["a", "b"], ["dice", "tp", "fp", "fn", "hd95"], ["case"], ["a", "b"], True)
    acc.add({"case": "c1"}, pred, ref, m)
    summary = acc.write(tmp_path, {"n_cases": 1}, cfg, {})
    assert summary["classification_report"]["b"]["recall"] == 0.0
    assert summary["pooled"]["a"]["dice"] == 1.0
    rows = _rows(tmp_path / "confusion_matrix.csv")
    assert [r["class"] for r in rows] == ["a", "b"] and int(rows[1]["fn"]) == int(ref[1].sum())


def test_summary_aggregates() -> None:
    from medseg.metrics.summary import summarize

    def row(case: str, cls: str, tp: float, fp: float, fn: float, hd95: float) -> dict[str, object]:
        dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
        return {"case": case, "class": cls, "dice": dice, "tp": tp, "fp": fp, "fn": fn, "hd95": hd95}

    rows = [
        row("c1", "big", 90, 10, 0, 2.0),
        row("c2", "big", 50, 0, 50, 4.0),
        row("c1", "small", 1, 1, 0, 1.0),
        row("c2", "small", 0, 0, 0, math.nan),  # absent from both: left out, counted
    ]
    s = summarize(rows, ["big", "small"], ["dice", "tp", "fp", "fn", "hd95"])
    big = (180 / 190 + 100 / 150) / 2
    assert s["per_class"]["big"]["dice"]["mean"] == pytest.approx(big)
    assert s["per_class"]["small"]["dice"] == {"mean": pytest.approx(2 / 3), "std": 0.0, "median": pytest.approx(2 / 3), "n": 1, "n_undefined": 1}
    assert s["per_class"]["small"]["n_empty_reference"] == 1
    assert s["macro"]["dice"] == pytest.approx((big + 2 / 3) / 2) == s["mean_dice"]
    assert s["weighted"]["dice"] == pytest.approx((big * 190 + 2 / 3 * 1) / 191)  # reference voxels 190 and 1
    assert s["pooled"]["big"]["dice"] == pytest.approx(2 * 140 / (2 * 140 + 10 + 50))
    assert s["pooled"]["all"]["tp"] == 141
    assert s["macro"]["hd95"] == pytest.approx((3.0 + 1.0) / 2)
    assert s["per_case_mean_dice"]["c2"] == pytest.approx(100 / 150)
