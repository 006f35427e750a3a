"""``medseg auto``: detection → plan → measured sizing → training → choice → post-processing, resumable; bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.core.errors import ConfigError, RunError
from medseg.workflows.auto import config as auto_cfg
from medseg.workflows.auto import run as auto_run
from medseg.workflows.auto import sizing as auto_size
from medseg.workflows.auto.run import run_auto
from releases import nnunet_raw, nuclei_tiles


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny budgets: a few steps are enough to exercise every stage."""
    monkeypatch.setattr(auto_size, "MIN_STEPS", 5)
    monkeypatch.setattr(auto_size, "REFUSE_STEPS", 2)
    monkeypatch.setattr(auto_size, "TRAIN_OVERHEAD_S", 0.0)
    monkeypatch.setattr(auto_run, "TRAIN_OVERHEAD_S", 0.0)
    monkeypatch.setattr(auto_size, "BASE_WIDTHS", {"cpu": (4,), "cuda": (4,), "mps": (4,)})


def _tiles(root: Path, n_train: int = 4, size: int = 32) -> Path:
    return nuclei_tiles(root, n_train=n_train, n_test=1, size=size).root


def test_auto_config_follows_the_plan() -> None:
    plan = {
        "dims": 3,
        "configurations": {
            "3d": {
                "patch_size": [16, 64, 64],
                "batch_size": 2,
                "n_stages": 5,
                "strides": [[1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
            }
        },
    }
    raw, why = auto_cfg.auto_config("/d", "/d/plan.json", plan, "3d", base_width=16, budget_s=300, device="cuda")
    p = raw["model"]["params"]
    assert raw["model"]["name"] == "dynunet" and p["filters"] == [16, 32, 64, 128, 256]
    assert p["strides"] == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    assert p["kernel_sizes"][0] == [1, 3, 3]
    assert p["n_deep_supervision"] == 0  # measured: no gain at short budgets (benchmarks/auto_defaults.py)
    assert raw["train"]["time_budget"] == "300s" and raw["data"]["configuration"] == "3d"
    assert raw["data"]["preprocess"] == {"enabled": True, "orientation": "RAS", "spacing": "plan", "crop": "nonzero", "normalize": "auto"}
    assert {"network", "loss", "augmentation", "sampling", "split"} <= set(why)
    assert auto_cfg.widths(8, 2, 32) == [32, 64, 128, 256, 512, 512, 512, 512]  # nnU-Net's 2D cap
    raw, why = auto_cfg.auto_config("/d", "/d/plan.json", plan, "3d", base_width=16, budget_s=300)
    assert raw["train"]["precision"] == "32"  # device auto on a machine without CUDA


def test_3d_on_a_cpu_trains_a_strided_residual_unet_with_the_plans_poolings() -> None:
    """On a CPU the full-resolution stage of nnU-Net's 3D U-Net takes most of a step: auto trains MONAI's residual
    U-Net there, with the plan's stages and per-axis strides (a thick axis is pooled late), and it keeps every shape."""
    import torch

    from medseg.models import create_model

    conf = {"patch_size": [16, 64, 64], "batch_size": 2, "n_stages": 5, "strides": [[1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]}
    conf["kernel_sizes"] = [[1, 3, 3]] + [[3, 3, 3]] * 4
    plan = {"dims": 3, "configurations": {"3d": conf}}
    raw, why = auto_cfg.auto_config("/d", "/d/plan.json", plan, "3d", base_width=8, budget_s=300, device="cpu")
    assert raw["model"] == {"name": "unet", "params": {"channels": [8, 16, 32, 64, 128], "strides": conf["strides"], "num_res_units": 2, "norm": "instance"}}
    assert "residual U-Net" in why["network"]
    net = create_model("unet", 3, 1, 3, **raw["model"]["params"])
    for shape in ([16, 64, 64], [13, 50, 41]):  # the patch, and a whole image of another size
        assert net(torch.zeros(1, 1, *shape)).shape == (1, 3, *shape)
    raw2, _ = auto_cfg.auto_config("/d", "/d/plan.json", {"dims": 2, "configurations": {"2d": {**conf, "patch_size": [64, 64]}}}, "2d", device="cpu")
    assert raw2["model"]["name"] == "dynunet"  # 2D keeps nnU-Net's U-Net on every device


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_trains_in_bfloat16_where_the_gpu_has_it(monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: str) -> None:
    """Measured on an H200: bf16-mixed 13–14 % faster than 16-mixed for auto's instance-norm U-Nets (docs/training.md)."""
    import torch

    from medseg.config import config_from_dict

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    conf = {"patch_size": [64, 64], "batch_size": 4, "n_stages": 3, "strides": [[2, 2], [2, 2]], "kernel_sizes": [[3, 3]] * 3}
    plan = {"dims": 2, "configurations": {"2d": conf}}
    raw, why = auto_cfg.auto_config("/d", "/d/plan.json", plan, "2d", base_width=8, device="cuda", budget_s=60)
    assert raw["train"]["precision"] == expected and expected in why["precision"]
    assert config_from_dict(raw).train.precision == expected


def test_auto_end_to_end_and_predict(tmp_path: Path, quick: None) -> None:
    data = _tiles(tmp_path / "raw")
    lines: list[str] = []
    state = run_auto(data, tmp_path / "run", time_budget="40s", echo=lines.append)
    out = tmp_path / "run"
    text = "\n".join(lines)
    assert "estimate:" in text and " s in all" in text and "MB" in text
    assert state["estimate"]["total_s"] > 0 and state["measured"]["total_s"] > 0
    assert set(state["stages"]) >= {"import", "plan", "size", "train.2d", "choose", "postprocess", "done"}
    assert state["decisions"]["format"]["value"] == "msd"
    assert "why" in state["decisions"]["configuration"]
    saved = json.loads((out / "auto.json").read_text())
    assert saved["decisions"]["postprocessing"]["why"]
    assert (out / "plan.json").is_file() and (out / "checkpoints" / "best.ckpt").is_file()
    # one cache: the plan's (medseg prepare's spec), not a second one built by training
    assert len(list((out / "data" / "preprocessed").iterdir())) == 1
    # exported at the end: predict on the CPU starts without the network libraries
    from medseg.engine.load import pick_backend

    assert state["stages"]["export"]["onnx"] == [str(out / "export" / "model.onnx")]
    assert pick_backend([out], "best", "cpu") == "onnx"
    # the run folder predicts like any other
    res = CliRunner().invoke(app, ["predict", str(out), str(data / "imagesTs"), "--out", str(tmp_path / "pred")])
    assert res.exit_code == 0, res.output
    pred = np.asarray(Image.open(next((tmp_path / "pred").glob("*.png"))))
    assert pred.shape == (32, 32) and set(np.unique(pred)) <= {0, 1}


def test_auto_on_volumes_on_a_cpu_trains_and_exports_the_strided_unet(tmp_path: Path, quick: None) -> None:
    """Volumes on a CPU end to end: 3D is the residual U-Net with the plan's per-axis strides, chosen or not it is
    compared with 2D on validation, mirroring is decided, and the chosen network exports to ONNX (a per-axis padding
    once broke the export, which auto only reports)."""
    from medseg.data.builtin import materialize

    data = materialize("phantom3d", {"n_patients": 4, "size": 32, "depth": 8}, tmp_path / "cache")
    state = run_auto(data, tmp_path / "run", time_budget="60s", device="cpu", echo=lambda s: None)
    cfg3 = yaml.safe_load((tmp_path / "run" / "candidates" / "3d" / "config.yaml").read_text())
    assert cfg3["model"]["name"] == "unet" and cfg3["model"]["params"]["strides"]
    assert "3d" in state["decisions"]["configuration"]["why"] and "2d" in state["decisions"]["configuration"]["why"]
    assert state["decisions"]["tta"]["value"] in ("all", "none")
    assert state["stages"]["export"]["failed"] == {} and state["stages"]["export"]["onnx"]


def test_interrupted_auto_resumes(tmp_path: Path, quick: None, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _tiles(tmp_path / "raw")
    real = auto_run._train

    def interrupted(*a: object, **k: object) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(auto_run, "_train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_auto(data, tmp_path / "run", time_budget="40s", echo=lambda s: None)
    first = json.loads((tmp_path / "run" / "auto.json").read_text())
    assert "size" in first["stages"] and "train.2d" not in first["stages"]
    with pytest.raises(RunError, match="not empty"):
        run_auto(data, tmp_path / "run", time_budget="40s", echo=lambda s: None)
    monkeypatch.setattr(auto_run, "_train", real)
    state = run_auto(data, tmp_path / "run", time_budget="40s", resume=True, echo=lambda s: None)
    assert "done" in state["stages"]
    assert state["stages"]["size"] == first["stages"]["size"]  # not measured again
    assert state["estimate"] == first["estimate"]


def test_too_short_budget_is_refused_with_the_minimum(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["auto", str(_tiles(tmp_path / "raw")), "--out", str(tmp_path / "run"), "--time-budget", "1s"])
    assert res.exit_code == 2
    line = res.output.strip().splitlines()[-1]
    assert "--time-budget: too short" in line and "give at least" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_budget_too_short_for_3d_trains_2d_alone(tmp_path: Path) -> None:
    """A 10-minute budget on a CPU where a 3D step takes 6 s (one brain MRI) trains the 2D configuration with a
    warning instead of refusing; a budget that affords no configuration is refused with the cheapest one's minimum."""
    auto = auto_run.Auto(tmp_path / "run", False, lambda s: None)
    steps = {"3d": {"step_s": 6.0, "device": "cpu"}, "2d": {"step_s": 0.2, "device": "cpu"}}
    with pytest.warns(UserWarning, match=r"cannot train 3d \(6.00 s a step\).*only 2d is trained"):
        assert auto_size.affordable(auto, steps, 600.0, 0) == ["2d"]
    assert auto.state["decisions"]["configurations"]["value"] == ["2d"] and auto.state["warnings"]
    assert auto_size.affordable(auto, steps, 6000.0, 0) == ["3d", "2d"]  # both fit: both train
    assert auto_size.affordable(auto, steps, None, 0) == ["3d", "2d"]  # no budget: the default length
    with pytest.raises(ConfigError, match=r"too short.*give at least 1m \(1 training\(s\) of the 2d configuration"):
        auto_size.affordable(auto, steps, 10.0, 0)


def test_patch_too_slow_for_the_budget_shrinks_instead_of_dropping_3d(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One brain MRI on a CPU: the plan's 112×128×96 patch costs 7 s a step at the narrowest width, so the budget would
    buy 40 steps; auto shrinks the 3D patch until its step buys MIN_STEPS in the budget's share (measured again, with
    the topology of the small patch), trains it, and writes the patch into the config. 2D keeps the plan's patch."""
    from types import SimpleNamespace

    from medseg.data.plan import make_plan, shrink_configuration
    from medseg.workflows.auto import estimate

    fp = {"dataset": "x", "dims": 3, "modalities": ["MRI"], "per_case": [{"id": "c0", "spacing": [2.0] * 3, "shape": [99, 117, 95]}]}
    plan = {**make_plan(fp, cpu_cores=2), "_file": str(tmp_path / "plan.json")}
    seen: list[tuple[int, list[int], int]] = []

    def fake(raw: dict, *, spatial_dims: int, patch: list[int], **k: object) -> dict:  # step time ∝ voxels × width²
        p = raw["model"]["params"]
        w = p["channels"] if raw["model"]["name"] == "unet" else p["filters"]
        assert len(w) == len(p["strides"]) + (raw["model"]["name"] == "unet")  # the strided U-Net has no full-resolution stage
        base = w[0]
        seen.append((spatial_dims, list(patch), base))
        per_voxel = 2.5e-6 if spatial_dims == 3 else 1.5e-6
        return {"step_s": per_voxel * float(np.prod(patch)) * raw["data"]["batch_size"] * (base / 8) ** 1.5, "peak_mb": 100.0, "device": "cpu"}

    monkeypatch.setattr(estimate, "measure_steps", fake)
    ds = SimpleNamespace(root=tmp_path, info=SimpleNamespace(class_names=["background", "grey", "white"], n_channels=1))
    auto = auto_run.Auto(tmp_path / "run", False, lambda s: None)
    sizes = auto_size.size(auto, plan, ds, ["3d", "2d"], device="cpu", budget_s=600.0, folds=0)
    assert set(sizes) == {"3d", "2d"} and not auto.state.get("warnings")  # nothing dropped
    s3 = sizes["3d"]
    assert np.prod(s3["patch_size"]) < np.prod(plan["configurations"]["3d"]["patch_size"]) / 4 and min(s3["patch_size"]) >= 32
    assert s3["steps"] >= auto_cfg.MIN_STEPS and s3["configuration"]["n_stages"] < plan["configurations"]["3d"]["n_stages"]
    assert seen[0] == (3, [112, 128, 96], 8)  # the plan's patch was measured first
    assert sizes["2d"]["patch_size"] == plan["configurations"]["2d"]["patch_size"]
    raw, why = auto_cfg.auto_config(tmp_path, plan["_file"], plan, "3d", base_width=s3["base_width"], conf=s3["configuration"])
    assert raw["data"]["patch_size"] == s3["patch_size"] and "shrunk" in why["batch"]
    assert len(raw["model"]["params"]["channels"]) == s3["configuration"]["n_stages"]
    raw2, _ = auto_cfg.auto_config(tmp_path, plan["_file"], plan, "2d", conf=sizes["2d"]["configuration"])
    assert raw2["data"]["patch_size"] is None  # the plan's own patch: read from the plan
    # a budget 5× longer: width 16 on a 3D patch shrunk (not below ⅛ of the plan's voxels) rather than width 8
    wide = auto_size.size(auto_run.Auto(tmp_path / "run2", False, lambda s: None), plan, ds, ["3d"], device="cpu", budget_s=3000.0, folds=0)["3d"]
    vox = np.prod(wide["patch_size"]) / np.prod(plan["configurations"]["3d"]["patch_size"])
    at_floor = shrink_configuration(plan["configurations"]["3d"], auto_size.PATCH_FLOOR[3])["patch_size"]  # ⅛, rounded down
    assert wide["base_width"] == 16 and np.prod(wide["patch_size"]) >= np.prod(at_floor) and vox < 1 and wide["steps"] >= auto_cfg.MIN_STEPS
    assert wide["tried"][-1]["base_width"] == 16 and all(t["step_s"] > wide["step_s"] for t in wide["tried"] if t["base_width"] == 32)


def test_bfloat16_is_chosen_on_a_cpu_only_where_its_measured_step_is_faster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The size stage measures the narrowest network in 32-bit and in bfloat16 on a CPU: bf16-mixed trains where its
    step is clearly faster (here 3D: 0.6×), 32-bit where it is not (2D: 0.95×, within CPU_BF16_GAIN); the choice
    reaches the config and is measured with every width after it."""
    from types import SimpleNamespace

    from medseg.data.plan import make_plan
    from medseg.workflows.auto import estimate

    fp = {"dataset": "x", "dims": 3, "modalities": ["MRI"], "per_case": [{"id": "c0", "spacing": [1.0] * 3, "shape": [40, 40, 40]}]}
    plan = {**make_plan(fp, cpu_cores=2), "_file": str(tmp_path / "plan.json")}
    precisions: list[tuple[int, str]] = []

    def fake(raw: dict, *, spatial_dims: int, patch: list[int], **k: object) -> dict:
        prec = raw["train"]["precision"]
        precisions.append((spatial_dims, prec))
        gain = (0.6 if spatial_dims == 3 else 0.95) if prec == "bf16-mixed" else 1.0
        return {"step_s": 0.01 * gain, "peak_mb": 100.0, "device": "cpu"}

    monkeypatch.setattr(estimate, "measure_steps", fake)
    ds = SimpleNamespace(root=tmp_path, info=SimpleNamespace(class_names=["background", "a"], n_channels=1))
    sizes = auto_size.size(auto_run.Auto(tmp_path / "run", False, lambda s: None), plan, ds, ["3d", "2d"], device="cpu", budget_s=600.0, folds=0)
    assert sizes["3d"]["precision"] == "bf16-mixed" and sizes["2d"]["precision"] == "32"
    # steps are counted as the training loop makes them: the bare step × LOOP_STEP on a CPU (the loader shares the cores)
    s2 = sizes["2d"]
    assert s2["bare_step_s"] == pytest.approx(0.01) and s2["step_s"] == pytest.approx(0.01 * auto_size.LOOP_STEP["cpu"])
    assert s2["steps"] == int(s2["train_s"] / s2["step_s"])
    assert {p for d, p in precisions[2:] if d == 3} >= {"bf16-mixed"} and all(p == "32" for d, p in precisions[4:] if d == 2)
    wider = [t for t in sizes["3d"]["tried"] if t["base_width"] > 8]
    assert wider and all(t["precision"] == "bf16-mixed" for t in wider)
    raw, why = auto_cfg.auto_config(tmp_path, plan["_file"], plan, "3d", device="cpu", precision=sizes["3d"]["precision"])
    assert raw["train"]["precision"] == "bf16-mixed" and "bfloat16" in why["precision"]
    # on CUDA nothing is measured twice: mixed precision is the GPU's own
    precisions.clear()
    auto_size.size(auto_run.Auto(tmp_path / "run2", False, lambda s: None), plan, ds, ["2d"], device="cuda", budget_s=600.0, folds=0)
    assert precisions and all(p != "32" for _, p in precisions)


def test_one_case_trains_with_a_warning(tmp_path: Path, quick: None) -> None:
    data = nnunet_raw(tmp_path / "raw", ".png", n_train=1, n_test=0, shape=(32, 32)).root
    lines: list[str] = []
    with pytest.warns(UserWarning, match="one labelled patient"):
        state = run_auto(data, tmp_path / "run", time_budget="30s", echo=lines.append)
    assert "validated on its training case" in state["decisions"]["split"]["why"]
    assert any(line.startswith("warning: one labelled patient") for line in lines)
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


class Stop(Exception):
    pass


def _plan_only(data: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    """Run auto up to the plan (sizing raises), return (auto.json, plan.json)."""

    def stop(*a: object, **k: object) -> None:
        raise Stop

    monkeypatch.setattr(auto_run, "_size", stop)
    with pytest.raises(Stop):
        run_auto(data, out, echo=lambda s: None)
    return json.loads((out / "auto.json").read_text()), json.loads((out / "plan.json").read_text())


def _folder(root: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (img, mask) in enumerate(pairs):
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"t{i}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"t{i}.png")
    return root


def test_class_that_never_occurs_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rel = nnunet_raw(tmp_path / "raw", ".png", classes=("organ", "lesion"))
    rel.dataset_json.write_text(json.dumps({**rel.dataset, "labels": {"background": 0, "organ": 1, "lesion": 2, "absent": 3}}))
    state, plan = _plan_only(rel.root, tmp_path / "run", monkeypatch)
    assert any("'absent' never occurs" in w for w in state["warnings"])
    assert plan["configurations"]["2d"]["patch_size"] == [24, 32]  # the whole (24, 32) tile: divisible by its 2² and 2³ poolings


def test_thin_structures_and_wild_sizes_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    pairs = []
    for shape in [(16, 16), (40, 300), (256, 200), (64, 64), (20, 500)]:
        mask = np.zeros(shape, bool)
        mask[shape[0] // 2, :] = True  # a 1-pixel-thin line
        img = rng.normal(60, 10, shape) + 120 * mask
        pairs.append((np.clip(img, 0, 255), mask))
    state, plan = _plan_only(_folder(tmp_path / "raw", pairs), tmp_path / "run", monkeypatch)
    conf = plan["configurations"]["2d"]
    med = plan["median_shape"]
    assert med == [40.0, 200.0]  # independent: medians of (16, 40, 256, 64, 20) and (16, 300, 200, 64, 500)
    div = [2**p for p in conf["pool_per_axis"]]
    assert all(p % d == 0 for p, d in zip(conf["patch_size"], div, strict=True))
    assert conf["batch_size"] >= 2
    assert any("very small case" in w for w in state["warnings"])
    raw, _ = auto_cfg.auto_config(tmp_path / "run" / "data", tmp_path / "run" / "data" / "plan.json", plan, "2d")
    assert len(raw["model"]["params"]["filters"]) == conf["n_stages"] or len(raw["model"]["params"]["filters"]) == auto_cfg.MAX_STAGES


def test_label_outside_classes_stops_auto_in_one_line(tmp_path: Path) -> None:
    rel = nnunet_raw(tmp_path / "raw", ".png")
    rel.dataset_json.write_text(json.dumps({**rel.dataset, "labels": {"background": 0, "organ": 1}}))
    res = CliRunner().invoke(app, ["auto", str(rel.root), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "label value 2 has no class" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "data").exists()


def test_bad_flags(tmp_path: Path) -> None:
    data = _tiles(tmp_path / "raw")
    with pytest.raises(ConfigError, match="--folds"):
        run_auto(data, tmp_path / "a", folds=3)
    with pytest.raises(ConfigError, match="duration"):
        run_auto(data, tmp_path / "b", time_budget="soon")
    with pytest.raises(ConfigError, match="--ray runs cross-validation"):
        run_auto(data, tmp_path / "c", ray="local")
    assert not any((tmp_path / n).exists() for n in "abc")


@pytest.mark.slow
def test_five_folds_predict_as_one_ensemble(tmp_path: Path, quick: None) -> None:
    data = _tiles(tmp_path / "raw", n_train=5, size=32)
    state = run_auto(data, tmp_path / "run", time_budget="100s", folds=5, echo=lambda s: None)
    out = tmp_path / "run"
    members = json.loads((out / "ensemble.json").read_text())["runs"]
    assert len(members) == 5
    assert len(state["stages"]["folds"]["cases"]) == 5  # every case scored once, out of fold
    val = [json.loads((Path(m) / "splits.json").read_text())["folds"][k]["val"] for k, m in enumerate(members)]
    assert sorted(c for v in val for c in v) == sorted(state["stages"]["folds"]["cases"])
    from medseg.engine.load import load_inferer

    assert len(load_inferer(out).nets) == 5


@pytest.mark.slow
def test_five_folds_as_ray_tasks(tmp_path: Path, quick: None) -> None:
    """``--folds 5 --ray local``: the folds are trials of a local Ray instance, scored out of fold, one ensemble."""
    pytest.importorskip("ray")
    data = _tiles(tmp_path / "raw", n_train=5, size=32)
    state = run_auto(data, tmp_path / "run", time_budget="100s", folds=5, ray="local", echo=lambda s: None)
    out = tmp_path / "run"
    members = [Path(m) for m in json.loads((out / "ensemble.json").read_text())["runs"]]
    assert len(members) == 5 and all(m.parent == out / "folds" / "runs" and (m / "run.json").is_file() for m in members)
    folds = sorted(yaml.safe_load((m / "config.yaml").read_text())["data"]["split"]["fold"] for m in members)
    assert folds == [0, 1, 2, 3, 4]
    assert len(state["stages"]["folds"]["cases"]) == 5  # every case scored once, out of fold
    from medseg.engine.load import load_inferer

    assert len(load_inferer(out).nets) == 5


def test_train_dataset_folder_uses_the_prepared_plan_and_cache(tmp_path: Path) -> None:
    from medseg.config import config_from_dict
    from medseg.data.formats import import_dataset
    from medseg.data.preprocessing import default_cache_dir, resolve_spec
    from medseg.workflows.auto.config import dataset_config
    from medseg.workflows.prepare import PLAN_DEFAULTS, prepare_dataset

    rel = nnunet_raw(tmp_path / "raw", ".nrrd", channels=("CT",))
    ds = import_dataset("msd", rel.root, tmp_path / "ds")
    plan, plan_file, cache = prepare_dataset(config_from_dict({"data": {"dataset": str(ds.root), "preprocess": dict(PLAN_DEFAULTS)}}), progress=False)
    cfg = dataset_config(ds.root, ["train.iterations=7"])
    assert cfg.data.plan == str(plan_file.resolve()) and cfg.data.configuration == plan["recommended"]
    assert cfg.model.name == "dynunet" and cfg.model.params["filters"][0] == 32 and cfg.train.iterations == 7
    # the spec training resolves is the one `medseg prepare` cached: the same folder, no second cache
    assert default_cache_dir(ds, resolve_spec(cfg, ds, plan)) == cache
    res = CliRunner().invoke(app, ["train", str(ds.root), "--set", "train.lrr=1"])
    assert res.exit_code == 2 and "--set train.lrr=1" in res.output
