"""Malformed text inputs found by an adversarial pass: each is refused by `medseg import` in one line, exit 2,
nothing written (RLE, MSD ``dataset.json``, the CSV case list, Sunnybrook contours)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import make_gi, make_sunnybrook, oblique, save
from medseg.cli import app

runner = CliRunner()


def _gi_with(tmp: Path, segmentation: str) -> tuple[list[str], str]:
    src = tmp / "gi"
    src.mkdir()
    make_gi(src, np.random.default_rng(0), days={"case1_day1": 2, "case2_day1": 2})
    lines = (src / "train.csv").read_text().splitlines()
    lines[1] = ",".join([*lines[1].split(",")[:2], segmentation])
    (src / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ["kaggle-gi", str(src)], "train.csv:2"


def _msd_with(tmp: Path, meta: object | bytes) -> tuple[list[str], str]:
    root = tmp / "Task01_X"
    save(root / "imagesTr" / "a.nii.gz", np.zeros((5, 4, 3), np.float32), oblique())
    save(root / "labelsTr" / "a.nii.gz", np.zeros((5, 4, 3), np.uint8), oblique())
    data = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    (root / "dataset.json").write_bytes(data)
    return ["msd", str(root)], "dataset.json"


def _msd(**changes: object) -> dict:
    meta = {
        "name": "x",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "organ"},
        "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}],
    }
    meta.update(changes)
    return meta


def _csv_with(tmp: Path, text: bytes) -> tuple[list[str], str]:
    save(tmp / "images" / "a.nii.gz", np.zeros((5, 4, 3), np.float32), oblique())
    (tmp / "cases.csv").write_bytes(text)
    return ["csv", str(tmp / "cases.csv")], "cases.csv"


def _contour(tmp: Path, text: str) -> tuple[list[str], str]:
    con = make_sunnybrook(tmp / "sb")
    (con / "IM-0001-0048-icontour-manual.txt").write_text(text)
    return ["sunnybrook", str(tmp / "sb")], "icontour-manual.txt:2"


CASES: dict[str, tuple[Callable[[Path], tuple[list[str], str]], str]] = {
    "rle-huge-number": (lambda t: _gi_with(t, "1 99999999999999999999999"), "past the image end"),
    "rle-superscript-two": (lambda t: _gi_with(t, "1 ²"), "non-numeric token '²'"),
    "msd-top-level-string": (lambda t: _msd_with(t, "just a string"), "holds a string, not a JSON object"),
    "msd-top-level-number": (lambda t: _msd_with(t, 42), "holds a number, not a JSON object"),
    "msd-labels-list": (lambda t: _msd_with(t, _msd(labels=["background", "organ"])), "'labels' must be a non-empty mapping, not a list"),
    "msd-labels-string": (lambda t: _msd_with(t, _msd(labels="background")), "'labels' must be a non-empty mapping, not a string"),
    "msd-image-not-a-string": (lambda t: _msd_with(t, _msd(training=[{"image": 7, "label": "./labelsTr/a.nii.gz"}])), "training[0].image must be a file path"),
    "msd-modality-booleans": (lambda t: _msd_with(t, _msd(modality=[True, False])), "'modality' (or 'channel_names') must be a non-empty mapping, not a list"),
    "msd-modality-empty-string": (lambda t: _msd_with(t, _msd(modality="")), "must be a non-empty mapping, not a string"),
    "msd-label-value-twice": (lambda t: _msd_with(t, _msd(labels={"0": "background", "00": "also background", "1": "organ"})), "gives value 0 twice"),
    "msd-invalid-utf8": (lambda t: _msd_with(t, b'{"name": "\xff\xfe"}'), "not UTF-8 text"),
    "msd-deep-nesting": (lambda t: _msd_with(t, b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
    "csv-extra-field": (lambda t: _csv_with(t, b"image,label\nimages/a.nii.gz,,extra\n"), "row has 3 fields but the header names 2 columns"),
    "csv-invalid-utf8": (lambda t: _csv_with(t, b"image\nimages/\xff.nii.gz\n"), "not UTF-8 text"),
    "csv-huge-field": (lambda t: _csv_with(t, b"image\n" + b"a" * 131_073 + b"\n"), "field larger than field limit"),
    "sunnybrook-nan": (lambda t: _contour(t, "20 20\nnan 12\n30 30\n20 30\n"), "NaN or infinity"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_text_input_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    make, expected = CASES[name]
    args, where = make(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["import", *args, "--out", str(out), "--no-progress"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output[-2000:]
    assert expected in lines[0] and where in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_sunnybrook_nan_point_was_a_mask_before(tmp_path: Path) -> None:
    """The contour ``nan 12`` is refused by the contour reader itself, naming the line."""
    from medseg.core.errors import FormatError
    from medseg.data.formats.sunnybrook import read_contour

    path = tmp_path / "c.txt"
    path.write_text("20 20\n30 20\n30 30\ninf 4\n")
    with pytest.raises(FormatError, match=r"c\.txt:4.*NaN or infinity"):
        read_contour(path)
