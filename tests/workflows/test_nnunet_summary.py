"""``summary_nnunet.json`` against files written by nnU-Net 2.8.1's own evaluation (tests/assets/nnunet)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medseg.cli import app
from medseg.metrics import nnunet
from medseg.workflows.evaluate import evaluate_folders

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "nnunet"


def _same(ours: Any, ref: Any, path: str = "") -> None:
    """Same keys, same structure, numbers within 1e-6, NaN where nnU-Net has NaN, ints where it has ints."""
    if isinstance(ref, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(ref), f"{path}: keys {sorted(ours)} != {sorted(ref)}"
        for k in ref:
            _same(ours[k], ref[k], f"{path}.{k}")
    elif isinstance(ref, list):
        assert isinstance(ours, list) and len(ours) == len(ref), path
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            _same(a, b, f"{path}[{i}]")
    elif isinstance(ref, float) and math.isnan(ref):
        assert isinstance(ours, float) and math.isnan(ours), f"{path}: {ours} != NaN"
    elif isinstance(ref, int | float):
        assert type(ours) is type(ref), f"{path}: {type(ours).__name__} != {type(ref).__name__}"
        assert ours == pytest.approx(ref, abs=1e-6), f"{path}: {ours} != {ref}"
    else:
        assert ours == ref, path


def _compare(ours_path: Path, ref_path: Path, *, stems: bool = False) -> dict[str, Any]:
    ours, ref = json.loads(ours_path.read_text()), json.loads(ref_path.read_text())
    # nnU-Net stores the paths it was given (relative here): compare file names (or case names)
    for case in (*ours["metric_per_case"], *ref["metric_per_case"]):
        for k in ("reference_file", "prediction_file"):
            case[k] = Path(case[k]).name.split(".")[0] if stems else Path(case[k]).name
    _same(ours, ref)
    return ours


@pytest.mark.parametrize("scenario", ["labels", "regions", "ignore", "png2d", "absent_class"])
def test_summary_equals_nnunet(scenario: str, tmp_path: Path) -> None:
    folder = ASSETS / scenario
    out = evaluate_folders(folder / "pred", folder / "gt", out=tmp_path / "ev", dataset_json=folder / "dataset.json", progress=False)
    ours = _compare(out / nnunet.FILE, folder / "summary.json")
    text = (out / nnunet.FILE).read_text()
    ref_text = (folder / "summary.json").read_text()
    assert ("NaN" in text) == ("NaN" in ref_text)
    assert list(ours["mean"]) == list(json.loads(ref_text)["mean"])  # the same key spelling and order
    # our own summary.json is beside it, and its Dice agrees with nnU-Net's for every case and key
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("case,class,dice")
    assert (out / "summary.json").is_file()


def test_region_declared_as_int_gives_int_key(tmp_path: Path) -> None:
    folder = ASSETS / "regions"
    meta = json.loads((folder / "dataset.json").read_text())
    meta["labels"]["enhancing tumor"] = 3
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    out = evaluate_folders(folder / "pred", folder / "gt", out=tmp_path / "ev", dataset_json=tmp_path / "dataset.json", progress=False)
    _compare(out / nnunet.FILE, folder / "summary_int_region.json")


def test_our_metrics_leave_ignored_voxels_out(tmp_path: Path) -> None:
    """Our metrics.csv agrees with nnU-Net on the ignore scenario (Dice, TP, FP, FN per case and label)."""
    folder = ASSETS / "ignore"
    out = evaluate_folders(folder / "pred", folder / "gt", out=tmp_path / "ev", dataset_json=folder / "dataset.json", progress=False)
    ref = json.loads((folder / "summary.json").read_text())
    import csv

    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by = {(r["case"], r["class"]): r for r in rows}
    for case in ref["metric_per_case"]:
        cid = Path(case["reference_file"]).name.removesuffix(".nii.gz")
        for key, name in (("1", "organ"), ("2", "lesion")):
            r, m = by[(cid, name)], case["metrics"][key]
            assert int(float(r["tp"])) == m["TP"] and int(float(r["fp"])) == m["FP"] and int(float(r["fn"])) == m["FN"]
            assert float(r["dice"]) == pytest.approx(m["Dice"], abs=1e-9, nan_ok=True)
            assert float(r["specificity"]) == pytest.approx(m["TN"] / (m["TN"] + m["FP"]), abs=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ignore_label"] == 3 and "ignore" not in summary["classes"]


def test_nnunet_prediction_folder_and_cli(tmp_path: Path) -> None:
    """An nnU-Net prediction folder (masks + .npz/.pkl/.json beside them, dataset.json inside) is read as it is."""
    folder = ASSETS / "labels"
    pred = tmp_path / "pred"
    shutil.copytree(folder / "pred", pred)
    shutil.copy(folder / "dataset.json", pred / "dataset.json")
    (pred / "plans.json").write_text("{}")
    np.savez(pred / "case_000.npz", probabilities=np.zeros(3))
    (pred / "case_000.pkl").write_bytes(b"\x80\x04N.")
    res = CliRunner().invoke(app, ["evaluate", "--pred", str(pred), "--ref", str(folder / "gt"), "--out", str(tmp_path / "ev"), "--no-progress"])
    assert res.exit_code == 0, res.output
    _compare(tmp_path / "ev" / nnunet.FILE, folder / "summary.json")
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["classes"] == ["organ", "lesion"]  # names from the folder's dataset.json


def test_nrrd_and_mha_folders(tmp_path: Path) -> None:
    """nnU-Net's other SimpleITK endings: the same numbers as the NIfTI reference."""
    folder = ASSETS / "labels"
    for sub, ending in (("gt", ".nrrd"), ("pred", ".mha")):
        (tmp_path / sub).mkdir()
        for p in sorted((folder / sub).glob("*.nii.gz")):
            src = sitk.ReadImage(str(p))
            img = sitk.GetImageFromArray(sitk.GetArrayFromImage(src))
            img.CopyInformation(src)
            sitk.WriteImage(img, str(tmp_path / sub / (p.name.removesuffix(".nii.gz") + ending)))
    out = evaluate_folders(tmp_path / "pred", tmp_path / "gt", out=tmp_path / "ev", dataset_json=folder / "dataset.json", progress=False)
    _compare(out / nnunet.FILE, folder / "summary.json", stems=True)


