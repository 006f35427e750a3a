"""Registered loss builders (MONAI losses).

A builder takes ``multi_label`` (sigmoid per channel vs softmax over classes) and its own keyword
arguments and returns a module called as ``loss(logits, target)`` where ``target`` is
``(B, 1, [D,] H, W)`` class indices for single-label data or ``(B, K, [D,] H, W)`` {0,1} channels
for multi-label data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.losses import DiceCELoss, DiceLoss

from medseg.errors import ConfigError
from medseg.registry import Registry

LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss", ConfigError)


def _act(multi_label: bool) -> dict[str, bool]:
    return {"sigmoid": True} if multi_label else {"softmax": True, "to_onehot_y": True}


@LOSSES.register("dice_ce", description="soft Dice + cross-entropy (BCE for multi-label)")
def dice_ce(multi_label: bool, include_background: bool = True, lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> nn.Module:
    return DiceCELoss(include_background=include_background, lambda_dice=lambda_dice, lambda_ce=lambda_ce, **_act(multi_label))


@LOSSES.register("dice", description="soft Dice")
def dice(multi_label: bool, include_background: bool = True, squared_pred: bool = False) -> nn.Module:
    return DiceLoss(include_background=include_background, squared_pred=squared_pred, **_act(multi_label))


class _CrossEntropy(nn.Module):
    def __init__(self, multi_label: bool, weight: Sequence[float] | None):
        super().__init__()
        self.multi_label = multi_label
        w = None if weight is None else torch.as_tensor(list(weight), dtype=torch.float32)
        self.register_buffer("weight", w)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multi_label:
            pw = None if self.weight is None else self.weight.view(1, -1, *([1] * (logits.ndim - 2)))
            return nn.functional.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=pw)
        return nn.functional.cross_entropy(logits, target[:, 0].long(), weight=self.weight)


@LOSSES.register("ce", description="cross-entropy with optional class weights (BCE for multi-label)")
def ce(multi_label: bool, weight: Sequence[float] | None = None) -> nn.Module:
    return _CrossEntropy(multi_label, weight)


def build_loss(name: str, multi_label: bool, **params: Any) -> nn.Module:
    builder = LOSSES.get(name)
    try:
        return builder(multi_label=multi_label, **params)
    except TypeError as e:
        raise ConfigError(f"bad argument for loss {name!r}: {e}", where="train.loss_params", fix="check the loss's arguments") from None
