"""Surface metrics against MedPy, DeepMind's surface-distance and MONAI, each under its convention."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.metrics.surface import surface_metrics, surface_metrics_per_class, surface_points, worst_distance

medpy_binary = pytest.importorskip("medpy.metric.binary")
sd = pytest.importorskip("surface_distance")
monai_metrics = pytest.importorskip("monai.metrics")

TOL = 1e-6


def _random_pairs(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...], float]]:
    """Blobby random mask pairs: half 2D, half anisotropic 3D, small enough to be fast."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        if len(out) % 2:
            shape, spacing = (18, 22), tuple(rng.uniform(0.3, 2.0, 2))
        else:
            shape, spacing = (9, 14, 12), (float(rng.uniform(1.5, 4.0)), *rng.uniform(0.4, 1.2, 2))
        sigma = rng.uniform(0.8, 2.0)
        a = ndimage.gaussian_filter(rng.standard_normal(shape), sigma) > rng.uniform(0.0, 0.3)
        b = ndimage.gaussian_filter(rng.standard_normal(shape), sigma) > rng.uniform(0.0, 0.3)
        if rng.random() < 0.3:  # overlapping pairs too: a perturbed copy
            b = a ^ (rng.random(shape) < 0.05)
        if a.any() and b.any():
            out.append((a, b, tuple(float(s) for s in spacing), float(rng.uniform(0.5, 3.0))))
    return out


PAIRS = _random_pairs(110)


def _edge_pairs() -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    full = np.ones((6, 7), bool)
    one = np.zeros((6, 7), bool)
    one[0, 0] = True
    line = np.zeros((8, 9, 10), bool)
    line[4, 4, :] = True
    plane = np.zeros((8, 9, 10), bool)
    plane[:, 3, :] = True
    box = np.zeros((8, 9, 10), bool)
    box[1:7, 2:8, 3:9] = True
    corner = np.zeros((8, 9, 10), bool)
    corner[-1, -1, -1] = True
    far = np.zeros((6, 7), bool)
    far[5, 6] = True
    return [
        (full, full, (1.0, 1.0)),  # identical, touching every border
        (one, one, (0.7, 1.3)),  # single voxel, identical
        (one, far, (0.7, 1.3)),  # single voxels in opposite corners
        (full, one, (1.0, 2.0)),  # whole image vs one voxel
        (line, plane, (2.5, 0.8, 0.8)),  # thin structures
        (box, corner, (3.0, 1.0, 1.0)),
        (box, box, (1.0, 1.0, 1.0)),
    ]


def _one_hot(m: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.stack([~m, m])[None].astype(np.float32))


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


@pytest.mark.parametrize("i", range(len(PAIRS)))
def test_medpy_convention(i: int) -> None:
    a, b, sp, _ = PAIRS[i]
    m = surface_metrics(a, b, sp, hd95_mode="medpy", assd_mode="medpy")
    assert _close(m["hd95"], medpy_binary.hd95(a, b, voxelspacing=sp))
    assert _close(m["assd"], medpy_binary.assd(a, b, voxelspacing=sp))
    assert _close(m["hd"], medpy_binary.hd(a, b, voxelspacing=sp))


@pytest.mark.parametrize("i", range(len(PAIRS)))
def test_deepmind_convention(i: int) -> None:
    a, b, sp, tol = PAIRS[i]
    m = surface_metrics(a, b, sp, tolerance_mm=tol, hd95_mode="deepmind", assd_mode="deepmind", nsd_mode="deepmind")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        s = sd.compute_surface_distances(b, a, sp)
    assert _close(m["hd95"], sd.compute_robust_hausdorff(s, 95))
    assert _close(m["hd"], sd.compute_robust_hausdorff(s, 100))
    assert _close(m["nsd"], sd.compute_surface_dice_at_tolerance(s, tol))
    assert _close(m["assd"], float(np.mean(sd.compute_average_surface_distance(s))))


