"""``train(config, out)``: a Lightning Trainer with the callbacks every run needs.

Callbacks: best/last checkpoints (written atomically), early stopping, ``History`` (``history.csv`` +
``curves.png`` every epoch, with throughput and peak memory), ``Snapshots`` (a fixed validation case's
prediction every epoch), ``RNGState`` (exact resume) and a rich progress bar.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg import __version__
from medseg.config import Config, resolve_device
from medseg.core.atomic import atomic_path, write_json, write_text
from medseg.core.errors import ConfigError, DependencyError, MedsegError, RunError, TrainingError
from medseg.data.loading import SegDataModule
from medseg.data.source import open_dataset, resolve_splits
from medseg.engine.module import SegModule, logits_to_labels
from medseg.models import MODELS, count_parameters
from medseg.runs import CONFIG_FILE, PREPROCESS_FILE, prepare_run_dir, read_run, update_run

#: config fields that may change when a run is resumed; everything else must match the checkpoint's run.
RESUMABLE_CHANGES = {
    "name",
    "train.epochs",
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


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class History(Callback):
    """One row per epoch in ``history.csv`` and the curves in ``curves.png``; survives a resume."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.rows: list[dict[str, float]] = []
        self._t0 = 0.0
        self._t_last = 0.0
        self._samples = 0
        self._lr = math.nan

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._t_last = time.perf_counter()
        self._samples = 0
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else math.nan
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._samples += int(batch["image"].shape[0]) * trainer.world_size
        self._t_last = time.perf_counter()

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
        row["lr"] = self._lr  # the rate used during this epoch
        train_s = max(self._t_last - self._t0, 1e-9)
        row["train_time_s"] = train_s
        row["samples_per_s"] = self._samples / train_s
        row["epoch_time_s"] = time.perf_counter() - self._t0
        row["peak_memory_mb"] = peak_memory_mb(pl_module.device)
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
        from medseg.viz.plots import plot_curves

        plot_curves(self.rows, self.run_dir / "curves.png")


class Snapshots(Callback):
    """Saves a fixed validation case's prediction after every validation, for the training-sequence GIF.

    Files: ``snapshots/epoch_NNNN.npz`` with ``label`` (a 2D slice) and ``snapshots/snapshot.json``
    naming the case and slice.
    """

    def __init__(self, run_dir: Path, case_id: str | None):
        self.dir = run_dir / "snapshots"
        self.case_id = case_id

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        dm: SegDataModule = trainer.datamodule  # type: ignore[attr-defined]
        items = dm.items("val")
        item = next((it for it in items if it["case_id"] == self.case_id), items[0])
        label = item["label"]
        z = None
        if pl_module.spatial_dims == 3:
            fg = label.any(axis=0) if pl_module.multi_label else label[0] > 0
            z = int(np.argmax(fg.sum(axis=(1, 2))))
        x = torch.as_tensor(item["image"])[None].to(pl_module.device)
        with torch.no_grad():
            pred = logits_to_labels(pl_module.predict_logits(x), pl_module.multi_label)[0].cpu().numpy()
        if z is not None:
            pred = pred[:, z] if pl_module.multi_label else pred[z]
        self.dir.mkdir(exist_ok=True)
        with atomic_path(self.dir / f"epoch_{trainer.current_epoch:04d}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, label=pred, epoch=trainer.current_epoch)
        if not (self.dir / "snapshot.json").exists():
            from medseg.core.atomic import write_json

            write_json(self.dir / "snapshot.json", {"case": item["case_id"], "slice": z})


class LastCheckpoint(Callback):
    """Writes ``checkpoints/last.ckpt`` at the end of every training epoch, whatever validation says.

    Lightning's ``save_last`` refreshes ``last.ckpt`` only when another checkpoint was saved in the
    same step (with ``monitor="val/dice"``: only when Dice improved), so a resume would rewind to the
    best epoch. The best checkpoint and early stopping decide right after validation, and this
    callback runs after ``History`` has recorded the epoch, so the checkpoint holds the epoch's row,
    the best-model and early-stopping states and the random states; the write is atomic
    (``AtomicCheckpointIO``). (A ``plateau`` scheduler steps after this hook: its resumed state
    misses the last epoch's step.)
    """

    def __init__(self, path: Path):
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)  # every rank calls it; only rank 0 writes


