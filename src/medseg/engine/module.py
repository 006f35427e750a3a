"""The LightningModule: one ``_step`` shared by training, validation and test."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medseg.config import Config
from medseg.losses import build_loss
from medseg.metrics.overlap import confusion_counts, metrics_from_counts
from medseg.models import create_model


def logits_to_labels(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """``(B, C, ...)`` logits → ``(B, ...)`` class indices, or ``(B, C, ...)`` booleans (sigmoid > 0.5)."""
    return logits > 0 if multi_label else logits.argmax(1)


class SegModule(L.LightningModule):
    """A segmentation network with its loss and optimiser, built from the run config.

    Args:
        config: the resolved run config as a plain dict (saved in checkpoints).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        class_names: names of the classes (background first unless multi-label).
        multi_label: sigmoid per class instead of softmax.
    """

    def __init__(self, config: dict[str, Any], spatial_dims: int, in_channels: int, class_names: list[str], multi_label: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = Config.model_validate(config)
        self.class_names = list(class_names)
        self.multi_label = multi_label
        self.spatial_dims = spatial_dims
        self.net = create_model(self.cfg.model.name, spatial_dims, in_channels, len(class_names), **self.cfg.model.params)
        self.loss_fn = build_loss(self.cfg.train.loss, multi_label, **self.cfg.train.loss_params)
        self.scored = list(range(len(class_names))) if multi_label else list(range(1, len(class_names)))
        self._dice: dict[str, list[np.ndarray]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-image forward, or a sliding window when the image exceeds the training patch."""
        ps = self.cfg.data.patch_size
        if ps and any(s > p for s, p in zip(x.shape[2:], ps, strict=True)):
            return sliding_window_inference(x, roi_size=list(ps), sw_batch_size=4, predictor=self.net, overlap=0.5, mode="gaussian")
        return self.net(x)

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        x, y = batch["image"], batch["label"]
        logits = self(x) if stage == "train" else self.predict_logits(x)
        loss = self.loss_fn(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=True, batch_size=x.shape[0])
        if stage != "train":
            pred = logits_to_labels(logits.detach(), self.multi_label).cpu().numpy()
            ref = (y > 0.5 if self.multi_label else y[:, 0]).cpu().numpy()
            for p, r in zip(pred, ref, strict=True):
                self._dice.setdefault(stage, []).append(metrics_from_counts(confusion_counts(p, r, self.scored, self.multi_label))["dice"])
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def _log_dice(self, stage: str) -> None:
        values = self._dice.pop(stage, [])
        if not values:
            return
        per_class = np.nanmean(np.stack(values), axis=0) if np.isfinite(np.stack(values)).any() else np.full(len(self.scored), np.nan)
        per_class = np.nan_to_num(per_class, nan=0.0)
        self.log(f"{stage}/dice", float(per_class.mean()), prog_bar=True)
        for k, v in zip(self.scored, per_class, strict=True):
            self.log(f"{stage}/dice_{self.class_names[k]}", float(v))

    def on_validation_epoch_end(self) -> None:
        self._log_dice("val")

    def on_test_epoch_end(self) -> None:
        self._log_dice("test")

    def configure_optimizers(self) -> Any:
        t = self.cfg.train
        params = self.parameters()
        if t.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=t.lr, momentum=0.99, nesterov=True, weight_decay=t.weight_decay)
        elif t.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, t.epochs), eta_min=t.lr * 0.01)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
