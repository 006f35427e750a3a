"""The run folder: the resolved training record (a plan's patch drives the sliding window), MACs recorded
at training time and read by compare without loading a checkpoint, the readers' answers on missing files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monai.inferers import sliding_window_inference

from helpers import tiny_config
from medseg.config import config_from_dict
from medseg.core.errors import RunError
from medseg.data.builtin import make_builtin, materialize
from medseg.data.inspect import fingerprint
from medseg.data.plan import make_plan, write_plan
from medseg.data.store import load_dataset
from medseg.engine.checkpoint import load_module
from medseg.engine.load import load_inferer
from medseg.engine.train import train
from medseg.runs import checkpoint_path, derive_resolved, read_macs, read_prediction, read_summary, run_status


@pytest.fixture(scope="module")
def plan_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A 3D run trained with ``data.plan`` and ``data.patch_size: null``: the plan's patch is [4, 16, 16]."""
    root = tmp_path_factory.mktemp("plan")
    ds = materialize("phantom3d", {"n_patients": 4, "size": 32, "depth": 10}, cache_dir=root / "cache")
    plan = make_plan(fingerprint(load_dataset(ds), progress=False), gpu_memory_gb=0.005, cpu_cores=2, configurations=("3d",))
    write_plan(plan, root / "plan.json")
    cfg = tiny_config(
        data={"dataset": str(ds), "plan": str(root / "plan.json"), "configuration": "3d", "patch_size": None, "batch_size": 2},
        model={"params": {"channels": [4, 8], "num_res_units": 0}},
        train={"epochs": 2},
    )
    run = train(config_from_dict(cfg), root / "run", progress=False)
    return run, plan["configurations"]["3d"]["patch_size"]


def test_a_run_trained_with_a_plan_predicts_large_volumes_with_the_plans_sliding_window(plan_run: tuple[Path, list[int]]) -> None:
    run, patch = plan_run
    assert patch == [4, 16, 16]
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["patch_size"] is None  # the config leaves it open
    assert json.loads((run / "run.json").read_text())["resolved"]["patch_size"] == patch  # the run records what it used
    (vol,) = list(make_builtin("phantom3d", n_patients=1, size=40, depth=13, seed=7).cases)  # larger than the patch
    net = load_module(run).net
    image = vol.image
    x = torch.from_numpy((image - image.mean()) / image.std())[None]
    with torch.no_grad():
        ref = sliding_window_inference(x, patch, 4, lambda t: torch.softmax(net(t), 1), overlap=0.5, mode="gaussian")[0].numpy()
        whole = torch.softmax(net(x), 1)[0].numpy()
    got = load_inferer(run, device="cpu").probabilities(vol)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert np.abs(whole - ref).max() > 1e-3  # a whole-volume forward differs: the comparison can tell


def test_runs_saved_before_the_record_take_the_plans_patch_too(plan_run: tuple[Path, list[int]]) -> None:
    run, patch = plan_run
    module = load_module(run)
    hparams = {k: v for k, v in module.hparams.items() if k != "resolved"}
    assert derive_resolved(module.cfg, hparams).patch_size == patch


def test_macs_are_recorded_at_training_and_compare_reads_them_without_a_checkpoint(plan_run: tuple[Path, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    from medseg.models import macs
    from medseg.workflows.compare import compare_runs
    from medseg.workflows.evaluate import evaluate_run

    run, patch = plan_run
    expected = macs(load_module(run).net, (1, 1, *patch))  # counted on the real network, computing
    assert expected > 0 and read_macs(run) == (expected, patch)
    evaluate_run(run, split="test", progress=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("compare loaded a checkpoint")

    monkeypatch.setattr(torch, "load", refuse)
    row = compare_runs([run]).rows[0]
    assert row["macs"] == expected and row["macs_input"] == "4×16×16"


def test_readers_on_missing_and_broken_files(tmp_path: Path) -> None:
    assert run_status(tmp_path) == "missing"
    (tmp_path / "run.json").write_text("{half")
    assert run_status(tmp_path) == "unknown"
    (tmp_path / "run.json").write_text(json.dumps({"status": "finished"}))
    assert run_status(tmp_path) == "finished"
    assert read_summary(tmp_path, "test") == {} and read_prediction(tmp_path, "test", "c1") is None
    assert read_macs(tmp_path) == (None, [])
    with pytest.raises(RunError, match=r"no best checkpoint — fix: train the run first"):
        checkpoint_path(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert checkpoint_path(tmp_path).name == "last.ckpt"  # best falls back to last


def test_saved_predictions_are_written_whole_and_temporaries_never_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from medseg.core.atomic import host_tag, temp_prefix
    from medseg.runs import eval_dir, prediction_files, save_prediction

    folder = eval_dir(tmp_path, "test") / "predictions"
    folder.mkdir(parents=True)
    label = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) % 3
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    save_prediction(folder, "c1", label, affine)
    with np.load(folder / "c1.npz") as z:  # read back by numpy itself
        np.testing.assert_array_equal(z["label"], label)
        np.testing.assert_array_equal(z["affine"], affine)
    live = folder / f"{temp_prefix('c2')}ab12.tmp.npz"  # a write in progress in this process
    live.write_bytes(b"half")
    (folder / f".c3.~999999999-{host_tag()}.cd34.tmp.npz").write_bytes(b"half")  # left by a killed writer
    assert [p.name for p in prediction_files(tmp_path, "test")] == ["c1.npz"]

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", killed)
    with pytest.raises(KeyboardInterrupt):
        save_prediction(folder, "c4", label, affine)
    assert not (folder / "c4.npz").exists() and not [p for p in folder.iterdir() if p.name.startswith(".c4.")]  # nothing half-written
    assert os.path.exists(live) and [p.name for p in prediction_files(tmp_path, "test")] == ["c1.npz"]
