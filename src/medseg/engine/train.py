"""``train(config, out)``: a Lightning Trainer with the callbacks every run needs.

Callbacks: best/last checkpoints (written atomically), early stopping, ``History`` (``history.csv`` +
``curves.png`` every epoch, with throughput and peak memory), ``Snapshots`` (a fixed validation case's
prediction every epoch), ``RNGState`` (exact resume) and a rich progress bar.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from medseg import __version__
from medseg.config import Config, resolve_device
from medseg.core.errors import ConfigError, DependencyError, MedsegError, ModelError, RunError, TrainingError
from medseg.data.loading import SegDataModule
from medseg.data.source import open_dataset, resolve_splits
from medseg.engine.callbacks import AtomicCheckpointIO, History, LastCheckpoint, ProgressBar, RNGState, Snapshots
from medseg.engine.classical import fit_classical
from medseg.engine.length import TimeBudget, resolve_length, warn_if_short
from medseg.engine.module import SegModule
from medseg.engine.quiet import quiet_lightning
from medseg.losses import LOSSES
from medseg.models import MODELS, count_parameters
from medseg.runs import CONFIG_FILE, prepare_run_dir, read_run, resolve_training, update_run, write_preprocess

#: config fields that may change when a run is resumed; everything else must match the checkpoint's run.
RESUMABLE_CHANGES = {
    "name",
    "train.epochs",
    "train.iterations",
    "train.time_budget",
    "train.max_time",
    "train.early_stop_patience",
    "train.device",
    "train.devices",
    "train.num_nodes",
    "train.strategy",
    "train.threads",
    "train.compile",
    "train.loggers",
    "data.num_workers",
}


def global_rank_from_env() -> int:
    """The process's rank when launched by Lightning, torchrun or SLURM (0 when alone)."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    return int(os.environ.get("NODE_RANK", 0)) * 1000 + int(os.environ.get("LOCAL_RANK", 0))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("params", "loss_params", "builtin"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_compatible(saved: Config, new: Config, where: Path) -> None:
    """Refuse a resume whose config changes the model, the data or the optimisation."""
    a, b = _flatten(saved.dump()), _flatten(new.dump())
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES]
    if changed:
        k = changed[0]
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise RunError(
            f"cannot resume: {k} is {b.get(k)!r} but the run was trained with {a.get(k)!r}{more}",
            where=where / CONFIG_FILE,
            fix="resume with the run's own config (omit CONFIG), or start a new run with another --out",
        )


def check_output_kind(config: Config, multi_label: bool, regions: bool = False) -> None:
    """A multi-label data set needs sigmoid outputs, a single-label one softmax."""
    out = config.train.output
    if out == "softmax" and regions:
        raise ConfigError(
            "the data set's classes are regions (nested or overlapping label unions): softmax cross-entropy cannot train them",
            where="train.output",
            fix="set train.output=sigmoid (or auto): one sigmoid output per region, trained with dice_ce (Dice + BCE)",
        )
    if out == "softmax" and multi_label:
        raise ConfigError(
            "the data set is multi-label (classes may overlap) but train.output is softmax", where="train.output", fix="set train.output=sigmoid (or auto)"
        )
    if out == "sigmoid" and not multi_label:
        raise ConfigError(
            "the data set is single-label (one class per voxel) but train.output is sigmoid", where="train.output", fix="set train.output=softmax (or auto)"
        )


def check_names(config: Config) -> None:
    """The model, loss and device a config names exist: checked before a run folder is created."""
    try:
        MODELS.get(config.model.name)
    except ModelError as e:
        raise ModelError(e.problem, where="model.name", fix=e.fix) from None
    try:
        LOSSES.get(config.train.loss)
    except MedsegError as e:
        raise ConfigError(e.problem, where="train.loss", fix=e.fix) from None
    resolve_device(config.train.device)


