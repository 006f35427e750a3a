"""`medseg import`: help lists the formats; bad input exits non-zero with one line and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import app
from medseg.data.formats import FORMATS

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_every_format() -> None:
    res = invoke("import", "--help")
    assert res.exit_code == 0
    for name in FORMATS.names():
        assert name in res.output
    assert {"dicom", "msd", "nifti", "csv", "kaggle-gi", "numpy", "sunnybrook", "images"} <= set(FORMATS.names())


def _gi(root: Path, rng: np.random.Generator) -> Path:
    from helpers import make_gi

    root.mkdir()
    make_gi(root, rng, days={"case1_day1": 2, "case2_day1": 2, "case3_day1": 2})
    return root


def test_import_then_overwrite(tmp_path: Path, rng: np.random.Generator) -> None:
    src = _gi(tmp_path / "gi", rng)
    out = tmp_path / "ds"
    res = invoke("import", "kaggle-gi", src, "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "wrote 3 cases" in res.output
    assert json.loads((out / "splits.json").read_text())["train"]
    before = (out / "dataset.json").read_text()
    res = invoke("import", "kaggle-gi", src, "--out", out, "--no-progress")
    assert res.exit_code == 2 and "already exists" in res.output and "--overwrite" in res.output
    assert (out / "dataset.json").read_text() == before
    res = invoke("import", "kaggle-gi", src, "--out", out, "--overwrite", "--option", "classes=[stomach, small_bowel, large_bowel]", "--no-progress")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "dataset.json").read_text())["classes"][0]["name"] == "stomach"


def _bad_rle(tmp: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    src = _gi(tmp / "gi", rng)
    text = (src / "train.csv").read_text().splitlines()
    parts = text[1].split(",")
    text[1] = ",".join([*parts[:2], "1 2 3"])
    (src / "train.csv").write_text("\n".join(text) + "\n")
    return ["kaggle-gi", str(src)], "train.csv:2"


def _not_dicom(tmp: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    from helpers import write_series

    write_series(tmp / "dcm")
    (tmp / "dcm" / "junk.dcm").write_text("hello")
    return ["dicom", str(tmp / "dcm")], "junk.dcm"


def _float_label(tmp: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    from helpers import make_pair, oblique, save

    make_pair(tmp / "nii", rng)
    save(tmp / "nii" / "labels" / "case_01.nii.gz", rng.random((6, 7, 5)).astype(np.float32), oblique())
    return ["nifti", str(tmp / "nii")], "case_01.nii.gz"


def _msd_keys(tmp: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    (tmp / "Task").mkdir()
    (tmp / "Task" / "dataset.json").write_text('{"name": "x"}')
    return ["msd", str(tmp / "Task")], "dataset.json"


def _npy_mismatch(tmp: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    (tmp / "npy").mkdir()
    np.save(tmp / "npy" / "train_images.npy", np.zeros((3, 4, 4), np.float32))
    np.save(tmp / "npy" / "train_labels.npy", np.zeros((2, 4, 4), np.uint8))
    return ["numpy", str(tmp / "npy")], "train_labels.npy"


def _sunnybrook_line(tmp: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    from helpers import make_sunnybrook

    con = make_sunnybrook(tmp / "sb")
    (con / "IM-0001-0048-ocontour-manual.txt").write_text("1 1\nfoo bar\n")
    return ["sunnybrook", str(tmp / "sb")], "ocontour-manual.txt:2"


def _zero_cases(tmp: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    (tmp / "gi").mkdir()
    (tmp / "gi" / "train.csv").write_text("id,class,segmentation\n")
    return ["kaggle-gi", str(tmp / "gi")], "train.csv"


def _unknown_option(tmp: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    (tmp / "x").mkdir()
    return ["numpy", str(tmp / "x"), "--option", "colour=red"], "--option"


def _unknown_format(tmp: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    return ["dicomm", str(tmp)], "did you mean dicom"


@pytest.mark.parametrize(
    "make",
    [_bad_rle, _not_dicom, _float_label, _msd_keys, _npy_mismatch, _sunnybrook_line, _zero_cases, _unknown_option, _unknown_format],
)
def test_bad_input_exits_with_one_line(tmp_path: Path, rng: np.random.Generator, make: Callable) -> None:
    args, name = make(tmp_path, rng)
    out = tmp_path / "out"
    res = invoke("import", *args, "--out", out, "--no-progress")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and name in lines[0], res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
