"""Planning: target spacing, memory-fitted configurations, 2D/3D choice, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.core.errors import ConfigError, DatasetError
from medseg.data.plan import load_plan, make_plan, plan_configuration, shrink_configuration, target_spacing, topology, write_plan


def _fp(spacings: list[list[float]], shapes: list[list[int]], dims: int = 3, modality: str = "MRI") -> dict:
    return {
        "dataset": "x",
        "dims": dims,
        "modalities": [modality],
        "per_case": [{"id": f"c{i}", "spacing": sp, "shape": sh} for i, (sp, sh) in enumerate(zip(spacings, shapes, strict=True))],
    }


def test_target_spacing_median_and_tenth_percentile_on_anisotropic_axis() -> None:
    iso = _fp([[1.0, 1.0, 1.0], [1.2, 1.0, 1.0], [1.4, 1.0, 1.0]], [[64, 64, 64]] * 3)
    assert target_spacing(iso) == ([1.2, 1.0, 1.0], None)
    z = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    aniso = _fp([[s, 0.8, 0.8] for s in z], [[20, 128, 128]] * 6)
    sp, axis = target_spacing(aniso)
    assert axis == 0 and sp[0] == pytest.approx(np.percentile(z, 10)) and sp[1:] == [0.8, 0.8]


def test_configurations_fit_the_memory_budget_and_pool_per_axis() -> None:
    fp = _fp([[1.0, 1.0, 1.0]] * 40, [[200, 256, 256]] * 40, modality="CT")
    small = make_plan(fp, gpu_memory_gb=4, cpu_cores=8)
    big = make_plan(fp, gpu_memory_gb=40, cpu_cores=8)
    for plan, gb in ((small, 4), (big, 40)):
        c3 = plan["configurations"]["3d"]
        assert np.prod(c3["patch_size"]) * c3["batch_size"] <= 2 * 128**3 / 10 * gb * 1.001
        assert all(p % 2**k == 0 for p, k in zip(c3["patch_size"], c3["pool_per_axis"], strict=True))
    assert np.prod(big["configurations"]["3d"]["patch_size"]) > np.prod(small["configurations"]["3d"]["patch_size"])
    assert small["normalization"] == ["ct"] and small["recommended"] == "3d"
    assert set(small["configurations"]) == {"2d", "3d"}


def test_anisotropic_data_pools_the_coarse_axis_late_and_recommends_2d() -> None:
    top = topology([16, 160, 160], [5.0, 0.8, 0.8], 3)
    assert top["pool_per_axis"][0] < top["pool_per_axis"][1] and top["kernel_sizes"][0] == [1, 3, 3]
    plan = make_plan(_fp([[5.0, 0.8, 0.8]] * 4, [[20, 160, 160]] * 4), cpu_cores=2)
    assert plan["recommended"] == "2d" and plan["configurations"]["2d"]["slice_axis"] == 0


def test_shrunk_configuration_keeps_the_rules_of_a_planned_one() -> None:
    """One brain MRI at 2 mm: the planned 3D patch shrinks to the asked share of voxels, stays divisible by its
    poolings, loses stages as it shrinks, never goes below 32 voxels an axis, and keeps batch and spacing."""
    c3 = make_plan(_fp([[2.0, 2.0, 2.0]], [[99, 117, 95]]), cpu_cores=2)["configurations"]["3d"]
    assert c3["patch_size"] == [112, 128, 96] and c3["n_stages"] == 6
    for factor in (0.5, 0.2, 0.1, 0.01):
        small = shrink_configuration(c3, factor)
        patch = small["patch_size"]
        assert min(patch) >= 32 and small["batch_size"] == c3["batch_size"] and small["spacing"] == c3["spacing"]
        assert all(p % 2**k == 0 for p, k in zip(patch, small["pool_per_axis"], strict=True))
        assert small == {**c3, "patch_size": patch, **topology(patch, c3["spacing"], 3)}
        if factor >= 0.05:
            assert np.prod(patch) <= factor * np.prod(c3["patch_size"]) < 2 * np.prod(patch)
    assert shrink_configuration(c3, 0.01)["patch_size"] == [32, 32, 32] and shrink_configuration(c3, 0.01)["n_stages"] == 4
    assert shrink_configuration(c3, 1.0) == c3
    tiny = {**c3, "patch_size": [32, 32, 16], **topology([32, 32, 16], c3["spacing"], 3)}
    assert shrink_configuration(tiny, 0.1)["patch_size"] == [32, 32, 16]  # nothing left to shrink: unchanged


def test_2d_data_set_asked_for_a_3d_plan_is_refused() -> None:
    fp = _fp([[1.0, 1.0]] * 3, [[64, 64]] * 3, dims=2)
    with pytest.raises(ConfigError, match="3D configuration was asked for a 2D data set") as e:
        make_plan(fp, configurations=("3d",))
    assert "\n" not in str(e.value)
    plan = make_plan(fp)
    assert list(plan["configurations"]) == ["2d"]
    with pytest.raises(ConfigError, match="2D data set"):
        plan_configuration(plan, "3d")


@pytest.mark.parametrize("bad", [0.0, float("nan")])
def test_zero_or_nan_spacing_in_the_fingerprint(bad: float) -> None:
    with pytest.raises(DatasetError, match="zero or NaN"):
        make_plan(_fp([[1.0, 1.0, 1.0], [bad, 1.0, 1.0]], [[32, 32, 32]] * 2))


def test_plan_file_round_trip_and_errors(tmp_path) -> None:
    plan = make_plan(_fp([[1.0, 1.0]] * 3, [[64, 64]] * 3, dims=2))
    path = write_plan(plan, tmp_path / "plan.json")
    assert load_plan(path) == plan
    with pytest.raises(ConfigError, match="plan file not found"):
        load_plan(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a plan"):
        load_plan(tmp_path / "bad.json")
