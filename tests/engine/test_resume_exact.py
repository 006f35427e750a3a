"""Resume never rewinds: `last.ckpt` is the last finished epoch, whatever validation said.

A run whose best epoch lies before its last is killed with SIGKILL after a later epoch; resuming it
must give a `history.csv` equal, row for row, to the uninterrupted run's.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import tiny_config
from medseg.config import config_from_dict
from medseg.engine.train import train

#: a tiny deterministic run whose validation Dice goes up and down (high lr, no schedule)
SETS = [
    "data.builtin={n_patients: 6, slices_per_patient: 2, size: 32}",
    "model.params={channels: [8, 16], num_res_units: 0}",
    "train.device=cpu",
    "train.threads=1",
    "train.deterministic=true",
    "train.lr=0.02",
    "train.scheduler=none",
    "train.warmup_epochs=0",
    "data.batch_size=2",
    "train.epochs=12",
    "train.iterations_per_epoch=null",
]
COMPARED = ("epoch", "step", "train_loss", "val_loss", "val_dice", "lr")


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "history.csv").open())) if (run / "history.csv").is_file() else []


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "medseg.cli", "train", "quickstart", "--no-progress", *(x for s in SETS for x in ("--set", s)), *args]


def _last_epoch(run: Path) -> int:
    path = run / "checkpoints" / "last.ckpt"
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"]) if path.is_file() else -1


def test_last_checkpoint_is_the_last_epoch_not_the_best(tmp_path: Path) -> None:
    cfg = tiny_config(train={"epochs": 8, "lr": 0.02, "scheduler": "none", "deterministic": True}, data={"batch_size": 2})
    run = train(config_from_dict(cfg), tmp_path / "r", progress=False)
    rows = _rows(run)
    dice = [float(r["val_dice"]) for r in rows]
    best = max(range(len(dice)), key=dice.__getitem__)
    assert best < len(dice) - 1, f"this setting must have its best epoch before the last: {dice}"
    assert _last_epoch(run) == len(rows) - 1
    best_ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best_ckpt["epoch"] == best
    # resuming with more epochs continues after the last epoch, keeping every earlier row as it was
    resumed = train(config_from_dict(cfg, ["train.epochs=10"]), run, progress=False, resume=True)
    again = _rows(resumed)
    assert [int(r["epoch"]) for r in again] == list(range(10))
    assert again[:8] == rows
    info = json.loads((run / "run.json").read_text())
    assert info["epochs_run"] == 10
    assert info["best_metric"]["value"] == pytest.approx(max(float(r["val_dice"]) for r in again))  # the best-model state survived


def test_killed_after_the_best_epoch_resumes_row_for_row(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    done = subprocess.run(_cli("--out", str(full)), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = _rows(full)
    dice = [float(r["val_dice"]) for r in reference]
    # the first epoch after which the best epoch lies behind: a kill there used to rewind to the best
    kill_after = next((k for k in range(1, len(dice) - 1) if dice[k] < max(dice[:k])), None)
    assert kill_after is not None, f"validation Dice never fell: {dice}"

    part = tmp_path / "part"
    proc = subprocess.Popen(_cli("--out", str(part)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _last_epoch(part) < kill_after:
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped = _last_epoch(part)
    assert kill_after <= stopped < len(reference) - 1, "the run must be killed after a later-than-best epoch, before the end"

    resumed = subprocess.run(_cli("--resume", str(part)), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = _rows(part)
    assert len(rows) == len(reference)
    for a, b in zip(reference, rows, strict=True):
        for key in COMPARED:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-6, abs=1e-7), (a["epoch"], key)
    best = lambda run: json.loads((run / "run.json").read_text())["best_metric"]["value"]  # noqa: E731
    assert best(part) == pytest.approx(best(full), rel=1e-6)
    best_epoch = lambda run: torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["epoch"]  # noqa: E731
    assert best_epoch(part) == best_epoch(full)
