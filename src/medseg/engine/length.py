"""How long a training runs: in optimiser steps or wall-clock time, never "a handful of steps" by accident.

Three ways to say it (``train`` section of the config):

* ``epochs`` × ``iterations_per_epoch`` — with ``iterations_per_epoch: auto`` (the default) an epoch is one pass
  over the training set, lengthened (batches drawn with replacement) when the whole training would make fewer
  than ``min_iterations`` optimiser steps: 12 tiles in batches of 8 give 30 × 17 steps, not 30 × 1;
* ``iterations`` — the total number of optimiser steps; epochs follow from it;
* ``time_budget`` — wall-clock seconds for training (validation included): after every epoch the number of epochs
  still affordable is re-estimated from the measured epoch time and the learning-rate schedule is stretched or
  shrunk to end exactly at the last of them, so the run ends annealed instead of being cut off mid-schedule
  (:class:`TimeBudget`).

The schedule is per optimiser step over :attr:`TrainingLength.total_steps` (see
:func:`medseg.engine.module.build_scheduler`).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from medseg.config import TrainConfig, parse_duration

#: with ``iterations`` or ``time_budget`` and ``iterations_per_epoch: auto``, an epoch (one validation) lasts at least this many batches
MIN_BATCHES_PER_EPOCH = 50
#: below this many optimiser steps a training is unlikely to learn much: it is said before it starts
FEW_STEPS = 250
#: epochs planned before the first epoch of a time-budgeted run has been timed
UNTIMED_EPOCHS = 10_000
#: the clock of :class:`TimeBudget` (a module attribute, so tests can give it a fake one)
clock = time.perf_counter


@dataclass
class TrainingLength:
    """The resolved length of a training.

    Attributes:
        epochs: ``max_epochs`` of the trainer (an upper bound under a time budget).
        batches_per_epoch: training batches per epoch; ``None`` = exactly one pass over the training set.
        total_steps: optimiser steps the schedule spans (updated by :class:`TimeBudget` during training).
        max_steps: a hard stop in optimiser steps (``iterations``), else ``-1``.
        budget_s: the wall-clock budget in seconds, or ``None``.
        one_pass: batches in one pass over the training set.
    """

    epochs: int
    batches_per_epoch: int | None
    total_steps: int
    max_steps: int
    budget_s: float | None
    one_pass: int

    @property
    def steps_per_epoch(self) -> int:
        return max(1, (self.batches_per_epoch or self.one_pass))

    def describe(self) -> str:
        per = f"{self.batches_per_epoch} batches" if self.batches_per_epoch else f"one pass ({self.one_pass} batches)"
        if self.budget_s is not None:
            return f"as many epochs of {per} as fit in {self.budget_s:.0f} s, the learning-rate schedule fitted to them"
        return f"{self.epochs} epochs of {per}: {self.total_steps} optimiser steps"


def resolve_length(t: TrainConfig, n_train: int, batch_size: int) -> TrainingLength:
    """Epochs, batches per epoch and schedule length for ``n_train`` training samples (patches, slices or cases)."""
    acc = t.accumulate_grad_batches
    one_pass = n_train // batch_size if n_train > batch_size else 1
    ipe = t.iterations_per_epoch
    budget = parse_duration(t.time_budget) if t.time_budget else None
    if t.iterations is not None or budget is not None:
        batches = ipe if isinstance(ipe, int) else (None if ipe is None else max(one_pass, MIN_BATCHES_PER_EPOCH))
        per_epoch = max(1, (batches or one_pass) // acc)
        if t.iterations is not None:
            epochs = math.ceil(t.iterations / per_epoch)
            max_steps = t.iterations
            total = t.iterations
        else:
            epochs, max_steps, total = UNTIMED_EPOCHS, -1, UNTIMED_EPOCHS * per_epoch
        return TrainingLength(epochs, batches, total, max_steps, budget, one_pass)
    if ipe == "auto":
        needed = math.ceil(t.min_iterations * acc / t.epochs)
        batches: int | None = None if one_pass >= needed else needed
    else:
        batches = ipe
    per_epoch = max(1, (batches or one_pass) // acc)
    return TrainingLength(t.epochs, batches, t.epochs * per_epoch, -1, None, one_pass)


class TimeBudget(Callback):
    """Fits the number of epochs and the learning-rate schedule to a wall-clock budget.

    After every epoch (validation included) the remaining budget is divided by the median of the recent epoch
    times; the trainer's ``max_epochs`` and the module's ``schedule_total`` (steps the schedule spans) are set so
    the schedule ends at the last affordable epoch. The elapsed time survives a resume.
    """

    def __init__(self, length: TrainingLength):
        assert length.budget_s is not None
        self.length = length
        self.elapsed = 0.0
        self.epoch_times: list[float] = []
        self.planned_epochs: int | None = None
        self._t = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed, "epoch_times": list(self.epoch_times), "planned_epochs": self.planned_epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed = float(state_dict.get("elapsed", 0.0))
        self.epoch_times = [float(x) for x in state_dict.get("epoch_times", [])]
        self.planned_epochs = state_dict.get("planned_epochs")

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule, epochs: int) -> None:
        self.planned_epochs = epochs
        trainer.fit_loop.max_epochs = epochs
        pl_module.schedule_total = epochs * max(1, self.length.steps_per_epoch // max(1, trainer.accumulate_grad_batches))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.planned_epochs:  # resumed: keep the plan made before the interruption
            self._apply(trainer, pl_module, self.planned_epochs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t = clock()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        spent = clock() - self._t
        self.elapsed += spent
        self.epoch_times.append(spent)
        done = trainer.current_epoch + 1
        per_epoch = statistics.median(self.epoch_times[-3:])
        more = int((self.length.budget_s - self.elapsed) // per_epoch) if per_epoch > 0 else 0
        self._apply(trainer, pl_module, done + max(0, more))
        if more <= 0:
            trainer.should_stop = True


def warn_if_short(length: TrainingLength) -> str | None:
    """A sentence when a training would make fewer than :data:`FEW_STEPS` optimiser steps, else ``None``."""
    if length.budget_s is None and length.total_steps < FEW_STEPS:
        return (
            f"this training makes only {length.total_steps} optimiser steps ({length.describe()}); "
            f"set train.iterations (e.g. 1000), train.time_budget (e.g. 5m) or more train.epochs"
        )
    return None
