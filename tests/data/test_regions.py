"""Region-based classes: import from nnU-Net raw, sigmoid training, per-region evaluation and label-map export."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

import releases as R
from helpers import tiny_config
from medseg.cli import app
from medseg.config import config_from_dict
from medseg.core.errors import ConfigError, MedsegWarning
from medseg.data.builtin import make_builtin
from medseg.data.formats import import_dataset
from medseg.data.labelset import paint_regions, parse_labels
from medseg.data.store import ClassInfo, DatasetInfo, load_dataset, write_dataset
from medseg.workflows.predict import as_written

REGIONS = {"whole_tumor": (1, 2, 3), "tumor_core": (2, 3), "enhancing_tumor": (3,)}


def _union(label: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(label.shape, dtype=bool)
    for v in values:
        out |= label == v
    return out


@pytest.fixture(scope="module")
def region_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[R.NNUNetRelease, Path, Path]:
    from medseg.engine.train import train

    tmp = tmp_path_factory.mktemp("regions")
    rel = R.nnunet_raw(tmp, ".nii.gz", regions=True, ignore=True, n_train=6, n_test=1)
    meta = json.loads(rel.dataset_json.read_text())
    meta["labels"]["enhancing_tumor"] = [3]  # declared as a list: nnU-Net keys it "(3,)" (as a number: "3", below)
    rel.dataset_json.write_text(json.dumps(meta))
    ds = import_dataset("msd", rel.root, tmp / "ds")
    cfg = config_from_dict(
        tiny_config(
            data={"dataset": str(ds.root), "batch_size": 2, "patch_size": [8, 8, 8]},
            model={"name": "attention_unet", "params": {"channels": [4, 8, 16], "n_deep_supervision": 1}},
            train={"epochs": 2},
        )
    )
    return rel, ds.root, train(cfg, tmp / "run", progress=False)


def test_import_makes_one_channel_per_region(region_run: tuple) -> None:
    rel, root, _ = region_run
    ds = load_dataset(root)
    assert ds.info.multi_label and ds.info.class_names == [*REGIONS, "ignore"]
    assert [c.labels for c in ds.info.classes] == [[1, 2, 3], [2, 3], [3], [4]]
    assert ds.info.regions_class_order == [1, 2, 3, 4] and ds.info.ignore_label == 3 and ds.info.foreground == [0, 1, 2]
    for case in rel.training:
        raw = np.asarray(nib.load(case.label).dataobj)  # the label file, read independently (NIfTI array axes are kept)
        stored = ds.load_case(case.name).label
        assert stored.dtype == bool and stored.shape[0] == 4
        for k, values in enumerate([*REGIONS.values(), (4,)]):
            assert np.array_equal(stored[k], _union(raw, values))


def test_training_logs_dice_per_region_and_evaluation_scores_regions(region_run: tuple) -> None:
    from medseg.workflows.evaluate import evaluate_run

    rel, _, run = region_run
    with open(run / "history.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert {f"val_dice_{n}" for n in REGIONS} <= set(header) and "val_dice_ignore" not in header
    out = evaluate_run(run, split="train", progress=False)
    nn = json.loads((out / "summary_nnunet.json").read_text())
    assert sorted(nn["mean"]) == ["(1, 2, 3)", "(2, 3)", "(3,)"]
    raw = {c.name: np.asarray(nib.load(c.label).dataobj) for c in rel.training}
    with open(out / "metrics.csv", newline="") as fh:
        rows = {(r["case"], r["class"]): r for r in csv.DictReader(fh)}
    for entry in nn["metric_per_case"]:
        cid = Path(entry["prediction_file"]).stem
        with np.load(out / "predictions" / f"{cid}.npz") as z:
            pred = z["label"]
        assert pred.shape[0] == 3  # no output for the ignore label
        # the reference of a region is the union of its labels in the label file; voxels labelled 4 are ignored
        lab = raw[cid]
        valid = lab != 4
        for k, (name, values) in enumerate(REGIONS.items()):
            ref = _union(lab, values)
            tp = int((pred[k] & ref & valid).sum())
            fp = int((pred[k] & ~ref & valid).sum())
            m = entry["metrics"][str(values)]
            assert m["TP"] == tp and m["FP"] == fp and m["FN"] == int((~pred[k] & ref & valid).sum())
            assert int(float(rows[(cid, name)]["tp"])) == tp and int(float(rows[(cid, name)]["fp"])) == fp


def test_predictions_are_written_as_label_maps_in_regions_class_order(region_run: tuple, tmp_path: Path) -> None:
    from medseg.engine.load import load_inferer
    from medseg.workflows.predict import predict

    _, root, run = region_run
    out = predict([run], root, tmp_path / "pred", progress=False, split="test")
    inferer = load_inferer([run])
    ds = load_dataset(root)
    for entry in json.loads((out / "predictions.json").read_text())["cases"]:
        channels = inferer.predict(ds.load_case(entry["case"]))
        written = np.asarray(nib.load(out / entry["file"]).dataobj)
        expected = np.zeros(channels.shape[1:], dtype=np.uint8)
        for k, value in enumerate([1, 2, 3]):  # by hand: later regions overwrite earlier ones
            expected[channels[k]] = value
        assert written.shape == expected.shape and np.array_equal(written, expected)


def test_a_region_declared_as_a_number_is_keyed_as_nnunet_keys_it(tmp_path: Path) -> None:
    """``"enhancing tumor": 3`` is stored as 3 and scored under the key "3": a run's summary_nnunet.json numbers
    equal those nnU-Net 2.8.1 wrote for the same masks (tests/assets/nnunet/regions/summary_int_region.json)."""
    from medseg.metrics import nnunet
    from medseg.workflows.evaluate import run_keys

    assets = Path(__file__).resolve().parents[1] / "assets" / "nnunet" / "regions"
    root = tmp_path / "Dataset777_Int"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    meta = json.loads((assets / "dataset.json").read_text())
    meta["labels"]["enhancing tumor"] = 3
    (root / "dataset.json").write_text(json.dumps(meta))
    for gt in sorted((assets / "gt").glob("*.nii.gz")):
        shutil.copy(gt, root / "labelsTr" / gt.name)
        shutil.copy(gt, root / "imagesTr" / gt.name.replace(".nii.gz", "_0000.nii.gz"))
    ds = import_dataset("msd", root, tmp_path / "ds")
    stored = json.loads((ds.root / "dataset.json").read_text())
    assert [c["labels"] for c in stored["classes"]] == [[1, 2, 3], [2, 3], 3]
    keys = run_keys(load_dataset(ds.root).info)
    assert keys == [(1, 2, 3), (2, 3), 3]
    cases = []
    for cid in sorted(ds.case_ids):  # what evaluate_run scores: the prediction's region channels against the stored ones
        pred = np.asarray(nib.load(assets / "pred" / f"{cid}.nii.gz").dataobj)
        ref = ds.load_case(cid).label
        cases.append((f"gt/{cid}.nii.gz", f"pred/{cid}.nii.gz", nnunet.channel_metrics(np.stack([np.isin(pred, k) for k in keys]), ref, keys)))
    ours = json.loads(nnunet.dumps(nnunet.summary(cases)))
    ref_summary = json.loads((assets / "summary_int_region.json").read_text())
    assert list(ours["mean"]) == list(ref_summary["mean"]) == ["(1, 2, 3)", "(2, 3)", "3"]
    pairs = [(a["metrics"], b["metrics"]) for a, b in zip(ours["metric_per_case"], ref_summary["metric_per_case"], strict=True)]
    for mine, theirs in [*pairs, (ours["mean"], ref_summary["mean"])]:
        assert list(mine) == list(theirs)
        for key, row in theirs.items():
            assert mine[key] == pytest.approx(row, nan_ok=True), key
    assert ours["foreground_mean"] == pytest.approx(ref_summary["foreground_mean"], nan_ok=True)


def test_the_order_decides_the_written_value() -> None:
    """Overlapping, non-nested regions A = {1, 2}, B = {2, 3}: a voxel in both takes the later region's value."""
    a = np.array([[1, 1, 0], [0, 1, 0]], dtype=bool)
    b = np.array([[0, 1, 1], [0, 1, 0]], dtype=bool)
    stack = np.stack([a, b])
    assert paint_regions(stack, [1, 3]).tolist() == [[1, 3, 3], [0, 3, 0]]
    assert paint_regions(stack[::-1], [3, 1]).tolist() == [[1, 1, 3], [0, 1, 0]]
    info = DatasetInfo(
        name="x",
        dims=2,
        modalities=["CT"],
        multi_label=True,
        classes=[ClassInfo(name="A", labels=[1, 2]), ClassInfo(name="B", labels=[2, 3])],
        regions_class_order=[1, 3],
    )
    written, names = as_written(stack, info, ["A", "B"])
    assert written.tolist() == [[1, 3, 3], [0, 3, 0]] and names == ["background", "A", "label_2", "B"]