def _monai(a: np.ndarray, b: np.ndarray, sp: tuple[float, ...], tol: float) -> dict[str, float]:
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, metric in (
            ("hd95", monai_metrics.HausdorffDistanceMetric(percentile=95)),
            ("hd", monai_metrics.HausdorffDistanceMetric()),
            ("assd", monai_metrics.SurfaceDistanceMetric(symmetric=True)),
            ("nsd", monai_metrics.SurfaceDiceMetric([tol])),
            ("nsd_subvoxel", monai_metrics.SurfaceDiceMetric([tol], use_subvoxels=True)),
        ):
            metric(_one_hot(a), _one_hot(b), spacing=sp)
            out[key] = float(metric.aggregate().item())
    return out


@pytest.mark.parametrize("i", range(len(PAIRS)))
def test_monai_convention(i: int) -> None:
    a, b, sp, tol = PAIRS[i]
    m = surface_metrics(a, b, sp, tolerance_mm=tol, hd95_mode="monai", assd_mode="monai", nsd_mode="monai")
    ref = _monai(a, b, sp, tol)
    for k in ("hd95", "hd", "assd", "nsd"):
        assert _close(m[k], ref[k]), (k, m[k], ref[k])  # MONAI returns float32: rel 1e-6
    dm = surface_metrics(a, b, sp, tolerance_mm=tol, nsd_mode="deepmind")
    assert _close(dm["nsd"], ref["nsd_subvoxel"])


@pytest.mark.parametrize("i", range(len(_edge_pairs())))
def test_edge_cases_against_all_references(i: int) -> None:
    a, b, sp = _edge_pairs()[i]
    tol = 1.0
    med = surface_metrics(a, b, sp, hd95_mode="medpy", assd_mode="medpy")
    assert _close(med["hd95"], medpy_binary.hd95(a, b, voxelspacing=sp))
    assert _close(med["assd"], medpy_binary.assd(a, b, voxelspacing=sp))
    mon = surface_metrics(a, b, sp, tolerance_mm=tol, hd95_mode="monai", assd_mode="monai", nsd_mode="monai")
    ref = _monai(a, b, sp, tol)
    for k in ("hd95", "hd", "assd", "nsd"):
        assert _close(mon[k], ref[k]), (k, mon[k], ref[k])
    dm = surface_metrics(a, b, sp, tolerance_mm=tol, hd95_mode="deepmind", assd_mode="deepmind", nsd_mode="deepmind")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        s = sd.compute_surface_distances(b, a, sp)
    assert _close(dm["hd95"], sd.compute_robust_hausdorff(s, 95))
    assert _close(dm["nsd"], sd.compute_surface_dice_at_tolerance(s, tol))


def test_identical_masks_score_perfectly() -> None:
    a = PAIRS[0][0]
    for mode in ("medpy", "monai", "deepmind"):
        m = surface_metrics(a, a, (2.0, 1.0, 1.0), hd95_mode=mode, assd_mode=mode)
        assert m["hd"] == m["hd95"] == m["assd"] == 0.0
        assert m["nsd"] == 1.0


def test_conventions_differ_where_documented() -> None:
    """The modes are not aliases: on some pair each pair of conventions disagrees."""
    diff = {"hd95": False, "nsd": False, "assd": False}
    for a, b, sp, tol in PAIRS[:40]:
        med = surface_metrics(a, b, sp, tolerance_mm=tol, hd95_mode="medpy", nsd_mode="monai")
        mon = surface_metrics(a, b, sp, tolerance_mm=tol, hd95_mode="monai", nsd_mode="deepmind", assd_mode="deepmind")
        diff["hd95"] |= not _close(med["hd95"], mon["hd95"])
        diff["nsd"] |= not _close(med["nsd"], mon["nsd"])
        diff["assd"] |= not _close(med["assd"], mon["assd"])
    assert all(diff.values()), diff


