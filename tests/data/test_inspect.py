"""`medseg inspect` / fingerprint: statistics that can be checked by hand, and the warnings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import app
from medseg.core.case import Case
from medseg.data.inspect import describe, fingerprint
from medseg.data.splits import save_splits
from medseg.data.store import DatasetInfo, make_classes, write_dataset


def _ds(tmp_path: Path, cases: list[Case], classes: list[str], dims: int = 2, multi: bool = False, splits: dict | None = None):
    info = DatasetInfo(name="t", dims=dims, modalities=["CT"], classes=make_classes(classes, background=not multi), multi_label=multi)
    ds = write_dataset(tmp_path / "ds", info, cases)
    if splits:
        save_splits(ds.splits_path, splits)
    return ds


def _case(cid: str, img: np.ndarray, lab: np.ndarray | None, spacing: tuple[float, ...] = (1.0, 1.0)) -> Case:
    return Case.from_spacing(img[None].astype(np.float32), lab, spacing=spacing, case_id=cid)


def test_counts_intensities_and_geometry(tmp_path: Path) -> None:
    img = np.arange(400, dtype=np.float32).reshape(20, 20)
    lab = np.zeros((20, 20), np.int16)
    lab[5:10, 5:10] = 1  # 25 voxels, values 105…109, 125…, …, 185…189
    lab[0, 0:4] = 2
    cases = [_case("a", img, lab), _case("b", img + 1000, np.zeros((20, 20), np.int16), spacing=(1.0, 2.0)), _case("c", img, lab)]
    ds = _ds(tmp_path, cases, ["bg", "organ", "tiny"], splits={"train": ["a", "b"], "val": [], "test": ["c"]})
    fp = fingerprint(ds, progress=False)
    assert fp["cases"] == {"total": 3, "patients": 3, "labelled": 3, "per_split": {"train": 2, "test": 1}}
    assert fp["class_voxels"]["organ"] == {"train": 25, "test": 25}
    assert fp["class_voxels"]["bg"]["train"] == 400 - 29 + 400
    assert fp["class_fraction"]["tiny"] == pytest.approx(8 / 1200)
    it = fp["intensity"][0]
    fg = np.concatenate([img[lab > 0], img[lab > 0]])  # case b has an empty label: no foreground
    assert it["foreground"] and it["min"] == fg.min() and it["max"] == fg.max()
    assert it["mean"] == pytest.approx(fg.mean()) and it["percentiles"]["50"] == pytest.approx(np.percentile(fg, 50))
    assert fp["spacing"]["median"] == [1.0, 1.0] and fp["spacing"]["max"] == [1.0, 2.0]
    assert fp["spacing"]["anisotropy_max"] == 2.0
    assert fp["shape"] == {"median": [20.0, 20.0], "min": [20, 20], "max": [20, 20]}
    text = " | ".join(fp["warnings"])
    assert "heavy class imbalance: 'tiny'" in text and "'organ' covers" not in text
    assert "empty label" in text and ": b" in text
    assert "inconsistent spacing along axis 1" in text
    assert "very small" not in text


def test_small_cases_and_multi_label(tmp_path: Path) -> None:
    big = np.ones((2, 32, 32), bool)
    small = np.ones((2, 4, 32), bool)
    cases = [
        Case.from_spacing(np.ones((1, 32, 32), np.float32), big, (1.0, 1.0), "big"),
        Case.from_spacing(np.ones((1, 4, 32), np.float32), small, (1.0, 1.0), "small"),
    ]
    ds = _ds(tmp_path, cases, ["x", "y"], multi=True)
    fp = fingerprint(ds, progress=False)
    assert fp["class_voxels"]["x"]["unsplit"] == 32 * 32 + 4 * 32
    assert any("very small" in w and "small" in w.split(":")[-1] for w in fp["warnings"])
    assert not any("imbalance" in w for w in fp["warnings"])


def test_unlabelled_data_uses_all_voxels(tmp_path: Path) -> None:
    ds = _ds(tmp_path, [_case("a", np.full((16, 16), 7.0), None)], ["bg", "fg"])
    fp = fingerprint(ds, progress=False)
    assert fp["intensity"][0]["foreground"] is False and fp["intensity"][0]["mean"] == 7.0
    assert any("no case has a label" in w for w in fp["warnings"])


def test_describe_keeps_its_summary(tmp_path: Path) -> None:
    lab = np.zeros((16, 16), np.int16)
    lab[:8] = 1
    ds = _ds(tmp_path, [_case("a", np.ones((16, 16)), lab)], ["bg", "fg"])
    d = describe(ds, progress=False)
    assert d["summary"]["cases"] == 1 and d["class_voxels"]["fg"] == {"unsplit": 128}
    assert "CT intensity (foreground)" in d["summary"]


def test_inspect_cli_writes_fingerprint(tmp_path: Path, rng: np.random.Generator) -> None:
    from helpers import make_gi

    (tmp_path / "gi").mkdir()
    make_gi(tmp_path / "gi", rng, days={"case1_day1": 2, "case2_day1": 3})
    runner = CliRunner()
    res = runner.invoke(app, ["import", "kaggle-gi", str(tmp_path / "gi"), "--out", str(tmp_path / "ds"), "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["inspect", str(tmp_path / "ds"), "--no-progress"])
    assert res.exit_code == 0, res.output
    fp = json.loads((tmp_path / "ds" / "fingerprint.json").read_text())
    assert fp["cases"]["total"] == 2 and fp["multi_label"] and set(fp["class_voxels"]) == {"large_bowel", "small_bowel", "stomach"}
    assert "fingerprint written" in res.output and "Voxels per class" in res.output
    res = runner.invoke(app, ["inspect", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output
