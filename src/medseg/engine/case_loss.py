"""The run's own loss function on one evaluated case: the test loss of ``medseg evaluate`` and ``compare``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from medseg.core.case import Case
from medseg.data.loading import label_to_target

#: probabilities are clipped away from 0 (and 1 for sigmoids) before they are turned back into logits
EPS = 1e-7


def probability_loss(module: Any, probabilities: np.ndarray, case: Case) -> float:
    """The run's training loss (``train.loss`` with its parameters) on one case, from the probabilities
    predicted on the case's own grid.

    The loss functions take logits; the prediction pipeline (preprocessing and its inversion, sliding
    window, 2D models on volumes) yields probabilities, so they are mapped back to logits that give
    exactly these probabilities: ``log p`` for a softmax (``softmax(log p) = p``), ``logit p`` for
    sigmoids. Probabilities below ``EPS`` (above ``1 − EPS`` for sigmoids) are clipped, which caps a
    voxel's cross-entropy at −log EPS ≈ 16.

    Args:
        module: the trained ``SegModule`` (its ``loss_fn`` and ``multi_label``).
        probabilities: ``(K, *spatial)`` softmax (or sigmoid) probabilities on the case's grid.
        case: the case with its reference label.

    Returns:
        The loss, or NaN when the case has no label or the module no loss function.
    """
    loss_fn = getattr(module, "loss_fn", None)
    if loss_fn is None or case.label is None:
        return math.nan
    device = getattr(module, "device", torch.device("cpu"))
    p = torch.as_tensor(np.asarray(probabilities, dtype=np.float32), device=device)[None]
    logits = torch.logit(p, eps=EPS) if module.multi_label else torch.log(p.clamp_min(EPS))
    target = torch.as_tensor(label_to_target(case), device=device)[None]
    with torch.inference_mode():
        return float(loss_fn(logits, target))
