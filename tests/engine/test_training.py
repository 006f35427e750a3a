"""Training engine: accumulation, early stopping, exact resume, faults, determinism, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import multilabel_dataset, tiny_config
from medseg.config import config_from_dict
from medseg.core.errors import ConfigError, RunError, TrainingError
from medseg.data.builtin import make_builtin
from medseg.engine.train import train


def _history(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "history.csv").open()))


def test_accumulation_steps_and_records(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config(train={"epochs": 2, "accumulate_grad_batches": 2}, data={"batch_size": 2}))
    run = train(cfg, tmp_path / "acc", progress=False)
    info = json.loads((run / "run.json").read_text())
    rows = _history(run)
    n_batches = info["n_train"] // 2
    assert int(rows[-1]["step"]) == 2 * (n_batches // 2)  # one optimizer step per two batches
    for key in ("samples_per_s", "epoch_time_s", "peak_memory_mb", "lr", "val_dice"):
        assert float(rows[-1][key]) > 0, key
    assert sorted(p.name for p in (run / "snapshots").glob("epoch_*.npz")) == ["epoch_0000.npz", "epoch_0001.npz"]
    assert json.loads((run / "snapshots" / "snapshot.json").read_text())["case"]


def test_the_optimiser_step_is_fused_and_takes_the_same_step() -> None:
    """On a CPU the optimiser updates every parameter in one fused kernel, the same update as PyTorch's loop; with
    float16 loss scaling and clipping it is not fused (clipping needs the gradients unscaled before the step)."""
    from medseg.config import TrainConfig
    from medseg.engine.module import build_optimizer

    torch.manual_seed(0)
    a, b = torch.nn.Conv2d(2, 3, 3), torch.nn.Conv2d(2, 3, 3)
    b.load_state_dict(a.state_dict())
    fused, loop = build_optimizer(a.parameters(), TrainConfig(lr=0.1)), torch.optim.AdamW(b.parameters(), lr=0.1, weight_decay=1e-5)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    x = torch.randn(4, 2, 8, 8)
    for _ in range(3):
        for net, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    scaled = build_optimizer(a.parameters(), TrainConfig(precision="16-mixed", grad_clip=1.0))
    assert not scaled.defaults["fused"] and scaled.defaults["foreach"]


def test_bfloat16_training_clips_gradients_with_a_fused_optimiser(tmp_path: Path) -> None:
    """bf16-mixed on a CPU with gradient clipping trains (Lightning's plugin refuses to clip for a fused optimiser:
    the module clips itself, bfloat16 gradients being unscaled) and the clipped norm is the one asked for."""
    from medseg.engine.module import SegModule

    cfg = config_from_dict(tiny_config(train={"precision": "bf16-mixed", "grad_clip": 0.5, "epochs": 1}))
    run = train(cfg, tmp_path / "bf16", progress=False)
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    module = SegModule(cfg.dump(), spatial_dims=2, in_channels=1, class_names=["background", "a", "b", "c"])
    for p in module.parameters():
        p.grad = torch.full_like(p, 10.0)
    module.configure_gradient_clipping(module.configure_optimizers()["optimizer"], 0.5, "norm")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in module.parameters()]))
    assert float(norm) == pytest.approx(0.5, rel=1e-4)


def test_curves_are_drawn_at_most_every_30_s_and_at_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """history.csv gets every epoch as it ends; curves.png is redrawn at most every PLOT_EVERY_S seconds (drawing
    costs ~0.2 s, a few percent of a short training) and once more when training ends, with every epoch."""
    from medseg.viz import plots

    drawn: list[int] = []
    real = plots.plot_curves
    monkeypatch.setattr(plots, "plot_curves", lambda rows, path: (drawn.append(len(rows)), real(rows, path)))
    run = train(config_from_dict(tiny_config(train={"epochs": 3})), tmp_path / "run", progress=False)
    assert drawn == [1, 3] and (run / "curves.png").is_file()  # the first epoch, then the end with all three
    assert len(_history(run)) == 3


def test_the_training_gif_can_follow_a_test_case(tmp_path: Path) -> None:
    """Study 000 shows a test image across epochs: a case the network never trains or validates on."""
    from medseg.data.splits import load_splits
    from medseg.data.store import load_dataset

    cfg = config_from_dict(tiny_config(train={"epochs": 1, "snapshot_split": "test"}))
    run = train(cfg, tmp_path / "gif", progress=False)
    ds = load_dataset(json.loads((run / "run.json").read_text())["dataset"])
    test_ids = load_splits(run / "splits.json", ds.patients)["test"]
    meta = json.loads((run / "snapshots" / "snapshot.json").read_text())
    assert meta["split"] == "test" and meta["case"] == test_ids[0]
    wrong = config_from_dict(tiny_config(train={"epochs": 1, "snapshot_case": test_ids[0]}))  # a test case, asked of val
    with pytest.raises(ConfigError, match="not in the val set") as e:
        train(wrong, tmp_path / "wrong", progress=False)
    assert e.value.where == "train.snapshot_case"


def test_iterations_per_epoch(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config(train={"epochs": 1, "iterations_per_epoch": 5}, data={"batch_size": 2}))
    run = train(cfg, tmp_path / "it", progress=False)
    assert int(_history(run)[-1]["step"]) == 5


def test_early_stopping(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config(train={"epochs": 10, "lr": 1e-12, "early_stop_patience": 1, "scheduler": "none"}))
    run = train(cfg, tmp_path / "es", progress=False)
    assert len(_history(run)) < 10


def test_exact_resume_continues_the_curves(tmp_path: Path) -> None:
    base = tiny_config(train={"epochs": 4, "deterministic": True, "scheduler": "exponential", "lr_gamma": 0.9})
    full = train(config_from_dict(base), tmp_path / "full", progress=False)
    part = train(config_from_dict(base, ["train.epochs=2"]), tmp_path / "part", progress=False)
    assert len(_history(part)) == 2
    resumed = train(config_from_dict(base), tmp_path / "part", progress=False, resume=True)
    a, b = _history(full), _history(resumed)
    assert len(b) == 4 and [r["epoch"] for r in b] == ["0", "1", "2", "3"]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "val_dice", "lr", "step"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-5, abs=1e-6), (ra["epoch"], key)
    info = json.loads((resumed / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_run"] == 4


def test_resume_refuses_a_different_model_or_data(tmp_path: Path) -> None:
    run = train(config_from_dict(tiny_config()), tmp_path / "r", progress=False)
    with pytest.raises(RunError, match=r"cannot resume: model.params is .* but the run was trained with"):
        train(config_from_dict(tiny_config(model={"params": {"channels": [4, 8], "num_res_units": 0}})), run, progress=False, resume=True)
    with pytest.raises(RunError, match=r"cannot resume: data.batch_size"):
        train(config_from_dict(tiny_config(data={"batch_size": 2})), run, progress=False, resume=True)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medseg.engine.module as module_mod

    real = module_mod.build_loss

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)
        calls = {"n": 0}

        class Nan(torch.nn.Module):
            def forward(self, out, y):
                calls["n"] += torch.is_grad_enabled()  # count training steps only
                value = loss(out, y)
                return value * float("nan") if calls["n"] > 5 else value  # diverges in the second epoch

        return Nan()

    monkeypatch.setattr(module_mod, "build_loss", poisoned)
    cfg = config_from_dict(tiny_config(train={"epochs": 5}, data={"batch_size": 2}))
    with pytest.raises(TrainingError, match=r"loss became nan at epoch \d+, step \d+ — fix: lower train.lr"):
        train(cfg, tmp_path / "nan", progress=False)
    last = tmp_path / "nan" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] >= 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())  # no diverged weights saved
    assert json.loads((tmp_path / "nan" / "run.json").read_text())["status"] == "failed"


def test_out_of_memory_suggests_a_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medseg.engine.module import SegModule

    def boom(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SegModule, "training_step", boom)
    with pytest.raises(TrainingError, match=r"out of memory at epoch 0 .*lower data.batch_size or data.patch_size"):
        train(config_from_dict(tiny_config()), tmp_path / "oom", progress=False)


def test_multilabel_training_and_output_kind_checks(tmp_path: Path) -> None:
    ds = multilabel_dataset(tmp_path / "ml")
    with pytest.raises(ConfigError, match=r"multi-label .* but train.output is softmax — fix: set train.output=sigmoid"):
        train(config_from_dict(tiny_config(data={"dataset": str(ds)}, train={"output": "softmax"})), tmp_path / "r1", progress=False)
    with pytest.raises(ConfigError, match=r"single-label .* but train.output is sigmoid"):
        train(config_from_dict(tiny_config(train={"output": "sigmoid"})), tmp_path / "r2", progress=False)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    run = train(config_from_dict(tiny_config(data={"dataset": str(ds)}, train={"loss": "bce"})), tmp_path / "r3", progress=False)
    assert {"val_dice_heart", "val_dice_LV", "val_dice_RV"} <= set(_history(run)[0])


def test_deterministic_runs_are_identical(tmp_path: Path) -> None:
    cfg = tiny_config(train={"epochs": 2, "deterministic": True})
    a = train(config_from_dict(cfg), tmp_path / "a", progress=False)
    b = train(config_from_dict(cfg), tmp_path / "b", progress=False)
    keys = ("train_loss", "val_loss", "val_dice")
    assert [[r[k] for k in keys] for r in _history(a)] == [[r[k] for k in keys] for r in _history(b)]


def test_tensorboard_logger(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = train(config_from_dict(tiny_config(train={"loggers": ["csv", "tensorboard"]})), tmp_path / "tb", progress=False)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_ddp_two_cpu_processes_same_layout(tmp_path: Path) -> None:
    """Two processes (gloo) through the CLI give the same run-folder layout as one."""
    ds_cfg = tiny_config()
    sets = [
        "data.builtin={n_patients: 6, slices_per_patient: 2, size: 32}",
        "model.params={channels: [8, 16], num_res_units: 0}",
        "train.epochs=1",
        "train.iterations_per_epoch=null",
        "train.device=cpu",
        "data.batch_size=2",
    ]
    assert ds_cfg["data"]["builtin"]["size"] == 32
    args = [x for s in sets for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medseg.cli", "train", "quickstart", "--no-progress", "--devices", "2", "--strategy", "ddp", *args]
    proc = subprocess.run([*cmd, "--out", str(tmp_path / "ddp")], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = train(config_from_dict({}, ["name=quickstart", *sets]), tmp_path / "single", progress=False)
    names = lambda r: sorted(str(p.relative_to(r)) for p in r.rglob("*") if p.is_file() and "logs" not in p.parts)  # noqa: E731
    assert names(tmp_path / "ddp") == names(single)
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["status"] == "finished"
    # each process validated one of the two val slices; the logged Dice pools both: recompute it by hand
    from medseg.engine.load import load_inferer
    from medseg.runs import read_run, run_dataset, split_ids

    config, info = read_run(tmp_path / "ddp")
    ds = run_dataset(tmp_path / "ddp", info, config)
    ids = split_ids(tmp_path / "ddp", ds, "val")
    inferer = load_inferer(tmp_path / "ddp", device="cpu")
    per_case = []
    for cid in ids:
        case = ds.load_case(cid)
        pred, ref = inferer.predict(case), case.label
        sums = [int((pred == k).sum() + (ref == k).sum()) for k in (1, 2, 3)]
        per_case.append([2 * int(((pred == k) & (ref == k)).sum()) / n if n else np.nan for k, n in zip((1, 2, 3), sums, strict=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from both slices
        per_class = np.nan_to_num(np.nanmean(np.array(per_case), axis=0))
        alone = [float(np.nan_to_num(np.array(row)).mean()) for row in per_case]
    logged = float(_history(tmp_path / "ddp")[0]["val_dice"])
    assert len(ids) == 2 and logged == pytest.approx(float(per_class.mean()), abs=1e-6)
    assert all(abs(a - logged) > 1e-4 for a in alone)  # neither process's slice alone gives the logged value


def test_mlflow_logger_local_store(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    run = train(config_from_dict(tiny_config(train={"loggers": ["mlflow"]})), tmp_path / "ml", progress=False)
    metric_files = [p for p in (run / "mlruns").rglob("*") if p.is_file() and p.parent.parent.name == "metrics"]
    assert any(p.parent.name == "val" and p.name == "dice" for p in metric_files), metric_files


def test_classical_pixel_classifier_trains_evaluates_and_predicts(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from medseg.engine.load import load_inferer
    from medseg.workflows.evaluate import evaluate_run

    cfg = config_from_dict(tiny_config(model={"name": "classical_rf", "params": {"sigmas": [1.0], "max_samples": 3000, "threads": 1}}))
    run = train(cfg, tmp_path / "rf", progress=False)
    assert (run / "checkpoints" / "classical.npz").is_file()
    row = _history(run)[0]
    assert 0 <= float(row["val_dice"]) <= 1
    from medseg.data.splits import load_splits, select
    from medseg.data.store import load_dataset

    ds = load_dataset(json.loads((run / "run.json").read_text())["dataset"])
    predictor = load_inferer(run, device="cpu")
    right = total = 0
    for cid in select(load_splits(run / "splits.json", ds.patients), "val", None):
        case = ds.load_case(cid)
        right, total = right + int((predictor.predict(case) == case.label).sum()), total + case.label.size
    assert float(row["val_pixel_accuracy"]) == pytest.approx(right / total)  # pooled over the validation voxels
    summary = json.loads((evaluate_run(run, split="test", progress=False) / "summary.json").read_text())
    assert summary["mean_dice"] is not None and summary["mean_dice"] > 0.05  # a real classifier, better than nothing
    case = make_builtin("phantom2d", n_patients=1, slices_per_patient=1, size=32, seed=3).cases
    assert load_inferer(run, device="cpu").predict(next(iter(case))).shape == (32, 32)
