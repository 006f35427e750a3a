"""Preprocessing: exact inversion, geometry, normalisation schemes, the cache and its hash, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.config import config_from_dict
from medseg.core.case import Case
from medseg.core.errors import ConfigError, DatasetError
from medseg.data.preprocessing import Cache, PreprocessSpec, invert_label, invert_probabilities, prepare, preprocess_case, preprocess_pair, resolve_spec
from medseg.data.store import DatasetInfo, load_dataset, make_classes, save_case, write_dataset

OBLIQUE = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # axis 0 → S, axis 2 → L


def _case(rng: np.random.Generator, spacing=(3.0, 1.0, 1.0), direction=OBLIQUE, shape=(10, 20, 24), multi=False) -> Case:
    img = rng.normal(size=(1, *shape)).astype(np.float32)
    img[:, :2] = 0
    img[:, :, :3] = 0
    lab = np.zeros(shape, np.int16)
    lab[3:7, 5:15, 6:20] = 1
    lab[4:6, 8:12, 8:10] = 2
    if multi:
        lab = np.stack([lab == 1, lab > 0])
    return Case.from_spacing(img, lab, spacing, "c1", origin=(5.0, -6.0, 7.0), direction=direction)


@pytest.mark.parametrize(
    "spec",
    [
        dict(orientation="RAS"),
        dict(orientation="RAS", crop="nonzero", pad_to=[30, 30, 30]),
        dict(crop="foreground", crop_margin=2),
        dict(orientation="RAS", crop="nonzero", crop_margin=1, pad_to=[4, 40, 40], normalize=["clip01"]),
    ],
)
def test_label_round_trip_is_exact_for_orientation_crop_pad(rng: np.random.Generator, spec: dict) -> None:
    case = _case(rng)
    s = PreprocessSpec(dims=3, **spec)
    img, lab, rec = preprocess_pair(case, s)
    assert img.shape[1:] == lab.shape[1:] == tuple(rec["shape"])
    back = invert_label(lab, rec)
    assert back.shape == (1, *case.spatial_shape) and np.array_equal(back[0], case.label)
    assert np.array_equal(invert_label(lab[0], rec), case.label)
    json.dumps(rec)  # the record is plain JSON


def test_orientation_and_crop_keep_world_positions(rng: np.random.Generator) -> None:
    case = _case(rng)
    img, _, rec = preprocess_pair(case, PreprocessSpec(dims=3, orientation="RAS", crop="nonzero", pad_to=[30, 30, 30], normalize=["none"]))
    new_aff = np.array(rec["affine"])
    assert np.allclose(np.diag(new_aff)[:3], [1.0, 1.0, 3.0])  # axes now R, A, S with positive steps
    for idx in [(5, 7, 9), (2, 3, 4), (9, 19, 23)]:
        world = case.affine @ np.array([*idx, 1.0])
        j = np.rint(np.linalg.solve(new_aff, world)[:3]).astype(int)
        assert img[(0, *j)] == case.image[(0, *idx)]


def test_resampling_round_trip_nearest_at_integer_factors(rng: np.random.Generator) -> None:
    case = _case(rng, spacing=(2.0, 1.0, 1.0), direction=None)
    _, lab, rec = preprocess_pair(case, PreprocessSpec(dims=3, spacing=[1.0, 0.5, 0.5]))
    assert lab.shape == (1, 20, 40, 48) and np.allclose(rec["spacing"], [1.0, 0.5, 0.5])
    assert np.array_equal(invert_label(lab[0], rec), case.label)
    # same extent in the world: the first voxel centre moves by half the old voxel minus half the new one
    assert np.allclose(np.array(rec["affine"])[:3, 3], np.array(case.origin) + np.array([-0.5, -0.25, -0.25]))
    probs = np.stack([lab[0] == k for k in range(3)]).astype(np.float32)
    back = invert_probabilities(probs, rec)
    assert back.shape == (3, *case.spatial_shape) and np.array_equal(back.argmax(0), case.label)


def test_anisotropic_axis_resampled_separately(rng: np.random.Generator) -> None:
    case = _case(rng, spacing=(6.0, 1.0, 1.0), direction=None, shape=(4, 16, 16))
    img, lab, rec = preprocess_pair(case, PreprocessSpec(dims=3, spacing=[3.0, 0.5, 0.5], normalize=["none"]))
    (step,) = [s for s in rec["steps"] if s["op"] == "resample"]
    assert step["coarse_axis"] == 0
    # nearest along the coarse axis: every new slice is an exact (in-plane resampled) copy of an old one
    assert np.array_equal(img[0, 0], img[0, 1])
    assert np.array_equal(invert_label(lab, rec)[0], case.label)


def test_resize_and_multilabel_round_trip(rng: np.random.Generator) -> None:
    case = _case(rng, multi=True, direction=None)
    img, lab, rec = preprocess_pair(case, PreprocessSpec(dims=3, resize=[20, 40, 48]))
    assert img.shape == (1, 20, 40, 48) and lab.shape == (2, 20, 40, 48) and lab.dtype == np.uint8
    back = invert_label(lab.astype(bool), rec)
    assert back.dtype == bool and np.array_equal(back, case.label)
    probs = invert_probabilities(lab.astype(np.float32), rec, multi_label=True)
    assert probs.shape == (2, *case.spatial_shape)


def test_in_plane_resize_of_a_volume_cut_into_slices(tmp_path: Path, rng: np.random.Generator) -> None:
    root = _dataset(tmp_path / "vols", rng, n=1)
    ds = load_dataset(root)
    cfg = config_from_dict({"data": {"dataset": str(root), "slices": True, "slice_axis": 0, "preprocess": {"enabled": True, "resize": [12, 30]}}})
    spec = resolve_spec(cfg, ds)
    assert spec.resize == [0, 12, 30]
    case = ds.load_case("p0")
    img, lab, rec = preprocess_pair(case, spec)
    assert img.shape == (1, 10, 12, 30) and lab.shape == (1, 10, 12, 30)
    # each slice resized on its own: slice k equals the 2D resize of slice k (nearest for labels)
    two_d = PreprocessSpec(dims=2, resize=[12, 30], normalize=spec.normalize, intensity=spec.intensity)
    for k in (0, 4, 9):
        sl = Case.from_spacing(case.image[:, k], case.label[k], spacing=(1.0, 1.0), case_id=f"s{k}")
        _, lab2, _ = preprocess_pair(sl, two_d)
        np.testing.assert_array_equal(lab[0, k], lab2[0])
    np.testing.assert_array_equal(invert_label(lab[0], rec), case.label)
    with pytest.raises(ConfigError, match="2 axes but the data set is 3D"):
        resolve_spec(config_from_dict({"data": {"dataset": str(root), "preprocess": {"enabled": True, "resize": [12, 30]}}}), ds)


def test_2d_case_and_preprocess_case_ignores_label(rng: np.random.Generator) -> None:
    img = rng.normal(size=(1, 30, 40)).astype(np.float32)
    lab = np.zeros((30, 40), np.int16)
    lab[10:20, 5:25] = 1
    case = Case.from_spacing(img, lab, (1.0, 1.0), "s")
    spec = PreprocessSpec(dims=2, resize=[64, 64], normalize=["clip01"])
    x, rec = preprocess_case(case, spec.to_dict())
    assert x.shape == (1, 64, 64) and x.min() >= 0.0 and x.max() <= 1.0
    _, y, rec2 = preprocess_pair(case, spec)
    assert rec2["shape"] == rec["shape"] and np.array_equal(invert_label(y[0], rec), lab)
    with pytest.raises(DatasetError, match="does not match the preprocessed shape"):
        invert_label(np.zeros((10, 10), np.int16), rec)


def test_normalisation_schemes(rng: np.random.Generator) -> None:
    img = rng.normal(100, 20, size=(1, 8, 16, 16)).astype(np.float32)
    case = Case.from_spacing(img, None, (1.0, 1.0, 1.0), "n")
    z, _ = preprocess_case(case, PreprocessSpec(dims=3, normalize=["zscore"]))
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    stats = [{"low": 90.0, "high": 110.0, "mean": 100.0, "std": 10.0}]
    ct, rec = preprocess_case(case, PreprocessSpec(dims=3, normalize=["ct"], intensity=stats))
    assert ct.min() >= -1.0 - 1e-6 and ct.max() <= 1.0 + 1e-6 and rec["normalization"][0]["scheme"] == "ct"
    with pytest.raises(ConfigError, match="normalize"):
        PreprocessSpec(dims=3, normalize=["ct"]).check()


@pytest.mark.parametrize("bad", [0.0, float("nan")])
def test_zero_or_nan_spacing_is_refused(rng: np.random.Generator, bad: float) -> None:
    case = _case(rng, spacing=(bad, 1.0, 1.0), direction=None)
    with pytest.raises(DatasetError, match="invalid spacing") as e:
        preprocess_case(case, PreprocessSpec(dims=3))
    assert "\n" not in str(e.value) and "c1" in str(e.value)


def test_spec_checks_axes() -> None:
    with pytest.raises(ConfigError, match="2 axes but the data set is 3D"):
        PreprocessSpec(dims=3, pad_to=[96, 96]).check()
    assert PreprocessSpec(dims=3).hash != PreprocessSpec(dims=3, pad_to=[8, 8, 8]).hash


def _dataset(root: Path, rng: np.random.Generator, n: int = 3) -> Path:
    info = DatasetInfo(name="vols", dims=3, modalities=["CT"], classes=make_classes(["bg", "a", "b"]))
    cases = []
    for i in range(n):
        c = _case(rng)
        c.image = c.image * 100 + 40
        c.case_id = c.patient_id = f"p{i}"
        cases.append(c)
    write_dataset(root, info, cases)
    return root


def test_cache_build_reuse_and_hash_mismatch(tmp_path: Path, rng: np.random.Generator) -> None:
    ds = load_dataset(_dataset(tmp_path / "ds", rng))
    cfg = config_from_dict({"data": {"dataset": str(ds.root), "preprocess": {"enabled": True, "orientation": "RAS", "crop": "nonzero", "spacing": "plan"}}})
    spec = resolve_spec(cfg, ds)
    assert spec.normalize == ["ct"] and spec.intensity[0]["low"] < spec.intensity[0]["high"]
    out = prepare(ds, spec, out=tmp_path / "cache", progress=False)
    cache = Cache(out, spec)
    img = cache.image("p0")
    assert isinstance(img, np.memmap) and img.dtype == np.float32
    rec = cache.record("p0")
    assert np.array_equal(invert_label(np.array(cache.label("p0")), rec)[0], ds.load_case("p0").label)
    assert len(cache.locations("p0")) > 0 and cache.class_voxels("p0")[0] > 0
    mtime = (out / "cache.json").stat().st_mtime_ns
    assert prepare(ds, spec, out=out, progress=False) == out and (out / "cache.json").stat().st_mtime_ns == mtime  # reused
    other = PreprocessSpec.from_dict({**spec.to_dict(), "pad_to": [40, 40, 40]})
    with pytest.raises(DatasetError, match="another preprocessing") as e:
        prepare(ds, other, out=out, progress=False)
    assert "--overwrite" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DatasetError, match="another preprocessing"):
        Cache(out, other)
    prepare(ds, other, out=out, overwrite=True, progress=False)
    assert Cache(out, other).info["hash"] == other.hash


def test_bad_case_leaves_no_half_written_cache(tmp_path: Path, rng: np.random.Generator) -> None:
    root = _dataset(tmp_path / "ds", rng)
    bad = _case(rng, spacing=(0.0, 1.0, 1.0), direction=None)
    bad.case_id = bad.patient_id = "p1"
    save_case(root / "cases" / "p1.npz", bad)  # corrupt geometry behind the store's back
    ds = load_dataset(root)
    with pytest.raises(DatasetError, match="spacing"):
        prepare(ds, PreprocessSpec(dims=3), out=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cache")]
