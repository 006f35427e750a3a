from __future__ import annotations

import itertools

import pytest
import torch
from monai.losses import DiceLoss

from medseg.config import TrainConfig
from medseg.core.errors import ConfigError
from medseg.engine.module import build_optimizer, build_scheduler
from medseg.losses import LOSSES, DeepSupervisionLoss, build_loss


def _batch(multi: bool, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, k, 8, 8, generator=g, requires_grad=True)
    target = (torch.rand(2, k, 8, 8, generator=g) > 0.5).float() if multi else torch.randint(0, k, (2, 1, 8, 8), generator=g)
    return logits, target


@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("multi", [False, True])
def test_every_loss_is_finite_and_differentiable(name: str, multi: bool) -> None:
    if LOSSES.meta(name).get("multi_label_only") and not multi:
        with pytest.raises(ConfigError, match="needs a multi-label data set"):
            build_loss(name, multi)
        return
    logits, target = _batch(multi)
    loss = build_loss(name, multi)(logits, target)
    assert torch.isfinite(loss) and loss.ndim == 0
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_weighted_ce_matches_torch() -> None:
    logits, target = _batch(False)
    w = [0.1, 0.3, 0.3, 0.2]
    ours = build_loss("ce", False, weight=w)(logits, target)
    ref = torch.nn.functional.cross_entropy(logits, target[:, 0], weight=torch.tensor(w))
    torch.testing.assert_close(ours, ref)


def test_dice_plus_point_two_weighted_ce() -> None:
    logits, target = _batch(False)
    w = [0.1, 0.3, 0.3, 0.3]
    ours = build_loss("dice_ce", False, lambda_ce=0.2, weight=w, include_background=False)(logits, target)
    dice = DiceLoss(include_background=False, softmax=True, to_onehot_y=True)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0], weight=torch.tensor(w))
    torch.testing.assert_close(ours, dice + 0.2 * ce)


def test_focal_reduces_to_ce_when_gamma_zero() -> None:
    logits, target = _batch(False)
    focal = build_loss("focal", False, gamma=0.0)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    # MONAI's focal loss averages over classes too: CE / K
    torch.testing.assert_close(focal * logits.shape[1], ce, rtol=1e-4, atol=1e-5)


def test_deep_supervision_weights() -> None:
    assert DeepSupervisionLoss.default_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    logits, target = _batch(False)
    base = build_loss("ce", False)
    outs = [logits, logits * 0.5, logits * 0.0]
    expected = sum(w * base(o, target) for w, o in zip([4 / 7, 2 / 7, 1 / 7], outs, strict=True))
    torch.testing.assert_close(base(outs, target), expected)
    custom = build_loss("ce", False, deep_supervision_weights=[1.0, 0.0, 0.0])
    torch.testing.assert_close(custom(outs, target), base(logits, target))
    with pytest.raises(ConfigError, match="2 deep-supervision weights for 3 outputs"):
        build_loss("ce", False, deep_supervision_weights=[1.0, 1.0])(outs, target)


def test_bad_loss_name_and_argument() -> None:
    with pytest.raises(ConfigError, match="did you mean dice_ce"):
        build_loss("dice_cee", False)
    with pytest.raises(ConfigError, match="bad argument for loss 'dice'"):
        build_loss("dice", False, gamma=2)


def _lrs(steps_per_epoch: int = 1, **kw: object) -> list[float]:
    t = TrainConfig(lr=1.0, epochs=10, **kw)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], t)
    total = 10 * steps_per_epoch
    sched = build_scheduler(opt, t, total_steps=lambda: total, steps_per_epoch=steps_per_epoch)["scheduler"]
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules() -> None:
    assert _lrs(scheduler="exponential", lr_gamma=0.985) == pytest.approx([0.985**e for e in range(10)])
    assert _lrs(scheduler="step", step_size=3, lr_gamma=0.1) == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001])
    cos = _lrs(scheduler="cosine", warmup_epochs=2, min_lr=0.1)
    assert cos[0] < cos[1] < cos[2] == pytest.approx(1.0) and cos[-1] < 0.2 and min(cos) >= 0.1
    poly = _lrs(scheduler="poly", poly_power=1.0)
    assert poly == pytest.approx([1 - e / 9 for e in range(10)])  # the last step is at the floor: the run ends annealed
    assert _lrs(scheduler="cosine", min_lr=0.1)[-1] == pytest.approx(0.1)
    # per optimiser step: exponential and step decay keep epoch granularity, cosine moves every step
    per_step = _lrs(steps_per_epoch=3, scheduler="exponential", lr_gamma=0.5)
    assert per_step[:7] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25])
    fine = _lrs(steps_per_epoch=3, scheduler="cosine")
    assert all(a > b for a, b in itertools.pairwise(fine)) and fine[-1] == pytest.approx(0.0)
    one = [torch.nn.Parameter(torch.zeros(1))]
    t = TrainConfig(scheduler="plateau")
    assert build_scheduler(build_optimizer(one, t), t, total_steps=lambda: 10, steps_per_epoch=1)["monitor"] == "val/loss"
    none = TrainConfig(scheduler="none")
    assert build_scheduler(build_optimizer(one, none), none, total_steps=lambda: 10, steps_per_epoch=1) is None


def test_sgd_is_nesterov() -> None:
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], TrainConfig(optimizer="sgd", momentum=0.99, lr=0.01))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.99


def test_multilabel_dice_ce_uses_bce() -> None:
    logits, target = _batch(True, k=3)
    ours = build_loss("dice_ce", True)(logits, target)
    ref = DiceLoss(sigmoid=True)(logits, target) + torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(ours, ref)
