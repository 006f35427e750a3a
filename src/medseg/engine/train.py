"""``train(config, out)``: a Lightning Trainer with the callbacks every run needs."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg import __version__
from medseg.atomic import atomic_path, write_text
from medseg.config import Config, resolve_device
from medseg.data.pipeline import SegDataModule, open_dataset, resolve_splits
from medseg.engine.module import SegModule
from medseg.engine.run import prepare_run_dir, update_run
from medseg.errors import MedsegError
from medseg.models import count_parameters


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed: never a truncated ``.ckpt``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)


class ProgressBar(RichProgressBar):
    """Rich progress bar showing loss and Dice (without Lightning's version number)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {k.replace("train/", "").replace("_step", "").replace("_epoch", "(ep)"): v for k, v in items.items()}


class History(Callback):
    """One row per epoch in ``history.csv`` and the curves in ``curves.png``."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.rows: list[dict[str, float]] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        row: dict[str, float] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row["train_loss"] = m.get("train/loss_epoch", math.nan)
        ran_val = (trainer.current_epoch + 1) % trainer.check_val_every_n_epoch == 0
        for k, v in sorted(m.items()):
            if k.startswith("val/") and ran_val:
                row[k.replace("/", "_")] = v
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        row["epoch_time_s"] = time.perf_counter() - self._t0
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.rows)
        write_text(self.run_dir / "history.csv", buf.getvalue())
        from medseg.reports.plots import plot_curves

        plot_curves(self.rows, self.run_dir / "curves.png")


def train(config: Config, out: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Train the model a config describes and leave a run folder at ``out``.

    Args:
        config: a validated config.
        out: the run folder to create.
        overwrite: replace a folder that already holds a run.
        progress: show a rich progress bar.

    Returns:
        The run folder.
    """
    ds = open_dataset(config)  # fail on bad data before touching the output folder
    run_dir = prepare_run_dir(Path(out), config, overwrite)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    splits = resolve_splits(config, ds, run_dir)
    info = ds.info
    module = SegModule(config.dump(), info.dims, info.n_channels, info.class_names, info.multi_label)
    dm = SegDataModule(config, ds, splits)
    device = resolve_device(config.train.device)
    update_run(
        run_dir,
        name=config.name,
        status="running",
        medseg_version=__version__,
        dataset=str(ds.root.resolve()),
        dataset_name=info.name,
        model=config.model.name,
        parameters=count_parameters(module.net),
        device=device,
        n_train=len(dm.ids("train")),
        n_val=len(dm.ids("val")),
        started=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    ckpt = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/dice",
        mode="max",
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [ckpt, History(run_dir)]
    if config.train.early_stop_patience:
        callbacks.append(EarlyStopping(monitor="val/dice", mode="max", patience=config.train.early_stop_patience))
    if progress:
        callbacks.append(ProgressBar(leave=True))
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else device,
        devices=1,
        max_epochs=config.train.epochs,
        max_time=config.train.max_time,
        precision=config.train.precision,
        deterministic=config.train.deterministic,
        check_val_every_n_epoch=config.train.val_every,
        callbacks=callbacks,
        logger=CSVLogger(save_dir=run_dir, name="", version="logs"),
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=run_dir,
    )
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm)
    except MedsegError:
        update_run(run_dir, status="failed")
        raise
    except KeyboardInterrupt:
        update_run(run_dir, status="interrupted")
        raise
    best = ckpt.best_model_score
    update_run(
        run_dir,
        status="finished",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        train_time_s=round(time.perf_counter() - t0, 2),
        epochs_run=trainer.current_epoch,
        best_metric={"name": "val/dice", "value": None if best is None else float(best)},
    )
    return run_dir