def test_regions_declared_for_any_data_set_train_in_2d_with_an_ignore_channel(tmp_path: Path) -> None:
    """A 2D data set whose dataset.json declares regions (the heart = LV ∪ myocardium) and an ignore channel."""
    from medseg.engine.train import train

    src = make_builtin("phantom2d", n_patients=5, slices_per_patient=2, size=32)
    cases = []
    for c in src.cases:
        lab = c.label
        ignore = np.zeros(lab.shape, dtype=bool)
        ignore[-6:] = True
        c.label = np.stack([np.isin(lab, [1, 2]), lab == 1, ignore])
        cases.append(c)
    classes = [ClassInfo(name="heart", labels=[1, 2], color=(255, 0, 0)), ClassInfo(name="LV", labels=[1], color=(0, 255, 0))]
    classes.append(ClassInfo(name="ignore", labels=[3], color=(128, 128, 128)))
    info = DatasetInfo(name="r2", dims=2, modalities=["MRI"], classes=classes, multi_label=True, regions_class_order=[2, 1, 3])
    root = write_dataset(tmp_path / "ds", info, cases).root
    run = train(config_from_dict(tiny_config(data={"dataset": str(root), "batch_size": 4})), tmp_path / "run", progress=False)
    with open(run / "history.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert "val_dice_heart" in header and "val_dice_LV" in header and "val_dice_ignore" not in header
    # softmax cannot train regions: refused with the fix, nothing written
    cfg = config_from_dict(tiny_config(data={"dataset": str(root)}, train={"output": "softmax"}))
    with pytest.raises(ConfigError, match=r"regions .* softmax cross-entropy cannot train them .* fix: set train.output=sigmoid"):
        train(cfg, tmp_path / "run2", progress=False)
    assert not (tmp_path / "run2").exists()


# ---------------------------------------------------------------- bad inputs


def _edit(rel: R.NNUNetRelease, **changes: object) -> None:
    meta = json.loads(rel.dataset_json.read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    rel.dataset_json.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"regions_class_order": None}, "regions_class_order is missing"),
        ({"regions_class_order": [1, 2]}, "regions_class_order has 2 entries for 3 regions"),
        ({"labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [], "enhancing_tumor": 3}}, "labels.tumor_core: the region lists no label value"),
        (
            {"labels": {"background": 0, "whole_tumor": [1, 2, 7], "tumor_core": [2, 3], "enhancing_tumor": 3}},
            "labels.whole_tumor: label value(s) [7] are outside",
        ),
        (
            {"labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3, "ignore": 2}},
            "labels.ignore: 2 is not the highest",
        ),
    ],
)
def test_bad_region_declarations_are_refused(changes: dict, problem: str, tmp_path: Path) -> None:
    rel = R.nnunet_raw(tmp_path, ".nii.gz", regions=True, n_train=2, n_test=0)
    _edit(rel, **changes)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["import", "msd", str(rel.root), "--out", str(out), "--no-progress"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {rel.dataset_json}"), res.output
    assert problem in lines[0], lines[0]
    assert not out.exists()


def test_region_value_no_case_contains_is_a_warning(tmp_path: Path) -> None:
    rel = R.nnunet_raw(tmp_path, ".nii.gz", regions=True, n_train=2, n_test=0)
    labels = {"background": 0, "whole_tumor": [1, 2, 3, 4], "tumor_core": [2, 3], "enhancing_tumor": 3, "necrosis": 4}
    _edit(rel, labels=labels, regions_class_order=[1, 2, 3, 4])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = import_dataset("msd", rel.root, tmp_path / "ds")
    msgs = [str(w.message) for w in caught if isinstance(w.message, MedsegWarning)]
    assert any(str(rel.dataset_json) in m and "labels.whole_tumor: label value(s) [4] occur in no case" in m for m in msgs), msgs
    assert ds.info.regions_class_order == [1, 2, 3, 4]


def test_a_label_value_outside_the_declared_ones_is_refused(tmp_path: Path) -> None:
    rel = R.nnunet_raw(tmp_path, ".nii.gz", regions=True, n_train=2, n_test=0)
    img = sitk.ReadImage(str(rel.training[1].label))
    arr = sitk.GetArrayFromImage(img)
    arr[0, 0, 0] = 9
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(img)
    sitk.WriteImage(bad, str(rel.training[1].label))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["import", "msd", str(rel.root), "--out", str(out), "--no-progress"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and str(rel.training[1].label) in lines[0] and "label value(s) [9]" in lines[0], res.output
    assert not out.exists()


def test_parse_labels_keeps_nnunet_spellings() -> None:
    ls = parse_labels({"background": 0, "a": [1, 2], "b": 2}, [1, 2], where="x")
    assert ls.keys == [(1, 2), 2] and ls.names == {0: "background", 1: "a", 2: "b"}
    plain = parse_labels({"0": "background", "1": "liver"}, where="x")
    assert plain.keys == [1] and not plain.regions


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1.5, True, "1"])
def test_a_label_value_that_is_not_an_integer_is_refused(value: object) -> None:
    """``json.loads`` reads ``Infinity`` and ``NaN``: refused like any other non-integer, not an OverflowError."""
    from medseg.core.errors import FormatError

    with pytest.raises(FormatError, match="not an integer label value"):
        parse_labels({"background": 0, "tumour": value}, where="dataset.json")


def test_a_region_case_all_ignore_label_is_refused(tmp_path: Path) -> None:
    """A label file holding only the ignore label (nothing annotated) is refused on import, naming the case."""
    rel = R.nnunet_raw(tmp_path, ".nii.gz", regions=True, ignore=True, n_train=2, n_test=0)
    img = sitk.ReadImage(str(rel.training[1].label))
    full = sitk.GetImageFromArray(np.full(sitk.GetArrayFromImage(img).shape, 4, np.uint8))
    full.CopyInformation(img)
    sitk.WriteImage(full, str(rel.training[1].label))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["import", "msd", str(rel.root), "--out", str(out), "--no-progress"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert rel.training[1].name in lines[0] and "every voxel is the ignore label 4 ('ignore'): nothing is annotated" in lines[0], lines[0]
    assert not out.exists()
