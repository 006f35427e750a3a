"""Kaggle RLE codec and the GI-tract PNG + CSV importer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ORGANS, make_gi
from medseg.data.formats import FormatError, import_dataset
from medseg.data.formats.rle import rle_decode, rle_encode, write_rle_csv
from medseg.data.store import load_dataset

# ---------------------------------------------------------------- codec


@pytest.mark.parametrize(
    ("rle", "order", "expected_on"),
    [
        ("1 2", "row", [(0, 0), (0, 1)]),  # 1-based start: pixels 0 and 1 of row 0
        ("1 2", "column", [(0, 0), (1, 0)]),  # column-major: down the first column
        ("4 1 12 1", "row", [(0, 3), (2, 3)]),  # W = 4: pixel 3 is (0, 3), pixel 11 is (2, 3)
        ("4 1 12 1", "column", [(3, 0), (3, 2)]),  # H = 4: pixel 3 is (3, 0), pixel 11 is (3, 2)
    ],
)
def test_rle_decode_convention(rle: str, order: str, expected_on: list[tuple[int, int]]) -> None:
    mask = rle_decode(rle, (4, 4), order)  # type: ignore[arg-type]
    assert sorted(zip(*np.nonzero(mask), strict=True)) == sorted(expected_on)


@pytest.mark.parametrize("order", ["row", "column"])
@pytest.mark.parametrize("shape", [(7, 5), (1, 1), (16, 9)])
def test_rle_round_trips_exactly(order: str, shape: tuple[int, int], rng: np.random.Generator) -> None:
    for density in (0.0, 0.3, 1.0):
        m = rng.random(shape) < density
        rle = rle_encode(m, order)  # type: ignore[arg-type]
        assert np.array_equal(rle_decode(rle, shape, order), m)  # type: ignore[arg-type]
    assert rle_encode(np.zeros(shape, bool)) == ""
    assert rle_encode(np.ones(shape, bool)) == f"1 {shape[0] * shape[1]}"


@pytest.mark.parametrize(
    ("rle", "problem"),
    [("1 2 3", "odd number"), ("10 10", "past the image end"), ("1 x", "non-numeric"), ("0 2", "start < 1")],
)
def test_rle_bad_strings(rle: str, problem: str) -> None:
    with pytest.raises(FormatError, match=problem) as e:
        rle_decode(rle, (3, 3), where="train.csv:7")
    assert "train.csv:7" in str(e.value) and "\n" not in str(e.value)


def test_write_rle_csv(tmp_path: Path, rng: np.random.Generator) -> None:
    m = rng.random((6, 5)) < 0.4
    out = write_rle_csv(tmp_path / "sub.csv", [("case1_day1_slice_0001", "stomach", m)])
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "class", "segmentation"]
    assert np.array_equal(rle_decode(rows[1][2], m.shape), m)


# ---------------------------------------------------------------- importer fixtures


def test_gi_import_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    src = tmp_path / "gi"
    src.mkdir()
    truth = make_gi(src, rng)
    ds = import_dataset("kaggle-gi", src, tmp_path / "out")
    assert ds.info.multi_label and ds.info.class_names == ORGANS and ds.info.dims == 3
    assert sorted(ds.case_ids) == ["case1_day1", "case1_day3", "case7_day0"]
    assert ds.patients["case1_day3"] == "case1"
    case = ds.load_case("case7_day0")
    assert case.image.shape == (1, 4, 10, 12) and case.label.shape == (3, 4, 10, 12)
    assert case.spacing == pytest.approx((3.0, 1.25, 1.5))  # (slice, pixel height, pixel width)
    for s in range(1, 5):
        assert np.array_equal(case.image[0, s - 1], truth[("case7_day0", s, "image")])
        for k, organ in enumerate(ORGANS):
            assert np.array_equal(case.label[k, s - 1], truth[("case7_day0", s, organ)])
    # re-encoding what was imported gives the CSV back
    assert rle_encode(case.label[2, 0]) == rle_encode(truth[("case7_day0", 1, "stomach")])
    splits = (tmp_path / "out" / "splits.json").read_text()
    assert "case1_day1" in splits


def test_gi_column_major(tmp_path: Path, rng: np.random.Generator) -> None:
    src = tmp_path / "gi"
    src.mkdir()
    truth = make_gi(src, rng, days={"case2_day1": 2}, order="column")
    ds = import_dataset("kaggle-gi", src, tmp_path / "out", order="column")
    case = ds.load_case("case2_day1")
    assert np.array_equal(case.label[0, 1], truth[("case2_day1", 2, ORGANS[0])])
    # the same file read row-major gives other masks: the order matters and is an explicit option
    ds2 = import_dataset("kaggle-gi", src, tmp_path / "out2", order="row")
    assert not np.array_equal(ds2.load_case("case2_day1").label[0, 1], truth[("case2_day1", 2, ORGANS[0])])


def _rewrite_csv(src: Path, line: int, column: int, value: str) -> None:
    rows = list(csv.reader((src / "train.csv").open()))
    rows[line - 1][column] = value
    with open(src / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.mark.parametrize(
    ("line", "column", "value", "problem"),
    [
        (3, 2, "1 2 3", "odd number"),
        (3, 2, "100 50", "past the image end"),
        (3, 2, "1 two", "non-numeric"),
        (3, 0, "case9_day9_slice_0001", "matches no PNG"),
    ],
)
def test_gi_bad_csv(tmp_path: Path, rng: np.random.Generator, line: int, column: int, value: str, problem: str) -> None:
    src = tmp_path / "gi"
    src.mkdir()
    make_gi(src, rng)
    _rewrite_csv(src, line, column, value)
    out = tmp_path / "out"
    with pytest.raises(FormatError, match=problem) as e:
        import_dataset("kaggle-gi", src, out)
    assert "train.csv:3" in str(e.value) and "\n" not in str(e.value)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_gi_png_size_differs_from_name(tmp_path: Path, rng: np.random.Generator) -> None:
    src = tmp_path / "gi"
    src.mkdir()
    make_gi(src, rng)
    png = next(src.rglob("slice_0002_12_10_*.png"))
    Image.fromarray(np.zeros((10, 11), np.uint16)).save(png)
    out = tmp_path / "out"
    with pytest.raises(FormatError, match="name says 12×10") as e:
        import_dataset("kaggle-gi", src, out)
    assert png.name in str(e.value)
    assert not out.exists()


def test_gi_written_dataset_reloads(tmp_path: Path, rng: np.random.Generator) -> None:
    src = tmp_path / "gi"
    src.mkdir()
    make_gi(src, rng, days={"case3_day2": 2})
    import_dataset("kaggle-gi", src, tmp_path / "out")
    ds = load_dataset(tmp_path / "out")
    assert len(ds) == 1 and ds.load_case("case3_day2").label.dtype == bool


@pytest.mark.parametrize("rle", ["3 0", "1 2 7 0", "0 2", "4 -1"])
def test_rle_refuses_empty_or_negative_runs_and_zero_starts(rle: str) -> None:
    with pytest.raises(FormatError, match="start < 1 or a length ≤ 0"):
        rle_decode(rle, (4, 4))
