"""The callbacks every run gets: atomic checkpoints, the per-epoch history and curves, validation snapshots,
the last checkpoint of every epoch, the random states (exact resume) and the progress bar."""

from __future__ import annotations

import csv
import difflib
import io
import math
import random
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg.core.atomic import atomic_path, write_text
from medseg.core.errors import ConfigError
from medseg.data.loading import SegDataModule
from medseg.runs import CURVES_FILE, HISTORY_FILE, write_snapshot


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


#: ``curves.png`` is redrawn at most this often during training (drawing takes ~0.2 s on a CPU: every epoch of a
#: short training, that was ~4 % of it) and always when the training ends
PLOT_EVERY_S = 30.0


class History(Callback):
    """One row per epoch in ``history.csv`` (every epoch) and the curves in ``curves.png`` (at most every
    :data:`PLOT_EVERY_S` seconds, and at the end); survives a resume."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.rows: list[dict[str, float]] = []
        self._plotted = -math.inf
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

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            self._write(plot=True)

    def _write(self, plot: bool = False) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.rows)
        write_text(self.run_dir / HISTORY_FILE, buf.getvalue())
        if plot or time.monotonic() - self._plotted >= PLOT_EVERY_S:
            from medseg.viz.plots import plot_curves

            plot_curves(self.rows, self.run_dir / CURVES_FILE)
            self._plotted = time.monotonic()


class Snapshots(Callback):
    """Saves a fixed case's prediction after every validation, for the training-sequence GIF.

    The case is ``train.snapshot_case`` of ``train.snapshot_split`` (default: the first validation case; a test
    case shows how the network does on unseen data, as study 000's GIF). Files (:func:`medseg.runs.write_snapshot`):
    ``snapshots/epoch_NNNN.npz`` with ``label`` (a 2D slice) and ``snapshots/snapshot.json`` naming the case, split
    and slice. A volume — whether a 3D network or a 2D one trained on its slices predicts it — is cut at the slice
    (along the first axis) with the most foreground.
    """

    def __init__(self, run_dir: Path, case_id: str | None, split: str = "val"):
        self.run_dir = run_dir
        self.case_id = case_id
        self.split = split

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm: SegDataModule = trainer.datamodule  # type: ignore[attr-defined]
        ids = list(dm.ids(self.split))
        if not ids:
            raise ConfigError(f"the {self.split} set is empty: no case to follow in the training GIF", where="train.snapshot_split", fix="use val")
        if self.case_id is not None and self.case_id not in ids:
            close = difflib.get_close_matches(self.case_id, ids, n=3, cutoff=0.4)
            raise ConfigError(
                f"case {self.case_id!r} is not in the {self.split} set",
                where="train.snapshot_case",
                fix=f"did you mean {', '.join(close)}?" if close else f"name one of its {len(ids)} cases, e.g. {ids[0]}",
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        dm: SegDataModule = trainer.datamodule  # type: ignore[attr-defined]
        items = dm.items(self.split)
        item = next((it for it in items if it["case_id"] == self.case_id), items[0])
        label = np.asarray(item["label"])
        image = torch.as_tensor(np.asarray(item["image"]))[None]
        pred = pl_module.inferer().labels(image).numpy()  # type: ignore[operator]
        z = None
        if image.ndim == 5:  # a volume: keep the slice with the most foreground
            fg = label.any(axis=0) if pl_module.multi_label else label[0] > 0
            z = int(np.argmax(fg.sum(axis=(1, 2))))
            pred = pred[:, z] if pl_module.multi_label else pred[z]
        write_snapshot(self.run_dir, trainer.current_epoch, pred, {"case": item["case_id"], "split": self.split, "slice": z})


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
