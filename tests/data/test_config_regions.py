"""Regions declared in the run config (``data.regions``) for a label-map data set: training, evaluation, export."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from helpers import tiny_config
from medseg.cli import app
from medseg.config import config_from_dict
from medseg.core.errors import ConfigError, MedsegWarning
from medseg.data.builtin import make_builtin
from medseg.data.source import open_dataset
from medseg.data.store import load_dataset, write_dataset

# phantom2d: 1 LV blood pool, 2 myocardium, 3 RV. The heart holds the LV; painted 2 first, the LV's 1 overwrites it.
REGIONS = {"heart": [1, 2], "LV": 1, "RV": [3]}
ORDER = [2, 1, 3]
KEYS = {"heart": (1, 2), "LV": (1,), "RV": (3,)}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = make_builtin("phantom2d", n_patients=6, slices_per_patient=2, size=32)
    return write_dataset(tmp_path_factory.mktemp("plain") / "ds", src.info, list(src.cases)).root


@pytest.fixture(scope="module")
def region_run(plain: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.engine.train import train

    cfg = config_from_dict(tiny_config(data={"dataset": str(plain), "regions": REGIONS, "regions_class_order": ORDER}, train={"epochs": 2}))
    return train(cfg, tmp_path_factory.mktemp("run") / "run", progress=False)


def test_the_config_reads_label_maps_as_region_channels(plain: Path) -> None:
    cfg = config_from_dict({"data": {"dataset": str(plain), "regions": REGIONS, "regions_class_order": ORDER}})
    ds = open_dataset(cfg)
    assert ds.info.multi_label and ds.info.class_names == list(REGIONS) and ds.info.regions_class_order == ORDER
    assert [c.labels for c in ds.info.classes] == [[1, 2], 1, [3]]
    stored = load_dataset(plain)  # the same folder read as it is: label maps
    for cid in stored.case_ids:
        lab = stored.load_case(cid).label
        channels = ds.load_case(cid).label
        assert channels.dtype == bool and channels.shape == (3, *lab.shape)
        for k, values in enumerate(KEYS.values()):
            assert np.array_equal(channels[k], np.isin(lab, values))


def test_training_and_evaluation_score_the_configured_regions(region_run: Path, plain: Path) -> None:
    from medseg.workflows.evaluate import evaluate_run

    with open(region_run / "history.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert {f"val_dice_{n}" for n in REGIONS} <= set(header)
    out = evaluate_run(region_run, split="train", progress=False)
    nn = json.loads((out / "summary_nnunet.json").read_text())
    assert sorted(nn["mean"]) == ["(1, 2)", "(3,)", "1"]  # nnU-Net's keys: "1" for the region declared as a number
    stored = load_dataset(plain)
    with open(out / "metrics.csv", newline="") as fh:
        rows = {(r["case"], r["class"]): r for r in csv.DictReader(fh)}
    for entry in nn["metric_per_case"]:
        cid = Path(entry["prediction_file"]).stem
        with np.load(out / "predictions" / f"{cid}.npz") as z:
            pred = z["label"]
        lab = stored.load_case(cid).label  # the label map, unconverted
        for k, (name, key) in enumerate(zip(REGIONS, ["(1, 2)", "1", "(3,)"], strict=True)):
            ref = np.isin(lab, KEYS[name])
            tp, fp, fn = int((pred[k] & ref).sum()), int((pred[k] & ~ref).sum()), int((~pred[k] & ref).sum())
            m = entry["metrics"][key]
            assert (m["TP"], m["FP"], m["FN"]) == (tp, fp, fn)
            assert int(float(rows[(cid, name)]["tp"])) == tp and int(float(rows[(cid, name)]["fn"])) == fn


def test_predictions_are_painted_in_the_configured_order(region_run: Path, plain: Path, tmp_path: Path) -> None:
    from medseg.engine.load import load_inferer
    from medseg.workflows.predict import predict

    out = predict([region_run], plain, tmp_path / "pred", progress=False)
    inferer = load_inferer([region_run])
    ds = load_dataset(plain)
    for entry in json.loads((out / "predictions.json").read_text())["cases"]:
        channels = inferer.predict(ds.load_case(entry["case"]))
        written = np.asarray(nib.load(out / entry["file"]).dataobj)
        expected = np.zeros(channels.shape[1:], dtype=np.uint8)
        for k, value in enumerate(ORDER):  # by hand: heart 2, then LV 1 over it, then RV 3
            expected[channels[k]] = value
        assert np.array_equal(written.reshape(expected.shape), expected)


def test_the_ignore_label_becomes_a_last_channel(plain: Path) -> None:
    cfg = config_from_dict({"data": {"dataset": str(plain), "ignore_label": 3, "regions": {"heart": [1, 2]}, "regions_class_order": [1]}})
    ds = open_dataset(cfg)
    assert ds.info.class_names == ["heart", "ignore"] and ds.info.ignore_label == 1 and ds.info.foreground == [0]
    cid = ds.case_ids[0]
    lab = load_dataset(plain).load_case(cid).label
    channels = ds.load_case(cid).label
    assert np.array_equal(channels[0], np.isin(lab, [1, 2])) and np.array_equal(channels[1], lab == 3)


def test_a_region_value_no_case_holds_is_a_warning(tmp_path: Path) -> None:
    src = make_builtin("phantom2d", n_patients=3, slices_per_patient=1, size=32)
    cases = list(src.cases)
    for c in cases:
        c.label[c.label == 3] = 0  # no RV anywhere
    root = write_dataset(tmp_path / "ds", src.info, cases).root
    cfg = config_from_dict({"data": {"dataset": str(root), "regions": {"heart": [1, 2, 3], "LV": [1]}, "regions_class_order": [2, 1]}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = open_dataset(cfg)
    msgs = [str(w.message) for w in caught if isinstance(w.message, MedsegWarning)]
    assert msgs == [f"{root}: data.regions.heart: label value(s) [3] occur in no case"], msgs
    assert ds.info.class_names == ["heart", "LV"]


@pytest.mark.parametrize(
    ("data", "train", "problem"),
    [
        ({"regions": {"heart": [1, 7]}, "regions_class_order": [1]}, {}, "data.regions.heart: label value(s) [7] are outside the data set's values [1, 2, 3]"),
        ({"regions": {"heart": [0, 1]}, "regions_class_order": [1]}, {}, "data.regions.heart: label value(s) [0] are outside"),
        (
            {"ignore_label": 3, "regions": {"a": [2, 3]}, "regions_class_order": [1]},
            {},
            "data.regions.a: label value(s) [3] are outside the data set's values [1, 2]",
        ),
        ({"regions": {"heart": [1, 2]}}, {}, "data.regions_class_order is missing"),
        ({"regions": {"heart": [1, 2], "LV": 1}, "regions_class_order": [1]}, {}, "data.regions_class_order has 1 entries for 2 regions"),
        ({"regions": {"heart": [1, 2], "LV": []}, "regions_class_order": [2, 1]}, {}, "data.regions.LV: the region lists no label value"),
        ({"regions": {}, "regions_class_order": [1]}, {}, "data.regions declares no region"),
        ({"regions_class_order": [1]}, {}, "data.regions_class_order is set but data.regions is not"),
        ({"regions": REGIONS, "regions_class_order": ORDER}, {"output": "softmax"}, "train.output: the data set's classes are regions"),
    ],
)
def test_bad_region_config_is_refused(data: dict, train: dict, problem: str, plain: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(data={"dataset": str(plain), **data}, train=train)))
    res = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    line = res.output.strip()
    assert res.exit_code == 2 and len(line.splitlines()) == 1 and problem in line, res.output
    assert not (tmp_path / "run").exists()


def test_a_multi_label_data_set_takes_no_regions(tmp_path: Path) -> None:
    from helpers import multilabel_dataset

    root = multilabel_dataset(tmp_path / "ml")
    with pytest.raises(ConfigError, match=r"data.regions: data set 'ml' is multi-label"):
        open_dataset(config_from_dict({"data": {"dataset": str(root), "regions": {"a": [1]}, "regions_class_order": [1]}}))


def test_the_preprocessing_cache_of_regions_is_its_own(plain: Path, tmp_path: Path) -> None:
    """Cached labels are region channels under data.regions: another cache folder than the label maps' one."""
    from medseg.data.preprocessing import Cache, default_cache_dir, prepare, resolve_spec

    plain_cfg = config_from_dict({"data": {"dataset": str(plain), "preprocess": {"enabled": True}}})
    region_cfg = config_from_dict({"data": {"dataset": str(plain), "preprocess": {"enabled": True}, "regions": REGIONS, "regions_class_order": ORDER}})
    base, view = open_dataset(plain_cfg), open_dataset(region_cfg)
    s1, s2 = resolve_spec(plain_cfg, base), resolve_spec(region_cfg, view)
    assert "labels" not in s1.to_dict() and s2.to_dict()["labels"] == {"regions": REGIONS, "regions_class_order": ORDER}
    assert default_cache_dir(base, s1) != default_cache_dir(view, s2)
    cache = Cache(prepare(view, s2, out=tmp_path / "cache", progress=False), s2)
    cid = view.case_ids[0]
    lab = base.load_case(cid).label
    cached = np.asarray(cache.label(cid))
    assert cached.shape == (3, *lab.shape) and all(np.array_equal(cached[k], np.isin(lab, v)) for k, v in enumerate(KEYS.values()))
