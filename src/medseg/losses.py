"""Registered loss builders (MONAI losses) and the deep-supervision wrapper.

A builder takes ``multi_label`` (sigmoid per channel vs softmax over classes) and its own keyword
arguments and returns a module called as ``loss(logits, target)`` where ``target`` is
``(B, 1, [D,] H, W)`` class indices for single-label data or ``(B, K, [D,] H, W)`` {0,1} channels
for multi-label data.

| name | loss | notes |
|---|---|---|
| ``ce`` | cross-entropy (BCE-with-logits for multi-label) | ``weight`` per class, e.g. ``[0.1, 0.3, 0.3, 0.2]`` |
| ``bce`` | BCE-with-logits | multi-label only; ``pos_weight`` per class |
| ``focal`` | focal loss | ``gamma``, ``alpha`` |
| ``dice`` | soft Dice | ``include_background``, ``squared_pred`` |
| ``dice_ce`` | Dice + CE | ``lambda_dice``, ``lambda_ce``, ``weight`` (CE class weights): Dice + 0.2 × weighted CE is ``lambda_ce: 0.2`` |
| ``dice_focal`` | Dice + focal | ``lambda_dice``, ``lambda_focal``, ``gamma``, ``alpha`` |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.losses import DiceFocalLoss, DiceLoss, FocalLoss

from medseg.core.errors import ConfigError
from medseg.core.registry import Registry

LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss", ConfigError)


def _act(multi_label: bool) -> dict[str, bool]:
    return {"sigmoid": True} if multi_label else {"softmax": True, "to_onehot_y": True}


def _weights(weight: Sequence[float] | None) -> torch.Tensor | None:
    return None if weight is None else torch.as_tensor(list(weight), dtype=torch.float32)


@LOSSES.register("dice", description="soft Dice (with or without background, squared or not)")
def dice(multi_label: bool, include_background: bool = True, squared_pred: bool = False, batch: bool = False) -> nn.Module:
    return DiceLoss(include_background=include_background, squared_pred=squared_pred, batch=batch, **_act(multi_label))


@LOSSES.register("focal", description="focal loss (gamma, alpha)")
def focal(multi_label: bool, gamma: float = 2.0, alpha: float | None = None, weight: Sequence[float] | None = None) -> nn.Module:
    return FocalLoss(to_onehot_y=not multi_label, use_softmax=not multi_label, gamma=gamma, alpha=alpha, weight=weight)


@LOSSES.register("dice_focal", description="soft Dice + focal")
def dice_focal(
    multi_label: bool,
    *,
    include_background: bool = True,
    lambda_dice: float = 1.0,
    lambda_focal: float = 1.0,
    gamma: float = 2.0,
    alpha: float | None = None,
) -> nn.Module:
    return DiceFocalLoss(
        include_background=include_background, lambda_dice=lambda_dice, lambda_focal=lambda_focal, gamma=gamma, alpha=alpha, **_act(multi_label)
    )


class _CrossEntropy(nn.Module):
    """Cross-entropy on class indices, or BCE-with-logits on multi-label channels.

    Written here because MONAI has no loss taking index targets with class weights for both cases.
    """

    def __init__(self, multi_label: bool, weight: Sequence[float] | None):
        super().__init__()
        self.multi_label = multi_label
        self.register_buffer("weight", _weights(weight))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multi_label:
            pw = None if self.weight is None else self.weight.view(1, -1, *([1] * (logits.ndim - 2)))
            return nn.functional.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=pw)
        return nn.functional.cross_entropy(logits, target[:, 0].long(), weight=self.weight)


class _DiceCE(nn.Module):
    """``lambda_dice`` × soft Dice + ``lambda_ce`` × (class-weighted) CE, or BCE for multi-label data.

    Composed here rather than MONAI's ``DiceCELoss`` because that one also weights the Dice term by
    the CE class weights and applies softmax CE to multi-channel sigmoid outputs.
    """

    def __init__(self, dice: nn.Module, ce: nn.Module, lambda_dice: float, lambda_ce: float):
        super().__init__()
        self.dice, self.ce = dice, ce
        self.lambda_dice, self.lambda_ce = float(lambda_dice), float(lambda_ce)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.lambda_dice * self.dice(logits, target) + self.lambda_ce * self.ce(logits, target)


@LOSSES.register("dice_ce", description="soft Dice + cross-entropy (BCE for multi-label); CE class weights")
def dice_ce(
    multi_label: bool,
    *,
    include_background: bool = True,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    weight: Sequence[float] | None = None,
    squared_pred: bool = False,
    batch: bool = False,
) -> nn.Module:
    dice_loss = DiceLoss(include_background=include_background, squared_pred=squared_pred, batch=batch, **_act(multi_label))
    return _DiceCE(dice_loss, _CrossEntropy(multi_label, weight), lambda_dice, lambda_ce)


@LOSSES.register("ce", description="cross-entropy with optional class weights (BCE for multi-label)")
def ce(multi_label: bool, weight: Sequence[float] | None = None) -> nn.Module:
    return _CrossEntropy(multi_label, weight)


@LOSSES.register("bce", description="binary cross-entropy with logits, one channel per label (multi-label only)", multi_label_only=True)
def bce(multi_label: bool, pos_weight: Sequence[float] | None = None) -> nn.Module:
    return _CrossEntropy(True, pos_weight)


class IgnoreLabelLoss(nn.Module):
    """``lambda_dice`` × soft Dice + ``lambda_ce`` × CE on the voxels whose target is not ``ignore_index``.

    As nnU-Net does: the Dice term sees probabilities and one-hot targets both multiplied by the
    mask of annotated voxels (after one-hot encoding, so an ignored voxel counts for no class, the
    background included), and CE averages over annotated voxels only (``ignore_index``; skipped
    when a batch has none). Multi-label (region) targets ``(B, K, ...)`` carry the ignore label as
    their last channel ``ignore_index = K - 1``: sigmoid Dice on the masked channels and BCE
    averaged over annotated voxel × channel pairs. Written here because MONAI's ``MaskedDiceLoss``
    masks the index target before one-hot encoding, which turns ignored voxels into background.
    """

    def __init__(
        self,
        ignore_index: int,
        *,
        include_background: bool,
        squared_pred: bool,
        lambda_dice: float,
        lambda_ce: float,
        weight: Sequence[float] | None,
        multi_label: bool = False,
    ):
        super().__init__()
        self.multi_label = multi_label
        self.ignore_index = int(ignore_index)
        self.dice = DiceLoss(include_background=include_background, squared_pred=squared_pred)
        self.lambda_dice, self.lambda_ce = float(lambda_dice), float(lambda_ce)
        self.register_buffer("weight", _weights(weight))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multi_label:
            return self._regions(logits, target)
        t = target[:, 0].long()
        valid = t != self.ignore_index
        total = logits.sum() * 0.0
        if self.lambda_dice:
            mask = valid.unsqueeze(1).to(logits.dtype)
            onehot = nn.functional.one_hot(torch.where(valid, t, 0), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
            total = total + self.lambda_dice * self.dice(torch.softmax(logits, 1) * mask, onehot * mask)
        if self.lambda_ce and bool(valid.any()):
            total = total + self.lambda_ce * nn.functional.cross_entropy(logits, t, weight=self.weight, ignore_index=self.ignore_index)
        return total

    def _regions(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = (target[:, self.ignore_index : self.ignore_index + 1] < 0.5).to(logits.dtype)
        t = target[:, : self.ignore_index].to(logits.dtype) * mask
        total = logits.sum() * 0.0
        if self.lambda_dice:
            total = total + self.lambda_dice * self.dice(torch.sigmoid(logits) * mask, t)
        n = mask.sum() * logits.shape[1]
        if self.lambda_ce and bool(n > 0):
            pw = None if self.weight is None else self.weight.view(1, -1, *([1] * (logits.ndim - 2)))
            bce = nn.functional.binary_cross_entropy_with_logits(logits, t, pos_weight=pw, reduction="none")
            total = total + self.lambda_ce * (bce * mask).sum() / n
        return total


#: the losses that take an ignore label, and how their parameters map onto :class:`IgnoreLabelLoss`
_IGNORE_DEFAULTS = {
    "dice": {"lambda_ce": 0.0, "lambda_dice": 1.0},
    "ce": {"lambda_dice": 0.0, "lambda_ce": 1.0},
    "bce": {"lambda_dice": 0.0, "lambda_ce": 1.0},
    "dice_ce": {"lambda_dice": 1.0, "lambda_ce": 1.0},
}


def ignore_label_loss(name: str, multi_label: bool, ignore_index: int, **params: Any) -> nn.Module:
    """The loss ``name`` restricted to annotated voxels (see :class:`IgnoreLabelLoss`)."""
    if name not in _IGNORE_DEFAULTS:
        raise ConfigError(f"loss {name!r} cannot leave out the ignore label", where="train.loss", fix="use dice_ce, dice or ce with an ignore label")
    params = dict(params)
    if "pos_weight" in params:
        params["weight"] = params.pop("pos_weight")
    allowed = {"include_background", "squared_pred", "lambda_dice", "lambda_ce", "weight"}
    unknown = set(params) - allowed
    if unknown:
        raise ConfigError(f"bad argument for loss {name!r}: {sorted(unknown)}", where="train.loss_params", fix="check the loss's arguments in docs/recipes.md")
    kw: dict[str, Any] = {"include_background": True, "squared_pred": False, "weight": None, **_IGNORE_DEFAULTS[name], **params}
    return IgnoreLabelLoss(ignore_index, multi_label=multi_label, **kw)


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a loss over several outputs, full resolution first.

    Args:
        loss: the loss applied to each output.
        weights: one weight per output; default ``1/2^i`` normalised to sum to 1, so the full-resolution
            output weighs most.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None):
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    @staticmethod
    def default_weights(n: int) -> list[float]:
        w = [0.5**i for i in range(n)]
        return [x / sum(w) for x in w]

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        weights = self.weights or self.default_weights(len(outputs))
        if len(weights) != len(outputs):
            raise ConfigError(
                f"{len(weights)} deep-supervision weights for {len(outputs)} outputs", where="train.deep_supervision_weights", fix="give one weight per output"
            )
        total = sum(w * self.loss(o, target) for w, o in zip(weights, outputs, strict=True) if w)
        return total  # type: ignore[return-value]


def build_loss(
    name: str, multi_label: bool, deep_supervision_weights: Sequence[float] | None = None, ignore_index: int | None = None, **params: Any
) -> nn.Module:
    """Build a registered loss, wrapped so it also accepts a list of deep-supervision outputs.

    With ``ignore_index`` (the ignore label's class) the loss counts only annotated voxels.
    """
    builder = LOSSES.get(name)
    if LOSSES.meta(name).get("multi_label_only") and not multi_label:
        raise ConfigError(
            f"loss {name!r} needs a multi-label data set (one sigmoid channel per class)",
            where="train.loss",
            fix="use ce, dice_ce or focal for single-label data",
        )
    if ignore_index is not None:
        return DeepSupervisionLoss(ignore_label_loss(name, multi_label, ignore_index, **params), deep_supervision_weights)
    try:
        loss = builder(multi_label=multi_label, **params)
    except TypeError as e:
        raise ConfigError(f"bad argument for loss {name!r}: {e}", where="train.loss_params", fix="check the loss's arguments in docs/recipes.md") from None
    return DeepSupervisionLoss(loss, deep_supervision_weights)
