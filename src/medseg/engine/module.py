"""The LightningModule: one ``_step`` shared by training, validation and test."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch

from medseg.config import Config, TrainConfig
from medseg.core.errors import TrainingError
from medseg.engine.inferer import Inferer
from medseg.losses import build_loss
from medseg.metrics.overlap import confusion_counts, correct_voxels, metrics_from_counts
from medseg.models import create_model
from medseg.runs import Resolved, derive_resolved


def logits_to_labels(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """``(B, C, ...)`` logits → ``(B, ...)`` class indices, or ``(B, C, ...)`` booleans (sigmoid > 0.5)."""
    return logits > 0 if multi_label else logits.argmax(1)


def split_ignored(ref: np.ndarray, ignore_label: int | None, multi_label: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A reference without its ignore label: ``(ref, valid)``; multi-label data lose their last (ignore) channel."""
    if ignore_label is None:
        return ref, None
    if multi_label:
        return ref[:ignore_label], ~ref[ignore_label].astype(bool)
    return ref, ref != ignore_label


def plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """Drop tensor subclasses (MONAI's MetaTensor adds a Python hook to every op of a forward pass)."""
    return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x


def _first(out: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return out[0] if isinstance(out, list | tuple) else out


def _fusable(params: list[Any]) -> bool:
    """Whether PyTorch's fused (one kernel for all parameters) optimiser step runs on these parameters: floating
    point, all on one CPU or CUDA device. On a CPU a U-Net's training step was 1.1–1.2× faster (benchmarks/cpu_step.py)."""
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    devices = {p.device.type for p in tensors}
    return bool(tensors) and devices <= {"cpu", "cuda"} and len(devices) == 1 and all(p.is_floating_point() for p in tensors)


def build_optimizer(params: Any, t: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``t`` names, fused where the parameters allow (same update, fewer kernel launches)."""
    params = list(params)
    # with float16 loss scaling, clipping needs the gradients unscaled before the step: a fused step unscales them itself
    clipped_amp = t.precision == "16-mixed" and t.grad_clip is not None
    fused = {"fused": True} if _fusable(params) and not clipped_amp else {"foreach": True} if clipped_amp else {}
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0, weight_decay=t.weight_decay, **fused)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, **fused)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, **fused)


def build_scheduler(opt: torch.optim.Optimizer, t: TrainConfig, *, total_steps: Callable[[], int], steps_per_epoch: int) -> dict[str, Any] | None:
    """The learning-rate schedule, per optimiser step, with an optional linear warm-up (plateau: per epoch on ``val/loss``).

    ``total_steps`` is read at every step, so a time budget can stretch or shrink the schedule while it runs
    (:class:`medseg.engine.length.TimeBudget`); cosine and poly reach ``min_lr`` at the last step.
    """
    if t.scheduler == "none" and not t.warmup_epochs:
        return None
    if t.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=t.plateau_factor, patience=t.plateau_patience, min_lr=t.min_lr)
        return {"scheduler": sched, "interval": "epoch", "monitor": "val/loss", "frequency": t.val_every, "strict": False}
    spe = max(1, steps_per_epoch)
    w, floor = t.warmup_epochs * spe, t.min_lr / t.lr

    def factor(step: int) -> float:
        if step < w:
            return (step + 1) / (w + 1)
        e = step - w
        span = max(1, total_steps() - w - 1)
        if t.scheduler == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(e, span) / span))
        if t.scheduler == "poly":
            return floor + (1 - floor) * (1 - min(e, span) / span) ** t.poly_power
        if t.scheduler == "exponential":
            return t.lr_gamma ** (e // spe)
        if t.scheduler == "step":
            return t.lr_gamma ** ((e // spe) // t.step_size)
        return 1.0

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"}


class SegModule(L.LightningModule):
    """A segmentation network with its loss and optimiser, built from the run config.

    Args:
        config: the resolved run config as a plain dict (saved in checkpoints).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        class_names: names of the classes (background first unless multi-label).
        multi_label: sigmoid per class instead of softmax.
        resolved: what the run trains with (:class:`~medseg.runs.Resolved` as a dict: the plan's patch,
            slicing, preprocessing); validation predicts with it. Default: derived from ``config``.
        ignore_label: the class of unannotated voxels (the last one), or None: the network has no
            output for it, and its voxels count in neither the loss nor the validation Dice.
    """

    def __init__(
        self,
        config: dict[str, Any],
        spatial_dims: int,
        in_channels: int,
        class_names: list[str],
        multi_label: bool = False,
        *,
        resolved: dict[str, Any] | None = None,
        ignore_label: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = Config.model_validate(config)
        self.resolved: Resolved = Resolved.from_dict(resolved) if resolved else derive_resolved(self.cfg, dict(self.hparams))
        self.class_names = list(class_names)
        self.multi_label = multi_label
        self.spatial_dims = spatial_dims
        t = self.cfg.train
        self.ignore_label = ignore_label
        n_out = len(class_names) - (ignore_label is not None)
        self.net = create_model(self.cfg.model.name, spatial_dims, in_channels, n_out, **self.cfg.model.params)
        self.loss_fn = build_loss(t.loss, multi_label, t.deep_supervision_weights, ignore_index=ignore_label, **t.loss_params)
        self.scored = [k for k in range(0 if multi_label else 1, len(class_names)) if k != ignore_label]
        self._dice: dict[str, list[np.ndarray]] = {}
        self._accuracy: dict[str, list[int]] = {}  # stage → [voxels right, voxels]
        #: optimiser steps the learning-rate schedule spans and per epoch (set by ``train`` from the resolved length)
        self.schedule_total = max(1, t.epochs)
        self.steps_per_epoch = 1
        self._channels_last = False
        self.__dict__["_forward"] = torch.compile(self.net) if t.compile else self.net  # not a submodule: state-dict keys stay those of net

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.__dict__["_forward"](x)

    def on_fit_start(self) -> None:
        t = self.cfg.train
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = t.cudnn_benchmark and not t.deterministic
            if t.channels_last and self.spatial_dims == 2:
                self.net.to(memory_format=torch.channels_last)
                self._channels_last = True

    def inferer(self) -> Inferer:
        """The network as an :class:`~medseg.engine.inferer.Inferer` (what validation and snapshots predict with)."""
        return Inferer(self, self.resolved)

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        x, y = plain_tensor(batch["image"]), plain_tensor(batch["label"])
        out = self(x) if stage == "train" else self.inferer().scores(x, log=True)
        loss = self.loss_fn(out, y)
        if stage == "train":
            self._check_finite(loss)
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=True, batch_size=x.shape[0], sync_dist=stage != "train")
        if stage != "train":
            pred = logits_to_labels(_first(out).detach(), self.multi_label).cpu().numpy()
            ref = (y > 0.5 if self.multi_label else y[:, 0]).cpu().numpy()
            for p, r in zip(pred, ref, strict=True):
                r, valid = split_ignored(r, self.ignore_label, self.multi_label)
                self._dice.setdefault(stage, []).append(metrics_from_counts(confusion_counts(p, r, self.scored, self.multi_label, valid))["dice"])
                right, total = correct_voxels(p, r) if valid is None else correct_voxels(p[..., valid], r[..., valid])
                acc = self._accuracy.setdefault(stage, [0, 0])
                acc[0] += right
                acc[1] += total
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop on a non-finite training loss, one step late: each step's flag is queued behind its kernels (on CUDA
        copied to pinned memory) and read at the next step, at the end of the epoch or of training, always before
        validation and the epoch's checkpoint. Reading it at once would make the host wait for the GPU every step."""
        value = loss.detach().float()
        flag = torch.stack([torch.isfinite(value).float(), value])
        event = None
        if flag.device.type == "cuda":
            host = torch.empty(2, dtype=torch.float32, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            flag, event = host, torch.cuda.Event()
            event.record()
        self._flush_finite()
        self._pending_finite = (flag, event, self.current_epoch, self.global_step)

    def _flush_finite(self) -> None:
        """Read the flag of the step still pending (waits for that step's loss only)."""
        pending, self._pending_finite = getattr(self, "_pending_finite", None), None
        if pending is not None:
            flag, event, epoch, step = pending
            if event is not None:
                event.synchronize()
            self._raise_if_not_finite(bool(flag[0] > 0), float(flag[1]), epoch, step)

    def _raise_if_not_finite(self, finite: bool, value: float, epoch: int, step: int) -> None:
        if not finite:
            raise TrainingError(
                f"the training loss became {value} at epoch {epoch}, step {step}",
                where=self.cfg.name,
                fix="lower train.lr, set train.grad_clip, or use precision 32; the last good checkpoint is kept",
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        trainer = self.trainer
        last = batch_idx + 1 >= trainer.num_training_batches or trainer.should_stop or 0 < trainer.max_steps <= self.global_step
        if last:  # before validation and the epoch's checkpoint
            self._flush_finite()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def _log_dice(self, stage: str) -> None:
        """Mean Dice and Dice per class over the stage's cases, and the pixel accuracy pooled over its voxels."""
        right, total = self._accuracy.pop(stage, [0, 0])
        counts = torch.tensor([right, total], dtype=torch.float64, device=self.device)
        if self.trainer.world_size > 1:
            counts = self.all_gather(counts).reshape(-1, 2).sum(0)
        if counts[1] > 0:
            self.log(f"{stage}/pixel_accuracy", float(counts[0] / counts[1]))
        values = self._dice.pop(stage, [])
        local = torch.as_tensor(np.stack(values) if values else np.zeros((0, len(self.scored))), dtype=torch.float64, device=self.device)
        if self.trainer.world_size > 1:  # every process scored different cases: pool them
            counts = self.all_gather(torch.tensor([local.shape[0]], device=self.device)).flatten()
            padded = torch.full((int(counts.max()), len(self.scored)), float("nan"), dtype=torch.float64, device=self.device)
            padded[: local.shape[0]] = local
            local = self.all_gather(padded).reshape(-1, len(self.scored))
        arr = local.cpu().numpy()
        if arr.size == 0:
            return
        with np.errstate(all="ignore"):
            per_class = np.nan_to_num(np.nanmean(arr, axis=0) if np.isfinite(arr).any() else np.zeros(len(self.scored)), nan=0.0)
        self.log(f"{stage}/dice", float(per_class.mean()), prog_bar=True)
        for k, v in zip(self.scored, per_class, strict=True):
            self.log(f"{stage}/dice_{self.class_names[k]}", float(v))

    def on_validation_epoch_end(self) -> None:
        self._log_dice("val")

    def on_test_epoch_end(self) -> None:
        self._log_dice("test")

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None) -> None:
        """bfloat16 needs no loss scaling: its gradients are clipped as they are, so a fused optimiser step can follow
        (Lightning's mixed-precision plugin refuses to clip for any fused optimiser)."""
        if gradient_clip_val and self.cfg.train.precision == "bf16-mixed" and gradient_clip_algorithm in (None, "norm"):
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        opt = build_optimizer(self.parameters(), self.cfg.train)
        sched = build_scheduler(opt, self.cfg.train, total_steps=lambda: self.schedule_total, steps_per_epoch=self.steps_per_epoch)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