class RNGState(Callback):
    """Saves and restores the Python, NumPy and torch random states with each checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, cached = np.random.get_state()  # as plain values: checkpoints load with weights_only=True
        state = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached], "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


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


def check_output_kind(config: Config, multi_label: bool) -> None:
    """A multi-label data set needs sigmoid outputs, a single-label one softmax."""
    out = config.train.output
    if out == "softmax" and multi_label:
        raise ConfigError(
            "the data set is multi-label (classes may overlap) but train.output is softmax", where="train.output", fix="set train.output=sigmoid (or auto)"
        )
    if out == "sigmoid" and not multi_label:
        raise ConfigError(
            "the data set is single-label (one class per voxel) but train.output is sigmoid", where="train.output", fix="set train.output=softmax (or auto)"
        )


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
    check_output_kind(config, ds.info.multi_label)
    ckpt_path: Path | None = None
    if resume:
        saved, _ = read_run(out)
        check_resume_compatible(saved, config, out)
        ckpt_path = out / "checkpoints" / "last.ckpt"
        if not ckpt_path.is_file():
            raise RunError("nothing to resume: no last checkpoint", where=ckpt_path, fix="start the run again without --resume (add --overwrite)")
        if rank == 0:
            config.save(out / CONFIG_FILE)
        run_dir = out
    elif rank == 0:
        run_dir = prepare_run_dir(out, config, overwrite)
    else:
        run_dir = out
        run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    splits = resolve_splits(config, ds, run_dir if rank == 0 else None)
    info = ds.info
    dm = SegDataModule(config, ds, splits)
    # the batches' geometry, not the data set's: 2D slices of volumes, 2.5D context channels
    module = SegModule(config.dump(), dm.spatial_dims, dm.in_channels, info.class_names, info.multi_label)
    if config.data.preprocess.enabled and rank == 0:  # build the cache now, and keep its recipe for inference
        write_json(run_dir / PREPROCESS_FILE, dm.cache.spec.to_dict())
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
            device=device,
            n_train=len(dm.ids("train")),
            n_val=len(dm.ids("val")),
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
    callbacks: list[Callback] = [ckpt, history, Snapshots(run_dir, config.train.snapshot_case), RNGState(), last]
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
        max_epochs=t.epochs,
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
        log_every_n_steps=1,
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
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
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
    except KeyboardInterrupt:
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


def _best_epoch(history: History) -> int | None:
    scored = [r for r in history.rows if "val_dice" in r and not math.isnan(r["val_dice"])]
    return int(max(scored, key=lambda r: r["val_dice"])["epoch"]) if scored else None


def fit_classical(module: SegModule, dm: SegDataModule, run_dir: Path) -> dict[str, float]:
    """Fit a per-pixel classifier on the (unaugmented) training cases, score the validation cases and
    save it as ``checkpoints/classical.npz`` plus ``best.ckpt``/``last.ckpt`` that point to it.

    Returns:
        The history row (epoch 0): fit time and validation Dice per class.
    """
    from medseg.metrics.overlap import confusion_counts, metrics_from_counts

    items = list(dm.items("train"))
    shapes = {tuple(np.asarray(it["image"]).shape) for it in items}
    if len(shapes) > 1:
        raise ConfigError(
            f"the pixel classifier fits images of one size; the training cases have {len(shapes)} sizes",
            where="model.name",
            fix="resize them (data.preprocess: {enabled: true, resize: [...]}) or use a network",
        )
    images = np.stack([np.asarray(it["image"]) for it in items])
    labels = np.stack([np.asarray(it["label"]) for it in items])
    t0 = time.perf_counter()
    module.net.fit(images, labels)
    fit_s = time.perf_counter() - t0
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    saved = module.net.save(ckpt_dir / "classical.npz")
    dice = []
    with torch.no_grad():
        for it in dm.items("val"):
            logits = module.predict_logits(torch.as_tensor(np.asarray(it["image"]))[None])
            pred = logits_to_labels(logits, module.multi_label)[0].numpy()
            ref = np.asarray(it["label"]) > 0.5 if module.multi_label else np.asarray(it["label"])[0]
            dice.append(metrics_from_counts(confusion_counts(pred, ref, module.scored, module.multi_label))["dice"])
    with np.errstate(all="ignore"):
        per_class = np.nan_to_num(np.nanmean(np.stack(dice), axis=0), nan=0.0)
    ckpt = {"hyper_parameters": dict(module.hparams), "state_dict": {}, "epoch": 0, "global_step": 0, "classical": saved.name}
    for name in ("best.ckpt", "last.ckpt"):
        with atomic_path(ckpt_dir / name) as tmp:
            torch.save(ckpt, tmp)
    row: dict[str, float] = {"epoch": 0, "step": 0, "train_loss": math.nan, "val_dice": float(per_class.mean())}
    row |= {f"val_dice_{module.class_names[k]}": float(v) for k, v in zip(module.scored, per_class, strict=True)}
    row |= {
        "lr": math.nan,
        "train_time_s": fit_s,
        "samples_per_s": len(items) / max(fit_s, 1e-9),
        "epoch_time_s": fit_s,
        "peak_memory_mb": peak_memory_mb(torch.device("cpu")),
    }
    return row
