"""Training length: steps, not passes; a time budget fits the epochs and ends the schedule annealed."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest

from helpers import tiny_config
from medseg.config import TrainConfig, config_from_dict
from medseg.core.errors import ConfigError
from medseg.engine.length import FEW_STEPS, MIN_BATCHES_PER_EPOCH, resolve_length, warn_if_short
from medseg.engine.train import train


@pytest.mark.parametrize(
    ("train_cfg", "n", "batch", "epochs", "batches", "total"),
    [
        ({"epochs": 30}, 12, 8, 30, 17, 30 * 17),  # 12 tiles: one batch a pass, lengthened to reach 500 steps
        ({"epochs": 30}, 1000, 8, 30, None, 30 * 125),  # enough data: exactly one pass per epoch
        ({"epochs": 30, "iterations_per_epoch": None}, 12, 8, 30, None, 30),  # null: one pass, whatever it gives
        ({"epochs": 4, "iterations_per_epoch": 7}, 12, 8, 4, 7, 28),
        ({"iterations": 1000}, 12, 8, 20, MIN_BATCHES_PER_EPOCH, 1000),
        ({"iterations": 1000, "accumulate_grad_batches": 2}, 12, 8, 40, MIN_BATCHES_PER_EPOCH, 1000),
        ({"epochs": 10, "min_iterations": 100, "accumulate_grad_batches": 2}, 16, 4, 10, 20, 100),
    ],
)
def test_resolve_length(train_cfg: dict, n: int, batch: int, epochs: int, batches: int | None, total: int) -> None:
    length = resolve_length(TrainConfig(**train_cfg), n, batch)
    assert (length.epochs, length.batches_per_epoch, length.total_steps) == (epochs, batches, total)


def test_short_trainings_are_announced() -> None:
    short = resolve_length(TrainConfig(epochs=30, iterations_per_epoch=None), 12, 8)
    assert "only 30 optimiser steps" in warn_if_short(short) and "train.iterations" in warn_if_short(short)
    assert warn_if_short(resolve_length(TrainConfig(epochs=30), 12, 8)) is None
    assert short.total_steps < FEW_STEPS


@pytest.mark.parametrize("bad", ["0", "-5m", "ten minutes", "1:2"])
def test_bad_time_budget_names_the_field(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"train.time_budget"):
        config_from_dict({"train": {"time_budget": bad}})


def _history(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "history.csv").open()))


def test_iterations_set_the_number_of_optimiser_steps(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config(train={"iterations": 12, "iterations_per_epoch": 5, "min_lr": 0.0}, data={"batch_size": 2}))
    run = train(cfg, tmp_path / "it", progress=False)
    rows = _history(run)
    assert int(rows[-1]["step"]) == 12 and len(rows) == 3  # 5 + 5 + 2 steps
    info = json.loads((run / "run.json").read_text())
    assert info["length"]["optimizer_steps"] == 12


def test_time_budget_fits_epochs_and_ends_annealed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every epoch "takes" 0.25 s on a fake clock: a 4 s budget affords exactly 16 epochs, and the schedule,
    fitted after each epoch, reaches the floor in the last one instead of being cut off."""
    import medseg.engine.length as length_mod

    clock = iter(range(10_000))
    monkeypatch.setattr(length_mod, "clock", lambda: 0.25 * next(clock))  # an epoch is read at its start and end: 0.25 s
    cfg = config_from_dict(tiny_config(train={"time_budget": "4s", "iterations_per_epoch": 3, "lr": 1e-2, "min_lr": 0.0}, data={"batch_size": 2}))
    run = train(cfg, tmp_path / "tb", progress=False)
    rows = _history(run)
    assert len(rows) == 16
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(1e-2)
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:])), lrs
    assert lrs[-1] < 0.1 * lrs[0], f"the last epoch must run at the end of the schedule: {lrs}"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