def test_empty_policies() -> None:
    empty = np.zeros((5, 6, 7), bool)
    blob = empty.copy()
    blob[1:3, 2:4, 2:5] = True
    sp = (2.0, 1.0, 0.5)
    both = surface_metrics(empty, empty, sp)
    assert all(math.isnan(v) for v in both.values())
    assert surface_metrics(empty, empty, sp, empty_both="best") == {"hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    diag = worst_distance(empty.shape, sp)
    assert diag == pytest.approx(math.sqrt(10**2 + 6**2 + 3.5**2))
    for pred, ref in ((blob, empty), (empty, blob)):
        worst = surface_metrics(pred, ref, sp)
        assert worst == {"hd": diag, "hd95": diag, "assd": diag, "nsd": 0.0}
        assert math.isinf(surface_metrics(pred, ref, sp, empty_one="inf")["hd95"])
        nan = surface_metrics(pred, ref, sp, empty_one="nan")
        assert math.isnan(nan["assd"]) and nan["nsd"] == 0.0


def test_per_class_and_tolerances() -> None:
    lab_p = np.zeros((12, 12), np.int16)
    lab_r = np.zeros((12, 12), np.int16)
    lab_p[2:6, 2:6] = 1
    lab_r[2:7, 2:6] = 1
    lab_r[8:10, 8:10] = 2
    out = surface_metrics_per_class(lab_p, lab_r, [1, 2, 3], spacing=(1.0, 1.0), tolerances_mm=[0.5, 1.0, 1.0])
    assert out["hd"][0] == pytest.approx(1.0)
    assert out["nsd"][1] == 0.0 and out["hd"][1] == pytest.approx(worst_distance((12, 12)))
    assert math.isnan(out["hd"][2])
    ml = surface_metrics_per_class(np.stack([lab_p == 1]), np.stack([lab_r == 1]), [0], spacing=(1.0, 1.0), multi_label=True)
    assert ml["hd"][0] == out["hd"][0]
    with pytest.raises(ValueError, match="tolerances"):
        surface_metrics_per_class(lab_p, lab_r, [1, 2], spacing=(1.0, 1.0), tolerances_mm=[1.0])


def test_bad_arguments() -> None:
    a = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="shape"):
        surface_metrics(a, np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="hd95_mode"):
        surface_metrics(a, a, hd95_mode="scipy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        surface_points(a, np.zeros_like(a))


def test_small_objects_in_a_large_image() -> None:
    """Objects far from the image border: the bounding-box crop must not change any value."""
    a, b, sp, tol = PAIRS[0]
    big_a = np.zeros((30, 40, 40), bool)
    big_b = big_a.copy()
    window = (slice(10, 10 + a.shape[0]), slice(5, 5 + a.shape[1]), slice(20, 20 + a.shape[2]))
    big_a[window], big_b[window] = a, b
    med = surface_metrics(big_a, big_b, sp, hd95_mode="medpy", assd_mode="medpy")
    assert _close(med["hd95"], medpy_binary.hd95(big_a, big_b, voxelspacing=sp))
    assert _close(med["assd"], medpy_binary.assd(big_a, big_b, voxelspacing=sp))
    dm = surface_metrics(big_a, big_b, sp, tolerance_mm=tol, hd95_mode="deepmind", nsd_mode="deepmind")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        s = sd.compute_surface_distances(big_b, big_a, sp)
    assert _close(dm["hd95"], sd.compute_robust_hausdorff(s, 95))
    assert _close(dm["nsd"], sd.compute_surface_dice_at_tolerance(s, tol))


def test_one_empty_matches_deepmind_under_inf_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)  # the package predates NumPy 2
    a = PAIRS[0][0]
    empty = np.zeros_like(a)
    sp = PAIRS[0][2]
    for pred, ref in ((a, empty), (empty, a)):
        m = surface_metrics(pred, ref, sp, hd95_mode="deepmind", nsd_mode="deepmind", empty_one="inf")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = sd.compute_surface_distances(ref, pred, sp)
            assert m["hd95"] == sd.compute_robust_hausdorff(s, 95) == math.inf
            assert m["nsd"] == sd.compute_surface_dice_at_tolerance(s, 1.0) == 0.0


def test_spacing_must_match_dimensions() -> None:
    a = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(a, a, (1.0, 1.0, 1.0))
