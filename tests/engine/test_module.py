"""The LightningModule's validation records: pixel accuracy next to Dice per epoch (the imbalance trap),
checked on hand-made batches and against an independent count on a trained run; the test loss of one case."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from helpers import tiny_config
from medseg.config import config_from_dict
from medseg.engine.case_loss import probability_loss
from medseg.engine.module import SegModule
from medseg.engine.train import train
from medseg.losses import build_loss


class Constant(nn.Module):
    """Logits that pick one class everywhere (class ``k``), or a fixed label map when given."""

    def __init__(self, n_classes: int, k: int = 0, label: torch.Tensor | None = None):
        super().__init__()
        self.n, self.k, self.label = n_classes, k, label
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.n, *x.shape[2:]) + 0 * self.w
        if self.label is None:
            out[:, self.k] = 5.0
        else:
            out.scatter_(1, self.label.expand(x.shape[0], 1, *x.shape[2:]).long(), 5.0)
        return out


def _module(net: nn.Module, classes: list[str]) -> SegModule:
    m = SegModule(config_from_dict(tiny_config()).dump(), spatial_dims=2, in_channels=1, class_names=classes)
    m.net = net
    m.__dict__["_forward"] = net
    return m


def _validate(module: SegModule, labels: list[np.ndarray]) -> dict[str, float]:
    batches = [{"image": torch.zeros(1, 1, *lab.shape), "label": torch.as_tensor(lab[None, None].astype(np.int64))} for lab in labels]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    loader = DataLoader(batches, batch_size=None)  # one case per batch
    return {k: float(v) for k, v in trainer.validate(module, dataloaders=loader, verbose=False)[0].items()}


def test_imbalance_trap_accuracy_098_with_dice_0() -> None:
    """A 2 % structure missed entirely: 98 % of the pixels are right, Dice is 0."""
    lab = np.zeros((50, 50), np.int64)
    lab[10:15, 20:30] = 1  # 50 of 2500 pixels
    got = _validate(_module(Constant(2, k=0), ["background", "LV"]), [lab])
    assert got["val/pixel_accuracy"] == pytest.approx(2450 / 2500, abs=1e-7)  # logged as float32
    assert got["val/dice"] == 0.0 and got["val/dice_LV"] == 0.0


def test_pixel_accuracy_is_pooled_over_voxels_of_every_class() -> None:
    a = np.zeros((4, 5), np.int64)
    a[0, :] = 1
    a[1, :2] = 2
    pred = np.zeros((4, 5), np.int64)
    pred[:, :3] = 1  # columns 0–2 → class 1, 3–4 → background
    got = _validate(_module(Constant(3, label=torch.as_tensor(pred)[None, None]), ["background", "x", "y"]), [a])
    assert got["val/pixel_accuracy"] == pytest.approx((3 + 2 * 2 + 2) / 20)  # row 0: 3 right; rows 2–3: columns 3–4; row 1: columns 3–4
    b = np.full((6, 3), 2, np.int64)
    got = _validate(_module(Constant(3, k=2), ["background", "x", "y"]), [a, b])
    assert got["val/pixel_accuracy"] == pytest.approx((2 + 18) / (20 + 18))  # pooled over voxels, not the mean of the cases


def test_history_records_pixel_accuracy_that_matches_the_checkpoint(tmp_path: Path) -> None:
    from medseg.data.loading import normalize_image
    from medseg.data.splits import load_splits, select
    from medseg.data.store import load_dataset
    from medseg.engine.checkpoint import load_module
    from medseg.viz.plots import curve_series

    run = train(config_from_dict(tiny_config(train={"epochs": 2})), tmp_path / "r", progress=False)
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert {"val_dice", "val_pixel_accuracy"} <= set(rows[-1])
    module = load_module(run, "last", "cpu")
    ds = load_dataset(json.loads((run / "run.json").read_text())["dataset"])
    right = total = 0
    with torch.no_grad():
        for cid in select(load_splits(run / "splits.json", ds.patients), "val", None):
            case = ds.load_case(cid)
            pred = module.net(torch.as_tensor(normalize_image(case.image))[None]).argmax(1)[0].numpy()  # the whole image
            right += int((pred == case.label).sum())
            total += case.label.size
    assert float(rows[-1]["val_pixel_accuracy"]) == pytest.approx(right / total, abs=1e-6)  # logged as float32
    series = curve_series([{k: float(v) for k, v in r.items()} for r in rows])["validation"]
    assert [v for _, v in series["pixel accuracy"]] == pytest.approx([float(r["val_pixel_accuracy"]) for r in rows])
    assert len(series["mean Dice"]) == len(rows)


def test_probability_loss_is_the_runs_loss_by_hand() -> None:
    from medseg.core.case import Case, make_affine

    lab = np.array([[0, 1, 1]], np.int16)
    probs = np.array([[[0.8, 0.3, 0.5]], [[0.2, 0.7, 0.5]]], np.float32)  # (K, 1, 3)
    case = Case(np.zeros((1, 1, 3), np.float32), lab, make_affine((1.0, 1.0)), "c", "p")
    ce = _module(Constant(2), ["background", "LV"])
    ce.loss_fn = build_loss("ce", False)
    assert probability_loss(ce, probs, case) == pytest.approx(-(math.log(0.8) + math.log(0.7) + math.log(0.5)) / 3, rel=1e-6)
    logits = torch.randn(1, 2, 1, 3)  # the loss of logits equals the loss of their softmax probabilities
    p = torch.softmax(logits, 1)[0].numpy()
    target = torch.as_tensor(lab[None, None].astype(np.int64))
    dice_ce = build_loss("dice_ce", False)
    ce.loss_fn = dice_ce
    assert probability_loss(ce, p, case) == pytest.approx(float(dice_ce(logits, target)), rel=1e-5)
    ml = Case(np.zeros((1, 1, 3), np.float32), np.array([[[1, 0, 1]], [[0, 0, 1]]], bool), make_affine((1.0, 1.0)), "c", "p")
    bce = _module(Constant(2), ["a", "b"])
    bce.multi_label = True
    bce.loss_fn = build_loss("bce", True)
    q = np.array([[[0.9, 0.2, 0.6]], [[0.1, 0.4, 0.95]]], np.float32)
    want = -np.mean([math.log(0.9), math.log(0.8), math.log(0.6), math.log(0.9), math.log(0.6), math.log(0.95)])
    assert probability_loss(bce, q, ml) == pytest.approx(want, rel=1e-5)
    assert math.isnan(probability_loss(bce, q, Case(ml.image, None, ml.affine, "c", "p")))