def test_summary_json_by_hand() -> None:
    """One case with an ignored voxel, counted by hand."""
    ref = np.array([[0, 1, 1, 3], [2, 2, 0, 3]])
    pred = np.array([[1, 1, 0, 2], [2, 0, 0, 1]])
    m = nnunet.case_metrics(pred, ref, [1, 2, (1, 2)], ignore_label=3)
    assert m["1"] == {"Dice": 2 / 4, "IoU": 1 / 3, "TP": 1, "FP": 1, "FN": 1, "TN": 3, "n_pred": 2, "n_ref": 2}
    assert m["2"] == {"Dice": 2 / 3, "IoU": 1 / 2, "TP": 1, "FP": 0, "FN": 1, "TN": 4, "n_pred": 1, "n_ref": 2}
    assert m["(1, 2)"]["TP"] == 2 and m["(1, 2)"]["FN"] == 2 and m["(1, 2)"]["FP"] == 1 and m["(1, 2)"]["TN"] == 1
    s = nnunet.summary([("r", "p", m), ("r2", "p2", nnunet.case_metrics(pred * 0, ref * 0, [1, 2, (1, 2)]))])
    assert s["mean"]["1"]["Dice"] == 0.5 and s["mean"]["1"]["TN"] == (3 + 8) / 2
    assert s["foreground_mean"]["Dice"] == pytest.approx((0.5 + 2 / 3 + 4 / 7) / 3)
    assert "NaN" in nnunet.dumps(s)


@pytest.mark.parametrize(
    ("labels", "order", "message"),
    [
        ({"background": 0, "organ": 1, "ignore": 1}, None, "labels.ignore: 1 is not the highest"),
        ({"background": 0, "a": [1, 2], "b": [2]}, None, "regions_class_order is missing"),
        ({"background": 0, "a": [1, 2], "b": [2]}, [1], "regions_class_order has 1 entries for 2 regions"),
        ({"background": 0, "a": [1, 2], "b": []}, [1, 2], "labels.b: the region lists no label value"),
        ({"background": 0, "a": [1, 2], "b": [5]}, [1, 2], "labels.b: label value(s) [5] are outside"),
    ],
)
def test_bad_dataset_json_is_refused(labels: dict, order: list | None, message: str, tmp_path: Path) -> None:
    folder = ASSETS / "labels"
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz"} | ({"regions_class_order": order} if order else {})
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    out = tmp_path / "ev"
    args = ["evaluate", "--pred", str(folder / "pred"), "--ref", str(folder / "gt"), "--out", str(out), "--dataset-json", str(tmp_path / "dataset.json")]
    res = CliRunner().invoke(app, [*args, "--no-progress"])
    assert res.exit_code == 2
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith(f"error: {tmp_path / 'dataset.json'}") and message in line, line
    assert not out.exists()


def test_regions_of_a_config_score_folders_as_nnunet_does(tmp_path: Path) -> None:
    """``--config`` with data.regions (no dataset.json): the numbers and keys nnU-Net wrote for the same declaration."""
    import yaml

    folder = ASSETS / "regions"
    regions = {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"regions": regions, "regions_class_order": [1, 2, 3]}}))
    args = ["evaluate", "--pred", str(folder / "pred"), "--ref", str(folder / "gt"), "--no-progress", "--config", str(cfg)]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    _compare(tmp_path / "ev" / nnunet.FILE, folder / "summary_int_region.json")
    # the same declaration checked as in a run: one line naming the field, nothing written
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ev2"), "--set", "data.regions_class_order=[1, 2]"])
    line = res.output.strip()
    assert res.exit_code == 2 and len(line.splitlines()) == 1 and "data.regions_class_order has 2 entries for 3 regions" in line, res.output
    assert not (tmp_path / "ev2").exists()