def check_resume_checkpoint(path: Path) -> None:
    """A checkpoint to resume from must load with ``weights_only=True`` (tensors and plain values only)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, ImportError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]  # torch's words on what was refused, without its preamble
        told = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file an issue", "Check the documentation"))]
        first = (told or lines or [type(e).__name__])[0][:120]
        raise RunError(
            f"the checkpoint cannot be loaded safely with weights_only=True ({first})",
            where=path,
            fix="resume only checkpoints written by medseg; start a new run with --out (or --overwrite)",
        ) from None


def _loggers(config: Config, run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = []
    for name in dict.fromkeys(config.train.loggers):
        if name == "csv":  # a resumed run logs to logs_2, logs_3, ... so earlier rows are kept
            version = next(v for v in ("logs", *(f"logs_{i}" for i in range(2, 1000))) if not (run_dir / v).exists())
            loggers.append(CSVLogger(save_dir=run_dir, name="", version=version))
        elif name == "tensorboard":
            try:
                from lightning.pytorch.loggers import TensorBoardLogger

                loggers.append(TensorBoardLogger(save_dir=run_dir, name="", version="tensorboard", default_hp_metric=False))
            except ModuleNotFoundError:
                raise DependencyError(
                    "the TensorBoard logger needs the tensorboard package", where="train.loggers", fix="pip install 'medseg[loggers]'"
                ) from None
        elif name == "mlflow":
            try:
                import mlflow  # noqa: F401
                from lightning.pytorch.loggers import MLFlowLogger
            except ModuleNotFoundError:
                raise DependencyError("the MLflow logger needs the mlflow package", where="train.loggers", fix="pip install 'medseg[loggers]'") from None
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a local file store inside the run folder
            loggers.append(MLFlowLogger(experiment_name=config.name, tracking_uri=(run_dir / "mlruns").resolve().as_uri()))
    return loggers


@quiet_lightning()
def train(config: Config, out: str | Path, overwrite: bool = False, progress: bool = True, resume: bool = False) -> Path:
    """Train the model a config describes and leave a run folder at ``out``.

    Args:
        config: a validated config.
        out: the run folder to create (or to resume).
        overwrite: replace a folder that already holds a run.
        progress: show a rich progress bar.
        resume: continue the run in ``out`` from its last checkpoint, with model, optimiser, scheduler,
            scaler, epoch, step, best metric, early-stopping state, curves and random states restored.

    Returns:
        The run folder.
    """
    out = Path(out)
    rank = global_rank_from_env()
    ds = open_dataset(config)  # fail on bad data before touching the output folder
    check_output_kind(config, ds.info.multi_label, bool(ds.info.regions_class_order))
    check_names(config)
    ckpt_path: Path | None = None
    if resume:
        saved, _ = read_run(out)
        check_resume_compatible(saved, config, out)
        ckpt_path = out / "checkpoints" / "last.ckpt"
        if not ckpt_path.is_file():
            raise RunError("nothing to resume: no last checkpoint", where=ckpt_path, fix="start the run again without --resume (add --overwrite)")
        check_resume_checkpoint(ckpt_path)
        if rank == 0:
            config.save(out / CONFIG_FILE)
        run_dir = out
    elif rank == 0:
        made = [p for p in (out, *out.parents) if not p.exists()]  # removed again if nothing gets trained
        run_dir = prepare_run_dir(out, config, overwrite)
    else:
        run_dir = out
        run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    info = ds.info
    try:
        splits = resolve_splits(config, ds, run_dir if rank == 0 else None)
        dm = SegDataModule(config, ds, splits)
        # the batches' geometry, not the data set's: 2D slices of volumes, 2.5D context channels; the patch the
        # plan gives, the preprocessing (the cache is built now) — saved, so inference predicts as trained
        resolved = resolve_training(config, dm)
        module = SegModule(
            config.dump(), dm.spatial_dims, dm.in_channels, info.class_names, info.multi_label, resolved=resolved.to_dict(), ignore_label=info.ignore_label
        )
        if resolved.preprocess is not None and rank == 0:
            write_preprocess(run_dir, resolved.preprocess)
        length = resolve_length(config.train, len(dm.train_dataset()), config.data.batch_size)
    except MedsegError:
        if not resume and rank == 0:  # nothing was trained: leave no half-made run folder
            shutil.rmtree(run_dir, ignore_errors=True)
            for p in made[1:]:
                with contextlib.suppress(OSError):
                    p.rmdir()  # folders made for it, if empty
        raise
    dm.batches_per_epoch = length.batches_per_epoch
    module.schedule_total = length.total_steps
    module.steps_per_epoch = max(1, length.steps_per_epoch // config.train.accumulate_grad_batches)
    short = warn_if_short(length)
    if short and rank == 0 and MODELS.meta(config.model.name).get("training") != "fit":
        warnings.warn(short, stacklevel=3)  # the caller of train(), past quiet_lightning
    device = resolve_device(config.train.device)
    if rank == 0:
        update_run(
            run_dir,
            name=config.name,
            status="running",
            medseg_version=__version__,
            dataset=str(ds.root.resolve()),
            dataset_name=info.name,
            model=config.model.name,
            parameters=count_parameters(module.net),
            macs=_macs(config, resolved, dm),
            resolved=resolved.to_dict(),
            device=device,
            n_train=len(dm.ids("train")),
            n_val=len(dm.ids("val")),
            length={
                "epochs": None if length.budget_s else length.epochs,
                "batches_per_epoch": length.batches_per_epoch or length.one_pass,
                "optimizer_steps": None if length.budget_s else length.total_steps,
                "time_budget_s": length.budget_s,
            },
            **({} if resume else {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}),
        )
    ckpt = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/dice",
        mode="max",
        save_last=False,  # last.ckpt is written every epoch by LastCheckpoint
        save_on_train_epoch_end=False,  # decide on the best model right after validation, before LastCheckpoint runs
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    history = History(run_dir)
    # order matters: LastCheckpoint saves after History has added the epoch's row
    last = LastCheckpoint(run_dir / "checkpoints" / "last.ckpt")
    callbacks: list[Callback] = [ckpt, history, Snapshots(run_dir, config.train.snapshot_case, config.train.snapshot_split), RNGState()]
    if length.budget_s is not None:  # before LastCheckpoint: the checkpoint carries the updated plan
        callbacks.append(TimeBudget(length))
    callbacks.append(last)
    if config.train.early_stop_patience:
        callbacks.append(EarlyStopping(monitor="val/dice", mode="max", patience=config.train.early_stop_patience, check_on_train_epoch_end=False))
    if progress:
        callbacks.append(ProgressBar(leave=True))
    t = config.train
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else device,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        max_epochs=length.epochs,
        max_steps=length.max_steps,
        max_time=t.max_time,
        precision=t.precision,
        deterministic=t.deterministic,
        check_val_every_n_epoch=t.val_every,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.grad_clip,
        callbacks=callbacks,
        logger=_loggers(config, run_dir),
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        # the per-step loss reaches the loggers every 50 batches (or once an epoch when shorter): each write reads
        # the loss on the host, which stalls a GPU's queue; the epoch's curves are logged in full regardless
        log_every_n_steps=max(1, min(50, length.batches_per_epoch or length.one_pass)),
        default_root_dir=run_dir,
        use_distributed_sampler=True,
    )
    t0 = time.perf_counter()
    if MODELS.meta(config.model.name).get("training") == "fit":  # classical per-pixel classifiers: fit, no epochs
        history.rows = [fit_classical(module, dm, run_dir)]
        history._write()
        update_run(
            run_dir,
            status="finished",
            finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
            train_time_s=round(time.perf_counter() - t0, 2),
            epochs_run=1,
            best_metric={"name": "val/dice", "value": history.rows[0]["val_dice"]},
            best_epoch=0,
        )
        return run_dir
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except MedsegError:
        if trainer.is_global_zero:
            update_run(run_dir, status="failed")
        raise
    except torch.OutOfMemoryError:
        if trainer.is_global_zero:
            update_run(run_dir, status="failed")
        raise TrainingError(
            f"out of {'GPU ' if device == 'cuda' else ''}memory at epoch {trainer.current_epoch}",
            where=run_dir,
            fix="lower data.batch_size or data.patch_size, use train.precision=16-mixed, raise train.accumulate_grad_batches to keep the batch",
        ) from None
    except (KeyboardInterrupt, SystemExit):  # Ctrl+C (Lightning turns it into SystemExit), SIGTERM (core.signals)
        if trainer.is_global_zero:
            update_run(run_dir, status="interrupted")
        raise
    if not trainer.is_global_zero:
        return run_dir
    best = ckpt.best_model_score
    prev = read_run(run_dir)[1].get("train_time_s", 0.0) if resume else 0.0
    update_run(
        run_dir,
        status="finished",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        train_time_s=round(prev + time.perf_counter() - t0, 2),
        epochs_run=trainer.current_epoch,
        best_metric={"name": "val/dice", "value": None if best is None else float(best)},
        best_epoch=_best_epoch(history),
    )
    return run_dir


def _macs(config: Config, resolved: Any, dm: SegDataModule) -> dict[str, Any]:
    """Multiply-accumulates of one forward pass at the training patch (or the first training image), counted on
    the meta device (shapes only, nothing computed); ``None`` when the model cannot be traced there."""
    from medseg.models.complexity import build_on_meta, macs

    size = resolved.patch_size
    if size is None:
        shape = list(np.shape(dm.items("train")[0]["image"])[1:])
        size = [s for i, s in enumerate(shape) if not (resolved.slices and i == resolved.slice_axis)]
    params = {k: v for k, v in config.model.params.items() if k != "pretrained"}
    try:
        net = build_on_meta(config.model.name, resolved.spatial_dims, resolved.in_channels, len(resolved.class_names), **params)
        value: int | None = macs(net, (1, resolved.in_channels, *size), device="meta")
    except Exception:  # MACs are informative; a model the counter cannot trace on the meta device records none
        value = None
    return {"value": value, "input": [int(s) for s in size]}


def _best_epoch(history: History) -> int | None:
    scored = [r for r in history.rows if "val_dice" in r and not math.isnan(r["val_dice"])]
    return int(max(scored, key=lambda r: r["val_dice"])["epoch"]) if scored else None
