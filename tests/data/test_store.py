from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.core.case import Case, make_affine
from medseg.core.errors import DatasetError
from medseg.data.store import DatasetInfo, load_dataset, make_classes, write_dataset


def _info(dims: int = 3, multi: bool = False, n_classes: int = 3) -> DatasetInfo:
    names = [f"c{i}" for i in range(n_classes)]
    return DatasetInfo(name="t", dims=dims, modalities=["CT"], classes=make_classes(names, background=not multi), multi_label=multi)


def _oblique_affine(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return make_affine((0.7, 0.9123456789, 2.5), tuple(rng.normal(size=3) * 100), q)


def _case(rng: np.random.Generator, cid: str = "a", shape: tuple[int, ...] = (4, 5, 6), patient: str = "") -> Case:
    img = rng.normal(size=(1, *shape)).astype(np.float32)
    lab = rng.integers(0, 3, size=shape)
    return Case(img, lab, _oblique_affine(rng) if len(shape) == 3 else make_affine((0.5, 0.75)), cid, patient, meta={"k": 1})


def test_round_trip_keeps_arrays_and_geometry_exactly(tmp_path: Path, rng: np.random.Generator) -> None:
    cases = [_case(rng, "a", patient="p1"), _case(rng, "b", patient="p1"), _case(rng, "c", patient="p2")]
    ds = write_dataset(tmp_path / "ds", _info(), iter(cases))
    assert ds.case_ids == ["a", "b", "c"]
    assert ds.patients == {"a": "p1", "b": "p1", "c": "p2"}
    for orig in cases:
        back = ds.load_case(orig.case_id)
        np.testing.assert_array_equal(back.image, orig.image)
        np.testing.assert_array_equal(back.label, orig.label)
        assert back.affine.dtype == np.float64
        np.testing.assert_array_equal(back.affine, orig.affine)  # bit-exact
        assert back.spacing == orig.spacing
        assert back.origin == orig.origin
        np.testing.assert_array_equal(back.direction, orig.direction)
        assert back.meta["k"] == 1


def test_geometry_properties_compose_back_to_the_affine(rng: np.random.Generator) -> None:
    c = _case(rng)
    np.testing.assert_allclose(make_affine(c.spacing, c.origin, c.direction), c.affine, atol=1e-12)
    np.testing.assert_allclose(c.spacing, (0.7, 0.9123456789, 2.5))


def test_multilabel_and_2d_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    lab = rng.random((2, 8, 9)) > 0.5
    c = Case(rng.normal(size=(1, 8, 9)), lab, make_affine((1.5, 2.0), (3.0, -4.0)), "m")
    ds = write_dataset(tmp_path / "ml", _info(dims=2, multi=True, n_classes=2), [c])
    back = ds.load_case("m")
    assert back.multi_label and back.label.dtype == bool
    np.testing.assert_array_equal(back.label, lab)
    assert back.spacing == (1.5, 2.0) and back.origin == (3.0, -4.0)


def test_missing_dataset_json(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: no dataset.json.*fix: "):
        load_dataset(tmp_path / "empty")


def test_missing_case_file(tmp_path: Path, rng: np.random.Generator) -> None:
    ds = write_dataset(tmp_path / "ds", _info(), [_case(rng, "a"), _case(rng, "b")])
    (ds.root / "cases" / "b.npz").unlink()
    with pytest.raises(DatasetError, match=r"b.npz: case 'b' is listed but its file is missing"):
        load_dataset(ds.root)


def test_duplicate_case_ids_in_dataset_json(tmp_path: Path, rng: np.random.Generator) -> None:
    ds = write_dataset(tmp_path / "ds", _info(), [_case(rng, "a"), _case(rng, "b")])
    meta = json.loads((ds.root / "dataset.json").read_text())
    meta["cases"][1]["id"] = "a"
    (ds.root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="duplicate case id 'a'"):
        load_dataset(ds.root)


def test_bad_dataset_json_field_is_named(tmp_path: Path, rng: np.random.Generator) -> None:
    ds = write_dataset(tmp_path / "ds", _info(), [_case(rng, "a")])
    meta = json.loads((ds.root / "dataset.json").read_text())
    meta["dims"] = 4
    (ds.root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"dataset.json: field 'dims'"):
        load_dataset(ds.root)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: setattr(c, "label", c.label[:, :, :-1]), "label shape .* does not match image shape"),
        (lambda c: setattr(c, "label", np.where(c.label == 2, 7, c.label)), r"label values \[7\] are not among the 3 classes"),
        (lambda c: c.image.__setitem__((0, 0, 0, 0), np.nan), "NaN/Inf"),
        (lambda c: c.image.__setitem__((0, 1, 1, 1), np.inf), "NaN/Inf"),
    ],
)
def test_bad_cases_are_refused_and_nothing_is_written(tmp_path: Path, rng: np.random.Generator, mutate, message: str) -> None:
    good, bad = _case(rng, "good"), _case(rng, "bad")
    mutate(bad)
    with pytest.raises(DatasetError, match=message) as err:
        write_dataset(tmp_path / "out", _info(), [good, bad])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary leftovers either


def test_bad_case_file_detected_on_load(tmp_path: Path, rng: np.random.Generator) -> None:
    ds = write_dataset(tmp_path / "ds", _info(), [_case(rng, "a")])
    path = ds.root / "cases" / "a.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["image"][0, 0, 0, 0] = np.nan
    np.savez_compressed(path, **arrays)
    with pytest.raises(DatasetError, match=r"a.npz: image holds 1 NaN/Inf values"):
        ds.load_case("a")


def test_duplicate_ids_and_existing_output_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    with pytest.raises(DatasetError, match="duplicate case id 'a'"):
        write_dataset(tmp_path / "d1", _info(), [_case(rng, "a"), _case(rng, "a")])
    assert not (tmp_path / "d1").exists()
    write_dataset(tmp_path / "d2", _info(), [_case(rng, "a")])
    with pytest.raises(DatasetError, match="already exists"):
        write_dataset(tmp_path / "d2", _info(), [_case(rng, "b")])
    assert load_dataset(tmp_path / "d2").case_ids == ["a"]
    assert write_dataset(tmp_path / "d2", _info(), [_case(rng, "b")], overwrite=True).case_ids == ["b"]


def test_zero_cases_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no cases"):
        write_dataset(tmp_path / "z", _info(), [])
    assert not (tmp_path / "z").exists()
