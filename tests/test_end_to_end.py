from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import tiny_config
from medseg.cli import app
from medseg.config import config_from_dict
from medseg.core.errors import RunError
from medseg.engine.train import train
from medseg.reports.html import make_report
from medseg.workflows.evaluate import evaluate_run


def test_quickstart_setting_reaches_dice_080(tmp_path: Path) -> None:
    """A smaller version of the quickstart: U-Net on 64² phantom slices must learn the anatomy."""
    cfg = config_from_dict(
        tiny_config(
            data={"builtin": {"n_patients": 24, "slices_per_patient": 4, "size": 64}, "batch_size": 4},
            model={"params": {"channels": [16, 32, 64], "num_res_units": 1}},
            train={"epochs": 20, "lr": 3e-3},
        )
    )
    run = train(cfg, tmp_path / "run", progress=False)
    for name in ("config.yaml", "run.json", "splits.json", "history.csv", "curves.png", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "logs/metrics.csv"):
        assert (run / name).is_file(), name
    history = list(csv.DictReader((run / "history.csv").open()))
    assert len(history) == 20 and float(history[-1]["train_loss"]) < float(history[0]["train_loss"])
    ev = evaluate_run(run, split="test", progress=False)
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["mean_dice"] >= 0.80, summary
    rows = list(csv.DictReader((ev / "metrics.csv").open()))
    assert len(rows) == summary["n_cases"] * 3
    assert {r["class"] for r in rows} == {"LV blood pool", "myocardium", "RV"}
    index = make_report(run, "test")
    html = index.read_text()
    assert "data:image/png;base64" in html and "Training curves" in html and "median case" in html


def test_train_refuses_an_existing_run_unless_overwrite(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config())
    run = train(cfg, tmp_path / "run", progress=False)
    before = (run / "run.json").read_text()
    other = config_from_dict(tiny_config(train={"lr": 1e-2}))
    with pytest.raises(RunError, match=r"run: output folder already holds another run — fix: .*--overwrite"):
        train(other, run, progress=False)
    assert (run / "run.json").read_text() == before
    train(other, run, overwrite=True, progress=False)
    assert "0.01" in (run / "config.yaml").read_text()


def test_train_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(RunError, match="not a medseg run"):
        train(config_from_dict(tiny_config()), tmp_path / "precious", overwrite=True, progress=False)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_bad_dataset_fails_before_the_run_folder_is_made(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config(data={"dataset": str(tmp_path / "missing")}))
    result = CliRunner().invoke(app, ["train", "quickstart", "--set", f"data.dataset={tmp_path / 'missing'}", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "data set folder does not exist" in result.output
    assert not (tmp_path / "run").exists()
    assert cfg.data.dataset.endswith("missing")


def test_3d_run_with_patches_and_sliding_window(tmp_path: Path) -> None:
    cfg = config_from_dict(
        tiny_config(
            data={"dataset": "phantom3d", "builtin": {"n_patients": 5, "size": 32, "depth": 12}, "patch_size": [8, 24, 24], "batch_size": 2},
            model={"params": {"channels": [4, 8], "num_res_units": 0}},
        )
    )
    run = train(cfg, tmp_path / "run3d", progress=False)
    ev = evaluate_run(run, split="test", progress=False)
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["n_cases"] == 1 and summary["mean_dice"] is not None
    import numpy as np

    (pred_file,) = (ev / "predictions").glob("*.npz")
    with np.load(pred_file) as z:
        assert z["label"].shape == (12, 32, 32)


def test_cli_pipeline_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    ds_dir = tmp_path / "ds"
    opts = ["--option", "n_patients=5", "--option", "size=32", "--option", "slices_per_patient=2"]
    r = runner.invoke(app, ["datasets", "phantom2d", "--out", str(ds_dir), *opts])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["inspect", str(ds_dir)])
    assert r.exit_code == 0 and "LV blood pool" in r.output and "10" in r.output
    run = tmp_path / "run"
    args = [
        "--set",
        f"data.dataset={ds_dir}",
        "--set",
        "train.epochs=1",
        "--set",
        "train.iterations_per_epoch=null",
        "--set",
        "model.params.channels=[4,8]",
        "--set",
        "model.params.num_res_units=0",
    ]
    r = runner.invoke(app, ["train", "quickstart", "--out", str(run), "--no-progress", *args])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "quickstart", "--out", str(run), "--no-progress", *args])
    assert r.exit_code == 2 and "already holds another run" in r.output
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 2 and f"medseg evaluate {run}" in r.output
    r = runner.invoke(app, ["evaluate", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0 and (run / "report" / "index.html").is_file()
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "not a run folder" in r.output


def test_quickstart_command_small(tmp_path: Path) -> None:
    over = ["data.builtin={n_patients: 5, slices_per_patient: 2, size: 32}", "train.epochs=1", "train.iterations_per_epoch=null", "model.params.channels=[4,8]"]
    args = [x for o in over for x in ("--set", o)]
    r = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "qs"), "--no-progress", *args])
    assert r.exit_code == 0, r.output
    assert "report:" in r.output and (tmp_path / "qs" / "report" / "index.html").is_file()
